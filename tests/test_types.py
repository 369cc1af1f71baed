"""What each API returns, for each device setting: NumPy unless a GPU is asked for.

Device arrays are CuPy arrays on a GPU and ``SimulatedDeviceArray`` under numba's
CUDA simulator (where CI runs). Cases that cannot run under the simulator are
named in ``SIMULATOR_CANNOT``; on a GPU every case runs.

The GPU interfaces (``__cuda_array_interface__``, ``__dlpack__``,
``__dlpack_device__``) exist only where CUDA is usable: elsewhere ``hasattr`` is
False and probes fall through, and a failed probe decodes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from counting import CountingInflate
from kernel_cases import REAL_GPU, SIMULATOR, needs_cuda

import nd2gpu
from nd2gpu._backends.cuda import probe as probe_module
from nd2gpu._backends.cuda.arrays import SimulatedDeviceArray
from nd2gpu._dask import decode_block_task

#: Why some cases cannot run under the simulator (they run on a GPU).
SIMULATOR_CANNOT = {
    "to_dask().compute() on cuda": "dask stacks blocks with NumPy/CuPy functions, "
    "which a SimulatedDeviceArray does not support (its blocks are checked alone)",
    "cupy.asarray / torch.as_tensor / torch.from_dlpack": "no CuPy or torch on the "
    "simulator, and the simulator has no DLPack",
}

GPU_INTERFACES = ("__cuda_array_interface__", "__dlpack__", "__dlpack_device__")


def device_array_type() -> type:
    if REAL_GPU:
        import cupy

        return cupy.ndarray
    return SimulatedDeviceArray


def to_host(array: Any) -> np.ndarray:
    return array if isinstance(array, np.ndarray) else array.get()


def is_cuda_array(obj: object) -> bool:
    """``numba.cuda.is_cuda_array`` (numba's is this ``hasattr``; the simulator
    lacks the function)."""
    from numba import cuda

    probe = getattr(cuda, "is_cuda_array", None)
    return probe(obj) if probe else hasattr(obj, "__cuda_array_interface__")


def through_interface(obj: object) -> np.ndarray:
    """The device array behind ``obj.__cuda_array_interface__``, on the host."""
    if REAL_GPU:
        from numba import cuda

        return cuda.as_cuda_array(obj).copy_to_host()
    from test_cuda_path import simulated_memory

    return simulated_memory(obj.__cuda_array_interface__).copy()


@pytest.fixture
def sample(make_nd2):
    path, labels = make_nd2(loops=(("T", 2),), layers=("a", "b"), frame_shape=(5, 7))
    return path, np.stack([labels["a"], labels["b"]])


#: API -> call on (layers, device-or-None for the call).
APIS: dict[str, Callable[[nd2gpu.BinaryLayers, str | None], Any]] = {
    "layer[i]": lambda L, d: L[0][1] if d is None else L[0]._frame(1, d),
    "layer.asarray()": lambda L, d: L[0].asarray(d),
    "layers.asarray()": lambda L, d: L.asarray(d),
    "layer.decode()": lambda L, d: L[0].decode([1, 0], d),
    "layer.decode(int)": lambda L, d: L[0].decode(1, d),
    "layer[a:b][i]": lambda L, d: L[0][0:2][1] if d is None else L[0]._frame(1, d),
}
#: APIs that are host arrays whatever the device, as in nd2.
HOST_APIS: dict[str, Callable[[nd2gpu.BinaryLayers], Any]] = {
    "layer.data[i]": lambda L: L[0].data[1],
    "np.asarray(layer)": lambda L: np.asarray(L[0]),
    "np.asarray(layers)": lambda L: np.asarray(L),
}


@pytest.mark.parametrize("api", list(APIS))
@pytest.mark.parametrize("file_device", [None, "cpu", "auto"])
def test_numpy_unless_a_gpu_is_asked_for(sample, api, file_device):
    path, _expected = sample
    with nd2gpu.ND2File(path, device=file_device) as f:
        result = APIS[api](f.binary_data, None)
        want = (
            device_array_type() if (file_device == "auto" and REAL_GPU) else np.ndarray
        )
        assert type(result) is want
        result = APIS[api](f.binary_data, "cpu")
        assert type(result) is np.ndarray


@pytest.mark.parametrize("api", list(HOST_APIS))
@pytest.mark.parametrize("file_device", [None, "cpu", "cuda", "auto"])
def test_host_apis_are_numpy_everywhere(sample, api, file_device):
    if file_device == "cuda" and not (SIMULATOR or REAL_GPU):
        pytest.skip("no CUDA")
    path, _ = sample
    with nd2gpu.ND2File(path, device=file_device) as f:
        assert type(HOST_APIS[api](f.binary_data)) is np.ndarray


@needs_cuda
@pytest.mark.parametrize("api", list(APIS))
def test_cuda_gives_device_arrays(sample, api):
    path, _expected = sample
    with nd2gpu.ND2File(path, device="cuda") as f:
        result = APIS[api](f.binary_data, None)
        assert type(result) is device_array_type()
        assert type(APIS[api](f.binary_data, "cpu")) is np.ndarray
    with nd2gpu.ND2File(path) as f:  # per call, whatever the file's default
        result = APIS[api](f.binary_data, "cuda")
        assert type(result) is device_array_type()
        host = to_host(result)
        np.testing.assert_array_equal(host, to_host(APIS[api](f.binary_data, "cpu")))


@pytest.mark.parametrize("file_device", [None, "cpu", "auto"])
def test_to_dask_is_numpy_by_default(sample, file_device):
    path, expected = sample
    with nd2gpu.ND2File(path, device=file_device) as f:
        x = f.binary_data.to_dask()
        y = f.binary_data[0].to_dask()
    if file_device == "auto" and REAL_GPU:
        pytest.skip("auto is CuPy on a GPU")
    for array in (x, y):
        assert type(array._meta) is np.ndarray
        assert type(array.compute(scheduler="sync")) is np.ndarray
    np.testing.assert_array_equal(x.compute(scheduler="sync"), expected)


@needs_cuda
def test_to_dask_on_cuda(sample):
    path, expected = sample
    with nd2gpu.ND2File(path, device="cuda") as f:
        x = f.binary_data.to_dask()
        layer = f.binary_data[0]
    if REAL_GPU:
        import cupy

        assert type(x._meta) is cupy.ndarray
        assert type(x.compute(scheduler="sync")) is cupy.ndarray
        return
    # Under the simulator: see SIMULATOR_CANNOT; each block is a device array.
    assert type(x._meta) is np.ndarray  # CuPy cannot be imported here
    block = decode_block_task(layer, "cuda", range(2), (2, 5, 7))
    assert type(block) is SimulatedDeviceArray
    np.testing.assert_array_equal(block.get(), expected[0])


# --- GPU interfaces ---------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("file_device", [None, "cpu", "cuda"])
def test_interfaces_take_the_gpu_path_whatever_the_default(sample, file_device):
    path, expected = sample
    with nd2gpu.ND2File(path, device=file_device) as f:
        layers = f.binary_data
        assert hasattr(layers, "__cuda_array_interface__")
        assert hasattr(layers[0], "__cuda_array_interface__")
        assert is_cuda_array(layers) and is_cuda_array(layers[1])
        np.testing.assert_array_equal(through_interface(layers), expected)
        np.testing.assert_array_equal(through_interface(layers[1]), expected[1])
        if REAL_GPU:
            import cupy

            np.testing.assert_array_equal(cupy.asarray(layers).get(), expected)
            np.testing.assert_array_equal(cupy.from_dlpack(layers).get(), expected)


@pytest.fixture
def cuda_not_usable(monkeypatch):
    monkeypatch.setattr(
        probe_module,
        "probe",
        lambda: probe_module.CudaProbe(False, "no GPU here (test)", False),
    )


@pytest.mark.parametrize("file_device", [None, "cpu", "cuda", "auto"])
def test_failed_probe_hides_the_interfaces_and_decodes_nothing(
    sample, monkeypatch, cuda_not_usable, file_device
):
    inflates = CountingInflate(monkeypatch)
    path, expected = sample
    with nd2gpu.ND2File(path, device=file_device) as f:
        layers = f.binary_data
        for obj in (layers, layers[0]):
            for name in GPU_INTERFACES:
                assert not hasattr(obj, name)
                with pytest.raises(AttributeError, match="no GPU here"):
                    getattr(obj, name)
            assert not is_cuda_array(obj)
        assert inflates.calls == 0
        assert layers._block is None and layers[0]._block is None
        if file_device in (None, "cpu", "auto"):
            np.testing.assert_array_equal(np.asarray(layers), expected)
        else:
            with pytest.raises(nd2gpu.DeviceUnavailableError, match="no GPU here"):
                layers.asarray()


def test_interfaces_of_a_layer_without_masks(make_nd2, tmp_path):
    from nd2_surgery import rewrite

    if not (SIMULATOR or REAL_GPU):
        pytest.skip("no CUDA")
    path, _ = make_nd2(loops=(("T", 2),), layers=("a",))
    empty = rewrite(
        path,
        tmp_path / "empty.nd2",
        lambda n, d: None if n.startswith(b"CustomDataSeq|") else d,
    )
    with nd2gpu.ND2File(empty) as f:
        assert not hasattr(f.binary_data[0], "__cuda_array_interface__")


# --- decode(frames, device, out=): every accepted and refused argument -----------


@pytest.mark.parametrize(
    ("frames", "seqs"),
    [
        (1, 1),
        (np.int64(1), 1),
        (-1, 1),
        (slice(0, 2), [0, 1]),
        (slice(None, None, -1), [1, 0]),
        (range(2), [0, 1]),
        ([1, 0, 1], [1, 0, 1]),
        ((0,), [0]),
        (np.array([1, 0], np.int32), [1, 0]),
        (np.array([1], np.uint64), [1]),
        (np.array([False, True]), [1]),
        ([], []),
    ],
)
def test_decode_accepts_what_nd2_users_index_with(sample, frames, seqs):
    path, expected = sample
    flat = expected[0]
    with nd2gpu.ND2File(path) as f:
        got = f.binary_data[0].decode(frames)
    assert type(got) is np.ndarray and got.dtype == np.uint16
    np.testing.assert_array_equal(got, flat[seqs])
    if isinstance(seqs, int):
        assert got.shape == (5, 7)
    else:
        assert got.shape == (len(seqs), 5, 7)


@pytest.mark.parametrize(
    ("frames", "error", "match"),
    [
        (1.0, TypeError, "frames must be"),
        (True, TypeError, "must be integers"),
        ("01", TypeError, "frames must be"),
        (None, TypeError, "frames must be"),
        ([0.5], TypeError, "must be integers"),
        (np.zeros((1, 1), int), IndexError, "one-dimensional"),
        (np.array([True]), IndexError, "shape"),
        (2, IndexError, "out of range"),
        ([0, -3], IndexError, "out of range"),
    ],
)
def test_decode_refuses_bad_frames(sample, frames, error, match):
    path, _ = sample
    with nd2gpu.ND2File(path) as f, pytest.raises(error, match=match):
        f.binary_data[0].decode(frames)


def test_decode_into_a_reused_buffer(sample):
    path, expected = sample
    with nd2gpu.ND2File(path) as f:
        layer = f.binary_data[1]
        buf = np.full((2, 5, 7), 7, np.uint16)  # stale contents are overwritten
        for frames in ([0, 1], [1, 1], [1, 0]):
            assert layer.decode(frames, out=buf) is buf
            np.testing.assert_array_equal(buf, expected[1][frames])
        one = np.full((5, 7), 9, np.uint16)
        assert layer.decode(-1, out=one) is one
        np.testing.assert_array_equal(one, expected[1][1])
        assert layer.decode([], out=np.empty((0, 5, 7), np.uint16)).shape == (0, 5, 7)


@pytest.mark.parametrize(
    ("make_out", "device", "error", "match"),
    [
        (lambda: np.zeros((2, 5, 7), np.int32), None, TypeError, "uint16"),
        (lambda: np.zeros((2, 5, 7), np.float32), "cpu", TypeError, "uint16"),
        (lambda: np.zeros((3, 5, 7), np.uint16), None, ValueError, "shape"),
        (lambda: np.zeros((2, 7, 5), np.uint16), None, ValueError, "shape"),
        (lambda: np.zeros((2, 5, 14), np.uint16)[..., ::2], None, ValueError, "C-c"),
        (
            lambda: np.zeros((2, 5, 7), np.uint16, order="F"),
            None,
            ValueError,
            "C-contiguous",
        ),
        (lambda: np.zeros((2, 5, 7), np.uint16), "cuda", TypeError, "CUDA array"),
        (lambda: [[0] * 7] * 5, None, TypeError, "NumPy array"),
        (lambda: memoryview(bytearray(140)), None, TypeError, "NumPy array"),
    ],
)
def test_decode_refuses_bad_out(sample, make_out, device, error, match):
    if device == "cuda" and not (SIMULATOR or REAL_GPU):
        pytest.skip("no CUDA")
    path, _ = sample
    out = make_out()
    with nd2gpu.ND2File(path) as f, pytest.raises(error, match=match):
        f.binary_data[0].decode([0, 1], device, out=out)


def test_decode_refuses_a_read_only_out(sample):
    path, _ = sample
    out = np.zeros((2, 5, 7), np.uint16)
    out.flags.writeable = False
    with nd2gpu.ND2File(path) as f, pytest.raises(ValueError, match="writeable"):
        f.binary_data[0].decode([0, 1], out=out)
    assert not out.any()


def test_decode_refuses_a_single_frame_out_of_the_wrong_shape(sample):
    path, _ = sample
    with nd2gpu.ND2File(path) as f, pytest.raises(ValueError, match="shape"):
        f.binary_data[0].decode(0, out=np.zeros((1, 5, 7), np.uint16))


@needs_cuda
def test_decode_into_a_device_buffer(sample):
    from nd2gpu._backends.cuda.arrays import zeros

    path, expected = sample
    with nd2gpu.ND2File(path) as f:
        layer = f.binary_data[0]
        buf = zeros((2, 5, 7))
        buf.fill(3)
        assert layer.decode([1, 0], out=buf) is buf  # device taken from out
        np.testing.assert_array_equal(to_host(buf), expected[0][[1, 0]])
        with pytest.raises(TypeError, match="NumPy array for device 'cpu'"):
            layer.decode([1, 0], "cpu", out=buf)


@pytest.mark.parametrize("frame_shape", [(5, 7), (1024, 1024)])  # inline, pool
def test_reused_buffer_is_cleared_where_frames_have_no_mask(
    make_nd2, tmp_path, frame_shape
):
    from nd2_surgery import rewrite

    path, labels = make_nd2(loops=(("T", 4),), layers=("a",), frame_shape=frame_shape)
    tag = b"CustomDataSeq|RleZipBinarySequence_1_v1|"
    edited = rewrite(
        path,
        tmp_path / "holes.nd2",
        lambda n, d: None if n == tag + b"0!" else d[:4] if n == tag + b"1!" else d,
    )
    expected = labels["a"].copy()
    expected[:2] = 0  # no chunk, and a chunk without a mask
    with nd2gpu.ND2File(edited) as f:
        layer = f.binary_data[0]
        buf = np.full((5, *frame_shape), 0xFFFF, np.uint16)
        layer.decode([0, 1, 2, 3, 0], out=buf)
        np.testing.assert_array_equal(buf, expected[[0, 1, 2, 3, 0]])
        buf.fill(0xFFFF)
        layer.decode([3, 3, 1, 2, 1], out=buf)  # repeats: one job per slot still
        np.testing.assert_array_equal(buf, expected[[3, 3, 1, 2, 1]])
