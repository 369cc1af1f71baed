"""One frame: inflate, validate and parse a mask payload into runs or labels."""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass

import numpy as np

from .._errors import DecodeError
from .._format.mask_stream import HEADER_WORDS, STREAM_VERSION
from .._limits import MAX_FRAME_PIXELS, check_allocation
from ..kernels import _parse_kernels as pk
from .inflate import inflate_payload, read_header

_STATUS_REASONS = {
    pk.TRUNCATED: "stream ends inside a record",
    pk.ROW_OUT_OF_RANGE: "run row is outside the frame",
    pk.VALUE_TOO_LARGE: "object id does not fit in uint16",
    pk.TOO_MANY_RUNS: "more runs than the stream can hold",
}


def status_reason(
    status: int, words: np.ndarray, word: int, header: FrameHeader
) -> str:
    reason = _STATUS_REASONS[status]
    if status == pk.ROW_OUT_OF_RANGE:
        reason += f" (row {int(words[word])} of a {header.nrows}-row frame)"
    elif status == pk.VALUE_TOO_LARGE:
        reason += f" (id {int(words[word])})"
    return reason


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
    version, ncols, nrows, nmasks = (int(w) for w in read_header(payload)[:4])
    header = FrameHeader(version, nrows, ncols, nmasks)
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


class RunBuffers:
    """Growable run-table arrays (starts, lengths, values, prefix)."""

    def __init__(self, capacity: int = 0) -> None:
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        self.starts = np.empty(capacity, np.int64)
        self.lengths = np.empty(capacity, np.int32)
        self.values = np.empty(capacity, np.uint16)
        self.prefix = np.empty(capacity + 1, np.int64)

    @property
    def capacity(self) -> int:
        return self.starts.shape[0]

    def reserve(self, capacity: int) -> None:
        """Make room for ``capacity`` runs (contents are not kept)."""
        if capacity > self.capacity:
            self._allocate(max(capacity, 2 * self.capacity))


_scratch = threading.local()


def thread_buffers() -> RunBuffers:
    """This thread's reusable run buffers."""
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = RunBuffers()
    return buffers


def inflate_frame(payload: bytes) -> tuple[FrameHeader, np.ndarray]:
    """Check the header, then inflate the whole stream under its cap."""
    header = parse_header(payload)
    return header, inflate_payload(payload, header.shape)


def parse_runs(
    words: np.ndarray,
    header: FrameHeader,
    buffers: RunBuffers,
    frame_base: int = 0,
    first_run: int = 0,
    first_pixel: int = 0,
) -> tuple[int, int]:
    """Parse a frame's words into ``buffers`` from ``first_run`` on.

    ``buffers`` must hold ``first_run + kernels.max_runs(len(words))`` runs.

    Returns
    -------
    end_run, end_pixel : int
        One past the last run written, and the prefix sum after it.

    Raises
    ------
    DecodeError
        For a truncated stream, a row outside the frame or an id above 65535.
    """
    if words.shape[0] < HEADER_WORDS:
        raise DecodeError("stream ends inside the frame header", offset=0)
    status, end_run, end_pixel, word = pk.parse_frame_runs(
        words,
        header.nrows,
        header.ncols,
        header.nmasks,
        frame_base,
        buffers.starts,
        buffers.lengths,
        buffers.values,
        buffers.prefix,
        first_run,
        first_pixel,
    )
    if status != pk.OK:
        raise DecodeError(
            status_reason(status, words, int(word), header), offset=int(word) * 4
        )
    buffers.prefix[end_run] = end_pixel
    return int(end_run), int(end_pixel)


def parse_payload(
    payload: bytes,
    expected_shape: tuple[int, int] | None = None,
    frame_base: int = 0,
) -> tuple[FrameHeader, RunBuffers, int]:
    """Inflate and parse one payload into this thread's run buffers.

    Returns
    -------
    header, buffers, n_runs
        The frame header, and the buffers whose first ``n_runs`` runs are the
        frame's (offsets from ``frame_base``). The buffers are reused by the next
        call in this thread.

    Raises
    ------
    DecodeError
        If the payload is corrupt or its shape is not ``expected_shape``.
    """
    header, words = inflate_frame(payload)
    if expected_shape is not None and header.shape != expected_shape:
        raise DecodeError(
            f"frame is {header.nrows}x{header.ncols} but the layer's frames are "
            f"{expected_shape[0]}x{expected_shape[1]}",
            offset=4,
        )
    buffers = thread_buffers()
    buffers.reserve(pk.max_runs(words.shape[0]))
    n_runs, _ = parse_runs(words, header, buffers, frame_base=frame_base)
    return header, buffers, n_runs


def decode_into(
    payload: bytes, out: np.ndarray, expected_shape: tuple[int, int] | None = None
) -> FrameHeader:
    """Decode one payload into the zeroed, C-contiguous uint16 frame ``out``.

    Raises
    ------
    DecodeError
        If the payload is corrupt or its shape is not ``expected_shape``.
    """
    header, buffers, n_runs = parse_payload(payload, expected_shape)
    pk.fill_runs(
        out.reshape(-1), buffers.starts, buffers.lengths, buffers.values, 0, n_runs
    )
    return header


def decode_binary_mask(payload: bytes) -> np.ndarray:
    """Decode one frame's binary-layer payload into a label image.

    The result is identical to ``nd2._binary.decode_binary_mask(payload)``: a
    ``(nrows, ncols)`` uint16 array, 0 for background and each object's id on its
    pixels (where runs overlap, the later one wins; runs are clipped at the right
    edge).

    Parameters
    ----------
    payload : bytes
        The data of a ``CustomDataSeq|<FileTag>|<seq>!`` chunk after its 4-byte
        prefix: one zlib stream.

    Returns
    -------
    numpy.ndarray
        The label image.

    Raises
    ------
    DecodeError
        If the payload is corrupt (bad zlib, truncated records, a row outside the
        frame, an id above 65535, a zip bomb, a frame of more than
        ``MAX_FRAME_PIXELS`` pixels). The message gives the byte offset in the
        inflated stream.
    MemoryError
        If the frame the header claims is larger than this machine's memory.

    Examples
    --------
    >>> import numpy as np, nd2gpu
    >>> from nd2gpu._format.mask_encode import encode_mask_chunk
    >>> labels = np.array([[0, 1, 1], [2, 2, 0]], dtype=np.uint16)
    >>> nd2gpu.decode_binary_mask(encode_mask_chunk(labels)[4:])
    array([[0, 1, 1],
           [2, 2, 0]], dtype=uint16)
    """
    header = parse_header(bytes(payload))
    warn_version(header)
    check_allocation(2 * header.n_pixels, None, f"a {header.shape} uint16 frame")
    out = np.zeros(header.shape, dtype=np.uint16)
    decode_into(bytes(payload), out)
    return out
