"""The front half every consumer shares: payloads -> inflated streams -> a kernel.

A decode thread takes a contiguous range of a call's jobs and, group by group of
``GROUP_FRAMES`` frames, inflates each payload (GIL released, into a new buffer
of the inflater's; capped by what the frame's shape can need) and hands the
group's streams to one compiled call of its consumer: the CPU paint
(``_parse_kernels.decode_group``) or the run recorder
(``_record_kernels.record_group``) behind the CUDA staging and the object
tables. Per frame, Python does three calls (make the decompressor, inflate,
wrap the result); everything else is per group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._errors import DecodeError
from .._format.mask_stream import H_NCOLS, H_NROWS, HEADER_BYTES, HEADER_WORDS
from ..kernels._parse_kernels import GROUP_FRAMES
from .frame import shape_mismatch, stream_error
from .inflate import INFLATER, corrupt_stream, over_cap, truncated_stream
from .payloads import CallPayloads
from .schedule import Failure, Groups

EMPTY_STREAM = np.frombuffer(b"", np.uint8)
_PADDING = (EMPTY_STREAM,) * GROUP_FRAMES

#: The streams of a group: exactly ``GROUP_FRAMES`` uint8 arrays.
Streams = tuple[np.ndarray, ...]
#: A group's consumer: ``consume(lo, streams, present, n)`` runs the group's
#: kernel on its first ``n`` streams (jobs ``lo:lo + n``), writing their result
#: rows, and returns the index of the first frame that failed, or ``n``.
Consumer = Callable[[int, Streams, np.ndarray, int], int]


def _incomplete(d: Any, raw: bytes, cap: int, shape: tuple[int, int]) -> DecodeError:
    """The error of a stream that stopped before its end (cap, or truncated)."""
    if len(raw) >= HEADER_BYTES:
        words = np.frombuffer(raw, "<u4", count=HEADER_WORDS)
        got = (int(words[H_NROWS]), int(words[H_NCOLS]))
        if got != shape:
            return shape_mismatch(got, shape)
    else:
        return DecodeError(
            f"stream ends inside the frame header ({len(raw)} of {HEADER_BYTES} bytes)",
            offset=len(raw),
        )
    past_cap = bool(d.unconsumed_tail) or (
        len(raw) == cap and bool(d.decompress(b"", 1))
    )
    return over_cap(cap, shape) if past_cap else truncated_stream(len(raw))


def inflate_group(
    payloads: Sequence[Any],
    cap: int,
    shape: tuple[int, int],
    errors: dict[int, DecodeError] | None = None,
) -> tuple[Streams, np.ndarray, int, DecodeError | None]:
    """Inflate up to ``GROUP_FRAMES`` payloads.

    Parameters
    ----------
    payloads : sequence
        Buffers (zlib streams), or None for a frame without a mask.
    cap : int
        Most bytes any stream may inflate to (``inflate_cap(*shape)``).
    shape : (int, int)
        The frames' shape (named by the errors).
    errors : dict, optional
        The ``DecodeError`` of each frame whose chunk cannot be read, by
        position.

    Returns
    -------
    streams, present, n, error
        The streams (padded with empty ones), 1 where a frame has a mask, and
        either ``len(payloads)`` and None, or the position of the first frame
        that failed and its error (the frames before it are inflated).
    """
    streams = list(_PADDING)
    present = np.zeros(GROUP_FRAMES, np.uint8)
    decompressobj = INFLATER.decompressobj
    zlib_error = INFLATER.error
    for i, payload in enumerate(payloads):
        if errors is not None and i in errors:
            return tuple(streams), present, i, errors[i]
        if payload is None:
            continue
        d = decompressobj()
        try:
            raw = d.decompress(payload, cap)
        except zlib_error as e:
            return tuple(streams), present, i, corrupt_stream(e)
        if not d.eof:
            return tuple(streams), present, i, _incomplete(d, raw, cap, shape)
        streams[i] = np.frombuffer(raw, np.uint8)
        present[i] = 1
    return tuple(streams), present, len(payloads), None


def run_groups(
    payloads: CallPayloads,
    groups: Groups,
    cap: int,
    shape: tuple[int, int],
    results: np.ndarray,
    consume: Consumer,
    *,
    finish: Callable[[int, int], None] | None = None,
) -> Failure | None:
    """Inflate the groups this thread claims and hand each to ``consume``.

    Parameters
    ----------
    finish : callable, optional
        ``finish(lo, n)`` after each group's consumer, once its streams are
        released: the rest of the group's work on its first ``n`` frames.

    Returns
    -------
    (job, error) or None
        The first job that failed and its error (without the job's context),
        or None. The groups after it are not started, in any thread.
    """
    for lo, hi in groups:
        views, errors = payloads.views(lo, hi)
        streams, present, n, error = inflate_group(views, cap, shape, errors)
        done = consume(lo, streams, present, n) if n else 0
        del streams, views
        if finish is not None and done:
            finish(lo, done)
        if done < n:
            groups.failed(lo + done)
            return lo + done, stream_error(results[lo + done], shape)
        if error is not None:
            groups.failed(lo + n)
            return lo + n, error
    return None
