"""Detect and remove overlapping runs within frames (CPU, numba).

The GPU expansion writes every run's pixels in parallel, so it needs runs that do
not overlap. Real files almost never have overlaps; frames that do are rewritten
into an equivalent non-overlapping list (later run wins, as in sequential painting).

Bitmaps are ``uint64`` words over a frame's pixels; bit ``q & 63`` of word
``q >> 6`` stands for frame-local pixel ``q``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._run_table import RunTable, as_frame_bounds

__all__ = [
    "frame_has_overlap",
    "make_non_overlapping",
    "resolve_later_wins",
]

_ALL_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)


@njit(nogil=True, cache=True, inline="always")
def _bit_mask(lo_bit: int, hi_bit: int) -> np.uint64:
    """Bits ``lo_bit`` to ``hi_bit - 1`` set, for ``0 <= lo_bit < hi_bit <= 64``."""
    return (_ALL_ONES >> np.uint64(64 - (hi_bit - lo_bit))) << np.uint64(lo_bit)


@njit(nogil=True, cache=True, inline="always")
def _local_run(
    starts: np.ndarray,
    lengths: np.ndarray,
    i: int,
    frame_base: int,
    frame_pixels: int,
) -> tuple[int, int]:
    a = starts[i] - frame_base
    b = a + lengths[i]
    if lengths[i] > 0 and (a < 0 or b > frame_pixels):
        raise ValueError("a run lies outside its frame")
    return a, b


@njit(nogil=True, cache=True)
def _claim(bits: np.ndarray, a: int, b: int) -> bool:
    """Set bits ``[a, b)``; return whether any of them was already set."""
    w0 = a >> 6
    w1 = (b - 1) >> 6
    if w0 == w1:
        m = _bit_mask(a & 63, ((b - 1) & 63) + 1)
        hit = (bits[w0] & m) != 0
        bits[w0] |= m
        return hit
    m = _bit_mask(a & 63, 64)
    hit = (bits[w0] & m) != 0
    bits[w0] |= m
    for w in range(w0 + 1, w1):
        hit = hit or bits[w] != 0
        bits[w] = _ALL_ONES
    m = _bit_mask(0, ((b - 1) & 63) + 1)
    hit = hit or (bits[w1] & m) != 0
    bits[w1] |= m
    return hit


@njit(nogil=True, cache=True)
def frame_has_overlap(
    starts: np.ndarray,
    lengths: np.ndarray,
    lo: int,
    hi: int,
    frame_base: int,
    frame_pixels: int,
    bits: np.ndarray,
) -> bool:
    """Whether any two runs of one frame share a pixel (exact).

    Parameters
    ----------
    starts, lengths : numpy.ndarray
        The run table's ``int64`` starts and ``int32`` lengths.
    lo, hi : int
        The frame's runs are ``lo:hi``.
    frame_base : int
        Flat output offset of the frame's first pixel.
    frame_pixels : int
        Pixels per frame (``nrows * ncols``).
    bits : numpy.ndarray
        ``uint64`` scratch with at least ``ceil(frame_pixels / 64)`` words; its
        content on entry does not matter and is overwritten.

    Returns
    -------
    bool
        True when some pixel is covered by two runs (runs of length <= 0 cover
        nothing).

    Raises
    ------
    ValueError
        If a run examined lies outside ``[frame_base, frame_base + frame_pixels)``.

    Notes
    -----
    O(runs) when the runs are sorted by start without overlap (the usual case),
    O(runs + frame_pixels / 64) otherwise.
    """
    prev_end = frame_base
    is_sorted = True
    for i in range(lo, hi):
        if lengths[i] <= 0 or starts[i] < prev_end:
            is_sorted = False
            break
        prev_end = starts[i] + lengths[i]
    if is_sorted:
        if hi > lo:
            _local_run(starts, lengths, hi - 1, frame_base, frame_pixels)
        return False

    bits[: (frame_pixels + 63) >> 6] = 0
    for i in range(lo, hi):
        a, b = _local_run(starts, lengths, i, frame_base, frame_pixels)
        if b > a and _claim(bits, a, b):
            return True
    return False


@njit(nogil=True, cache=True, inline="always")
def _emit(
    out_starts: np.ndarray,
    out_lengths: np.ndarray,
    out_values: np.ndarray,
    k: int,
    start: int,
    length: int,
    value: int,
) -> int:
    """Write piece ``k``; return ``k + 1``."""
    if k >= min(out_starts.shape[0], out_lengths.shape[0], out_values.shape[0]):
        raise ValueError("output run arrays too short")
    out_starts[k] = start
    out_lengths[k] = length
    out_values[k] = value
    return k + 1


@njit(nogil=True, cache=True)
def resolve_later_wins(
    starts: np.ndarray,
    lengths: np.ndarray,
    values: np.ndarray,
    lo: int,
    hi: int,
    frame_base: int,
    frame_pixels: int,
    bits: np.ndarray,
    out_starts: np.ndarray,
    out_lengths: np.ndarray,
    out_values: np.ndarray,
) -> int:
    """Rewrite one frame's runs into non-overlapping runs painting the same image.

    Runs are walked from last to first; each emits only the pixels no later run
    claimed, as maximal pieces. At most ``2 * (hi - lo) - 1`` pieces are emitted.

    Parameters
    ----------
    starts, lengths, values : numpy.ndarray
        The run table's ``int64`` / ``int32`` / ``uint16`` columns.
    lo, hi : int
        The frame's runs are ``lo:hi``.
    frame_base, frame_pixels : int
        The frame's first flat output offset and its pixel count.
    bits : numpy.ndarray
        ``uint64`` scratch of at least ``ceil(frame_pixels / 64)`` words
        (overwritten).
    out_starts, out_lengths, out_values : numpy.ndarray
        Receive the pieces from index 0 (``int64`` / ``int32`` / ``uint16``).

    Returns
    -------
    int
        Number of pieces written. Their order is unspecified.

    Raises
    ------
    ValueError
        If a run lies outside its frame or the outputs are too short.
    """
    bits[: (frame_pixels + 63) >> 6] = 0
    k = 0
    for i in range(hi - 1, lo - 1, -1):
        a, b = _local_run(starts, lengths, i, frame_base, frame_pixels)
        v = values[i]
        piece = -1  # frame-local start of the open free piece, -1 when none
        p = a
        while p < b:
            w = p >> 6
            word_end = min((w + 1) << 6, b)
            m = _bit_mask(p & 63, word_end - (w << 6))
            taken = bits[w] & m
            if taken == 0:
                if piece < 0:
                    piece = p
            elif taken != m:
                for q in range(p, word_end):
                    if (taken >> np.uint64(q & 63)) & np.uint64(1):
                        if piece >= 0:
                            k = _emit(
                                out_starts,
                                out_lengths,
                                out_values,
                                k,
                                frame_base + piece,
                                q - piece,
                                v,
                            )
                            piece = -1
                    elif piece < 0:
                        piece = q
            elif piece >= 0:
                k = _emit(
                    out_starts,
                    out_lengths,
                    out_values,
                    k,
                    frame_base + piece,
                    p - piece,
                    v,
                )
                piece = -1
            bits[w] |= m
            p = word_end
        if piece >= 0:
            k = _emit(
                out_starts, out_lengths, out_values, k, frame_base + piece, b - piece, v
            )
    return k


@njit(nogil=True, cache=True)
def _overlap_flags(
    starts: np.ndarray,
    lengths: np.ndarray,
    frame_bounds: np.ndarray,
    frame_pixels: int,
    bits: np.ndarray,
) -> np.ndarray:
    flags = np.zeros(frame_bounds.shape[0], dtype=np.bool_)
    for f in range(frame_bounds.shape[0]):
        flags[f] = frame_has_overlap(
            starts,
            lengths,
            frame_bounds[f, 0],
            frame_bounds[f, 1],
            frame_bounds[f, 2],
            frame_pixels,
            bits,
        )
    return flags


@njit(nogil=True, cache=True)
def _rewrite_flagged(
    starts: np.ndarray,
    lengths: np.ndarray,
    values: np.ndarray,
    frame_bounds: np.ndarray,
    frame_pixels: int,
    flags: np.ndarray,
    bits: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = starts.shape[0]
    cap = n
    for f in range(frame_bounds.shape[0]):
        if flags[f]:
            cap += frame_bounds[f, 1] - frame_bounds[f, 0]
    new_starts = np.empty(cap, dtype=np.int64)
    new_lengths = np.empty(cap, dtype=np.int32)
    new_values = np.empty(cap, dtype=np.uint16)
    k = 0
    copied = 0  # runs before this index are already in the output
    for f in range(frame_bounds.shape[0]):
        if not flags[f]:
            continue
        lo = frame_bounds[f, 0]
        hi = frame_bounds[f, 1]
        m = lo - copied
        new_starts[k : k + m] = starts[copied:lo]
        new_lengths[k : k + m] = lengths[copied:lo]
        new_values[k : k + m] = values[copied:lo]
        k += m
        k += resolve_later_wins(
            starts,
            lengths,
            values,
            lo,
            hi,
            frame_bounds[f, 2],
            frame_pixels,
            bits,
            new_starts[k:],
            new_lengths[k:],
            new_values[k:],
        )
        copied = hi
    m = n - copied
    new_starts[k : k + m] = starts[copied:]
    new_lengths[k : k + m] = lengths[copied:]
    new_values[k : k + m] = values[copied:]
    k += m
    return new_starts[:k], new_lengths[:k], new_values[:k]


def make_non_overlapping(
    table: RunTable, frame_bounds: np.ndarray, frame_pixels: int
) -> RunTable:
    """Return a table without overlapping runs that paints the same output.

    Parameters
    ----------
    table : RunTable
        Runs of a batch of frames, in painting order.
    frame_bounds : numpy.ndarray
        ``(n_frames, 3)`` integers ``(run_lo, run_hi, frame_base)`` per frame;
        run ranges ordered and disjoint. Runs outside every range are kept as is.
    frame_pixels : int
        Pixels per frame.

    Returns
    -------
    RunTable
        ``table`` itself when no frame has overlapping runs; otherwise a new table
        in which each overlapping frame's runs are replaced by their
        non-overlapping equivalent (same position in the table, order within the
        frame unspecified) and the prefix sum is recomputed.
    """
    fb = as_frame_bounds(frame_bounds, table.n_runs)
    if fb.shape[0] == 0:
        return table
    bits = np.empty(max(1, (int(frame_pixels) + 63) >> 6), dtype=np.uint64)
    flags = _overlap_flags(table.starts, table.lengths, fb, int(frame_pixels), bits)
    if not flags.any():
        return table
    starts, lengths, values = _rewrite_flagged(
        table.starts,
        table.lengths,
        table.values,
        fb,
        int(frame_pixels),
        flags,
        bits,
    )
    return RunTable.from_runs(starts, lengths, values)
