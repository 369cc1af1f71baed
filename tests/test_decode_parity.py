"""decode_binary_mask is bit-identical to nd2's on every stream nd2 decodes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nd2._binary import decode_binary_mask as reference_decode
from streams import payload, stream_words

import nd2gpu
from nd2gpu._decode import inflate as _inflate

pytestmark = pytest.mark.filterwarnings("ignore:Expected")


def assert_same_as_reference(data: bytes) -> np.ndarray:
    """Decode with both; both succeed with equal arrays or both fail."""
    try:
        expected = reference_decode(data)
    except Exception as ref_error:
        with pytest.raises(nd2gpu.DecodeError):
            nd2gpu.decode_binary_mask(data)
        return ref_error
    got = nd2gpu.decode_binary_mask(data)
    assert got.dtype == expected.dtype == np.uint16
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    return got


@st.composite
def frames(draw, max_side: int = 12, max_id: int = 0xFFFF, max_row_slack: int = 0):
    """A frame stream of arbitrary (overlapping, clipped, empty) runs."""
    nrows = draw(st.integers(1, max_side))
    ncols = draw(st.integers(1, max_side))
    ids = st.integers(0, max_id)
    rows = st.integers(0, nrows - 1 + max_row_slack)
    runs = st.lists(
        st.tuples(st.integers(0, ncols + 3), st.integers(0, ncols + 3)), max_size=4
    )
    masks = draw(
        st.lists(
            st.tuples(ids, st.lists(st.tuples(rows, runs), max_size=5)), max_size=5
        )
    )
    return nrows, ncols, masks


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_random_streams_match_reference(frame):
    nrows, ncols, masks = frame
    result = assert_same_as_reference(payload(stream_words(nrows, ncols, masks)))
    assert isinstance(result, np.ndarray), f"reference failed: {result!r}"


@settings(max_examples=200, deadline=None)
@given(frames(max_id=0x1FFFF, max_row_slack=3))
def test_invalid_rows_and_ids_fail_like_reference(frame):
    nrows, ncols, masks = frame
    assert_same_as_reference(payload(stream_words(nrows, ncols, masks)))


@settings(max_examples=200, deadline=None)
@given(frames(), st.data())
def test_truncated_streams_fail_like_reference(frame, data):
    nrows, ncols, masks = frame
    words = stream_words(nrows, ncols, masks).tobytes()
    cut = data.draw(st.integers(0, len(words)))
    assert_same_as_reference(payload(words[:cut]))


def test_edge_cases_by_hand():
    masks = [
        (1, [(0, [(0, 2), (5, 100)]), (1, [(1, 1)])]),  # clipped at the right edge
        (0xFFFF, [(0, [(1, 3)]), (2, [(10, 1), (0, 0)])]),  # overlap, past edge, empty
        (7, [(5, []), (2, [(3, 2)])]),  # a row past the frame with no runs is fine
    ]
    got = assert_same_as_reference(payload(stream_words(3, 8, masks)))
    expected = np.zeros((3, 8), np.uint16)
    expected[0, 0:2] = 1
    expected[0, 5:8] = 1
    expected[1, 1] = 1
    expected[0, 1:4] = 0xFFFF
    expected[2, 3:5] = 7
    np.testing.assert_array_equal(got, expected)


def test_no_masks_gives_zeros():
    got = assert_same_as_reference(payload(stream_words(4, 5, [])))
    assert got.shape == (4, 5) and not got.any()


def test_id_zero_and_max_id():
    masks = [(0xFFFF, [(0, [(0, 3)])]), (0, [(0, [(1, 1)])])]
    got = assert_same_as_reference(payload(stream_words(1, 3, masks)))
    np.testing.assert_array_equal(got, [[0xFFFF, 0, 0xFFFF]])


@pytest.mark.parametrize(
    ("masks", "message", "offset"),
    [
        ([(70000, [(0, [(0, 1)])])], "id 70000", 28),  # the mask record
        ([(1, [(9, [(0, 1)])])], "row 9", 64),  # the row record after it
        ([(1, [(0, [(0, 1), (1, 1)])])], "ends inside a record", None),
    ],
)
def test_errors_name_what_and_where(masks, message, offset):
    words = stream_words(3, 3, masks)
    if offset is None:  # cut the last run short
        words, offset = words[:-1], 4 * (len(words) - 1)
    with pytest.raises(nd2gpu.DecodeError, match=message) as info:
        nd2gpu.decode_binary_mask(payload(words))
    assert info.value.offset == offset
    assert f"byte {offset} of the inflated stream" in str(info.value)


def test_corrupt_zlib():
    good = payload(stream_words(3, 3, [(1, [(0, [(0, 1)])])]))
    bad = bytearray(good)
    bad[-1] ^= 0xFF  # adler32
    for data in (b"not zlib at all", bytes(bad), good[:-6], b""):
        assert_same_as_reference(data)
        with pytest.raises(nd2gpu.DecodeError):
            nd2gpu.decode_binary_mask(data)


def test_trailing_bytes_after_stream_are_ignored_like_reference():
    data = payload(stream_words(2, 2, [(3, [(1, [(0, 2)])])])) + b"junk"
    got = assert_same_as_reference(data)
    np.testing.assert_array_equal(got, [[0, 0], [3, 3]])


def test_trailing_words_inside_stream_are_ignored_like_reference():
    words = stream_words(2, 2, [(3, [(1, [(0, 2)])])])
    data = payload(np.concatenate([words, np.array([1, 2, 3], "<u4")]).tobytes() + b"x")
    assert_same_as_reference(data)


def test_version_other_than_3_warns_like_reference():
    data = payload(stream_words(2, 2, [(3, [(1, [(0, 2)])])], version=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = nd2gpu.decode_binary_mask(data)
    assert any("version" in str(w.message) for w in caught)
    np.testing.assert_array_equal(got, reference_decode(data))


def test_zip_bomb_is_refused_before_inflating_it_all(monkeypatch):
    monkeypatch.setattr(_inflate, "MIN_INFLATE_CAP", 4096)
    words = stream_words(2, 2, [])
    bomb = payload(np.concatenate([words, np.zeros(1 << 20, "<u4")]))
    with pytest.raises(nd2gpu.DecodeError, match="zip bomb"):
        nd2gpu.decode_binary_mask(bomb)


def test_huge_frame_claim_is_refused_before_allocating():
    words = stream_words(1, 1, [])
    words[1] = words[2] = 100_000
    with pytest.raises(nd2gpu.DecodeError, match="100000x100000"):
        nd2gpu.decode_binary_mask(payload(words))


@pytest.mark.parametrize("name", sorted(_inflate.available_inflaters()))
def test_every_inflater_gives_the_same_answers(monkeypatch, name):
    monkeypatch.setattr(_inflate, "INFLATER", _inflate.available_inflaters()[name])
    rng = np.random.default_rng(7)
    for _ in range(40):
        nrows, ncols = (int(v) for v in rng.integers(1, 20, 2))
        masks = [
            (
                int(rng.integers(0, 0x10000)),
                [
                    (int(rng.integers(0, nrows)), [tuple(rng.integers(0, 25, 2))])
                    for _ in range(int(rng.integers(0, 4)))
                ],
            )
            for _ in range(int(rng.integers(0, 4)))
        ]
        data = payload(stream_words(nrows, ncols, masks))
        assert isinstance(assert_same_as_reference(data), np.ndarray)
        corrupt = bytearray(data)
        corrupt[int(rng.integers(0, len(corrupt)))] ^= 1 << int(rng.integers(0, 8))
        assert_same_as_reference(bytes(corrupt))
        assert_same_as_reference(data[: int(rng.integers(0, len(data)))])
