"""The payload oracle: nd2gpu against ``nd2`` on one frame's (hostile) payload.

``check_payload(data)``: where ``nd2._binary.decode_binary_mask`` returns an
array, ``nd2gpu.decode_binary_mask`` must return an equal one (same shape and
dtype); where it raises, nd2gpu must raise ``nd2gpu.DecodeError``. The reference
allocates the frame its header claims, so it is only called for frames of at
most ``SMALL_FRAME_PIXELS``; larger frames are checked against the reference run
on the same stream with a header cropped to the part of the frame the runs can
touch (exact, see ``_crop``), and frames above ``MAX_FRAME_PIXELS`` must be
refused. Used by tests/test_fuzz.py and tests/fuzz_atheris.py.
"""

from __future__ import annotations

import math
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from nd2._binary import decode_binary_mask as reference_decode

import nd2gpu
from nd2gpu._limits import MAX_FRAME_PIXELS

#: The reference is only asked to decode frames up to this size (it allocates the
#: whole frame before reading a single run).
SMALL_FRAME_PIXELS = 1 << 22
HEADER_BYTES = 28
#: Header words that are worth trying in every position.
WILD_WORDS = (
    0,
    1,
    2,
    3,
    4,
    7,
    255,
    256,
    0xFFFF,
    0x10000,
    0x10001,
    100_000,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 2,
    (1 << 32) - 1,
)


class OracleError(AssertionError):
    """nd2gpu disagreed with the reference (or raised a forbidden exception)."""


# ---------------------------------------------------------------------------
# single payloads


def peek_shape(data: bytes) -> tuple[int, int] | None:
    """``(nrows, ncols)`` of a payload's header, None if the header is unreadable."""
    try:
        head = zlib.decompressobj().decompress(data, HEADER_BYTES)
    except zlib.error:
        return None
    if len(head) < HEADER_BYTES:
        return None
    words = struct.unpack("<7I", head)
    return words[2], words[1]


def _must_refuse(call: Callable[[], Any], why: str) -> None:
    try:
        call()
    except nd2gpu.DecodeError:
        return
    except Exception as e:
        raise OracleError(f"{why}, but nd2gpu raised {e!r}, not DecodeError") from e
    raise OracleError(f"{why}, but nd2gpu returned a result")


def _decode(data: bytes) -> np.ndarray:
    try:
        return nd2gpu.decode_binary_mask(data)
    except nd2gpu.DecodeError:
        raise
    except Exception as e:
        raise OracleError(f"nd2gpu raised {e!r}, not DecodeError") from e


@contextmanager
def reference_warnings() -> Iterator[None]:
    """Warnings off while the reference runs, except NumPy 1.x's deprecated
    wrap-around of ids above 65535 into the uint16 image: that is the reference
    failing on the id (NumPy 2 raises OverflowError there), so it raises."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.filterwarnings(
            "error",
            message=".*out-of-bound Python integers",
            category=DeprecationWarning,
        )
        yield


def _reference(data: bytes) -> np.ndarray | BaseException:
    try:
        return reference_decode(data)
    except Exception as e:
        return e


def check_payload(data: bytes) -> str:
    """Check nd2gpu against nd2 on one payload; return how the case ended.

    Returns
    -------
    str
        ``"equal"`` (both decoded, same array), ``"both-fail"`` (nd2 raised,
        nd2gpu raised DecodeError), ``"refused"`` (a frame above
        ``MAX_FRAME_PIXELS``, refused), ``"cropped"`` (a large frame checked
        against the reference on the cropped header) or ``"too-large"`` (a
        valid stream whose runs span more than ``SMALL_FRAME_PIXELS``: not
        decoded).

    Raises
    ------
    OracleError
        On any disagreement.
    """
    with reference_warnings():  # e.g. version words other than 3
        shape = peek_shape(data)
        if shape is None or math.prod(shape) <= SMALL_FRAME_PIXELS:
            return _against_reference(data)
        if math.prod(shape) > MAX_FRAME_PIXELS:
            _must_refuse(
                lambda: nd2gpu.decode_binary_mask(data),
                f"the header claims a {shape[0]}x{shape[1]} frame",
            )
            return "refused"
        return _against_cropped_reference(data, shape)


def _against_reference(data: bytes) -> str:
    expected = _reference(data)
    if isinstance(expected, BaseException):
        _must_refuse(
            lambda: nd2gpu.decode_binary_mask(data), f"nd2 raised {expected!r}"
        )
        return "both-fail"
    try:
        got = _decode(data)
    except nd2gpu.DecodeError as e:
        raise OracleError(f"nd2 decoded the payload but nd2gpu raised {e}") from e
    assert_same_array(got, expected)
    return "equal"


def assert_same_array(got: Any, expected: np.ndarray) -> None:
    """Same type (NumPy), dtype, shape and values."""
    if not isinstance(got, np.ndarray):
        raise OracleError(f"expected a NumPy array, got {type(got).__name__}")
    if got.dtype != expected.dtype or got.shape != expected.shape:
        raise OracleError(
            f"got {got.dtype}{got.shape}, expected {expected.dtype}{expected.shape}"
        )
    if not np.array_equal(got, expected):
        diff = np.argwhere(got != expected)
        raise OracleError(f"{len(diff)} pixels differ, first at {diff[0].tolist()}")


def _crop(words: bytes, shape: tuple[int, int]) -> tuple[int, int] | None:
    """The smallest frame that decodes ``words`` exactly as ``shape`` does.

    Walks the stream like the reference. Every row that has runs must stay in
    the cropped frame (the reference indexes it even when the runs write
    nothing), rows at or past ``nrows`` stay outside it (still an error there);
    columns past the furthest run end are never written. Returns None when the
    walk runs out of words (the reference then fails with ``struct.error`` or
    earlier).
    """
    nrows, ncols = shape
    n = len(words) // 4
    w = struct.unpack(f"<{n}I", words[: 4 * n])
    if n < 7:
        return None
    pos, rows, cols = 7, 0, 0
    for _ in range(w[3]):
        if pos + 9 > n:
            return None
        mask_rows, pos = w[pos + 6], pos + 9
        for _ in range(mask_rows):
            if pos + 2 > n:
                return None
            row, nruns, pos = w[pos], w[pos + 1], pos + 2
            if pos + 2 * nruns > n:
                return None
            if nruns and row < nrows:
                rows = max(rows, row + 1)
            for k in range(nruns):
                col, length = w[pos + 2 * k], w[pos + 2 * k + 1]
                if row < nrows and col < ncols:
                    cols = max(cols, min(col + length, ncols))
            pos += 2 * nruns
    return rows, cols


def _against_cropped_reference(data: bytes, shape: tuple[int, int]) -> str:
    try:
        words = zlib.decompress(data)
    except zlib.error as e:
        _must_refuse(lambda: nd2gpu.decode_binary_mask(data), f"nd2 raised {e!r}")
        return "both-fail"
    crop = _crop(words, shape)
    if crop is not None and math.prod(crop) > SMALL_FRAME_PIXELS:
        # The runs themselves cover gigabytes: beyond this oracle's memory budget
        # (nd2 would need it all); tests/test_fuzz.py checks such rows by hand.
        return "too-large"
    expected = None
    if crop is not None:
        cropped = bytearray(words)
        cropped[4:12] = struct.pack("<2I", crop[1], crop[0])
        expected = _reference(zlib.compress(bytes(cropped)))
    if crop is None or isinstance(expected, BaseException):
        _must_refuse(lambda: nd2gpu.decode_binary_mask(data), "nd2 raises")
        return "both-fail"
    try:
        got = _decode(data)
    except nd2gpu.DecodeError as e:
        raise OracleError(f"nd2 decodes the payload but nd2gpu raised {e}") from e
    if got.shape != shape or got.dtype != np.uint16:
        raise OracleError(f"got {got.dtype}{got.shape} for a {shape} frame")
    assert_same_array(got[: crop[0], : crop[1]], expected)
    if np.count_nonzero(got) != np.count_nonzero(expected):
        raise OracleError("nd2gpu wrote pixels outside the runs' extent")
    return "cropped"
