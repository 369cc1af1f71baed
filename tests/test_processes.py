"""Files and layers across process boundaries: pickling, and decoding in children
started by fork, spawn and forkserver, also after the parent has decoded (its
thread pool and fsspec's event loop running)."""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from http_server import Files, serving

import nd2gpu
from nd2gpu._decode import pool as decode_pool
from nd2gpu._decode import schedule

LOOPS = (("T", 2), ("Z", 2))
#: Four frames of this shape make a block big enough for the decode thread pool.
FRAME = (512, 512)
pytestmark = pytest.mark.filterwarnings(
    # Python 3.12+ warns on every fork of a process with threads: forking with
    # the decode pool and fsspec's loop running is what these tests check.
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)

#: How long a child may take (a deadlock fails the test instead of hanging it).
CHILD_TIMEOUT = 120


def decode_in_child(obj: Any) -> np.ndarray:
    """What a worker does with a pickled file, layers or layer."""
    if isinstance(obj, nd2gpu.ND2File):
        with obj:
            return np.asarray(obj.binary_data)
    if isinstance(obj, nd2gpu.BinaryLayers):
        return np.stack([obj.asarray(), np.asarray(obj)])
    frames = obj.decode(range(len(obj))).reshape(obj.asarray().shape)
    return np.stack([obj.asarray(), frames])


def describe_in_child(obj: Any) -> tuple[str, str | None, bool]:
    """What a child sees of a pickled file: its source, device request, closed."""
    layer = obj.binary_data[0]
    return layer.source.spec.kind, layer.device_request, obj.closed


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, np.ndarray]:
    from conftest import random_labels

    rng = np.random.default_rng(7)
    labels = {name: random_labels(rng, (2, 2, *FRAME)) for name in ("cells", "nuclei")}
    path = nd2gpu.write_nd2(
        tmp_path_factory.mktemp("processes") / "big.nd2", labels, loops=list(LOOPS)
    )
    assert 4 * FRAME[0] * FRAME[1] >= schedule.INLINE_PIXELS  # uses the pool
    return path, np.stack(list(labels.values()))


@pytest.fixture(scope="module")
def http(big) -> Iterator[tuple[str, Files]]:
    with serving() as (base, files):
        files.content["/big.nd2"] = big[0].read_bytes()
        yield base + "/big.nd2", files


def run_in_child(method: str, function: Any, *args: Any) -> Any:
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(1) as pool:
        return pool.apply_async(function, args).get(timeout=CHILD_TIMEOUT)


# --- pickling --------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "http"])
def test_pickle_round_trips(big, http, where):
    path, expected = big
    target = str(path) if where == "local" else http[0]
    with nd2gpu.ND2File(target, device="cpu") as f:
        layers = f.binary_data
        clones = [pickle.loads(pickle.dumps(x)) for x in (f, layers, layers[1])]
        f_clone, layers_clone, layer_clone = clones
        assert type(layers_clone) is nd2gpu.BinaryLayers
        assert type(layer_clone) is nd2gpu.BinaryLayer
        assert layer_clone.device_request == "cpu"
        assert layer_clone.meta == layers[1].meta
        assert layer_clone.coordinate_shape == layers[1].coordinate_shape
        assert layer_clone.path == target
        spec = layer_clone.source.spec
        assert spec.kind == ("local" if where == "local" else "fsspec")
        np.testing.assert_array_equal(np.asarray(layers_clone), expected)
        np.testing.assert_array_equal(layer_clone[3], expected[1, 1, 1])
        with f_clone:
            assert not f_clone.closed
            assert f_clone.binary_data[0].device_request == "cpu"
            np.testing.assert_array_equal(np.asarray(f_clone.binary_data), expected)
    closed = pickle.loads(pickle.dumps(f))
    assert closed.closed
    np.testing.assert_array_equal(closed.binary_data[0].asarray(), expected[0])


def test_pickled_layers_reopen_lazily(big, http):
    url, files = http
    with nd2gpu.ND2File(url) as f:
        layers = f.binary_data
        files.reset()
        moved = pickle.loads(pickle.dumps(layers))
    assert files.requests == []  # nothing is read until a frame is asked for
    np.testing.assert_array_equal(moved[0][2], big[1][0, 1, 0])
    assert files.requests


def test_pickled_file_keeps_its_layers(big):
    path, expected = big
    with nd2gpu.ND2File(path, device="cpu") as f:
        layers = f.binary_data
        clone = pickle.loads(pickle.dumps((f, layers)))
    f_clone, layers_clone = clone
    with f_clone:
        # One source, shared by the file and the layers, as before pickling.
        assert f_clone.binary_data[0].source is layers_clone[0].source
        np.testing.assert_array_equal(np.asarray(layers_clone), expected)


# --- children ----------------------------------------------------------------------


def _check_children(method: str, big, target: str) -> None:
    path, expected = big
    with nd2gpu.ND2File(target, device="cpu") as f:
        layers = f.binary_data
        # The parent decodes first: its thread pool, map and (for URLs) fsspec's
        # event loop exist when the child starts.
        np.testing.assert_array_equal(np.asarray(layers), expected)
        assert decode_pool._pool is not None
        got = run_in_child(method, decode_in_child, layers)
        np.testing.assert_array_equal(got, np.stack([expected, expected]))
        got = run_in_child(method, decode_in_child, layers[1])
        np.testing.assert_array_equal(got, np.stack([expected[1], expected[1]]))
        got = run_in_child(method, decode_in_child, f)
        np.testing.assert_array_equal(got, expected)
        kind, device, closed = run_in_child(method, describe_in_child, f)
        assert (device, closed) == ("cpu", False)
        assert kind == ("local" if target == str(path) else "fsspec")


@pytest.mark.parametrize("where", ["local", "http"])
def test_fork_children_decode_after_the_parent(big, http, where):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork here")
    _check_children("fork", big, str(big[0]) if where == "local" else http[0])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
@pytest.mark.parametrize("where", ["local", "http"])
def test_spawned_children_decode(big, http, method, where):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} here")
    _check_children(method, big, str(big[0]) if where == "local" else http[0])


def test_fork_while_the_file_is_closed(big):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork here")
    path, expected = big
    with nd2gpu.ND2File(path) as f:
        layers = f.binary_data
        np.asarray(layers)
    got = run_in_child("fork", decode_in_child, layers)
    np.testing.assert_array_equal(got[0], expected)


# --- dask.distributed: worker processes read the URL themselves ------------------


@pytest.mark.slow
def test_distributed_cluster_reads_a_remote_file(big, http, tmp_path, process_cluster):
    url, files = http
    _, expected = big
    # No shared file system: the file exists only on the HTTP server.
    with nd2gpu.ND2File(url, device="cpu") as f:
        x = f.binary_data.to_dask(frames_per_chunk=2)
        y = f.binary_data[1].to_dask()
    client = process_cluster
    files.reset()
    got, got_layer = client.compute([x, y], sync=True)
    assert len(client.scheduler_info()["workers"]) == 2
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got_layer, expected[1])
    assert files.gets()  # the workers fetched the frames themselves


def _inherited(layers: nd2gpu.BinaryLayers, queue: Any) -> None:
    """A forked child's use of the parent's objects as they are (not pickled)."""
    try:
        queue.put(np.asarray(layers).tobytes())
    except BaseException as e:  # report, not hang
        queue.put(repr(e))


@pytest.mark.parametrize("where", ["local", "http"])
def test_forked_child_uses_the_parents_objects(big, http, where):
    """As a DataLoader's forked workers do: the dataset is inherited, not pickled."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork here")
    path, expected = big
    ctx = multiprocessing.get_context("fork")
    with nd2gpu.ND2File(str(path) if where == "local" else http[0]) as f:
        layers = f.binary_data
        np.testing.assert_array_equal(np.asarray(layers), expected)  # pool, map
        queue = ctx.Queue()
        child = ctx.Process(target=_inherited, args=(layers, queue))
        child.start()
        got = queue.get(timeout=CHILD_TIMEOUT)
        child.join(timeout=CHILD_TIMEOUT)
    assert child.exitcode == 0
    assert got == expected.tobytes()


class MaskFrames:
    """docs/loaders.md's dataset, without torch: what DataLoader workers call."""

    def __init__(self, path: Any, layer: int = 0) -> None:
        with nd2gpu.ND2File(path) as f:
            self.layer = f.binary_data[layer]

    def __len__(self) -> int:
        return len(self.layer)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.layer.decode(i).astype(np.int64)


def _items(dataset: MaskFrames, indices: list[int]) -> list[np.ndarray]:
    return [dataset[i] for i in indices]


@pytest.mark.parametrize(
    "method", ["fork", pytest.param("spawn", marks=pytest.mark.slow)]
)
def test_loader_dataset_in_worker_processes(big, method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} here")
    path, expected = big
    dataset = MaskFrames(path, 1)
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        parts = pool.starmap(_items, [(dataset, [3, 0]), (dataset, [2, 1])])
    got = np.stack([*parts[0], *parts[1]])
    np.testing.assert_array_equal(got, expected[1].reshape(4, *FRAME)[[3, 0, 2, 1]])


@pytest.mark.parametrize("closed", [False, True])
def test_unpickled_file_opens_nd2s_reader_only_when_needed(big, http, closed):
    url, files = http
    path, expected = big
    size = path.stat().st_size
    f = nd2gpu.ND2File(url, device="cpu")
    f.binary_data  # noqa: B018 - the layers' metadata travels with the file
    if closed:
        f.close()
    data = pickle.dumps(f)
    f.close()
    files.reset()
    clone = pickle.loads(data)
    assert files.requests == [] and clone.closed is closed
    assert pickle.loads(pickle.dumps(clone)).closed is closed  # still lazy
    np.testing.assert_array_equal(clone.binary_data[0].asarray(), expected[0])
    assert all(r.range and r.range[1] - r.range[0] < size for r in files.gets())
    assert clone.closed is closed  # decoding did not open nd2's reader
    files.reset()
    with clone:  # nd2's API: its reader is made now
        assert not clone.closed
        assert clone.sizes == {"T": 2, "Z": 2, "Y": FRAME[0], "X": FRAME[1]}
        np.testing.assert_array_equal(np.asarray(clone.binary_data), expected)
    assert clone.closed
    assert files.requests


def test_unpickled_file_reads_nd2_metadata_when_asked(big):
    path, _ = big
    with nd2gpu.ND2File(path) as f:
        clone = pickle.loads(pickle.dumps(f))
        sizes = f.sizes
    assert not clone.closed
    assert clone.sizes == sizes  # makes nd2's reader, open as when pickled
    assert not clone.closed
    clone.close()
    assert clone.closed
