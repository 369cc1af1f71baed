"""The CUDA back end's blocks and its batch pipeline.

The pipeline's host half (decode threads staging batches into a ring of
buffers, spilled groups, growth, errors) runs with a host stand-in for the GPU
(benchmarks/host_device.py), whole files at a time; the device side runs under
numba's simulator or on a GPU.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import nd2
import numpy as np
import pytest
from kernel_cases import REAL_GPU, SMALL_LAUNCH, needs_cuda
from nd2_surgery import rewrite
from streams import payload, stream_words

import nd2gpu
from nd2gpu._backends.cuda import arrays, batches
from nd2gpu._backends.cuda import expander as expander_module
from nd2gpu._decode.plan import DecodePlan

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from host_device import HostDevice

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


def reference(path) -> np.ndarray:
    with nd2.ND2File(path) as f:
        return np.asarray(f.binary_data)


def run_on_host(path, *, ring=None, slots=None, paint=True):
    """The whole file through the batch pipeline, the GPU replaced by the host."""
    with nd2gpu.ND2File(path) as f:
        layers = f.binary_data.stackable_layers()
        n = len(layers[0])
        shape = layers[0].frame_shape
        seqs = np.tile(np.arange(n), len(layers))
        which = np.repeat(np.arange(len(layers)), n)
        order = np.arange(seqs.shape[0]) if slots is None else np.asarray(slots)
        plan = DecodePlan.of([layer.ref for layer in layers], which, seqs, order)
        out = np.zeros((seqs.shape[0], *shape), np.uint16)
        device = HostDevice(out, paint=paint, tile_pixels=16)
        pipeline = batches.BatchPipeline(device, shape, ring)
        pipeline.run(plan, plan.slots * (shape[0] * shape[1]))
    return (
        out.reshape(len(layers), *f.binary_data[0].coordinate_shape, *shape),
        device,
        pipeline,
    )


@pytest.mark.parametrize("first,size,runs", [(4, 32, 1 << 15), (1, 2, 3), (2, 3, 1)])
def test_batches_of_any_size_give_nd2s_arrays(make_nd2, monkeypatch, first, size, runs):
    """Small batches and buffers far too small for a frame: groups spill and
    batches grow, and the result is still nd2's."""
    monkeypatch.setattr(batches, "FIRST_BATCH_FRAMES", first)
    monkeypatch.setattr(batches, "BATCH_FRAMES", size)
    monkeypatch.setattr(batches, "FIRST_RUNS_PER_FRAME", runs)
    path, _ = make_nd2(loops=(("T", 5), ("Z", 3)), frame_shape=(21, 30))
    out, device, pipeline = run_on_host(path)
    np.testing.assert_array_equal(out, reference(path))
    assert pipeline.stats.batches == device.calls["copies"] == device.calls["events"]
    if runs < 8:
        assert pipeline.stats.grown > 0


def test_slots_in_any_order_and_the_ring_kept_between_calls(make_nd2):
    path, _ = make_nd2(loops=(("T", 4),), frame_shape=(9, 40))
    expected = reference(path).reshape(-1, 9, 40)
    slots = np.random.default_rng(1).permutation(expected.shape[0])
    ring = [None] * batches.RING
    for _ in range(2):
        out, device, _ = run_on_host(path, ring=ring, slots=slots)
        got = out.reshape(-1, 9, 40)
        np.testing.assert_array_equal(got[slots], expected)
    assert device.calls["pinned_allocations"] == 0  # the second call reused them


def test_a_corrupt_frame_stops_the_pipeline_with_its_name(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 40),), frame_shape=(8, 8), layers=("a",))
    bad_stream = payload(stream_words(8, 8, [(1, [(9, [(0, 1)])])]))
    name = b"CustomDataSeq|RleZipBinarySequence_1_v1|23!"
    bad = rewrite(
        path,
        tmp_path / "bad.nd2",
        lambda n, d: b"\0\0\0\0" + bad_stream if n == name else d,
    )
    with pytest.raises(nd2gpu.DecodeError, match="frame 23") as info:
        run_on_host(bad)
    assert (info.value.layer, info.value.offset) == ("a", 64)


@needs_cuda
def test_the_device_side_expands_what_the_host_stages(make_nd2):
    path, _ = make_nd2(loops=(("T", 3), ("Z", 2)), frame_shape=(7, 12))
    with nd2gpu.ND2File(path) as f:
        layer = f.binary_data[0]
        out = arrays.zeros((6, 7, 12))
        device = expander_module.CudaDevice(**SMALL_LAUNCH)
        device.set_output(out)
        plan = DecodePlan.of([layer.ref], 0, range(6))
        batches.BatchPipeline(device, (7, 12)).run(plan, plan.slots * 84)
        expected = layer.decode(range(6))
    np.testing.assert_array_equal(out.get(), expected)
    assert device.calls["launches"] >= 1


@needs_cuda
def test_the_device_side_rejects_bad_outputs():
    device = expander_module.CudaDevice(**SMALL_LAUNCH)
    from numba import cuda

    with pytest.raises(ValueError, match="uint16"):
        device.set_output(cuda.to_device(np.zeros(8, np.int32)))
    with pytest.raises(TypeError, match="device array"):
        device.set_output(np.zeros(8, np.uint16))


@pytest.mark.skipif(not REAL_GPU, reason="needs a GPU and CuPy")
def test_the_device_side_takes_cupy_arrays(make_nd2):
    cupy = pytest.importorskip("cupy")
    path, _ = make_nd2(loops=(("T", 3),), frame_shape=(10, 10))
    with nd2gpu.ND2File(path) as f:
        got = f.binary_data.asarray(device="cuda")
        assert isinstance(got, cupy.ndarray)
        np.testing.assert_array_equal(cupy.asnumpy(got), np.asarray(f.binary_data))
