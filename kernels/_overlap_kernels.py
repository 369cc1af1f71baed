"""Find and remove overlapping runs within one frame's run list (CPU, numba).

Painting a frame's runs in stream order defines its pixels: where runs overlap,
the later one wins. The consumers that do not paint in order (the GPU writes
every run's pixels in parallel; the object tables sum per run) need runs that do
not overlap. Files written by NIS-Elements have none, so overlaps are looked for
in O(runs + rows) and only a frame that has some is rewritten.

- ``find_overlap`` groups a frame's runs by row (a counting sort over the rows,
  or a merge sort when the frame has far more rows than runs) and checks each
  row's runs sorted by column (insertion sort for the few runs a row usually
  has, Shell sort beyond): runs of different rows never overlap. It allocates
  nothing.
- ``overlaps_by_row`` answers the same question faster where a row table fits:
  the runs' (column, end) pairs grouped by row into one scratch array and
  sorted there; ``find_overlap`` then groups only a frame that overlaps.
- ``resolve_later_wins`` rewrites the runs row by row into the runs of what
  painting them in stream order leaves: coordinates compressed to the runs'
  ends, each piece owned by the last run covering it (found last run first with
  a union-find "next unclaimed piece" pointer: O(k log k) for a row of k runs,
  whatever their lengths). Runs of value 0 are dropped (they paint background).
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Frames with more rows than this are grouped by row with a sort, not a table.
MAX_ROW_TABLE = 1 << 20
#: Rows with at most this many runs are sorted by insertion.
INSERTION_RUNS = 32
_LOW = np.int64(0xFFFFFFFF)


def row_table(nrows: int) -> np.ndarray:
    """Scratch for ``find_overlap``: a row table, or none for very tall frames."""
    return np.empty(nrows + 1 if nrows < MAX_ROW_TABLE else 0, np.int32)


@njit(nogil=True, cache=True)
def _row_offsets(rows, lo, hi, nrows, counts):
    """``counts[r]``: where row ``r``'s runs of ``lo:hi`` start when grouped by
    row (a counting sort's offsets)."""
    counts[: nrows + 1] = 0
    for i in range(lo, hi):
        counts[rows[i] + 1] += 1
    for r in range(nrows):
        counts[r + 1] += counts[r]


@njit(nogil=True, cache=True)
def overlaps_by_row(rows, cols, lengths, lo, hi, nrows, counts, keys):
    """Whether two of runs ``lo:hi`` (one frame) share a pixel: ``find_overlap``
    without its indirection, about a third cheaper.

    ``counts`` is ``row_table(nrows)`` (not empty) and ``keys`` (int64, at
    least ``hi - lo`` entries) scratch: each run's ``col << 32 | end`` grouped
    by row with a counting sort, then sorted within its row.
    """
    _row_offsets(rows, lo, hi, nrows, counts)
    for i in range(lo, hi):
        r = rows[i]
        c = np.int64(cols[i])
        keys[counts[r]] = (c << 32) | (c + lengths[i])
        counts[r] += 1
    a = 0
    for r in range(nrows):
        b = counts[r]
        if b - a > 1:
            row = keys[a:b]
            if b - a <= INSERTION_RUNS:
                for j in range(1, b - a):
                    k = row[j]
                    m = j - 1
                    while m >= 0 and row[m] > k:
                        row[m + 1] = row[m]
                        m -= 1
                    row[m + 1] = k
            else:
                row.sort()
            end = row[0] & _LOW
            for j in range(1, b - a):
                if (row[j] >> 32) < end:
                    return True
                end = max(end, row[j] & _LOW)
        a = b
    return False


@njit(nogil=True, cache=True)
def group_by_row(rows, lo, hi, nrows, counts, order):
    """Order runs ``lo:hi`` by row, keeping stream order within a row.

    ``order[:hi - lo]`` receives run indices (absolute). With a row table
    (``counts`` of at least ``nrows + 1`` entries) it is a counting sort;
    without (an empty ``counts``), a stable merge sort.
    """
    if counts.shape[0] >= nrows + 1:
        _row_offsets(rows, lo, hi, nrows, counts)
        for i in range(lo, hi):
            r = rows[i]
            order[counts[r]] = i
            counts[r] += 1
        return
    sorted_idx = np.argsort(rows[lo:hi], kind="mergesort")
    for k in range(hi - lo):
        order[k] = lo + sorted_idx[k]


@njit(nogil=True, cache=True)
def _sort_by_col(cols, order, a, b):
    """Sort ``order[a:b]`` in place by the runs' columns."""
    gap = 1
    if b - a > INSERTION_RUNS:
        while gap < (b - a) // 3:
            gap = 3 * gap + 1
    while gap >= 1:
        for j in range(a + gap, b):
            i = order[j]
            c = cols[i]
            m = j - gap
            while m >= a and cols[order[m]] > c:
                order[m + gap] = order[m]
                m -= gap
            order[m + gap] = i
        gap //= 3


@njit(nogil=True, cache=True, inline="always")
def _row_end(rows, order, a, n):
    """One past the last of ``order[a:n]`` in the row of ``order[a]``."""
    r = rows[order[a]]
    b = a + 1
    while b < n and rows[order[b]] == r:
        b += 1
    return b


@njit(nogil=True, cache=True)
def find_overlap(rows, cols, lengths, lo, hi, nrows, counts, order):
    """Whether two of runs ``lo:hi`` (one frame) share a pixel.

    ``counts`` (``row_table(nrows)``) and ``order`` (at least ``hi - lo``
    entries) are scratch; on return ``order[:hi - lo]`` holds the runs grouped
    by row (in no particular order within a row).
    """
    n = hi - lo
    if n < 2:
        return False
    group_by_row(rows, lo, hi, nrows, counts, order)
    a = 0
    while a < n:
        b = _row_end(rows, order, a, n)
        if b - a > 1:
            _sort_by_col(cols, order, a, b)
            end = cols[order[a]] + lengths[order[a]]
            for j in range(a + 1, b):
                i = order[j]
                if cols[i] < end:
                    return True
                end = max(end, cols[i] + lengths[i])
        a = b
    return False


@njit(nogil=True, cache=True)
def _find(nxt, j):
    root = j
    while nxt[root] != root:
        root = nxt[root]
    while nxt[j] != root:
        nxt[j], j = root, nxt[j]
    return root


@njit(nogil=True, cache=True)
def _resolve_row(
    cols, lengths, values, order, a, b, row, o_rows, o_cols, o_len, o_val, out
):
    """Write the runs that painting runs ``order[a:b]`` (one row, in stream
    order) leaves, from ``out`` on; return one past the last."""
    k = b - a
    pts = np.empty(2 * k, np.int64)
    for j in range(k):
        i = order[a + j]
        pts[2 * j] = cols[i]
        pts[2 * j + 1] = cols[i] + lengths[i]
    pts = np.unique(pts)
    m = pts.shape[0] - 1
    owner = np.full(m, -1, np.int64)
    nxt = np.arange(m + 1)
    for j in range(k - 1, -1, -1):
        i = order[a + j]
        p = _find(nxt, np.searchsorted(pts, cols[i]))
        q = np.searchsorted(pts, cols[i] + lengths[i])
        while p < q:
            owner[p] = i
            nxt[p] = p + 1
            p = _find(nxt, p + 1)
    p = 0
    while p < m:
        if owner[p] < 0 or values[owner[p]] == 0:
            p += 1
            continue
        v = values[owner[p]]
        q = p + 1
        while q < m and owner[q] >= 0 and values[owner[q]] == v:
            q += 1
        o_rows[out] = row
        o_cols[out] = pts[p]
        o_len[out] = pts[q] - pts[p]
        o_val[out] = v
        out += 1
        p = q
    return out


@njit(nogil=True, cache=True)
def resolve_later_wins(rows, cols, lengths, values, lo, hi, order, first):
    """Rewrite runs ``lo:hi`` into runs that do not overlap, rows ascending.

    ``order[:hi - lo]`` must hold the runs grouped by row (``find_overlap``
    leaves it so). The result paints exactly what painting runs ``lo:hi`` in
    stream order paints, without runs of value 0; it is appended to the same
    arrays from ``first`` on (``first >= hi``; room for ``2 * (hi - lo)`` runs).
    Returns one past the last run written.
    """
    n = hi - lo
    out = first
    a = 0
    while a < n:
        b = _row_end(rows, order, a, n)
        if b - a == 1:
            i = order[a]
            if values[i] != 0:
                rows[out] = rows[i]
                cols[out] = cols[i]
                lengths[out] = lengths[i]
                values[out] = values[i]
                out += 1
        else:
            order[a:b].sort()  # run indices: back to stream order
            row = rows[order[a]]
            out = _resolve_row(
                cols,
                lengths,
                values,
                order,
                a,
                b,
                row,
                rows,
                cols,
                lengths,
                values,
                out,
            )
        a = b
    return out
