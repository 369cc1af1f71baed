"""The CUDA expansion kernel equals sequential painting (simulator or GPU)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import FEW, SMALL_LAUNCH, needs_cuda, paint, run_batches
from numba import cuda

from nd2gpu.kernels._expand_cuda import expand_runs
from nd2gpu.kernels._overlap_kernels import make_non_overlapping
from nd2gpu.kernels._run_table import RunTable

pytestmark = pytest.mark.usefixtures("fast_thread_switching")


def expand_on_device(table: RunTable, size: int, **launch) -> np.ndarray:
    d_out = cuda.to_device(np.zeros(size, np.uint16))
    if table.n_runs:
        expand_runs(
            d_out,
            cuda.to_device(table.starts),
            cuda.to_device(table.values),
            cuda.to_device(table.prefix),
            table.n_runs,
            table.n_pixels,
            **launch,
        )
    return d_out.copy_to_host()


@needs_cuda
def test_expand_single_run():
    table = RunTable.from_runs([5], [37], [65535])
    expected = paint(table.starts, table.lengths, table.values, 50)
    np.testing.assert_array_equal(expand_on_device(table, 50, **SMALL_LAUNCH), expected)


@needs_cuda
@pytest.mark.parametrize(
    ("lengths", "launch"),
    [
        ([1] * 40, {"block": 8, "items": 2, "grid": 2}),  # tiles of 1-px runs
        ([1, 70, 1, 1, 33, 2], {"block": 8, "items": 3, "grid": 1}),  # long runs
        ([3] * 20, {"block": 4, "items": 2, "window": 2}),  # window overflows
        ([1] * 9 + [25], {"block": 4, "items": 4, "window": 1}),  # global search
    ],
)
def test_expand_tile_edges(lengths, launch):
    gaps = np.arange(len(lengths)) % 3
    starts = np.cumsum(np.array(lengths) + gaps) - lengths
    table = RunTable.from_runs(starts[::-1], lengths[::-1], np.arange(len(lengths)) + 1)
    size = int(starts[-1] + lengths[-1] + 4)
    expected = paint(table.starts, table.lengths, table.values, size)
    np.testing.assert_array_equal(expand_on_device(table, size, **launch), expected)


@pytest.mark.slow
@needs_cuda
@FEW
@given(
    run_batches(overlap=False),
    st.sampled_from([(4, 1), (8, 3), (16, 2)]),
    st.sampled_from([None, 1, 5]),
    st.integers(1, 3),
)
def test_expand_matches_sequential_painting(batch, shape, window, grid):
    table, bounds, fp = batch
    block, items = shape
    launch = {"block": block, "items": items, "window": window, "grid": grid}
    size = fp * len(bounds)
    expected = paint(table.starts, table.lengths, table.values, size)
    np.testing.assert_array_equal(expand_on_device(table, size, **launch), expected)


@pytest.mark.slow
@needs_cuda
@FEW
@given(run_batches(overlap=True))
def test_expand_overlaps_later_run_wins(batch):
    table, bounds, fp = batch
    size = fp * len(bounds)
    clean = make_non_overlapping(table, bounds, fp)
    expected = paint(table.starts, table.lengths, table.values, size)
    np.testing.assert_array_equal(
        expand_on_device(clean, size, **SMALL_LAUNCH), expected
    )
