"""The streaming scan validates exactly what the decode path's parser validates.

``nd2gpu._objects.cpu.scan_stream`` inflates a payload a piece at a time and scans
the pieces with ``_objects_kernels.scan_words``; ``nd2gpu._decode.frame.
parse_payload`` inflates it whole and parses it with ``parse_frame_runs``.
For every payload both must raise the same ``DecodeError`` (reason and byte
offset), or both succeed with the same runs in the same order, whatever the
piece sizes.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from fuzz_mutations import delete_bytes, flip_bits, insert_bytes, set_words
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streams import payload, stream_words
from test_objects import assert_tables_equal, measure, reference_table, write_streams

import nd2gpu
from nd2gpu._decode import frame as _frame
from nd2gpu._decode import inflate as _inflate
from nd2gpu._decode.mask_source import MaskSource
from nd2gpu._objects import cpu as _objects
from nd2gpu._objects.jobs import ObjectJob
from nd2gpu.kernels import _objects_kernels as ok


def reference(data: bytes) -> tuple[str, int] | np.ndarray:
    """``parse_payload``'s error (reason, offset), or its runs ``(start, len, id)``."""
    try:
        header, buffers, n = _frame.parse_payload(data)
    except nd2gpu.DecodeError as e:
        return e.reason, e.offset
    del header
    return np.stack(
        [buffers.starts[:n], buffers.lengths[:n], buffers.values[:n].astype(np.int64)]
    )


def scanned(data: bytes, keep_labels: bool = True) -> tuple[str, int] | np.ndarray:
    """The same from ``frame_header`` and ``scan_stream``."""
    try:
        header = _objects.frame_header(data)
        scratch = _objects._Scratch(None)
        _objects.scan_stream(
            data,
            header,
            scratch,
            _objects.NO_IMAGE,
            accumulate=True,
            keep_labels=keep_labels,
        )
    except nd2gpu.DecodeError as e:
        return e.reason, e.offset
    n = int(scratch.state[ok.S_N_RUNS])
    rows = scratch.run_row[:n].astype(np.int64)
    starts = rows * header.ncols + scratch.run_col[:n]
    labels = scratch.run_label[:n].astype(np.int64) if keep_labels else None
    return np.stack([starts, scratch.run_len[:n].astype(np.int64), labels])


def assert_same(data: bytes) -> object:
    expected = reference(data)
    got = scanned(data)
    if isinstance(expected, tuple):
        assert got == expected
    else:
        assert isinstance(got, np.ndarray), got
        np.testing.assert_array_equal(got, expected)
    return expected


@pytest.fixture(params=[(3, 5), (4, 1), (37, 2), (1 << 15, 1 << 13)], ids=str)
def pieces(request, monkeypatch):
    """Piece sizes (inflated, compressed): tiny ones split every record."""
    out, inp = request.param
    monkeypatch.setattr(_objects, "PIECE_BYTES", out)
    monkeypatch.setattr(_objects, "INPUT_BYTES", inp)
    return request.param


MASKS = [
    (1, [(0, [(0, 2), (5, 100)]), (1, [(1, 1)])]),  # clipped at the right edge
    (0xFFFF, [(0, [(1, 3)]), (2, [(10, 1), (0, 0)])]),  # overlap, past edge, empty
    (7, []),  # a mask without rows
    (3, [(2, [])]),  # a row without runs
]


def hand(masks=MASKS, nrows=3, ncols=8, version=3) -> bytes:
    return stream_words(nrows, ncols, masks, version=version).tobytes()


CASES = {
    "good": payload(hand()),
    "no masks": payload(hand([])),
    "row out of range": payload(hand([(1, [(5, [(0, 1)])])])),
    "row out of range, runs cut": payload(hand([(1, [(5, [(0, 1)])])])[:-4]),
    "id too large": payload(hand([(0x10000, [(0, [(0, 1)])])])),
    "id too large without runs": payload(hand([(0x10000, [(0, [])])])),
    "row and id bad": payload(hand([(0x10000, [(9, [(0, 1)])])])),
    "cut in a mask record": payload(hand()[: 4 * (7 + 4)]),
    "cut in a row record": payload(hand()[: 4 * (7 + 9 + 1)]),
    "cut in the runs": payload(hand()[: 4 * (7 + 9 + 2 + 3)]),
    "cut in a word": payload(hand()[:-2]),
    "cut in the header": payload(hand()[:20]),
    "empty stream": payload(b""),
    "trailing words": payload(hand() + b"\x01\x00\x00\x00" * 5),
    "trailing garbage after zlib": payload(hand()) + b"garbage",
    "no end of stream": payload(hand())[:-5],
    "corrupt zlib": payload(hand())[:12] + b"\xff\xff\xff" + payload(hand())[15:],
    "not zlib": b"\x00\x01\x02\x03" * 8,
    "version 4": payload(hand(version=4)),
}


@pytest.mark.filterwarnings("ignore:Expected binary-mask version")
@pytest.mark.parametrize("case", list(CASES))
def test_cases_by_hand(case, pieces):
    assert_same(CASES[case])


def test_every_cut_and_every_word(pieces):
    """Every truncation of a stream, and every word set to a wild value."""
    words = hand()
    for cut in range(len(words) + 1):
        assert_same(payload(words[:cut]))
    for i in range(len(words) // 4):
        for value in (0, 1, 2, 3, 8, 0xFFFF, 0x10000, 0xFFFFFFFF):
            assert_same(payload(set_words(words, [(i, value)])))


def test_inflate_cap(monkeypatch):
    """A stream inflating past its cap fails the same way (cap made small)."""
    words = hand([(1, [(r, [(0, 1)]) for r in range(3)])] * 40)
    monkeypatch.setattr(_inflate, "inflate_cap", lambda nrows, ncols: 200)
    for data in (payload(words), payload(words[:200]), payload(words[:201])):
        assert_same(data)
    monkeypatch.setattr(_inflate, "inflate_cap", lambda nrows, ncols: len(words))
    assert_same(payload(words))


def test_header_after_many_empty_blocks(tmp_path):
    """A payload whose first KiBs inflate to nothing: the header is read from
    the whole payload, with the same result and errors as ``parse_header``."""
    words = stream_words(3, 8, MASKS).tobytes()
    raw = zlib.compressobj(wbits=-15)
    body = raw.compress(words) + raw.flush()
    empty_block = b"\x00\x00\x00\xff\xff"  # a stored block of no bytes
    data = b"\x78\x9c" + empty_block * 2000 + body
    data += zlib.adler32(words).to_bytes(4, "big")
    assert len(data) > _objects.HEAD_BYTES and zlib.decompress(data) == words
    assert_same(data)
    path = write_streams(tmp_path, [(3, 8, []), b"\0\0\0\0" + data])
    with nd2gpu.ND2File(path) as f:
        source = MaskSource(path)
        with source.reading() as index:
            job = ObjectJob(0, f.binary_data[0], 1, -1)
            header = _objects.frame_header(_objects._payload(index, job))
    assert header == _frame.parse_header(data)
    assert_tables_equal(measure(path), reference_table(path))
    cut = data[: _objects.HEAD_BYTES + 100]  # the header is not in the payload
    path = write_streams(tmp_path, [(3, 8, []), b"\0\0\0\0" + cut], name="cut.nd2")
    with pytest.raises(nd2gpu.DecodeError, match="ends inside the frame header"):
        measure(path)


def test_payload_pieces_equal_mask_source(make_nd2):
    path, _ = make_nd2(loops=(("T", 3),))
    with nd2gpu.ND2File(path) as f:
        layer = f.binary_data[0]
        source = MaskSource(path)
        with source.reading() as index:
            for seq in range(3):
                job = ObjectJob(0, layer, seq, -1)
                piece = _objects._payload(index, job)
                whole = source.payload(index, layer.file_tag, seq)
                assert whole is not None and piece is not None
                assert len(piece) == len(whole)
                assert (
                    b"".join(piece.piece(p, 7) for p in range(0, len(piece), 7))
                    == whole
                )
                assert piece.piece(len(piece) - 3, 100) == whole[-3:]
            job = ObjectJob(0, layer, 99, -1)
            assert _objects._payload(index, job) is None


@st.composite
def streams(draw) -> bytes:
    nrows = draw(st.integers(0, 9))
    ncols = draw(st.integers(0, 9))
    ids = st.sampled_from([0, 1, 5, 0xFFFF, 0x10000, (1 << 32) - 1])
    run = st.tuples(st.integers(0, ncols + 2), st.integers(0, ncols + 2))
    row = st.tuples(st.integers(0, nrows + 1), st.lists(run, max_size=3))
    masks = draw(st.lists(st.tuples(ids, st.lists(row, max_size=3)), max_size=4))
    return stream_words(nrows, ncols, masks).tobytes()


@pytest.mark.fuzz
@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    streams(),
    st.sampled_from(["none", "cut", "words", "flip", "insert", "delete"]),
    st.data(),
)
def test_mutated_payloads_fail_alike(pieces, words, how, data):
    draw = data.draw
    if how == "cut":
        words = words[: draw(st.integers(0, len(words)))]
    elif how == "words":
        edits = st.tuples(st.integers(0, 1 << 16), st.integers(0, (1 << 32) - 1))
        words = set_words(words, draw(st.lists(edits, max_size=3)))
    compressed = payload(words, level=draw(st.integers(0, 9)))
    if how == "flip":
        flips = st.tuples(st.integers(0, 1 << 16), st.integers(0, 7))
        compressed = flip_bits(compressed, draw(st.lists(flips, max_size=3)))
    elif how == "insert":
        blob = draw(st.binary(max_size=8))
        compressed = insert_bytes(compressed, draw(st.integers(0, 1 << 16)), blob)
    elif how == "delete":
        compressed = delete_bytes(
            compressed, draw(st.integers(0, 1 << 16)), draw(st.integers(1, 8))
        )
    assert_same(compressed)
