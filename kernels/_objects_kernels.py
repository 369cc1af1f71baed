"""CPU kernels: object statistics (regionprops) of a frame, from its runs (numba).

The runs come from ``_record_kernels.record_group``: frame-local, and never
overlapping. ``measure_frame`` reduces them by id into one entry per object:

- integer sums, exact: area, the sums of the pixels' rows and columns (a run of
  ``n`` pixels from ``col`` adds ``n * col + n * (n - 1) / 2``), the bounding box;
- with an intensity image, the sum (int64 for integer images of up to 32 bits,
  float64 otherwise), minimum and maximum of the pixels under the runs (a NaN
  sticks, as in numpy);
- with a pixel spacing, the sums of the pixels' scaled rows and columns, added
  in row-major order and pairwise, as ``numpy.mean`` of skimage's scaled
  coordinates adds them (``scaled_sums``): the centroid is then bit-identical
  to skimage's.

Entries are written sorted by id, id 0 (background) left out, into a growing
per-thread table of ``STAT_FIELDS`` integers and ``FLOAT_FIELDS`` floats per
object; ``nd2gpu._objects.cpu`` turns the tables into columns.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from nd2gpu._format.mask_stream import MAX_LABEL

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
STAT_FIELDS = 10
#: Float fields of an entry.
F_SUM_ROW = 0  # scaled rows (with a spacing)
F_SUM_COL = 1
F_SUM = 2  # intensity sum of a float image
F_MIN = 3
F_MAX = 4
FLOAT_FIELDS = 5

_BIG = np.int64(1) << np.int64(62)
#: Frames with more distinct labels than this find their entries in a table
#: indexed by label (zeroing and scanning it costs about as much as sorting
#: this many), the others by binary search in the sorted labels.
SORTED_LABELS = 2048


def integer_sums(image_dtype: np.dtype) -> bool:
    """Whether intensities of this dtype are summed exactly in int64."""
    image_dtype = np.dtype(image_dtype)
    return image_dtype.kind in "biu" and image_dtype.itemsize <= 4


@njit(nogil=True, cache=True)
def place_entries(stats, fstats, n, first_row, out_stats, out_fstats):
    """Copy entries ``:n`` (each job's together) to their rows in job order:
    job ``j``'s entries from row ``first_row[j]`` of the outputs on."""
    job = np.int64(-1)
    r = np.int64(0)
    for i in range(n):
        if stats[i, S_FRAME] != job:
            job = stats[i, S_FRAME]
            r = first_row[job]
        for f in range(stats.shape[1]):
            out_stats[r, f] = stats[i, f]
        for f in range(fstats.shape[1]):
            out_fstats[r, f] = fstats[i, f]
        r += 1


@njit(nogil=True, cache=True)
def _entry_labels(values, lo, hi, scratch):
    """The distinct nonzero values of runs ``lo:hi``, sorted, in ``scratch``,
    and where there are many of them, a table of each value's position in them
    (else an empty one: look them up with ``_find_entry``)."""
    k = 0
    last = -1
    for i in range(lo, hi):
        v = values[i]
        if v != 0 and v != last:
            scratch[k] = v
            k += 1
            last = v
    if k > SORTED_LABELS:
        index = np.zeros(MAX_LABEL + 1, np.int32)
        for j in range(k):
            index[scratch[j]] = 1
        m = 0
        for v in range(1, MAX_LABEL + 1):
            if index[v]:
                scratch[m] = v
                index[v] = m
                m += 1
        return scratch[:m], index
    labels = scratch[:k]
    labels.sort()
    m = 0
    for j in range(k):
        if j == 0 or labels[j] != labels[m - 1]:
            labels[m] = labels[j]
            m += 1
    return labels[:m], np.empty(0, np.int32)


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
    labels, index = _entry_labels(values, lo, hi, scratch)
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
        fstats[first + e, :] = 0.0
    last_value = -1
    e = 0
    for i in range(lo, hi):
        v = values[i]
        if v == 0:
            continue
        if v != last_value:
            e = first + (index[v] if index.shape[0] else _find_entry(labels, v))
            last_value = v
        s = stats[e]
        row = np.int64(rows[i])
        col = np.int64(cols[i])
        n = np.int64(lengths[i])
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
        found = np.empty(hi - lo, np.uint16)
        sums = np.empty((hi - lo, 2), np.float64)
        scaled_sums(rows, cols, lengths, values, lo, hi, ncols, spacing, found, sums)
        for e in range(m):
            fstats[first + e, F_SUM_ROW] = sums[e, 0]
            fstats[first + e, F_SUM_COL] = sums[e, 1]
    return first + m


@njit(nogil=True, cache=True)
def _next_scaled(rows, cols, lengths, order, cur, axis, scale):
    """The next pixel's scaled row (``axis`` 0) or column of the runs
    ``order[cur[0]:]``, from pixel ``cur[1]`` of the current run on."""
    i = order[cur[0]]
    k = cur[1]
    if axis == 0:
        v = np.float64(rows[i]) * scale
    else:
        v = np.float64(np.int64(cols[i]) + k) * scale
    k += 1
    if k == lengths[i]:
        cur[0] += 1
        k = 0
    cur[1] = k
    return v


@njit(nogil=True, cache=True)
def _pairwise(n, rows, cols, lengths, order, cur, axis, scale, r):
    """numpy's pairwise sum (``np.add.reduce`` of a contiguous float64 array) of
    the next ``n`` scaled coordinates: blocks of up to 128 in eight partial
    sums (``r``: scratch of 8), halves (cut at a multiple of 8) added
    recursively."""
    if n < 8:
        res = 0.0
        for _ in range(n):
            res += _next_scaled(rows, cols, lengths, order, cur, axis, scale)
        return res
    if n <= 128:
        for j in range(8):
            r[j] = _next_scaled(rows, cols, lengths, order, cur, axis, scale)
        for _ in range(8, n - n % 8, 8):
            for j in range(8):
                r[j] += _next_scaled(rows, cols, lengths, order, cur, axis, scale)
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for _ in range(n % 8):
            res += _next_scaled(rows, cols, lengths, order, cur, axis, scale)
        return res
    n2 = n // 2
    n2 -= n2 % 8
    left = _pairwise(n2, rows, cols, lengths, order, cur, axis, scale, r)
    return left + _pairwise(n - n2, rows, cols, lengths, order, cur, axis, scale, r)


@njit(nogil=True, cache=True)
def scaled_sums(rows, cols, lengths, values, lo, hi, ncols, spacing, labels, sums):
    """The sums of the scaled coordinates of each object of runs ``lo:hi``.

    skimage's centroid with a spacing is ``coords_scaled.mean(axis=0)``, and
    ``coords_scaled`` is Fortran-ordered, so numpy sums each column of scaled
    coordinates pairwise, in row-major pixel order. This does the same: the
    runs of each id are put in row-major order and summed with ``_pairwise``.
    ``labels`` receives the ids (sorted, 0 left out) and ``sums[e]`` the row and
    column sums of id ``labels[e]``; both need room for ``hi - lo`` entries.
    Returns the number of ids.
    """
    n = hi - lo
    keys = np.empty(n, np.int64)
    runs = np.empty(n, np.int64)
    k = 0
    ordered = True
    for i in range(lo, hi):
        if values[i] != 0:
            key = (np.int64(values[i]) << 40) | (np.int64(rows[i]) * ncols + cols[i])
            if k and key < keys[k - 1]:
                ordered = False
            keys[k] = key
            runs[k] = i
            k += 1
    if not ordered:
        runs = runs[:k][np.argsort(keys[:k], kind="mergesort")]
    m = 0
    start = 0
    cur = np.zeros(2, np.int64)
    r = np.empty(8)
    while start < k:
        v = values[runs[start]]
        end = start
        pixels = np.int64(0)
        while end < k and values[runs[end]] == v:
            pixels += lengths[runs[end]]
            end += 1
        labels[m] = v
        cur[0] = start
        cur[1] = 0
        sums[m, 0] = _pairwise(pixels, rows, cols, lengths, runs, cur, 0, spacing[0], r)
        cur[0] = start
        cur[1] = 0
        sums[m, 1] = _pairwise(pixels, rows, cols, lengths, runs, cur, 1, spacing[1], r)
        m += 1
        start = end
    return m


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


@njit(nogil=True, cache=True)
def scaled_sums_group(rows, cols, lengths, values, spans, n, statuses, ncols, spacing):
    """``scaled_sums`` of a group's first ``n`` recorded frames (status 0).

    Returns
    -------
    frames : int64[k]
        The group's frame of each object.
    labels : int64[k]
    sums : float64[k, 2]
        Objects by frame, then id (0 left out).
    """
    total = 0
    for i in range(n):
        if statuses[i] == 0:
            total += spans[i, 1] - spans[i, 0]
    frames = np.empty(total, np.int64)
    labels = np.empty(total, np.int64)
    sums = np.empty((total, 2), np.float64)
    found = np.empty(total, np.uint16)
    k = 0
    for i in range(n):
        if statuses[i] != 0:
            continue
        m = scaled_sums(
            rows,
            cols,
            lengths,
            values,
            spans[i, 0],
            spans[i, 1],
            ncols,
            spacing,
            found[k:],
            sums[k:],
        )
        for j in range(m):
            frames[k + j] = i
            labels[k + j] = found[k + j]
        k += m
    return frames[:k].copy(), labels[:k].copy(), sums[:k].copy()
