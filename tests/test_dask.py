"""Dask arrays of binary layers: same values as asarray, on any scheduler."""

from __future__ import annotations

import math
import pickle

import cloudpickle
import numpy as np
import pytest
from nd2_surgery import rewrite
from streams import payload, stream_words

import nd2gpu
from nd2gpu import _dask as dask_module
from nd2gpu._dask import decode_block_task, frame_chunks
from nd2gpu._device import cuda_status, simulator_active


def block_frames(chunks, coordinate_shape):
    """The sequence indices of every block of a dask array, loop axes only."""
    grid = np.arange(math.prod(coordinate_shape)).reshape(coordinate_shape)
    starts = [np.cumsum((0, *c)) for c in chunks]
    for index in np.ndindex(*(len(c) for c in chunks)):
        region = tuple(
            slice(s[i], s[i + 1]) for s, i in zip(starts, index, strict=True)
        )
        yield grid[region].ravel()


@pytest.mark.parametrize(
    ("loops", "frames_per_chunk", "expected"),
    [
        ((("T", 2), ("Z", 3)), 1, ((1, 1), (1, 1, 1))),
        ((("T", 2), ("Z", 3)), 2, ((1, 1), (2, 1))),
        ((("T", 2), ("Z", 3)), 3, ((1, 1), (3,))),
        ((("T", 2), ("Z", 3)), 5, ((1, 1), (3,))),
        ((("T", 2), ("Z", 3)), 6, ((2,), (3,))),
        ((("T", 5), ("P", 2), ("Z", 2)), 9, ((2, 2, 1), (2,), (2,))),
        ((), 4, ()),
    ],
)
def test_matches_asarray(make_nd2, loops, frames_per_chunk, expected):
    path, _ = make_nd2(loops=loops, layers=("a", "b", "c"))
    with nd2gpu.ND2File(path, device="cpu") as f:
        layers = f.binary_data
        x = layers.to_dask(frames_per_chunk=frames_per_chunk)
        ref = layers.asarray()
        singles = [layer.to_dask(frames_per_chunk=frames_per_chunk) for layer in layers]
        layer_refs = [layer.asarray() for layer in layers]
    assert x.shape == ref.shape and x.dtype == ref.dtype == np.uint16
    assert type(x._meta) is np.ndarray and x._meta.ndim == ref.ndim
    assert x.chunks == ((1, 1, 1), *expected, (13,), (17,))
    coordinate_shape = ref.shape[1:-2]
    for frames in block_frames(x.chunks[1:-2], coordinate_shape):
        assert 1 <= len(frames) <= max(frames_per_chunk, 1)
        np.testing.assert_array_equal(np.diff(frames), 1)  # consecutive frames
    np.testing.assert_array_equal(x.compute(scheduler="sync"), ref)
    for single, layer_ref in zip(singles, layer_refs, strict=True):
        assert single.shape == layer_ref.shape and single.dtype == np.uint16
        assert single.chunks == (*expected, (13,), (17,))
        np.testing.assert_array_equal(single.compute(scheduler="sync"), layer_ref)


def test_slicing_decodes_only_needed_blocks(make_nd2, monkeypatch):
    path, _ = make_nd2(loops=(("T", 4), ("Z", 3)))
    with nd2gpu.ND2File(path, device="cpu") as f:
        x = f.binary_data.to_dask()
        ref = f.binary_data.asarray()
    calls = []
    real = dask_module.decode_block

    def counting(plan, *args, **kwargs):
        calls.append(plan.seqs.tolist())
        return real(plan, *args, **kwargs)

    monkeypatch.setattr(dask_module, "decode_block", counting)
    np.testing.assert_array_equal(x[1, 2, 0].compute(scheduler="sync"), ref[1, 2, 0])
    assert calls == [[6]]


def test_graph_pickles_and_file_may_be_closed(make_nd2):
    path, _ = make_nd2()
    with nd2gpu.ND2File(path, device="cpu") as f:
        layers = f.binary_data
        ref = layers.asarray()
    x = layers.to_dask(frames_per_chunk=2)  # built after the file was closed
    for dumps, loads in (
        (pickle.dumps, pickle.loads),
        (cloudpickle.dumps, pickle.loads),
    ):
        y = loads(dumps(x))
        assert y.name == x.name and y.chunks == x.chunks
        np.testing.assert_array_equal(y.compute(scheduler="sync"), ref)


def test_task_function_reads_the_file_from_a_pickled_layer(make_nd2):
    path, _ = make_nd2(loops=(("T", 3),))
    with nd2gpu.ND2File(path, device="cpu") as f:
        layer = f.binary_data[1]
        ref = layer.asarray()
    moved = pickle.loads(pickle.dumps(layer))  # as a worker process gets it
    block = decode_block_task(moved, "cpu", range(1, 3), (2, 13, 17))
    np.testing.assert_array_equal(block, ref[1:3])


def test_layers_without_masks_are_left_out_like_asarray(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 2), ("Z", 3)), layers=("a", "b", "c"))

    def edit(name: bytes, data: bytes):
        if name.startswith(b"CustomDataSeq|RleZipBinarySequence_1_v1|"):
            seq = int(name.split(b"|")[2][:-1])
            return None if seq in (0, 4) else data  # frames without a mask
        if name.startswith(b"CustomDataSeq|RleZipBinarySequence_2_v1|"):
            return None  # a layer with no mask at all
        return data

    edited = rewrite(path, tmp_path / "edited.nd2", edit)
    with nd2gpu.ND2File(edited, device="cpu") as f:
        layers = f.binary_data
        ref = layers.asarray()
        x = layers.to_dask(frames_per_chunk=3)
        assert layers[1].to_dask() is None and layers[1].asarray() is None
        first = layers[0].to_dask()
        first_ref = layers[0].asarray()
    assert x.shape == ref.shape == (2, 2, 3, 13, 17)
    np.testing.assert_array_equal(x.compute(scheduler="sync"), ref)
    np.testing.assert_array_equal(first.compute(scheduler="sync"), first_ref)


def test_errors_like_asarray(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 2),), layers=("a", "b"))
    empty = rewrite(
        path,
        tmp_path / "empty.nd2",
        lambda name, data: None if name.startswith(b"CustomDataSeq|") else data,
    )
    with nd2gpu.ND2File(empty) as f:
        layers = f.binary_data
        with pytest.raises(ValueError, match="no binary layer has a mask"):
            layers.asarray()
        with pytest.raises(ValueError, match="no binary layer has a mask"):
            layers.to_dask()

    other = payload(stream_words(5, 5, []))
    name = b"CustomDataSeq|RleZipBinarySequence_2_v1|0!"
    mixed = rewrite(
        path,
        tmp_path / "mixed.nd2",
        lambda n, d: b"\0\0\0\0" + other if n == name else d,
    )
    with nd2gpu.ND2File(mixed) as f:
        layers = f.binary_data
        with pytest.raises(nd2gpu.DecodeError, match="stack"):
            layers.asarray()
        with pytest.raises(nd2gpu.DecodeError, match="stack"):
            layers.to_dask()
        assert layers[1].to_dask().shape == (2, 5, 5)

    with nd2gpu.ND2File(path) as f:
        for bad, error in ((0, ValueError), (1.5, TypeError), (True, TypeError)):
            with pytest.raises(error, match="frames_per_chunk"):
                f.binary_data.to_dask(frames_per_chunk=bad)
        with pytest.raises(ValueError, match="device"):
            f.binary_data.to_dask(device="gpu")


def test_loop_chunks_cover_every_frame_once():
    for shape in [(1,), (7,), (3, 4), (2, 3, 5), (4, 1, 3)]:
        for fpc in range(1, 2 * math.prod(shape) + 2):
            chunks = frame_chunks(shape, fpc)
            assert tuple(sum(c) for c in chunks) == shape
            frames = np.concatenate(list(block_frames(chunks, shape)))
            np.testing.assert_array_equal(np.sort(frames), np.arange(math.prod(shape)))
            assert all(
                0 < len(b) <= fpc and (np.diff(b) == 1).all()
                for b in block_frames(chunks, shape)
            )


def test_cuda_device(make_nd2):
    """On a GPU with CuPy: CuPy blocks and meta. Without: the simulator's blocks."""
    path, _ = make_nd2(loops=(("T", 2),), frame_shape=(6, 7))
    with nd2gpu.ND2File(path, device="cpu") as f:
        layers = f.binary_data
        ref = layers.asarray()
    ok, why = cuda_status()
    if ok and not simulator_active():
        import cupy

        x = layers.to_dask(device="cuda")
        assert isinstance(x._meta, cupy.ndarray)
        result = x.compute(scheduler="sync")
        assert isinstance(result, cupy.ndarray)
        np.testing.assert_array_equal(result.get(), ref)
    else:
        assert simulator_active(), why  # conftest turns the simulator on without GPU
        block = decode_block_task(layers[0], "cuda", range(2), (2, 6, 7))
        assert not isinstance(block, np.ndarray)
        np.testing.assert_array_equal(block.get(), ref[0])


@pytest.mark.slow
@pytest.mark.parametrize("frames_per_chunk", [1, 4])
def test_distributed_local_cluster(make_nd2, process_cluster, frames_per_chunk):
    client = process_cluster
    path, _ = make_nd2(loops=(("T", 3), ("Z", 2)), layers=("a", "b", "c"))
    with nd2gpu.ND2File(path, device="cpu") as f:
        layers = f.binary_data
        ref = layers.asarray()
        x = layers.to_dask(frames_per_chunk=frames_per_chunk)
        y = layers[2].to_dask(frames_per_chunk=frames_per_chunk)
    got, got_layer = client.compute([x, y], sync=True)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got_layer, ref[2])
    assert len(client.scheduler_info()["workers"]) == 2


def test_cuda_is_checked_by_the_workers(make_nd2, monkeypatch):
    """A client without a GPU builds a graph for GPU workers; decoding checks."""
    from nd2gpu._backends.cuda import probe

    path, _ = make_nd2(loops=(("T", 2),))
    monkeypatch.setattr(probe, "probe", lambda: probe.CudaProbe(False, "no GPU", False))
    with nd2gpu.ND2File(path) as f:
        layers = f.binary_data
        x = layers.to_dask(device="cuda")
        assert x.shape == (2, 2, 13, 17)
        with pytest.raises(nd2gpu.DeviceUnavailableError, match="no GPU"):
            x.compute(scheduler="sync")
        assert layers.to_dask(device="auto")._meta.__class__ is np.ndarray
