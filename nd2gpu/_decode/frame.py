"""One frame: its header, the errors of its stream, and ``decode_binary_mask``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .._errors import DecodeError
from .._format.mask_stream import (
    H_NCOLS,
    H_NMASKS,
    H_NROWS,
    H_VERSION,
    HEADER_BYTES,
    STREAM_VERSION,
)
from .._limits import MAX_FRAME_PIXELS
from ..kernels import _parse_kernels as pk
from .inflate import read_header


@dataclass(frozen=True)
class FrameHeader:
    """The 7-word header of one frame's mask stream (the words that matter)."""

    version: int
    nrows: int
    ncols: int
    nmasks: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.nrows, self.ncols)

    @property
    def n_pixels(self) -> int:
        return self.nrows * self.ncols


def parse_header(payload: bytes | memoryview) -> FrameHeader:
    """Read and check a payload's frame header, inflating only its first 28 bytes.

    Raises
    ------
    DecodeError
        If the stream is corrupt, too short, or claims an impossibly large frame.
    """
    words = read_header(payload)
    header = FrameHeader(
        int(words[H_VERSION]),
        int(words[H_NROWS]),
        int(words[H_NCOLS]),
        int(words[H_NMASKS]),
    )
    nrows, ncols = header.shape
    if header.n_pixels > MAX_FRAME_PIXELS:
        raise DecodeError(
            f"header claims a {nrows}x{ncols} frame, more than the "
            f"{MAX_FRAME_PIXELS} pixels nd2gpu accepts",
            offset=4,
        )
    return header


def warn_version(header: FrameHeader, where: str = "") -> None:
    """Warn, as the reference does, about a version word other than 3."""
    if header.version != STREAM_VERSION:
        warnings.warn(
            f"Expected binary-mask version {STREAM_VERSION} but got "
            f"{header.version}{where}; decoding it the same way nd2 does.",
            stacklevel=3,
        )


def shape_mismatch(got: tuple[int, int], expected: tuple[int, int]) -> DecodeError:
    """The error of a frame whose header's shape is not its layer's."""
    return DecodeError(
        f"frame is {got[0]}x{got[1]} but the layer's frames are "
        f"{expected[0]}x{expected[1]}",
        offset=4,
    )


def stream_error(result: np.ndarray, shape: tuple[int, int]) -> DecodeError:
    """The ``DecodeError`` of a frame the parser refused (its result row)."""
    status = int(result[pk.R_STATUS])
    if status == pk.HEADER_TRUNCATED:
        n = int(result[pk.R_BYTES])
        return DecodeError(
            f"stream ends inside the frame header ({n} of {HEADER_BYTES} bytes)",
            offset=n,
        )
    if status == pk.SHAPE_MISMATCH:
        got = (int(result[pk.R_NROWS]), int(result[pk.R_NCOLS]))
        return shape_mismatch(got, shape)
    offset = int(result[pk.R_WORD]) * 4
    value = int(result[pk.R_VALUE])
    if status == pk.TRUNCATED:
        return DecodeError("stream ends inside a record", offset=offset)
    if status == pk.ROW_OUT_OF_RANGE:
        return DecodeError(
            f"run row is outside the frame (row {value} of a {shape[0]}-row frame)",
            offset=offset,
        )
    if status == pk.VALUE_TOO_LARGE:
        return DecodeError(
            f"object id does not fit in uint16 (id {value})", offset=offset
        )
    raise AssertionError(f"no error for parser status {status}")  # pragma: no cover
