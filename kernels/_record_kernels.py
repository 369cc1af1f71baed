"""A group of frames' runs, without overlaps: the front half of the consumers that
need runs rather than pixels (the CUDA staging, the object tables).

``record_group`` walks each frame's stream with the one parser
(``_parse_kernels.walk_frame``, record mode) into a run list; ``resolve_group``
checks each recorded frame for overlapping runs and, only where it finds some,
appends a rewritten run list for the frame (``_overlap_kernels``: the later run
wins, runs of value 0 dropped) and points the frame at it. Runs are frame-local:
``row``, ``col``, ``length``, ``value``; frame ``i``'s are
``spans[i, 0]:spans[i, 1]``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._overlap_kernels import find_overlap, overlaps_by_row, resolve_later_wins
from ._parse_kernels import ABSENT, OK, R_PIXELS, R_RUNS, R_STATUS, walk_frame

#: ``results`` field: 1 where ``resolve_group`` rewrote the frame's runs.
R_RESOLVED = 9
RECORD_FIELDS = 10


@njit(nogil=True, cache=True)
def record_group(
    streams,
    present,
    first,
    n,
    nrows,
    ncols,
    rows,
    cols,
    lengths,
    values,
    spans,
    results,
):
    """Record frames ``first:n`` of a group into the run list, one after another.

    Parameters
    ----------
    streams : UniTuple of uint8[:]
        The group's inflated streams.
    present : uint8[:]
        0 for a frame without a mask (status ``ABSENT``, no runs).
    first, n : int
        The frames to record; frame ``first`` starts at ``spans[first - 1, 1]``
        (0 for the group's first frame).
    nrows, ncols : int
        The frame shape every frame must have.
    rows, cols, lengths : int32[:]
        The run list.
    values : uint16[:]
        Its values.
    spans : int64[:, 2]
        Each frame's runs.
    results : int64[:, RECORD_FIELDS]
        One result row per frame (``_parse_kernels.R_*``).

    Returns
    -------
    int
        The first frame that failed (its status in ``results``; ``NEED_RUNS``:
        grow the run list, keeping its contents, and call again from it), or
        ``n``.
    """
    empty = np.empty(0, np.uint16)
    for i in range(first, n):
        lo = spans[i - 1, 1] if i > 0 else 0
        result = results[i]
        spans[i, 0] = lo
        spans[i, 1] = lo
        if not present[i]:
            result[:] = 0
            result[R_STATUS] = ABSENT
            continue
        status = walk_frame(
            streams[i],
            nrows,
            ncols,
            False,
            empty,
            rows,
            cols,
            lengths,
            values,
            lo,
            result,
        )
        if status != OK:
            return i
        spans[i, 1] = lo + result[R_RUNS]
    return n


@njit(nogil=True, cache=True)
def resolve_group(
    rows,
    cols,
    lengths,
    values,
    spans,
    first,
    n,
    nrows,
    counts,
    order,
    keys,
    tail,
    results,
):
    """Rewrite the runs of every recorded frame of ``first:n`` that overlap.

    ``tail[0]`` is the end of the run list in use; a rewritten frame's runs are
    appended there (``spans`` and ``tail[0]`` updated; ``results[i,
    R_RESOLVED]`` set to 1). ``counts`` and ``order`` are ``find_overlap``'s
    scratch (``order`` as long as the run list), and with a row table
    ``keys`` (int64, as long as the run list) is ``overlaps_by_row``'s, which
    checks each frame first.

    Returns
    -------
    int
        The first frame for which the run list is too short (``tail[1]``: the
        length needed; grow the run list, keeping its contents, and call again
        from it), or ``n``.
    """
    for i in range(first, n):
        result = results[i]
        if result[R_STATUS] != OK:
            continue
        lo = spans[i, 0]
        hi = spans[i, 1]
        result[R_RESOLVED] = 0
        if counts.shape[0]:
            if not overlaps_by_row(rows, cols, lengths, lo, hi, nrows, counts, keys):
                continue
            find_overlap(rows, cols, lengths, lo, hi, nrows, counts, order)
        elif not find_overlap(rows, cols, lengths, lo, hi, nrows, counts, order):
            continue
        end = tail[0]
        need = end + 2 * (hi - lo)
        if need > rows.shape[0]:
            tail[1] = need
            return i
        stop = resolve_later_wins(rows, cols, lengths, values, lo, hi, order, end)
        pixels = np.int64(0)
        for j in range(end, stop):
            pixels += lengths[j]
        spans[i, 0] = end
        spans[i, 1] = stop
        tail[0] = stop
        result[R_RUNS] = stop - end
        result[R_PIXELS] = pixels
        result[R_RESOLVED] = 1
    return n
