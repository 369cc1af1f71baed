"""Resource limits: no allocation sized by an unchecked header word, and max_bytes.

Hostile headers must fail fast (well under a second) with a clear message before
anything is allocated for them; zip bombs are cut off at the cap their header
allows; ``max_bytes`` refuses oversized results before decoding anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from counting import CountingInflate
from nd2_surgery import rewrite
from streams import payload, stream_words

import nd2gpu
from nd2gpu._decode import inflate as _inflate
from nd2gpu._write.nd2_writer import _experiment

#: What a refusal may allocate (traced by tracemalloc): a refusal happens before
#: anything the hostile sizes ask for is allocated. Hangs are caught by the
#: per-test timeout (pytest-timeout, pyproject.toml).
REFUSAL_BYTES = 32 << 20


@pytest.fixture(autouse=True, scope="module")
def _compiled() -> None:
    """Load the numba kernels before anything is timed."""
    nd2gpu.decode_binary_mask(payload(stream_words(2, 2, [(1, [(0, [(0, 1)])])])))


def refused(
    call: Callable[[], object], error: type[BaseException], match: str
) -> BaseException:
    """Run ``call``; it must raise ``error`` matching ``match`` without allocating
    more than ``REFUSAL_BYTES`` on the way."""
    tracemalloc.start()
    try:
        with pytest.raises(error, match=match) as info:
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < REFUSAL_BYTES, f"allocated {peak} bytes before refusing"
    return info.value


def with_frame(make_nd2, tmp_path: Path, words: np.ndarray, loops=(("T", 2),)):
    """A file whose layer "a" has ``words`` as frame 0 (others are random labels)."""
    path, labels = make_nd2(loops=loops, layers=("a",))
    name = b"CustomDataSeq|RleZipBinarySequence_1_v1|0!"
    data = b"\0\0\0\0" + payload(words)
    out = rewrite(path, tmp_path / "hostile.nd2", lambda n, d: data if n == name else d)
    return out, labels


# ---------------------------------------------------------------------------
# huge frames and run counts


def huge_frame() -> np.ndarray:
    words = stream_words(1, 1, [(1, [(0, [(0, 1)])])])
    words[1] = words[2] = 100_000
    return words


def claim(index: int, value: int) -> np.ndarray:
    """One run in a 4x4 frame, with word ``index`` set to ``value``."""
    words = stream_words(4, 4, [(1, [(0, [(0, 1)])])])
    words[index] = value
    return words


@pytest.mark.parametrize(
    ("words", "match"),
    [
        (huge_frame(), "100000x100000 frame"),
        (claim(17, 1_000_000_000), "ends inside a record"),  # runs in the row
        (claim(13, 0xFFFFFFFF), "ends inside a record"),  # rows in the mask
        (claim(3, 0xFFFFFFFF), "ends inside a record"),  # masks in the frame
    ],
    ids=["frame", "runs", "rows", "masks"],
)
def test_hostile_counts_fail_fast(words: np.ndarray, match: str) -> None:
    error = refused(
        lambda: nd2gpu.decode_binary_mask(payload(words)), nd2gpu.DecodeError, match
    )
    assert error.offset is not None


def test_huge_frame_in_a_file_fails_fast_everywhere(make_nd2, tmp_path) -> None:
    path, _ = with_frame(make_nd2, tmp_path, huge_frame())
    with nd2gpu.ND2File(path, device="cpu") as f:
        layers = f.binary_data
        layer = layers[0]
        calls = [
            lambda: layer.frame_shape,
            lambda: layer[0],
            layer.asarray,
            lambda: layer.decode([0]),
            layers.asarray,
            lambda: np.asarray(layers),
        ]
        for call in calls:
            error = refused(call, nd2gpu.DecodeError, "100000x100000")
            assert (error.path, error.layer, error.frame) == (str(path), "a", 0)
            assert f"file {str(path)!r}" in str(error) and "frame 0" in str(error)
        assert layer[1] is not None  # the other frame decodes alone


def test_billion_runs_in_a_file_fail_fast(make_nd2, tmp_path) -> None:
    words = stream_words(13, 17, [(1, [(0, [(0, 1)])])])
    words[7 + 9 + 1] = 1_000_000_000
    path, _ = with_frame(make_nd2, tmp_path, words)
    with nd2gpu.ND2File(path, device="cpu") as f:
        layer = f.binary_data[0]
        for call in (lambda: layer[0], layer.asarray, lambda: layer.decode([0, 1])):
            error = refused(call, nd2gpu.DecodeError, "ends inside a record")
            assert error.frame == 0 and error.layer == "a"


def test_block_larger_than_memory_is_refused_before_decoding(
    make_nd2, tmp_path, monkeypatch
) -> None:
    # Frame 0 claims 46340 x 46340 (just under MAX_FRAME_PIXELS): 64 such frames
    # need 275 GB. Refused at once, nothing inflated.
    words = stream_words(46340, 46340, [])
    path, _ = with_frame(make_nd2, tmp_path, words, loops=(("T", 64),))
    inflates = CountingInflate(monkeypatch)
    with nd2gpu.ND2File(path, device="cpu") as f:
        layers = f.binary_data
        assert layers[0].frame_shape == (46340, 46340)
        for call in (layers[0].asarray, layers.asarray):
            refused(call, MemoryError, "bytes of memory")
        refused(lambda: layers[0].decode(range(64)), MemoryError, "memory")
    assert inflates.calls == 0


def with_experiment(make_nd2, tmp_path: Path, count: int):
    """Layers "a" (frames 0 and 1) and "b" (no frame at all) under an experiment
    whose (corrupt) loop claims ``count`` frames."""
    path, labels = make_nd2(loops=(("T", 2),), layers=("a", "b"))
    huge = _experiment([("T", count)])

    def edit(name: bytes, data: bytes) -> bytes | None:
        if name == b"ImageMetadataLV!":
            return huge
        return None if b"RleZipBinarySequence_2_v1" in name else data

    return rewrite(path, tmp_path / "exp.nd2", edit), labels


def test_experiment_claiming_two_billion_frames(make_nd2, tmp_path) -> None:
    # Single frames still decode; nothing walks two billion frame indices (the
    # frames with chunks come from the chunk map); stacking is refused before
    # any per-frame bookkeeping.
    bad, labels = with_experiment(make_nd2, tmp_path, 1 << 31)
    with nd2gpu.ND2File(bad, device="cpu") as f:
        layers = f.binary_data
        a, b = layers
        assert len(a) == 1 << 31 and a.coordinate_shape == (1 << 31,)
        np.testing.assert_array_equal(a[1], labels["a"][1])
        assert a[5] is None and b[0] is None
        assert a.frame_shape == (13, 17) and b.frame_shape == (0, 0)
        assert b.asarray() is None
        np.testing.assert_array_equal(a.decode([0, -1]).shape, (2, 13, 17))
        assert not a.decode([-1]).any()
        for call in (a.asarray, layers.asarray):
            refused(call, MemoryError, "memory")


def test_many_claimed_frames_few_chunks_decode_only_those(
    make_nd2, tmp_path, monkeypatch
) -> None:
    # Four million claimed frames, two with a mask: the block is allocated (and
    # stays mostly untouched); only the two frames are decoded.
    n = 1 << 22
    bad, labels = with_experiment(make_nd2, tmp_path, n)
    inflates = CountingInflate(monkeypatch)
    with nd2gpu.ND2File(bad, device="cpu") as f:
        layers = f.binary_data
        stack = layers[0].asarray()
        both = layers.asarray()
        assert stack.shape == (n, 13, 17) and both.shape == (1, n, 13, 17)
        np.testing.assert_array_equal(stack[:2], labels["a"])
        np.testing.assert_array_equal(both[0, :2], labels["a"])
        assert not stack[2:100].any() and not stack[-100:].any()
    assert inflates.calls == 4  # two frames, two stacks


# ---------------------------------------------------------------------------
# inflate caps


def bomb(words: np.ndarray, inflated_bytes: int) -> bytes:
    """A zlib stream of ``words`` followed by zeros, ``inflated_bytes`` in all."""
    import zlib

    co = zlib.compressobj(1)
    parts = [co.compress(words.astype("<u4").tobytes())]
    left = inflated_bytes - 4 * len(words)
    chunk = bytes(1 << 20)
    while left > 0:
        parts.append(co.compress(chunk[: min(left, len(chunk))]))
        left -= len(chunk)
    return b"".join([*parts, co.flush()])


def test_cap_follows_the_header(monkeypatch) -> None:
    monkeypatch.setattr(_inflate, "MIN_INFLATE_CAP", 4096)
    words = stream_words(16, 16, [(3, [(2, [(1, 4)])])])  # cap: 64 * 256 = 16384
    fits = nd2gpu.decode_binary_mask(bomb(words, 16384))
    assert fits[2, 1:5].tolist() == [3] * 4 and np.count_nonzero(fits) == 4
    error = refused(
        lambda: nd2gpu.decode_binary_mask(bomb(words, 16388)),
        nd2gpu.DecodeError,
        "past 16384 bytes, more than a 16x16 frame can need",
    )
    assert error.offset == 16384


def test_cap_never_exceeds_a_share_of_memory(monkeypatch) -> None:
    monkeypatch.setattr(_inflate, "MIN_INFLATE_CAP", 4096)
    monkeypatch.setattr(_inflate, "MEMORY_INFLATE_CAP", 8192)
    words = stream_words(16, 16, [])  # its header alone would allow 16384 bytes
    assert _inflate.inflate_cap(16, 16) == 8192
    assert _inflate.inflate_cap(46340, 46340) == 8192
    refused(
        lambda: nd2gpu.decode_binary_mask(bomb(words, 12000)),
        nd2gpu.DecodeError,
        "past 8192 bytes, 1/8 of this machine's memory",
    )


def test_real_memory_cap_is_a_share_of_physical_memory() -> None:
    import os

    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    expected = max(_inflate.MIN_INFLATE_CAP, physical // _inflate.MEMORY_SHARE)
    assert expected == _inflate.MEMORY_INFLATE_CAP
    assert _inflate.inflate_cap(1, 1) == _inflate.MIN_INFLATE_CAP
    assert _inflate.inflate_cap(46340, 46340) <= physical // 8 + (64 << 20)


@pytest.mark.slow
def test_zip_bomb_memory_stays_near_the_cap(tmp_path) -> None:
    # In a fresh process (ru_maxrss is per process and never goes down): a 1x1
    # frame whose stream inflates to 768 MiB is cut off at the 64 MiB cap.
    script = textwrap.dedent(
        """
        import resource, sys, time, zlib
        sys.path.insert(0, sys.argv[1])
        import nd2gpu
        from streams import stream_words

        co = zlib.compressobj(1)
        head = co.compress(stream_words(1, 1, []).tobytes())
        chunk = bytes(1 << 20)
        data = head + b"".join(co.compress(chunk) for _ in range(768)) + co.flush()
        del chunk
        nd2gpu.decode_binary_mask(zlib.compress(stream_words(1, 1, []).tobytes()))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        try:
            nd2gpu.decode_binary_mask(data)
        except nd2gpu.DecodeError as e:
            assert "zip bomb" in str(e), e
        else:
            raise SystemExit("the bomb was decoded")
        took = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) // 1024, took)
        """
    )
    tests = str(Path(__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", script, tests],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"},
    )
    assert done.returncode == 0, done.stderr
    grown_mib, _seconds = done.stdout.split()
    assert int(grown_mib) < 200, f"peak memory grew {grown_mib} MiB"


# ---------------------------------------------------------------------------
# max_bytes


@pytest.fixture
def two_layers(make_nd2):
    path, labels = make_nd2(loops=(("T", 2), ("Z", 3)), layers=("a", "b"))
    with nd2gpu.ND2File(path, device="cpu") as f:
        yield f.binary_data, labels


def test_max_bytes_layer_asarray(two_layers, monkeypatch) -> None:
    layers, labels = two_layers
    need = 2 * 6 * 13 * 17
    inflates = CountingInflate(monkeypatch)
    with pytest.raises(MemoryError, match=f"needs {need} bytes.*max_bytes={need - 1}"):
        layers[0].asarray(max_bytes=need - 1)
    assert inflates.calls == 0
    got = layers[0].asarray(max_bytes=need)
    np.testing.assert_array_equal(got, labels["a"])


def test_max_bytes_layers_asarray(two_layers, monkeypatch) -> None:
    layers, labels = two_layers
    need = 2 * 2 * 6 * 13 * 17
    inflates = CountingInflate(monkeypatch)
    with pytest.raises(MemoryError, match=f"max_bytes={need - 1}"):
        layers.asarray(max_bytes=need - 1)
    assert inflates.calls == 0
    got = layers.asarray(device="cpu", max_bytes=need)
    np.testing.assert_array_equal(got, np.stack([labels["a"], labels["b"]]))


def test_max_bytes_layer_decode(two_layers, monkeypatch) -> None:
    layers, labels = two_layers
    frames = [0, 5, 5, -1]
    need = 2 * len(frames) * 13 * 17
    inflates = CountingInflate(monkeypatch)
    with pytest.raises(MemoryError, match=f"max_bytes={need - 1}"):
        layers[1].decode(frames, max_bytes=need - 1)
    assert inflates.calls == 0
    got = layers[1].decode(frames, max_bytes=need)
    flat = labels["b"].reshape(6, 13, 17)
    np.testing.assert_array_equal(got, flat[[0, 5, 5, 5]])
