"""Capped zlib inflation of one mask payload, with the fastest inflater installed.

``isal`` (Intel ISA-L) inflates these streams about twice as fast as the standard
library on the benchmark payloads (see benchmarks/results); ``zlib-ng`` is next.
All three release the GIL while inflating, so frames inflate in parallel threads.
"""

from __future__ import annotations

import zlib
from contextlib import suppress
from types import ModuleType

import numpy as np

from .._errors import DecodeError
from .._format.mask_stream import HEADER_BYTES
from .._limits import physical_memory

#: Compressed bytes first handed to zlib when only the header is wanted.
HEADER_PROBE_BYTES = 256
#: Streams of any frame may inflate to this many bytes, whatever their header says.
MIN_INFLATE_CAP = 64 << 20
#: Beyond the minimum, a stream may inflate to this many bytes per frame pixel. A
#: stream of non-overlapping runs needs at most 52 bytes per pixel (13 words); more
#: is a zip bomb or garbage.
INFLATE_BYTES_PER_PIXEL = 64
#: Whatever the header says, a stream may not inflate to more than this share of
#: the machine's physical memory (the run table needs about 3x the stream again):
#: a bomb behind a header claiming a huge frame fails instead of exhausting memory.
MEMORY_SHARE = 8


def _memory_cap() -> int:
    physical = physical_memory()
    if physical is None:  # pragma: no cover - not POSIX
        return 1 << 62
    return max(MIN_INFLATE_CAP, physical // MEMORY_SHARE)


#: The largest cap of any stream on this machine (see ``MEMORY_SHARE``).
MEMORY_INFLATE_CAP = _memory_cap()


def available_inflaters() -> dict[str, ModuleType]:
    """The zlib-compatible inflaters installed here, fastest first."""
    found: dict[str, ModuleType] = {}
    with suppress(ImportError):
        from isal import isal_zlib

        found["isal"] = isal_zlib
    with suppress(ImportError):
        from zlib_ng import zlib_ng

        found["zlib-ng"] = zlib_ng
    found["zlib"] = zlib
    return found


#: The inflater used (the fastest installed) and its name.
INFLATER_NAME, INFLATER = next(iter(available_inflaters().items()))


def inflate_cap(nrows: int, ncols: int) -> int:
    """Most bytes a frame's stream may inflate to, given its header's shape."""
    need = max(MIN_INFLATE_CAP, INFLATE_BYTES_PER_PIXEL * nrows * ncols)
    return min(need, MEMORY_INFLATE_CAP)


def corrupt_stream(error: Exception) -> DecodeError:
    """The error of a stream the inflater refuses."""
    return DecodeError(f"corrupt zlib stream: {error}", offset=0)


def over_cap(cap: int, shape: tuple[int, int]) -> DecodeError:
    """The error of a stream that inflates past ``cap`` (``inflate_cap(*shape)``)."""
    limit = (
        f"more than a {shape[0]}x{shape[1]} frame can need"
        if cap < MEMORY_INFLATE_CAP
        else f"1/{MEMORY_SHARE} of this machine's memory"
    )
    return DecodeError(
        f"stream inflates past {cap} bytes, {limit} (zip bomb?)", offset=cap
    )


def truncated_stream(inflated: int) -> DecodeError:
    """The error of a stream that ends before its end-of-stream marker."""
    return DecodeError(
        "zlib stream is truncated (no end-of-stream marker)", offset=inflated
    )


def read_header(payload: bytes | memoryview) -> np.ndarray:
    """Inflate only the 7-word frame header of ``payload``.

    Raises
    ------
    DecodeError
        If the stream is corrupt or ends before the header does.
    """
    # Input is fed in growing pieces: handing zlib the whole payload with an
    # output limit makes it copy the unread rest into ``unconsumed_tail``, which
    # cost more than inflating the header itself.
    view = memoryview(payload)
    d = INFLATER.decompressobj()
    head = b""
    pos, step = 0, HEADER_PROBE_BYTES
    try:
        while len(head) < HEADER_BYTES and pos < len(view) and not d.eof:
            piece = view[pos : pos + step]
            pos += len(piece)
            step *= 4
            head += d.decompress(piece, HEADER_BYTES - len(head))
    except INFLATER.error as e:
        raise corrupt_stream(e) from None
    if len(head) < HEADER_BYTES:
        raise DecodeError(
            f"stream ends inside the frame header ({len(head)} of "
            f"{HEADER_BYTES} bytes)",
            offset=len(head),
        )
    return np.frombuffer(head, dtype="<u4")
