"""regionprops_table on CUDA equals the CPU table (numba's simulator without a GPU).

Inputs stay small: the simulator runs every CUDA thread as a Python thread.
"""

from __future__ import annotations

import numpy as np
import pytest
from kernel_cases import SIMULATOR, needs_cuda
from streams import payload, stream_words
from test_objects import (
    ALL,
    HAND_FRAMES,
    INTENSITY_PROPERTIES,
    assert_tables_equal,
    reference_table,
    write_nd2,
    write_streams,
)

import nd2gpu
from nd2gpu._device import to_numpy
from nd2gpu.kernels import _objects_cuda as oc
from nd2gpu.kernels._cuda_registry import KERNELS, SIMULATOR_DEVICE, DeviceShape

pytestmark = [needs_cuda, pytest.mark.usefixtures("fast_thread_switching")]


def both(path, layers: bool = False, **kwargs):
    """The table on the CPU and on CUDA."""
    with nd2gpu.ND2File(path) as f:
        target = f.binary_data if layers else f.binary_data[0]
        cpu = target.regionprops_table(device="cpu", **kwargs)
        cuda = target.regionprops_table(device="cuda", **kwargs)
    return cpu, cuda


def assert_gpu_equals_cpu(path, layers: bool = False, **kwargs):
    cpu, cuda = both(path, layers, **kwargs)
    for column in cuda.values():
        assert not isinstance(column, np.ndarray)  # a device array
        assert hasattr(column, "__cuda_array_interface__")
    assert_tables_equal(cuda, cpu)
    return cpu


def test_random_labels(make_nd2):
    path, _ = make_nd2(loops=(("T", 2),), frame_shape=(9, 11))
    cpu = assert_gpu_equals_cpu(path)
    assert len(cpu["label"]) > 0
    assert_tables_equal(cpu, reference_table(path))


@pytest.mark.slow
def test_every_layer_and_intensity_channel(make_nd2):
    path, _ = make_nd2(loops=(("T", 2),), frame_shape=(8, 10), layers=("a", "b"))
    assert_gpu_equals_cpu(path, layers=True, properties=ALL, intensity=0)


@pytest.mark.parametrize("index", [0, 2, 3, 5])
def test_hand_streams_with_overlaps(tmp_path, index):
    """Overlaps are resolved by the decode path's later-wins rewrite first."""
    nrows, ncols, masks = HAND_FRAMES[index]
    path = write_streams(tmp_path, [(nrows, ncols, masks), (nrows, ncols, [])])
    image = np.random.default_rng(index).normal(size=(2, nrows, ncols))
    cpu = assert_gpu_equals_cpu(path, properties=ALL, intensity=image)
    assert_tables_equal(cpu, reference_table(path, 0, ALL, image))


@pytest.mark.parametrize(
    "dtype",
    [
        np.uint8,
        np.float32,
        pytest.param(np.int16, marks=pytest.mark.slow),
        pytest.param(np.uint32, marks=pytest.mark.slow),
        pytest.param(np.int64, marks=pytest.mark.slow),  # converted to float64
        pytest.param(np.bool_, marks=pytest.mark.slow),  # viewed as uint8
    ],
)
def test_intensity_dtypes(make_nd2, dtype):
    path, labels = make_nd2(loops=(("T", 2),), frame_shape=(7, 9))
    rng = np.random.default_rng(8)
    image = (rng.normal(size=labels["cells"].shape) * 100).astype(dtype)
    assert_gpu_equals_cpu(path, properties=INTENSITY_PROPERTIES, intensity=image)


@pytest.mark.slow
def test_pieces_and_rows_of_many_pieces(tmp_path, monkeypatch):
    """Tiny pieces: every row gathers many pieces (a hot id's path)."""
    monkeypatch.setattr(oc, "PIECE_RUNS", 2)
    monkeypatch.setattr(oc, "PIECE_PIXELS", 3)
    labels = np.zeros((2, 12, 10), np.uint16)
    labels[0, 1:11, 1:9] = 65535
    labels[0, 3:5, 2:7] = 1
    labels[1, :, ::2] = 7
    image = np.arange(labels.size, dtype=np.float64).reshape(labels.shape)
    path = write_nd2(tmp_path / "hot.nd2", labels)
    cpu = assert_gpu_equals_cpu(path, properties=ALL, intensity=image)
    assert_tables_equal(cpu, reference_table(path, 0, ALL, image))


def test_frames_subset_empty_and_batches(tmp_path, monkeypatch):
    from nd2gpu._backends.cuda import batches

    monkeypatch.setattr(batches, "FIRST_BATCH_FRAMES", 1)
    monkeypatch.setattr(batches, "BATCH_FRAMES", 2)
    labels = np.zeros((5, 6, 7), np.uint16)
    labels[1, 2:4, 1:5] = 3
    labels[4, 0, 0] = 1
    path = write_nd2(tmp_path / "b.nd2", labels)
    image = np.ones(labels.shape, np.uint16)
    for frames in (None, [4, 1], [0, 2, 3], []):
        asked = range(5) if frames is None else frames
        kwargs = {"properties": ALL, "intensity": image[list(asked)]}
        assert_gpu_equals_cpu(path, frames=frames, **kwargs)
    empty = write_nd2(tmp_path / "e.nd2", np.zeros((2, 3, 3), np.uint16))
    cpu = assert_gpu_equals_cpu(empty, layers=True)
    assert all(len(c) == 0 for c in cpu.values())


def test_corrupt_frame_names_context(tmp_path):
    good = (4, 4, [(1, [(0, [(0, 2)])])])
    bad = b"\0\0\0\0" + payload(stream_words(4, 4, [(1, [(8, [(0, 2)])])]))
    path = write_streams(tmp_path, [good, bad])
    with nd2gpu.ND2File(path) as f, pytest.raises(nd2gpu.DecodeError) as info:
        f.binary_data[0].regionprops_table(device="cuda")
    assert info.value.frame == 1 and info.value.layer == "objects"
    assert info.value.offset == 4 * (7 + 9)


def test_columns_are_device_arrays(make_nd2):
    path, _ = make_nd2(loops=(("T", 1),), frame_shape=(5, 5))
    _, cuda = both(path)
    for column in cuda.values():
        host = to_numpy(column)
        assert host.ndim == 1 and host.flags.c_contiguous
        if SIMULATOR:
            assert type(column).__name__ == "SimulatedDeviceArray"


# --------------------------------------------------------- kernels, statically


OBJECT_KERNELS = [entry for entry in KERNELS if entry.module == "_objects_cuda"]


def test_every_objects_kernel_is_registered_with_its_exact_signature():
    names = {entry.function for entry in OBJECT_KERNELS}
    assert names == {"_reduce_geometry", "_reduce_intensity", "_combine_rows"}
    for entry in OBJECT_KERNELS:
        assert len(entry.argument_types()) == len(entry.parameter_names()), entry
    variants = {e.variant for e in OBJECT_KERNELS if e.function == "_reduce_intensity"}
    assert variants == set(oc.INTENSITY_SIGNATURES) == set(oc.INTENSITY_DTYPES)
    for name, signature in oc.INTENSITY_SIGNATURES.items():
        assert str(signature.args[6].dtype) == name


H100 = DeviceShape(sm_count=132, max_threads_per_sm=2048, max_blocks_per_sm=32)


@pytest.mark.parametrize(
    ("n", "block", "device", "expected"),
    [
        (1, 256, H100, (1, 256)),
        (8, 256, H100, (1, 256)),
        (9, 256, H100, (2, 256)),
        (10**9, 256, H100, (132 * 8, 256)),
        (10**9, 64, SIMULATOR_DEVICE, (2, 64)),
        (100, 32, DeviceShape(4, 2048, 32), (100, 32)),
    ],
)
def test_objects_launch(n, block, device, expected):
    launch = oc.objects_launch(device, n, block)
    assert (launch.grid, launch.block, launch.dynamic_shared) == (*expected, 0)


def test_objects_launch_of_nothing_is_none():
    assert oc.objects_launch(H100, 0) is None


def test_objects_launch_refuses_odd_blocks():
    for block in (0, 48, 512):
        with pytest.raises(ValueError, match="block"):
            oc.objects_launch(H100, 10, block)


def test_shared_memory_is_modest():
    """At least two 256-thread blocks fit an SM's 48 KiB of static shared memory."""
    assert 2 * oc.COMBINE_SHARED_BYTES <= 48 * 1024
    assert 2 * oc.GEOMETRY_SHARED_BYTES <= 48 * 1024
