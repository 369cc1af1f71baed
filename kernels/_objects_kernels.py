"""CPU kernels: object statistics (regionprops) of a frame, from its runs (numba).

The runs come from ``_record_kernels.record_group``: frame-local, and never
overlapping. ``measure_frame`` reduces them by id into one entry per object:

- integer sums, exact: area, the sums of the pixels' rows and columns (a run of
  ``n`` pixels from ``col`` adds ``n * col + n * (n - 1) / 2``), the bounding box;
- with an intensity image, the sum (int64 for integer images of up to 32 bits,
  float64 otherwise), minimum and maximum of the pixels under the runs (a NaN
  sticks, as in numpy);
- with a pixel spacing, the sums of the pixels' scaled rows and columns, added
  pixel by pixel in row-major order, as ``numpy.mean`` of skimage's scaled
  coordinates adds them: the centroid is then bit-identical to skimage's.

Entries are written sorted by id, id 0 (background) left out, into a growing
per-thread table of ``STAT_FIELDS`` integers and ``FLOAT_FIELDS`` floats per
object; ``nd2gpu._objects.cpu`` turns the tables into columns.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Integer fields of an entry.
S_FRAME = 0  # the frame's position in the call
S_LABEL = 1
S_AREA = 2
S_MIN_ROW = 3
S_MIN_COL = 4
S_MAX_ROW = 5  # inclusive
S_MAX_COL = 6  # inclusive
S_SUM_ROW = 7
S_SUM_COL = 8
S_SUM_INT = 9  # intensity sum of an integer image
S_LAST = 10  # row * ncols + col of the entry's last run (order check)
STAT_FIELDS = 11
#: Float fields of an entry.
F_SUM_ROW = 0  # scaled rows (with a spacing)
F_SUM_COL = 1
F_SUM = 2  # intensity sum of a float image
F_MIN = 3
F_MAX = 4
FLOAT_FIELDS = 5

_BIG = np.int64(1) << np.int64(62)


def integer_sums(image_dtype: np.dtype) -> bool:
    """Whether intensities of this dtype are summed exactly in int64."""
    image_dtype = np.dtype(image_dtype)
    return image_dtype.kind in "biu" and image_dtype.itemsize <= 4


@njit(nogil=True, cache=True)
def _entry_labels(values, lo, hi, scratch):
    """The distinct nonzero values of runs ``lo:hi``, sorted, in ``scratch``."""
    k = 0
    last = -1
    for i in range(lo, hi):
        v = values[i]
        if v != 0 and v != last:
            scratch[k] = v
            k += 1
            last = v
    labels = scratch[:k]
    labels.sort()
    m = 0
    for j in range(k):
        if j == 0 or labels[j] != labels[m - 1]:
            labels[m] = labels[j]
            m += 1
    return labels[:m]


@njit(nogil=True, cache=True)
def _find_entry(labels, v):
    return np.searchsorted(labels, v)


@njit(nogil=True, cache=True)
def measure_frame(
    rows,
    cols,
    lengths,
    values,
    lo,
    hi,
    ncols,
    image,
    has_image,
    int_sums,
    spacing,
    has_spacing,
    frame,
    stats,
    fstats,
    first,
    scratch,
):
    """Reduce runs ``lo:hi`` of one frame into entries from row ``first`` on.

    Parameters
    ----------
    rows, cols, lengths, values : arrays
        The run list (no overlapping runs).
    lo, hi : int
        The frame's runs.
    ncols : int
        The frame's width.
    image : 2-D array
        The frame's intensity image (used if ``has_image``).
    int_sums : bool
        Sum intensities in int64 (else float64).
    spacing : float64[2]
        ``(dy, dx)`` (used if ``has_spacing``).
    frame : int
        Written to each entry's ``S_FRAME``.
    stats, fstats : int64[:, STAT_FIELDS], float64[:, FLOAT_FIELDS]
        The table.
    first : int
        Row of the table where the frame's entries start.
    scratch : uint16[:]
        At least ``hi - lo`` entries.

    Returns
    -------
    int
        One past the frame's last entry, or ``-(rows needed)`` when the table
        is too short (grow it and call again).
    """
    labels = _entry_labels(values, lo, hi, scratch)
    m = labels.shape[0]
    if first + m > stats.shape[0]:
        return -(first + m)
    for e in range(m):
        s = stats[first + e]
        s[:] = 0
        s[S_FRAME] = frame
        s[S_LABEL] = labels[e]
        s[S_MIN_ROW] = _BIG
        s[S_MIN_COL] = _BIG
        s[S_MAX_ROW] = -1
        s[S_MAX_COL] = -1
        s[S_LAST] = -1
        fstats[first + e, :] = 0.0
    ordered = True
    last_value = -1
    e = 0
    for i in range(lo, hi):
        v = values[i]
        if v == 0:
            continue
        if v != last_value:
            e = first + _find_entry(labels, v)
            last_value = v
        s = stats[e]
        row = np.int64(rows[i])
        col = np.int64(cols[i])
        n = np.int64(lengths[i])
        key = row * ncols + col
        if key < s[S_LAST]:
            ordered = False
        s[S_LAST] = key
        if has_image:
            f = fstats[e]
            if s[S_AREA] == 0:
                f[F_MIN] = image[row, col]
                f[F_MAX] = image[row, col]
            lo_v = f[F_MIN]
            hi_v = f[F_MAX]
            if int_sums:
                total = s[S_SUM_INT]
                for c in range(col, col + n):
                    p = image[row, c]
                    total += np.int64(p)
                    if p < lo_v:
                        lo_v = p
                    if p > hi_v:
                        hi_v = p
                s[S_SUM_INT] = total
            else:
                ftotal = f[F_SUM]
                for c in range(col, col + n):
                    p = np.float64(image[row, c])
                    ftotal += p
                    # A NaN sticks, as in numpy's min and max.
                    if p < lo_v or p != p:
                        lo_v = p
                    if p > hi_v or p != p:
                        hi_v = p
                f[F_SUM] = ftotal
            f[F_MIN] = lo_v
            f[F_MAX] = hi_v
        s[S_AREA] += n
        s[S_SUM_ROW] += row * n
        s[S_SUM_COL] += n * col + (n * (n - 1)) // 2
        if row < s[S_MIN_ROW]:
            s[S_MIN_ROW] = row
        if row > s[S_MAX_ROW]:
            s[S_MAX_ROW] = row
        if col < s[S_MIN_COL]:
            s[S_MIN_COL] = col
        if col + n - 1 > s[S_MAX_COL]:
            s[S_MAX_COL] = col + n - 1
    if has_spacing:
        _scaled_sums(
            rows, cols, lengths, values, lo, hi, ncols, labels, spacing, ordered,
            fstats, first,
        )
    return first + m


@njit(nogil=True, cache=True)
def _scaled_sums(
    rows, cols, lengths, values, lo, hi, ncols, labels, spacing, ordered, fstats, first
):
    """Scaled row and column sums, pixel by pixel in row-major order per entry."""
    dy = spacing[0]
    dx = spacing[1]
    if ordered:
        order = np.arange(lo, hi)
    else:
        keys = np.empty(hi - lo, np.int64)
        for i in range(lo, hi):
            keys[i - lo] = np.int64(rows[i]) * ncols + np.int64(cols[i])
        order = lo + np.argsort(keys, kind="mergesort")
    last_value = -1
    e = 0
    for j in range(hi - lo):
        i = order[j]
        v = values[i]
        if v == 0:
            continue
        if v != last_value:
            e = first + _find_entry(labels, v)
            last_value = v
        f = fstats[e]
        y = np.float64(rows[i]) * dy
        sy = f[F_SUM_ROW]
        sx = f[F_SUM_COL]
        col = np.int64(cols[i])
        for c in range(col, col + np.int64(lengths[i])):
            sy += y
            sx += np.float64(c) * dx
        f[F_SUM_ROW] = sy
        f[F_SUM_COL] = sx


@njit(nogil=True, cache=True)
def measure_group(
    rows,
    cols,
    lengths,
    values,
    spans,
    n,
    ncols,
    statuses,
    images,
    has_image,
    int_sums,
    spacing,
    has_spacing,
    frame0,
    stats,
    fstats,
    first,
    scratch,
):
    """``measure_frame`` of a group's recorded frames (those whose status is
    ``statuses[i] == 0``), entries from row ``first`` on; frame ``i`` is
    written as ``frame0 + i``.

    Returns
    -------
    int
        One past the last entry, or ``-(rows needed)`` when the table is too
        short (grow it and call again: the group starts over from ``first``).
    """
    out = first
    for i in range(n):
        if statuses[i] != 0:
            continue
        out = measure_frame(
            rows,
            cols,
            lengths,
            values,
            spans[i, 0],
            spans[i, 1],
            ncols,
            images[i],
            has_image,
            int_sums,
            spacing,
            has_spacing,
            frame0 + i,
            stats,
            fstats,
            out,
            scratch,
        )
        if out < 0:
            return out
    return out
