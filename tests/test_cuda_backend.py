"""The CUDA back end's blocks and its batch expander (simulator or GPU)."""

from __future__ import annotations

import types

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import FEW, REAL_GPU, SMALL_LAUNCH, needs_cuda, paint, run_batches
from numba import cuda

from nd2gpu._backends.cuda import arrays
from nd2gpu._backends.cuda import expander as expander_module
from nd2gpu.kernels._overlap_kernels import make_non_overlapping
from nd2gpu.kernels._run_table import RunTable

pytestmark = pytest.mark.usefixtures("fast_thread_switching")


@needs_cuda
def test_zeros_is_zeroed():
    out = arrays.zeros((2, 3, 5))
    host = out.get()
    assert host.shape == (2, 3, 5) and host.dtype == np.uint16 and not host.any()


def test_zeros_reports_missing_memory(monkeypatch):
    fake = types.SimpleNamespace(
        cuda=types.SimpleNamespace(
            runtime=types.SimpleNamespace(memGetInfo=lambda: (1000, 8000))
        ),
        get_default_memory_pool=lambda: types.SimpleNamespace(free_bytes=lambda: 24),
    )
    monkeypatch.setattr(arrays, "cupy_module", lambda: fake)
    with pytest.raises(MemoryError, match=r"needs 2000 bytes.*only 1024 bytes"):
        arrays.zeros((10, 100))


@pytest.mark.slow
@needs_cuda
@given(run_batches(overlap=True, max_frames=6), st.integers(1, 3), st.booleans())
@FEW
def test_expander_fills_one_output_from_several_batches(batch, n_batches, grow):
    table, bounds, fp = batch
    with pytest.MonkeyPatch.context() as mp:
        if grow:  # start tiny so later batches reallocate both buffer sets
            mp.setattr(expander_module, "_MIN_CAPACITY", 1)
        out = expand_in_batches(table, bounds, fp, n_batches)
    expected = paint(table.starts, table.lengths, table.values, fp * len(bounds))
    np.testing.assert_array_equal(out.get(), expected.reshape(len(bounds), fp))


def expand_in_batches(table, bounds, fp, n_batches):
    """Expand the frames in ``n_batches`` tables into one (n_frames, fp) output."""
    expander = expander_module.CudaExpander(**SMALL_LAUNCH)
    out = arrays.zeros((len(bounds), fp))
    for part in np.array_split(np.arange(len(bounds)), n_batches):
        if not len(part):
            continue
        lo, hi = bounds[part[0], 0], bounds[part[-1], 1]
        sub = RunTable.from_runs(
            table.starts[lo:hi], table.lengths[lo:hi], table.values[lo:hi]
        )
        sub_bounds = bounds[part] - np.array([lo, lo, 0])
        expander.expand(out, make_non_overlapping(sub, sub_bounds, fp))
    expander.synchronize()
    return out


@needs_cuda
def test_expander_rejects_bad_outputs_and_tables():
    expander = expander_module.CudaExpander(**SMALL_LAUNCH)
    table = RunTable.from_runs([0, 4], [2, 2], [1, 2])
    with pytest.raises(ValueError, match="uint16"):
        expander.expand(cuda.to_device(np.zeros(8, np.int32)), table)
    with pytest.raises(TypeError, match="device array"):
        expander.expand(np.zeros(8, np.uint16), table)
    with pytest.raises(ValueError, match="outside"):
        expander.expand(arrays.zeros((5,)), table)


@pytest.mark.skipif(not REAL_GPU, reason="needs a GPU and CuPy")
def test_expander_takes_cupy_arrays():
    cupy = pytest.importorskip("cupy")
    table = RunTable.from_runs([1, 7, 20], [5, 9, 1], [3, 65535, 9])
    out = arrays.zeros((3, 10))
    assert isinstance(out, cupy.ndarray)
    expander = expander_module.CudaExpander()
    expander.expand(out, table)
    expander.synchronize()
    expected = paint(table.starts, table.lengths, table.values, 30).reshape(3, 10)
    np.testing.assert_array_equal(cupy.asnumpy(out), expected)
