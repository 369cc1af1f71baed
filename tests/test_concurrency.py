"""Threads and file handles: correct results from many threads, no leaked descriptor.

Descriptors are counted in /proc/self/fd and memory maps of the file in
/proc/self/maps (Linux).
"""

from __future__ import annotations

import gc
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import nd2gpu
from nd2gpu._decode.mask_source import MaskSource

pytestmark = [
    pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc"),
    # nd2 warns when an unclosed ND2File is garbage-collected: that is tested here.
    pytest.mark.filterwarnings("ignore:ND2File file not closed"),
]

THREADS = 8


def open_fds() -> int:
    """Descriptors of this process open on files (sockets, pipes and event
    loops aside: other tests' HTTP clients close theirs in the background)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("/")
        except OSError:  # closed meanwhile
            continue
    return count


def maps_of(path: Path) -> int:
    """Memory maps of ``path`` in this process."""
    with open("/proc/self/maps") as fh:
        return sum(line.rstrip().endswith(str(path)) for line in fh)


@pytest.fixture
def sample(make_nd2):
    path, labels = make_nd2(loops=(("T", 3), ("Z", 2)), layers=("a", "b"))
    stacked = np.stack([labels["a"], labels["b"]])
    return path, stacked


def calls(layers: nd2gpu.BinaryLayers, expected: np.ndarray) -> list:
    """Every way of reading the layers, each paired with the answer it must give."""
    flat = expected.reshape(2, 6, *expected.shape[-2:])
    out = [
        (lambda: layers.asarray(device="cpu"), expected),
        (lambda: np.asarray(layers), expected),
        (lambda: layers[1].asarray(device="cpu"), expected[1]),
        (lambda: layers[0].decode([5, 0, 3], device="cpu"), flat[0, [5, 0, 3]]),
        (lambda: np.stack(layers[1].data), flat[1]),
    ]
    out += [
        (lambda i=i, s=s: layers[i][s], flat[i, s]) for i in range(2) for s in range(6)
    ]
    return out


def hammer(layers: nd2gpu.BinaryLayers, expected: np.ndarray, rounds: int) -> int:
    """Run every call ``rounds`` times from THREADS threads; check every answer."""
    work = calls(layers, expected) * rounds
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda call: call[0](), work))
    for (_, want), got in zip(work, results, strict=True):
        np.testing.assert_array_equal(got, want)
    return len(work)


def test_one_object_from_many_threads(sample) -> None:
    path, expected = sample
    with nd2gpu.ND2File(path, device="cpu") as f:
        assert hammer(f.binary_data, expected, rounds=10) == 170


def test_first_use_from_many_threads_at_once(sample) -> None:
    # Nothing is cached yet (frame_shape, data, the memory map) when 8 threads
    # start together.
    path, expected = sample
    for _ in range(5):
        with nd2gpu.ND2File(path, device="cpu") as f:
            layers = f.binary_data
            barrier = threading.Barrier(THREADS)

            def first(
                i: int,
                layers: nd2gpu.BinaryLayers = layers,
                barrier: threading.Barrier = barrier,
            ) -> np.ndarray:
                barrier.wait()
                return layers[i % 2].data[i % 6] if i % 3 else layers.asarray()

            with ThreadPoolExecutor(THREADS) as pool:
                got = list(pool.map(first, range(THREADS)))
        flat = expected.reshape(2, 6, *expected.shape[-2:])
        for i, g in enumerate(got):
            np.testing.assert_array_equal(g, flat[i % 2, i % 6] if i % 3 else expected)


def test_same_file_opened_in_many_threads(sample) -> None:
    path, expected = sample
    fds = open_fds()

    def open_and_read(i: int) -> np.ndarray:
        with nd2gpu.ND2File(path, device="cpu") as f:
            layers = f.binary_data
            return layers[i % 2][i % 6] if i % 2 else np.asarray(layers)

    with ThreadPoolExecutor(THREADS) as pool:
        got = list(pool.map(open_and_read, range(64)))
    flat = expected.reshape(2, 6, *expected.shape[-2:])
    for i, g in enumerate(got):
        np.testing.assert_array_equal(g, flat[i % 2, i % 6] if i % 2 else expected)
    assert open_fds() == fds and maps_of(path) == 0


def test_layers_after_close_from_many_threads(sample) -> None:
    path, expected = sample
    fds = open_fds()
    with nd2gpu.ND2File(path, device="cpu") as f:
        layers = f.binary_data
        layers[0].frame_shape  # noqa: B018 - maps the file while it is open
        assert maps_of(path) >= 1
    assert open_fds() == fds and maps_of(path) == 0
    hammer(layers, expected, rounds=3)  # each call reopens the file briefly
    assert open_fds() == fds and maps_of(path) == 0


def test_close_while_other_threads_decode(sample, monkeypatch) -> None:
    # Calls in flight when the file is closed finish with the right answer; the
    # map is released when the last of them is done. Every payload read waits
    # until the file is closed, so the calls are certainly in flight then.
    path, expected = sample
    fds = open_fds()
    read_payload = MaskSource.payload
    for _ in range(5):
        f = nd2gpu.ND2File(path, device="cpu")
        layers = f.binary_data
        assert [layer.frame_shape for layer in layers] == [expected.shape[-2:]] * 2
        reading, closed = threading.Event(), threading.Event()

        def payload(self, *args, reading=reading, closed=closed):
            reading.set()
            assert closed.wait(timeout=60), "the file was never closed"
            return read_payload(self, *args)

        monkeypatch.setattr(MaskSource, "payload", payload)
        work = calls(layers, expected) * 3
        with ThreadPoolExecutor(THREADS) as pool:
            futures = [pool.submit(call) for call, _ in work]
            assert reading.wait(timeout=60)
            assert maps_of(path) >= 1
            f.close()
            closed.set()
            results = [future.result() for future in futures]
        monkeypatch.setattr(MaskSource, "payload", read_payload)
        for (_, want), got in zip(work, results, strict=True):
            np.testing.assert_array_equal(got, want)
        assert open_fds() == fds and maps_of(path) == 0


def test_close_releases_descriptors_and_maps(sample) -> None:
    path, expected = sample
    fds = open_fds()
    f = nd2gpu.ND2File(path, device="cpu")
    np.testing.assert_array_equal(np.asarray(f.binary_data), expected)
    assert open_fds() > fds and maps_of(path) >= 1
    f.close()
    assert open_fds() == fds and maps_of(path) == 0
    f.close()  # idempotent
    assert open_fds() == fds


def test_garbage_collected_unclosed_file_releases_everything(sample) -> None:
    path, expected = sample
    fds = open_fds()
    f = nd2gpu.ND2File(path, device="cpu")
    layers = f.binary_data
    np.testing.assert_array_equal(np.asarray(layers), expected)
    assert maps_of(path) >= 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        del f
        gc.collect()
    # The layers outlive the file: they no longer hold its map, and still decode.
    assert open_fds() == fds and maps_of(path) == 0
    np.testing.assert_array_equal(layers[1][4], expected.reshape(2, 6, 13, 17)[1, 4])
    assert open_fds() == fds and maps_of(path) == 0
    del layers
    gc.collect()
    assert open_fds() == fds and maps_of(path) == 0


@pytest.mark.slow
def test_no_descriptor_leak_over_thousands_of_opens(make_nd2) -> None:
    path, labels = make_nd2(loops=(), layers=("a",), frame_shape=(4, 5))
    expected = labels["a"]
    with nd2gpu.ND2File(path, device="cpu") as f:  # warm up (numba, imports)
        np.asarray(f.binary_data)
    fds = open_fds()
    for i in range(2000):
        with nd2gpu.ND2File(path, device="cpu") as f:
            layer = f.binary_data[0]
            got = layer[0] if i % 2 else layer.asarray()
        if i % 250 == 0:
            np.testing.assert_array_equal(got, expected)
            assert open_fds() == fds
    assert open_fds() == fds and maps_of(path) == 0


@pytest.mark.slow
def test_no_descriptor_leak_from_unclosed_files(make_nd2) -> None:
    # Files never closed, left to the garbage collector (nd2's __del__, which
    # warns, is slow: fewer cycles here).
    path, labels = make_nd2(loops=(), layers=("a",), frame_shape=(4, 5))
    fds = open_fds()
    for i in range(300):
        f = nd2gpu.ND2File(path, device="cpu")
        got = f.binary_data[0][0] if i % 2 else np.asarray(f.binary_data)[0]
        np.testing.assert_array_equal(got, labels["a"])
        del f, got
        if i % 50 == 0:
            gc.collect()
    gc.collect()
    assert open_fds() == fds and maps_of(path) == 0
