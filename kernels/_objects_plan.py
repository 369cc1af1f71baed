"""CPU kernels that plan the CUDA reduction of object tables (host side).

A staged batch (``_batch_layout``) becomes a flat run table (frame ``f`` of the
batch at ``f * frame_pixels``) that ``plan_pieces`` cuts into pieces: stretches
of consecutive runs of one frame and one id, each a bounded amount of work;
``plan_rows`` groups the pieces by ``(frame, id)``, one output row each.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._batch_layout import E_OFFSET, E_PREFIX, E_VALUE, F_PIXELS, F_RUN_LO, F_RUNS


@njit(nogil=True, cache=True)
def batch_run_table(frames, n_frames, entries, frame_pixels):
    """The flat run table of a staged batch.

    Returns
    -------
    starts : int64[n]
        ``f * frame_pixels`` plus the run's frame-local offset.
    lengths : int32[n]
    values : uint16[n]
    prefix : int64[n + 1]
        Exclusive prefix sum of the lengths over the batch.
    """
    n = 0
    for f in range(n_frames):
        n += frames[f, F_RUNS]
    starts = np.empty(n, np.int64)
    lengths = np.empty(n, np.int32)
    values = np.empty(n, np.uint16)
    prefix = np.empty(n + 1, np.int64)
    k = 0
    total = np.int64(0)
    for f in range(n_frames):
        lo = frames[f, F_RUN_LO]
        hi = lo + frames[f, F_RUNS]
        for r in range(lo, hi):
            end = frames[f, F_PIXELS] if r + 1 == hi else entries[r + 1, E_PREFIX]
            starts[k] = f * frame_pixels + entries[r, E_OFFSET]
            lengths[k] = end - entries[r, E_PREFIX]
            values[k] = entries[r, E_VALUE]
            prefix[k] = total
            total += lengths[k]
            k += 1
    prefix[n] = total
    return starts, lengths, values, prefix


@njit(nogil=True, cache=True)
def plan_pieces(starts, values, prefix, frame_pixels, max_runs, max_pixels):
    """Cut a batch's run table into pieces for the CUDA reduction.

    A piece is a stretch of consecutive runs of one frame (run ``i`` is in
    frame ``starts[i] // frame_pixels``) with one id, of at most ``max_runs``
    runs and (unless it is a single longer run) ``max_pixels`` pixels: every
    piece is a bounded amount of work.

    Parameters
    ----------
    starts : int64[:]
        The run table's flat starts (frame ``f`` at ``f * frame_pixels``).
    values : uint16[:]
        Its ids.
    prefix : int64[:]
        Its exclusive prefix sum of lengths.
    frame_pixels, max_runs, max_pixels : int

    Returns
    -------
    piece_lo : int64[n + 1]
        Piece ``p`` is runs ``piece_lo[p]:piece_lo[p + 1]``.
    piece_frame : int64[n]
        The frame (slot) of its runs.
    piece_label : int64[n]
        Its id.
    """
    n_runs = starts.shape[0]
    piece_lo = np.empty(n_runs + 1, np.int64)
    piece_frame = np.empty(n_runs, np.int64)
    piece_label = np.empty(n_runs, np.int64)
    n = 0
    i = 0
    while i < n_runs:
        start = i
        frame = starts[i] // frame_pixels
        label = values[i]
        i += 1
        while (
            i < n_runs
            and values[i] == label
            and starts[i] // frame_pixels == frame
            and i - start < max_runs
            and prefix[i + 1] - prefix[start] <= max_pixels
        ):
            i += 1
        piece_lo[n] = start
        piece_frame[n] = frame
        piece_label[n] = label
        n += 1
    piece_lo[n] = n_runs
    return piece_lo[: n + 1].copy(), piece_frame[:n].copy(), piece_label[:n].copy()


@njit(nogil=True, cache=True)
def plan_rows(piece_frame, piece_label):
    """Group pieces by ``(frame, id)``: one output row per pair with id != 0.

    Returns
    -------
    row_ptr : int64[n_rows + 1]
        Row ``r`` gathers pieces ``piece_order[row_ptr[r]:row_ptr[r + 1]]``.
    piece_order : int64[:]
        Pieces of nonzero id, sorted by ``(frame, id)``.
    row_frame, row_label : int64[n_rows]
        Each row's frame index and id, sorted by ``(frame, id)``.
    """
    keys = piece_frame * 65536 + piece_label
    order = np.argsort(keys, kind="mergesort")
    n_keep = 0
    for j in range(order.shape[0]):
        if piece_label[order[j]] != 0:
            n_keep += 1
    piece_order = np.empty(n_keep, np.int64)
    row_ptr = np.empty(n_keep + 1, np.int64)
    row_frame = np.empty(n_keep, np.int64)
    row_label = np.empty(n_keep, np.int64)
    n_rows = 0
    k = 0
    last = np.int64(-1)
    for j in range(order.shape[0]):
        p = order[j]
        if piece_label[p] == 0:
            continue
        if keys[p] != last:
            row_ptr[n_rows] = k
            row_frame[n_rows] = piece_frame[p]
            row_label[n_rows] = piece_label[p]
            n_rows += 1
            last = keys[p]
        piece_order[k] = p
        k += 1
    row_ptr[n_rows] = k
    return (
        row_ptr[: n_rows + 1].copy(),
        piece_order,
        row_frame[:n_rows].copy(),
        row_label[:n_rows].copy(),
    )
