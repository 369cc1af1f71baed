"""device="cuda" gives exactly device="cpu"'s values, end to end.

Runs on a real GPU with CuPy, or under numba's CUDA simulator (tests/conftest.py
turns it on when no GPU driver is present), where device arrays are numba's.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest
from nd2_surgery import rewrite
from streams import payload, stream_words

import nd2gpu
from nd2gpu._backends.cuda import batches
from nd2gpu._device import cuda_status, simulator_active, to_numpy

ok, why = cuda_status()
pytestmark = pytest.mark.skipif(not ok, reason=f"CUDA path not usable: {why}")


def host(array) -> np.ndarray:
    return to_numpy(array)


def simulated_memory(interface: dict) -> np.ndarray:
    """The array behind a ``__cuda_array_interface__`` of numba's simulator, whose
    device memory is host memory."""
    ptr, _ = interface["data"]
    n = math.prod(interface["shape"])
    buffer = (ctypes.c_uint16 * n).from_address(ptr)
    return np.frombuffer(buffer, np.uint16).reshape(interface["shape"])


def is_device_array(array) -> bool:
    return hasattr(array, "__cuda_array_interface__") and not isinstance(
        array, np.ndarray
    )


@pytest.fixture
def small_batches(monkeypatch):
    """Force many batches, so batch boundaries and the pipeline are exercised."""
    monkeypatch.setattr(batches, "FIRST_BATCH_FRAMES", 1)
    monkeypatch.setattr(batches, "BATCH_FRAMES", 2)


@pytest.mark.slow
def test_cuda_equals_cpu_on_generated_file(make_nd2, small_batches):
    path, labels = make_nd2(
        loops=(("T", 2), ("Z", 3)), layers=("a", "b"), frame_shape=(9, 11)
    )
    with nd2gpu.ND2File(path, device="cpu") as f:
        expected = np.asarray(f.binary_data)
        layer_expected = f.binary_data[1].asarray()
        frame_expected = f.binary_data[0][4]
    with nd2gpu.ND2File(path, device="cuda") as f:
        layers = f.binary_data
        got = layers.asarray()
        assert is_device_array(got)
        assert got.shape == expected.shape and str(got.dtype) == "uint16"
        np.testing.assert_array_equal(host(got), expected)
        np.testing.assert_array_equal(host(layers[1].asarray()), layer_expected)
        frame = layers[0][4]
        assert is_device_array(frame)
        np.testing.assert_array_equal(host(frame), frame_expected)
        np.testing.assert_array_equal(np.asarray(layers), expected)  # always NumPy
        batch = layers[1].decode([5, 0, 5], device="cuda")
        np.testing.assert_array_equal(
            host(batch), np.asarray(labels["b"]).reshape(6, 9, 11)[[5, 0, 5]]
        )


def test_overlaps_clipping_and_ids_near_limits(make_nd2, tmp_path, small_batches):
    path, _ = make_nd2(loops=(("T", 5),), layers=("a",), frame_shape=(6, 10))
    overlapping = [
        (0xFFFF, [(0, [(0, 6), (8, 50)]), (3, [(2, 3)])]),
        (1, [(0, [(2, 2)]), (3, [(0, 10)])]),  # paints over earlier runs
        (0xFFFE, [(3, [(4, 1), (12, 1)]), (5, [(9, 0)])]),  # past edge, empty
    ]
    frames = {1: overlapping, 3: overlapping[::-1]}

    def edit(name: bytes, data: bytes):
        for seq, masks in frames.items():
            if name == f"CustomDataSeq|RleZipBinarySequence_1_v1|{seq}!".encode():
                return b"\0\0\0\0" + payload(stream_words(6, 10, masks))
        return data

    edited = rewrite(path, tmp_path / "overlap.nd2", edit)
    with nd2gpu.ND2File(edited, device="cpu") as f:
        expected = f.binary_data[0].asarray()
    import nd2

    with nd2.ND2File(edited) as f:
        np.testing.assert_array_equal(expected, f.binary_data[0].asarray())
    with nd2gpu.ND2File(edited, device="cuda") as f:
        np.testing.assert_array_equal(host(f.binary_data[0].asarray()), expected)


def test_cuda_array_interface_is_the_decoded_block(make_nd2):
    path, labels = make_nd2(loops=(("T", 2),), layers=("a", "b"), frame_shape=(5, 7))
    with nd2gpu.ND2File(path, device="cuda") as f:
        layers = f.binary_data
        interface = layers.__cuda_array_interface__
        assert interface["shape"] == (2, 2, 5, 7)
        assert interface["typestr"] == "<u2"
        assert layers.__cuda_array_interface__["data"] == interface["data"]  # cached
        layer_iface = layers[0].__cuda_array_interface__
        assert layer_iface["shape"] == (2, 5, 7)
        expected = np.stack(list(labels.values()))
        if simulator_active():  # no CuPy: check the cached block behind it
            np.testing.assert_array_equal(simulated_memory(interface), expected)
            return
        import cupy

        view = cupy.asarray(layers)  # zero-copy
        assert view.data.ptr == interface["data"][0]
        np.testing.assert_array_equal(view.get(), expected)
        np.testing.assert_array_equal(cupy.from_dlpack(layers).get(), expected)
        assert layers.__dlpack_device__()[0] == 2  # kDLCUDA


def test_errors_are_the_same_on_cuda(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 3),), layers=("a",), frame_shape=(6, 10))
    bad_stream = payload(stream_words(6, 10, [(1, [(7, [(0, 1)])])]))
    bad = rewrite(
        path,
        tmp_path / "bad.nd2",
        lambda n, d: (
            b"\0\0\0\0" + bad_stream
            if n == b"CustomDataSeq|RleZipBinarySequence_1_v1|2!"
            else d
        ),
    )
    with (
        nd2gpu.ND2File(bad, device="cuda") as f,
        pytest.raises(nd2gpu.DecodeError) as info,
    ):
        f.binary_data[0].asarray()
    assert (info.value.layer, info.value.frame, info.value.offset) == ("a", 2, 64)
