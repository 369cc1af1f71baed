"""Fuzzing nd2gpu against nd2 with hypothesis: payloads, whole files, the writer.

A bounded run for CI (3,550 cases in all). For millions of cases run the
atheris target (tests/fuzz_atheris.py) or raise the example counts with
``ND2GPU_FUZZ_EXAMPLES=<factor>`` (each test runs factor x its CI count).

The oracles are in tests/fuzz_payload_oracle.py and tests/fuzz_file_oracle.py:
where nd2 decodes, nd2gpu gives the same arrays; where nd2 fails on the binary
data, nd2gpu raises DecodeError and nothing else; where nd2 cannot even open the
file (file-level metadata that nd2gpu also reads through nd2), nd2gpu may raise
what nd2 raises there.
"""

from __future__ import annotations

import os
import struct
import tempfile
import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import nd2
import numpy as np
import pytest
from fuzz_file_oracle import check_file
from fuzz_mutations import (
    base_files,
    delete_bytes,
    flip_bits,
    insert_bytes,
    mutate_file,
    set_words,
)
from fuzz_payload_oracle import SMALL_FRAME_PIXELS, WILD_WORDS, check_payload
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nd2_surgery import chunks, rewrite
from streams import payload, stream_words

import nd2gpu
from nd2gpu._decode.runs import RunList, new_results
from nd2gpu._format.container import BINARY_METADATA_CHUNK
from nd2gpu._format.mask_encode import encode_label_frame, encode_mask_chunk
from nd2gpu._limits import MAX_FRAME_PIXELS
from nd2gpu._write.atomic import atomic_file as _atomic_output
from nd2gpu._write.nd2_writer import _ChunkWriter
from nd2gpu.kernels._parse_kernels import GROUP_FRAMES, R_PIXELS

pytestmark = pytest.mark.fuzz

FACTOR = max(1, int(os.environ.get("ND2GPU_FUZZ_EXAMPLES", "1")))


def fuzz_settings(n: int) -> settings:
    return settings(
        max_examples=n * FACTOR,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ---------------------------------------------------------------------------
# single payloads

ids = st.one_of(st.integers(0, 5), st.sampled_from([0xFFFF, 0x10000, (1 << 32) - 1]))


@st.composite
def hand_streams(draw: st.DrawFn) -> bytes:
    """Words of a stream built by hand: any rows, runs, ids (tests/streams.py)."""
    nrows = draw(st.integers(0, 9))
    ncols = draw(st.integers(0, 9))
    run = st.tuples(st.integers(0, ncols + 2), st.integers(0, ncols + 2))
    row = st.tuples(st.integers(0, nrows + 1), st.lists(run, max_size=3))
    masks = draw(st.lists(st.tuples(ids, st.lists(row, max_size=3)), max_size=4))
    return stream_words(nrows, ncols, masks).tobytes()


@st.composite
def label_streams(draw: st.DrawFn) -> bytes:
    """Words of a label image as write_nd2 encodes it (encode_mask_chunk)."""
    ny, nx = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    values = st.one_of(st.integers(0, 4), st.just(0xFFFF))
    flat = draw(st.lists(values, min_size=ny * nx, max_size=ny * nx))
    return encode_label_frame(np.array(flat, np.uint16).reshape(ny, nx))


streams = st.one_of(hand_streams(), label_streams())
flips = st.lists(
    st.tuples(st.integers(0, 1 << 12), st.integers(0, 7)), min_size=1, max_size=4
)


def run_fuzz(test: Callable[..., None], outcomes: Counter[str]) -> Counter[str]:
    """Run a hypothesis test and return (and print) the outcomes it counted."""
    test()
    name = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    print(f"\n{name}: {sum(outcomes.values())} cases, {dict(sorted(outcomes.items()))}")
    return outcomes


@st.composite
def byte_edits(draw: st.DrawFn, data: bytes) -> bytes:
    """Bit flips, insertions, deletions or a truncation of ``data``."""
    kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
    if kind == "flip":
        return flip_bits(data, draw(flips))
    pos = draw(st.integers(0, 1 << 12))
    if kind == "insert":
        return insert_bytes(data, pos, draw(st.binary(min_size=1, max_size=8)))
    if kind == "delete":
        return delete_bytes(data, pos, draw(st.integers(1, 8)))
    return data[: draw(st.integers(0, len(data)))]


def test_fuzz_compressed_payload_edits() -> None:
    """Damage to the zlib stream itself: bit flips, insertions, cuts."""
    outcomes: Counter[str] = Counter()

    @fuzz_settings(500)
    @given(streams, st.integers(0, 9), st.data())
    def fuzz(words: bytes, level: int, data: st.DataObject) -> None:
        outcomes[check_payload(data.draw(byte_edits(zlib.compress(words, level))))] += 1

    run_fuzz(fuzz, outcomes)
    assert outcomes["both-fail"] and outcomes["equal"]


def test_fuzz_inflated_word_edits() -> None:
    """Damage to the words, in a valid zlib stream: it reaches the parser."""
    outcomes: Counter[str] = Counter()

    @fuzz_settings(700)
    @given(streams, st.data())
    def fuzz(words: bytes, data: st.DataObject) -> None:
        outcomes[check_payload(zlib.compress(data.draw(byte_edits(words))))] += 1

    run_fuzz(fuzz, outcomes)
    assert outcomes["both-fail"] and outcomes["equal"]


wild = st.one_of(st.sampled_from(WILD_WORDS), st.integers(0, (1 << 32) - 1))


def test_fuzz_wild_header_words() -> None:
    """Huge nrows/ncols/nmasks, odd version words and byte counts."""
    outcomes: Counter[str] = Counter()
    edits = st.lists(st.tuples(st.integers(0, 6), wild), min_size=1, max_size=4)

    @fuzz_settings(500)
    @given(streams, edits)
    def fuzz(words: bytes, edits: list[tuple[int, int]]) -> None:
        edited = set_words(words, edits)
        ncols, nrows = struct.unpack_from("<2I", edited, 4)
        if SMALL_FRAME_PIXELS < nrows * ncols <= MAX_FRAME_PIXELS:
            # Decoding may write gigabytes there: test_large_frames_* covers it.
            edited = set_words(edited, [(1, ncols % 1024), (2, nrows % 1024)])
        outcomes[check_payload(zlib.compress(edited))] += 1

    run_fuzz(fuzz, outcomes)
    assert outcomes["both-fail"] and outcomes["equal"] and outcomes["refused"]


def test_fuzz_wild_row_and_run_words() -> None:
    """Huge ids, row numbers, run counts, columns and lengths in the body."""
    outcomes: Counter[str] = Counter()
    edits = st.lists(st.tuples(st.integers(7, 200), wild), min_size=1, max_size=4)

    @fuzz_settings(500)
    @given(streams, edits)
    def fuzz(words: bytes, edits: list[tuple[int, int]]) -> None:
        if len(words) > 28:  # a body to edit (set_words wraps into it)
            n = len(words) // 4 - 7
            words = set_words(words, [(7 + i % n, v) for i, v in edits])
        outcomes[check_payload(zlib.compress(words))] += 1

    run_fuzz(fuzz, outcomes)
    assert outcomes["both-fail"] and outcomes["equal"]


def test_fuzz_arbitrary_bytes() -> None:
    """Anything at all as the payload, or as the inflated stream."""
    outcomes: Counter[str] = Counter()
    anything = st.binary(max_size=200)

    @fuzz_settings(200)
    @given(st.one_of(anything, anything.map(zlib.compress)))
    def fuzz(data: bytes) -> None:
        outcomes[check_payload(data)] += 1

    run_fuzz(fuzz, outcomes)
    assert outcomes["both-fail"]


@pytest.mark.parametrize(
    ("nrows", "ncols", "masks", "outcome"),
    [
        # A tall frame; a run on its last row, an empty row far outside.
        (
            1 << 12,
            1 << 11,
            [(2, [((1 << 12) - 1, [(100, 50)]), (1 << 21, [])])],
            "cropped",
        ),
        # A wide one; overlapping runs (the later id wins), a run past the edge.
        (
            3,
            1 << 29,
            [(2, [(2, [(5, 9)])]), (4, [(2, [(7, 1), (1 << 29, 5)])])],
            "cropped",
        ),
        # Too large for nd2's allocation here, and a row outside it.
        (1 << 16, 1 << 14, [(2, [(1 << 16, [(0, 1)])])], "both-fail"),
    ],
)
def test_large_frames_against_cropped_reference(nrows, ncols, masks, outcome) -> None:
    assert check_payload(payload(stream_words(nrows, ncols, masks))) == outcome


def test_longest_row_accepted_decodes_exactly() -> None:
    # One row of MAX_FRAME_PIXELS (2**31 - 1) pixels: runs clipped at its right
    # edge. (The reference would allocate 4 GiB: checked by hand here.)
    n = MAX_FRAME_PIXELS
    masks = [(9, [(0, [(n - 6, 100), (3, 2)])]), (0, [(0, [(n - 3, 1)])])]
    got = nd2gpu.decode_binary_mask(payload(stream_words(1, n, masks)))
    assert got.shape == (1, n) and got.dtype == np.uint16
    np.testing.assert_array_equal(got[0, -8:], [0, 0, 9, 9, 9, 0, 9, 9])
    np.testing.assert_array_equal(got[0, :6], [0, 0, 0, 9, 9, 0])
    assert np.count_nonzero(got[0, : 1 << 16]) == 2
    assert np.count_nonzero(got[0, -(1 << 16) :]) == 5
    # A run over the whole row: its length is the largest the run table holds.
    words = stream_words(1, n, [(7, [(0, [(0, n)])])])
    stream = np.frombuffer(zlib.decompress(payload(words)), np.uint8)
    runs = RunList()
    spans = np.zeros((1, 2), np.int64)
    results = new_results(1)
    streams = (stream,) + (stream[:0],) * (GROUP_FRAMES - 1)
    present = np.ones(GROUP_FRAMES, np.uint8)
    assert runs.record(streams, present, 1, (1, n), spans, results) == 1
    assert tuple(spans[0]) == (0, 1) and results[0, R_PIXELS] == n
    assert runs.lengths[0] == n and runs.cols[0] == 0 and runs.values[0] == 7


def test_frame_of_2_to_31_pixels_is_refused_not_misdecoded() -> None:
    # Regression: a 1 x 2**31 frame passed the pixel limit, and its full-row
    # run overflowed the run table's int32 length into an empty slice: a silently
    # blank mask. Such a frame is now refused before anything is allocated.
    words = stream_words(1, 1 << 31, [(5, [(0, [(0, 1 << 31)])])])
    with pytest.raises(nd2gpu.DecodeError, match="1x2147483648"):
        nd2gpu.decode_binary_mask(payload(words))
    assert check_payload(payload(words)) == "refused"


# ---------------------------------------------------------------------------
# whole files

_BASES: dict[str, bytes] = {}


def bases() -> dict[str, bytes]:
    if not _BASES:
        _BASES.update(base_files(Path(tempfile.mkdtemp(prefix="nd2gpu-fuzz-"))))
    return _BASES


#: Mutation indices (see fuzz_mutations.FILE_MUTATIONS), the binary parts weighted.
MUTATIONS = st.sampled_from([0, 1, 1, 2, 2, 3, 4, 4, 5, 5, 6, 7, 8, 9, 10, 11])
step = st.tuples(MUTATIONS, st.integers(0, 1 << 20), st.integers(0, 1 << 20))


def test_fuzz_file_mutations() -> None:
    """Chunk-map entries outside the file, overlapping and truncated chunks, a
    missing map signature, cut tails, bit flips in the map and mask chunks."""
    outcomes: Counter[str] = Counter()
    names = st.sampled_from(sorted(bases()))

    @fuzz_settings(900)
    @given(names, st.lists(step, min_size=1, max_size=3))
    def fuzz(base: str, steps: list[tuple[int, int, int]]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "case.nd2"
            path.write_bytes(mutate_file(bases()[base], steps))
            outcomes[check_file(path).kind] += 1

    run_fuzz(fuzz, outcomes)
    assert outcomes["equal"] and outcomes["binary-fails"]


def test_intact_base_files_agree() -> None:
    for name, data in bases().items():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.nd2"
            path.write_bytes(data)
            assert check_file(path).kind == "equal"


# Regressions found by the file fuzzer --------------------------------------------


def _set_chunk_data_len(path: Path, name: bytes, value: int) -> None:
    data = bytearray(path.read_bytes())
    offset = dict((n, o) for n, o, _, _ in chunks(path))[name]
    data[offset + 8 : offset + 16] = value.to_bytes(8, "little")
    path.write_bytes(bytes(data))


def test_chunk_claiming_2_to_63_bytes_is_a_decode_error(make_nd2) -> None:
    # nd2 cannot read such a chunk (OverflowError); nd2gpu cut it at the end of
    # the file and decoded it. Now it is a DecodeError naming the chunk offset.
    path, _ = make_nd2(loops=(("T", 2),), layers=("a",))
    name = b"CustomDataSeq|RleZipBinarySequence_1_v1|1!"
    _set_chunk_data_len(path, name, 1 << 63)
    assert check_file(path).kind == "binary-fails"
    with nd2gpu.ND2File(path, device="cpu") as f:
        layer = f.binary_data[0]
        assert layer[0] is not None
        with pytest.raises(nd2gpu.DecodeError, match="claims 9223372036854775808"):
            layer[1]


def test_chunk_claiming_more_than_the_file_is_cut_like_nd2(make_nd2) -> None:
    # nd2 on a path tries to allocate 2**44 bytes for it (MemoryError); nd2 on
    # the same bytes in a BytesIO, and nd2gpu, cut the chunk at the end of file.
    path, labels = make_nd2(loops=(("T", 2),), layers=("a",))
    _set_chunk_data_len(path, b"CustomDataSeq|RleZipBinarySequence_1_v1|1!", 1 << 44)
    assert check_file(path).kind == "equal"
    with nd2gpu.ND2File(path, device="cpu") as f:
        np.testing.assert_array_equal(f.binary_data[0][1], labels["a"][1])


def _corrupt_chunk(path: Path, out: Path, name: bytes, data: bytes) -> Path:
    return rewrite(path, out, lambda n, d: data if n == name else d)


@pytest.mark.filterwarnings("ignore:Could not find 'BinaryMetadata_v1'")
@pytest.mark.filterwarnings("ignore:.*without the 'BinaryMetadata_v1' tag")
@pytest.mark.parametrize(
    "garbage", [b"", b"\x00" * 8, b"\xff" * 64, b"<variant><no>", b"\x02\x41\x00"]
)
def test_corrupt_binary_metadata_is_a_decode_error(make_nd2, tmp_path, garbage) -> None:
    # nd2's own decoding errors (struct.error, IndexError, ...) came through
    # nd2gpu's binary_data unchanged.
    path, _ = make_nd2(loops=(("T", 2),), layers=("a",))
    bad = _corrupt_chunk(path, tmp_path / "meta.nd2", BINARY_METADATA_CHUNK, garbage)
    with nd2.ND2File(bad) as f:
        try:
            f.binary_data  # noqa: B018
        except Exception:
            failed = True
        else:
            failed = False
    with nd2gpu.ND2File(bad, device="cpu") as f:
        if failed:
            with pytest.raises(nd2gpu.DecodeError, match="metadata"):
                f.binary_data  # noqa: B018
        else:
            check_file(bad)


def test_other_custom_data_chunks_are_not_decoded(make_nd2, tmp_path) -> None:
    # binary_data decoded every CustomDataVar chunk (through custom_data): one bad
    # unrelated chunk made it fail where nd2 reads the layers.
    path, labels = make_nd2(loops=(("T", 2),), layers=("a",))
    bad = tmp_path / "extra.nd2"
    with _atomic_output(bad) as fh:
        writer = _ChunkWriter(fh)
        for name, _, name_len, data in chunks(path):
            if name.startswith(b"ND2 FILEMAP"):
                continue
            writer.add(name, data, name_bytes=name_len)
        writer.add(b"CustomDataVar|Broken!", b"\xff" * 40)
        writer.finish()
    assert check_file(bad).kind == "equal"
    with nd2gpu.ND2File(bad, device="cpu") as f:
        np.testing.assert_array_equal(np.asarray(f.binary_data)[0], labels["a"])


def test_broken_experiment_in_a_file_without_layers(make_nd2, tmp_path) -> None:
    # nd2 returns None for a file without binary metadata before it reads the
    # experiment; nd2gpu read the experiment first and raised nd2's error.
    path, _ = make_nd2(loops=(("T", 2),), layers=("a",))

    def edit(name: bytes, data: bytes) -> bytes | None:
        if name.startswith(b"CustomData"):
            return None
        return b"\xff" * 16 if name == b"ImageMetadataLV!" else data

    bad = rewrite(path, tmp_path / "plain.nd2", edit)
    with nd2.ND2File(bad) as f:
        assert f.binary_data is None
    with nd2gpu.ND2File(bad, device="cpu") as f:
        assert f.binary_data is None


def test_metadata_item_without_file_tag(make_nd2, tmp_path) -> None:
    from nd2gpu._format.clx_lite import encode_clx_lite

    path, _ = make_nd2(loops=(("T", 2),), layers=("a",))
    meta = encode_clx_lite({"BinaryMetadata_v1": {"0000": {"Name": "a"}}})
    bad = _corrupt_chunk(path, tmp_path / "tag.nd2", BINARY_METADATA_CHUNK, meta)
    with nd2.ND2File(bad) as f, pytest.raises(KeyError):
        f.binary_data  # noqa: B018
    with nd2gpu.ND2File(bad) as f, pytest.raises(nd2gpu.DecodeError, match="FileTag"):
        f.binary_data  # noqa: B018


def test_data_of_frames_with_different_shapes_like_nd2(make_nd2, tmp_path) -> None:
    # layer.data stacked the frames and raised where nd2 lists them as they are.
    path, _ = make_nd2(loops=(("T", 3),), layers=("a",))
    name = b"CustomDataSeq|RleZipBinarySequence_1_v1|1!"
    other = encode_mask_chunk(np.eye(4, dtype=np.uint16))
    bad = _corrupt_chunk(path, tmp_path / "shapes.nd2", name, other)
    assert check_file(bad).kind == "equal"
    with nd2.ND2File(bad) as ref, nd2gpu.ND2File(bad, device="cpu") as f:
        shapes = [x.shape for x in f.binary_data[0].data]
        assert shapes == [x.shape for x in ref.binary_data[0].data]
        assert shapes[1] == (4, 4) and shapes[0] != (4, 4)


# ---------------------------------------------------------------------------
# the writer's input

BAD_LETTERS = ["C", "", "t", "TZ"]
BAD_COUNTS = [0, -1, 1 << 32, 10**12, 2.0, True, "2", None]
BAD_DTYPES = ["float32", "float64", "complex64", "U1", "object"]
BAD_NAMES = [1, b"a", None, 2.5, ("a",), "a\x00", "\x00"]


def _valid_count(count: object) -> bool:
    return (
        isinstance(count, int)
        and not isinstance(count, bool)
        and 1 <= count <= 0xFFFFFFFF
    )


@st.composite
def writer_arguments(draw: st.DrawFn) -> tuple[dict, list, object, list[str]]:
    """Arguments for write_nd2 with a few faults, and what its error must mention.

    Every choice is valid with some probability, so about one case in four is
    valid input: write_nd2 must then write a file nd2 reads back exactly.
    """

    def bad(odds: int = 8) -> bool:
        return draw(st.integers(0, odds - 1)) == 0

    faults: list[str] = []
    letters = draw(st.permutations(["T", "P", "Z"]))[: draw(st.integers(0, 3))]
    loops: list[tuple[object, object]] = []
    for letter in letters:
        count: object = draw(st.integers(1, 3))
        if bad(12):
            letter = draw(st.sampled_from(BAD_LETTERS))
        elif bad(12) and loops:
            letter = loops[0][0]
        if bad(12):
            count = draw(st.sampled_from(BAD_COUNTS))
        loops.append((letter, count))
    seen: set[object] = set()
    for letter, count in loops:  # in write_nd2's order: letter, repeat, count
        if letter not in ("T", "P", "Z"):
            faults.append("loop")
        elif letter in seen:
            faults.append("more than once")
        elif not _valid_count(count):
            faults.append("count")
        seen.add(letter)
    counts = tuple(c if _valid_count(c) and c <= 3 else 2 for _, c in loops)
    frame = (0 if bad(20) else draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if frame[0] == 0:
        faults.append("empty frame")
    labels: dict = {}
    for i in range(0 if bad(20) else draw(st.integers(1, 2))):
        name: object = f"layer {i}é"
        if bad(16):
            name = draw(st.sampled_from(BAD_NAMES))
            if name in labels:
                continue
            faults.append("NUL" if isinstance(name, str) else "str")
        shape = counts + frame
        if bad(16):  # a shape that does not fit the loops
            shape = shape[1:] if shape[:-2] else (2, *shape)
            faults.append("shape")
        dtype = np.dtype(
            draw(st.sampled_from(BAD_DTYPES))
            if bad(16)
            else draw(st.sampled_from(["bool", "uint8", "uint16", "int32", "int64"]))
        )
        arr = np.zeros(shape, dtype)
        if dtype.kind not in "biu":
            faults.append("dtype")
        elif arr.size and dtype.kind != "b":
            value = draw(st.integers(0, 65535))
            if bad(10):
                value = draw(st.sampled_from([-1, -65536, 65536, 1 << 31, 1 << 40]))
            # wraps (or not) as a user's own cast would
            arr.flat[-1] = np.array(value).astype(dtype)
            stored = int(arr.flat[-1])
            if stored < 0:
                faults.append("negative")
            elif stored > 65535:
                faults.append("above")
        labels[name] = arr
    if not labels:
        faults.append("empty")
    image = None
    if draw(st.booleans()):
        image_dtype = np.dtype(
            "int16" if bad(10) else draw(st.sampled_from(["u1", "u2"]))
        )
        image_shape = (*counts, 9, 9) if bad(10) else counts + frame
        image = np.ones(image_shape, image_dtype)
        if image_dtype.kind != "u":
            faults.append("uint8, uint16 or float32")
        if image_shape != counts + frame:
            faults.append("shape")
    return labels, loops, image, faults


def test_fuzz_writer_arguments() -> None:
    """Bad input gives ValueError/TypeError saying what is wrong; no file is left."""
    outcomes: Counter[str] = Counter()

    @fuzz_settings(250)
    @given(writer_arguments())
    def fuzz(args: tuple[dict, list, object, list[str]]) -> None:
        outcomes[check_writer(*args)] += 1

    run_fuzz(fuzz, outcomes)
    assert outcomes["refused"] and outcomes["wrote"]


def check_writer(labels: dict, loops: list, image: object, faults: list[str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "out.nd2"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                nd2gpu.write_nd2(target, labels, loops=loops, image=image)
        except (ValueError, TypeError) as e:
            assert faults, f"valid input refused: {e}"
            message = str(e).lower()
            assert any(f.lower() in message for f in faults), (faults, str(e))
            assert list(Path(tmp).iterdir()) == []
            return "refused"
        assert not faults, f"write_nd2 accepted input with faults {faults}"
        assert [p.name for p in Path(tmp).iterdir()] == ["out.nd2"]
        with nd2.ND2File(target) as f:
            got = np.asarray(f.binary_data)
        expected = np.stack([a.astype(np.uint16) for a in labels.values()])
        assert got.dtype == np.uint16 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
        return "wrote"


def test_huge_broadcast_loops_fail_fast(tmp_path) -> None:
    # A zero-copy (broadcast) array can claim any number of frames: the count is
    # refused before its values are scanned or anything is allocated.
    huge = np.broadcast_to(np.ones((1, 2, 2), np.uint16), (1 << 33, 2, 2))
    with pytest.raises(ValueError, match="does not fit"):
        nd2gpu.write_nd2(tmp_path / "x.nd2", {"a": huge}, loops=[("T", 1 << 33)])
    wide = np.broadcast_to(np.ones((1, 1), np.uint16), (1, 1 << 33))
    with pytest.raises(ValueError, match="frame side"):
        nd2gpu.write_nd2(tmp_path / "x.nd2", {"a": wide})
    many = np.broadcast_to(np.ones((1, 1, 1, 1), np.uint8), (1 << 17, 1 << 17, 1, 1))
    with pytest.raises(ValueError, match="frames"):
        nd2gpu.write_nd2(
            tmp_path / "x.nd2", {"a": many}, loops=[("T", 1 << 17), ("Z", 1 << 17)]
        )
    assert list(tmp_path.iterdir()) == []
