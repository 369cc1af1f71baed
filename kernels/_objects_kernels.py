"""CPU kernels: object statistics (regionprops) straight from a frame's mask stream.

A frame is measured without a label image and without its whole run table:

1. ``scan_words`` walks the inflated word stream piece by piece (the caller
   inflates it in bounded pieces), validating every record exactly as
   ``_parse_kernels.parse_frame_runs`` does (same checks, same order, same error
   words; see ``finish_scan``). In the *accumulate* pass it adds every run to its
   mask's statistics (area, row and column sums, bounding box and, given an
   intensity image, sum / min / max of the pixels under the run) and keeps only
   ``(col, length, row)`` of each run, in the narrowest integer type the frame
   allows (6 bytes a run for frames up to 65535 x 65535).
2. ``masks_overlap`` rules overlaps in or out mask by mask: when every mask's
   runs come sorted (checked while scanning), only masks whose bounding boxes
   meet can overlap, and those pairs are merge-checked on the rows they share.
   Otherwise, or when that would take more than a few steps per run,
   ``sort_rows_in_place`` groups the kept runs by row and ``rows_overlap``
   checks each row with ``_overlap_kernels.frame_has_overlap`` (a row-sized
   bitmap): runs of different rows never overlap.
3. Only for a frame where some runs overlap, a *resolve* pass scans the stream
   again keeping each run's label too; ``accumulate_resolved`` groups the runs
   by row in stream order and rewrites each overlapping row with
   ``_overlap_kernels.resolve_later_wins`` (the later run wins, as in painting),
   then accumulates the pieces per label.
4. ``write_rows`` merges the statistics of masks that share an id, drops id 0
   and objects left without pixels, and writes the frame's rows, sorted by
   label, into the output columns.

Everything is O(runs + masks) in time and memory (plus O(rows + columns / 64)
for sorting masks and runs by row and for the row bitmap; frames with far more
rows than runs use ``compact_row_ids`` instead), whatever the frame size.

``plan_pieces`` and ``plan_rows`` prepare a batch's run table for the CUDA
reduction (``_objects_cuda``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from nd2gpu._format.mask_stream import (
    HEADER_WORDS,
    MASK_ROWS_WORD,
    MASK_WORDS,
    MAX_LABEL,
    ROW_WORDS,
    RUN_WORDS,
)

from ._overlap_kernels import frame_has_overlap, resolve_later_wins
from ._parse_kernels import OK, ROW_OUT_OF_RANGE, TRUNCATED, VALUE_TOO_LARGE

# --- scan state ---------------------------------------------------------------

#: ``scan_words`` keeps its position in the stream in an int64 array of
#: ``STATE_SIZE`` entries, so a frame's stream can be fed in pieces.
S_POS = 0  # stream word index of the next unread word
S_PHASE = 1
S_MASKS_LEFT = 2
S_ROWS_LEFT = 3
S_RUNS_LEFT = 4
S_MASK_POS = 5  # word index of the current mask record
S_ROI = 6  # the current mask's id (as stored: may exceed 65535)
S_ROW = 7  # the current row record's row
S_MASK = 8  # index of the current mask (-1 before the first)
S_N_RUNS = 9  # runs kept
S_ERROR = 10  # status of an error found, waiting for the stream's length
S_ERROR_WORD = 11
S_ERROR_VALUE = 12
S_ERROR_NEED = 13  # words the stream must hold for that error to stand
S_PREV_ROW = 14  # row and end of the current mask's last run (order check)
S_PREV_END = 15
STATE_SIZE = 16

PHASE_HEADER = 0
PHASE_MASK = 1
PHASE_ROW = 2
PHASE_RUNS = 3
PHASE_DONE = 4
PHASE_ERROR = 5

#: ``scan_words`` return codes.
NEED_WORDS = 0  # every complete record was read: feed the rest of the stream
GROW_RUNS = 1  # the run arrays are full: enlarge them and call again
GROW_MASKS = 2  # the mask arrays are full: enlarge them and call again
FINISHED = 3  # nothing more to parse (done, or an error waits for the length)

#: Per-mask (or per-label) geometry: ``geo[m, k]`` int64.
G_AREA = 0
G_SUM_ROW = 1
G_SUM_COL = 2
G_MIN_ROW = 3
G_MAX_ROW = 4
G_MIN_COL = 5
G_MAX_COL = 6
#: Per mask only: its first kept run, and 1 while its runs come sorted by
#: (row, col) without overlapping each other.
G_FIRST_RUN = 7
G_ORDERED = 8
GEO_FIELDS = 9
#: Per-mask intensity: ``val[m, k]`` (int64 for integer images, else float64).
V_SUM = 0
V_MIN = 1
V_MAX = 2
VAL_FIELDS = 3

_BIG = np.int64(1) << np.int64(62)

#: ``write_rows`` column tuples: ``ints`` then ``floats``; an empty array is a
#: column nobody asked for.
I_LAYER = 0
I_FRAME = 1
I_LABEL = 2
I_BBOX0 = 3  # bbox-0 .. bbox-3 at 3 .. 6
INT_COLUMNS = 7
F_AREA = 0
F_CENTROID0 = 1  # centroid-0, centroid-1 at 1, 2
F_MEAN = 3
F_MIN = 4
F_MAX = 5
FLOAT_COLUMNS = 6


def new_state() -> np.ndarray:
    """A fresh scan state (a frame's stream starts with its header)."""
    st = np.zeros(STATE_SIZE, np.int64)
    reset_state(st, 0)
    return st


def reset_state(st: np.ndarray, nmasks: int) -> None:
    """Prepare ``st`` to scan a stream whose header says ``nmasks`` masks."""
    st[:] = 0
    st[S_PHASE] = PHASE_HEADER
    st[S_MASKS_LEFT] = nmasks
    st[S_MASK] = -1
    st[S_ERROR] = OK


def store_dtype(nrows: int, ncols: int) -> np.dtype:
    """The integer type of the kept runs' ``col``, ``length`` and ``row``."""
    return np.dtype(np.uint16 if max(nrows, ncols) <= 0xFFFF else np.int32)


def value_dtype(image_dtype: np.dtype) -> np.dtype:
    """Accumulator type of intensity statistics: exact int64 for integers that
    fit 32 bits, float64 otherwise."""
    image_dtype = np.dtype(image_dtype)
    if image_dtype.kind in "biu" and image_dtype.itemsize <= 4:
        return np.dtype(np.int64)
    return np.dtype(np.float64)


# --- stream scan --------------------------------------------------------------


@njit(nogil=True, cache=True, inline="always")
def _start_mask(mask_geo, mask_label, m, roi):
    mask_label[m] = roi
    mask_geo[m, G_AREA] = 0
    mask_geo[m, G_SUM_ROW] = 0
    mask_geo[m, G_SUM_COL] = 0
    mask_geo[m, G_MIN_ROW] = _BIG
    mask_geo[m, G_MAX_ROW] = -1
    mask_geo[m, G_MIN_COL] = _BIG
    mask_geo[m, G_MAX_COL] = -1
    mask_geo[m, G_FIRST_RUN] = 0
    mask_geo[m, G_ORDERED] = 1


@njit(nogil=True, cache=True, inline="always")
def _add_pixels(geo, val, m, row, col, n, image):
    """Add the intensities of ``n`` pixels of ``row`` from ``col`` on to entry
    ``m`` (valid once the entry's area is not 0; call before adding the area)."""
    if geo[m, G_AREA] == 0:
        val[m, V_SUM] = 0
        val[m, V_MIN] = image[row, col]
        val[m, V_MAX] = image[row, col]
    s = val[m, V_SUM]
    lo = val[m, V_MIN]
    hi = val[m, V_MAX]
    for c in range(col, col + n):
        v = image[row, c]
        s += v
        # NaN sticks, as in numpy's min and max.
        if v < lo or v != v:
            lo = v
        if v > hi or v != v:
            hi = v
    val[m, V_SUM] = s
    val[m, V_MIN] = lo
    val[m, V_MAX] = hi


@njit(nogil=True, cache=True, inline="always")
def _add_run(geo, val, m, row, col, n, image):
    """Add ``n`` pixels of ``row`` from ``col`` on to entry ``m``."""
    if val.shape[0] > 0:
        _add_pixels(geo, val, m, row, col, n, image)
    geo[m, G_AREA] += n
    geo[m, G_SUM_ROW] += row * n
    geo[m, G_SUM_COL] += n * col + (n * (n - 1)) // 2
    if row < geo[m, G_MIN_ROW]:
        geo[m, G_MIN_ROW] = row
    if row > geo[m, G_MAX_ROW]:
        geo[m, G_MAX_ROW] = row
    if col < geo[m, G_MIN_COL]:
        geo[m, G_MIN_COL] = col
    if col + n - 1 > geo[m, G_MAX_COL]:
        geo[m, G_MAX_COL] = col + n - 1


@njit(nogil=True, cache=True)
def scan_words(
    words,
    base,
    st,
    nrows,
    ncols,
    run_col,
    run_len,
    run_row,
    run_label,
    mask_label,
    mask_geo,
    mask_val,
    image,
    accumulate,
):
    """Read the complete records of a piece of a frame's word stream.

    Parameters
    ----------
    words : uint32[::1]
        The next words of the stream; ``words[0]`` is stream word ``base``.
    base : int
        Its index in the stream (``st[S_POS]``).
    st : int64[STATE_SIZE]
        The scan state (``reset_state``), updated.
    nrows, ncols : int
        The frame's shape (header words 2 and 1).
    run_col, run_len, run_row : uint16[:] or int32[:]
        Receive ``(col, clipped length, row)`` of every pixel-writing run, from
        ``st[S_N_RUNS]`` on.
    run_label : uint16[:]
        Receives each run's id, or is empty (ids not kept).
    mask_label, mask_geo, mask_val : int64[:], int64[:, GEO_FIELDS], (int64 or
        float64)[:, 3]
        Per-mask id and statistics (``accumulate``); ``mask_val`` is empty
        without an intensity image.
    image : 2-D array
        The frame's intensity image (read only when ``mask_val`` is not empty).
    accumulate : bool
        Whether to accumulate per-mask statistics.

    Returns
    -------
    code : int
        ``NEED_WORDS``, ``GROW_RUNS``, ``GROW_MASKS`` or ``FINISHED``.
    consumed : int
        Words of ``words`` read; the rest (an incomplete record) must be fed
        again, followed by the next words of the stream.
    """
    n = words.shape[0]
    i = 0
    phase = st[S_PHASE]
    m = st[S_MASK]
    nr = st[S_N_RUNS]
    keep_labels = run_label.shape[0] > 0
    has_val = accumulate and mask_val.shape[0] > 0
    code = NEED_WORDS
    # The current mask's geometry lives in registers while its runs stream by.
    area = sum_row = sum_col = np.int64(0)
    min_row = min_col = _BIG
    max_row = max_col = np.int64(-1)
    ordered = np.int64(1)
    if accumulate and m >= 0:
        area = mask_geo[m, G_AREA]
        sum_row = mask_geo[m, G_SUM_ROW]
        sum_col = mask_geo[m, G_SUM_COL]
        min_row = mask_geo[m, G_MIN_ROW]
        max_row = mask_geo[m, G_MAX_ROW]
        min_col = mask_geo[m, G_MIN_COL]
        max_col = mask_geo[m, G_MAX_COL]
        ordered = mask_geo[m, G_ORDERED]
    prev_row = st[S_PREV_ROW]
    prev_end = st[S_PREV_END]
    masks_left = st[S_MASKS_LEFT]
    rows_left = st[S_ROWS_LEFT]
    left = st[S_RUNS_LEFT]
    mask_pos = st[S_MASK_POS]
    roi = st[S_ROI]
    row = st[S_ROW]
    while True:
        if phase == PHASE_HEADER:
            if i + HEADER_WORDS > n:
                break
            i += HEADER_WORDS
            phase = PHASE_MASK
        elif phase == PHASE_MASK:
            if masks_left == 0:
                phase = PHASE_DONE
                code = FINISHED
                break
            if i + MASK_WORDS > n:
                break
            if accumulate and m + 1 >= mask_label.shape[0]:
                code = GROW_MASKS
                break
            if accumulate and m >= 0:
                mask_geo[m, G_AREA] = area
                mask_geo[m, G_SUM_ROW] = sum_row
                mask_geo[m, G_SUM_COL] = sum_col
                mask_geo[m, G_MIN_ROW] = min_row
                mask_geo[m, G_MAX_ROW] = max_row
                mask_geo[m, G_MIN_COL] = min_col
                mask_geo[m, G_MAX_COL] = max_col
                mask_geo[m, G_ORDERED] = ordered
            m += 1
            roi = np.int64(words[i])
            mask_pos = base + i
            rows_left = np.int64(words[i + MASK_ROWS_WORD])
            masks_left -= 1
            i += MASK_WORDS
            if accumulate:
                _start_mask(mask_geo, mask_label, m, roi)
                mask_geo[m, G_FIRST_RUN] = nr
                area = sum_row = sum_col = 0
                min_row = min_col = _BIG
                max_row = max_col = -1
                ordered = 1
                prev_row = -1
                prev_end = 0
            phase = PHASE_ROW
        elif phase == PHASE_ROW:
            stop = False
            while True:
                if rows_left == 0:
                    phase = PHASE_MASK
                    break
                if i + ROW_WORDS > n:
                    stop = True
                    break
                row_pos = base + i
                row = np.int64(words[i])
                nruns = np.int64(words[i + 1])
                i += ROW_WORDS
                rows_left -= 1
                if nruns == 0:
                    continue
                # parse_frame_runs first checks that the row's runs are all in
                # the stream; that needs the stream's length, so an error found
                # here waits for it (finish_scan).
                if row >= nrows or roi > MAX_LABEL:
                    if row >= nrows:
                        st[S_ERROR] = ROW_OUT_OF_RANGE
                        st[S_ERROR_WORD] = row_pos
                        st[S_ERROR_VALUE] = row
                    else:
                        st[S_ERROR] = VALUE_TOO_LARGE
                        st[S_ERROR_WORD] = mask_pos
                        st[S_ERROR_VALUE] = roi
                    st[S_ERROR_NEED] = base + i + RUN_WORDS * nruns
                    phase = PHASE_ERROR
                    code = FINISHED
                    stop = True
                    break
                left = nruns
                if i + RUN_WORDS * nruns > n or nr + nruns > run_col.shape[0]:
                    phase = PHASE_RUNS
                    break
                # The usual case: the whole row record is here and fits.
                for _ in range(nruns):
                    col = np.int64(words[i])
                    length = np.int64(words[i + 1])
                    i += RUN_WORDS
                    if col >= ncols or length == 0:
                        continue
                    end = col + length
                    if end > ncols:
                        end = ncols
                    k = end - col
                    run_col[nr] = col
                    run_len[nr] = k
                    run_row[nr] = row
                    if keep_labels:
                        run_label[nr] = roi
                    nr += 1
                    if accumulate:
                        if has_val:
                            mask_geo[m, G_AREA] = area
                            _add_pixels(mask_geo, mask_val, m, row, col, k, image)
                        area += k
                        sum_row += row * k
                        sum_col += k * col + (k * (k - 1)) // 2
                        if row < min_row:
                            min_row = row
                        if row > max_row:
                            max_row = row
                        if col < min_col:
                            min_col = col
                        if end - 1 > max_col:
                            max_col = end - 1
                        if row < prev_row or (row == prev_row and col < prev_end):
                            ordered = 0
                        prev_row = row
                        prev_end = end
                left = 0
            if stop:
                break
        elif phase == PHASE_RUNS:
            while left > 0 and i + RUN_WORDS <= n:
                col = np.int64(words[i])
                length = np.int64(words[i + 1])
                if col < ncols and length != 0:
                    if nr >= run_col.shape[0]:
                        code = GROW_RUNS
                        break
                    k = min(col + length, ncols) - col
                    run_col[nr] = col
                    run_len[nr] = k
                    run_row[nr] = row
                    if keep_labels:
                        run_label[nr] = roi
                    if accumulate:
                        if has_val:
                            mask_geo[m, G_AREA] = area
                            _add_pixels(mask_geo, mask_val, m, row, col, k, image)
                        area += k
                        sum_row += row * k
                        sum_col += k * col + (k * (k - 1)) // 2
                        min_row = min(min_row, row)
                        max_row = max(max_row, row)
                        min_col = min(min_col, col)
                        max_col = max(max_col, col + k - 1)
                        if row < prev_row or (row == prev_row and col < prev_end):
                            ordered = 0
                        prev_row = row
                        prev_end = col + k
                    nr += 1
                i += RUN_WORDS
                left -= 1
            if code == GROW_RUNS or left > 0:
                break
            phase = PHASE_ROW
        else:
            code = FINISHED
            break
    if accumulate and m >= 0:
        mask_geo[m, G_AREA] = area
        mask_geo[m, G_SUM_ROW] = sum_row
        mask_geo[m, G_SUM_COL] = sum_col
        mask_geo[m, G_MIN_ROW] = min_row
        mask_geo[m, G_MAX_ROW] = max_row
        mask_geo[m, G_MIN_COL] = min_col
        mask_geo[m, G_MAX_COL] = max_col
        mask_geo[m, G_ORDERED] = ordered
    st[S_MASKS_LEFT] = masks_left
    st[S_ROWS_LEFT] = rows_left
    st[S_RUNS_LEFT] = left
    st[S_MASK_POS] = mask_pos
    st[S_ROI] = roi
    st[S_ROW] = row
    st[S_PREV_ROW] = prev_row
    st[S_PREV_END] = prev_end
    st[S_PHASE] = phase
    st[S_MASK] = m
    st[S_N_RUNS] = nr
    st[S_POS] = base + i
    return code, i


@njit(nogil=True, cache=True)
def scan_buffer(
    buffer,
    words,
    have,
    st,
    nrows,
    ncols,
    run_col,
    run_len,
    run_row,
    run_label,
    mask_label,
    mask_geo,
    mask_val,
    image,
    accumulate,
):
    """``scan_words`` over the ``have`` bytes at the start of ``buffer``.

    ``words`` is ``buffer`` viewed as uint32. The bytes not read (an incomplete
    record) are moved to the start of ``buffer``.

    Returns
    -------
    code : int
        As ``scan_words``; after ``GROW_RUNS`` / ``GROW_MASKS`` call again
        with the bytes left, after ``NEED_WORDS`` append the next bytes.
    left : int
        Bytes left at the start of ``buffer``.
    """
    n_words = have // 4
    code, used = scan_words(
        words[:n_words],
        st[S_POS],
        st,
        nrows,
        ncols,
        run_col,
        run_len,
        run_row,
        run_label,
        mask_label,
        mask_geo,
        mask_val,
        image,
        accumulate,
    )
    start = 4 * used
    left = have - start
    if code != FINISHED and used > 0:
        for k in range(left):
            buffer[k] = buffer[start + k]
    return code, left


def finish_scan(st: np.ndarray, n_words: int) -> tuple[int, int, int]:
    """The outcome of a scanned stream of ``n_words`` words.

    Returns
    -------
    status, word, value : int
        ``status`` is ``OK`` or a ``_parse_kernels`` error code; ``word`` is
        the stream word where ``parse_frame_runs`` reports it, ``value`` the
        offending row or id (for the message). ``status`` is ``TRUNCATED``
        with ``word = -1`` when the stream ends inside its header.
    """
    phase = int(st[S_PHASE])
    if phase == PHASE_HEADER:
        return TRUNCATED, -1, 0
    if phase == PHASE_ERROR:
        if n_words < st[S_ERROR_NEED]:
            return TRUNCATED, n_words, 0
        return int(st[S_ERROR]), int(st[S_ERROR_WORD]), int(st[S_ERROR_VALUE])
    if phase in (PHASE_MASK, PHASE_ROW):
        return TRUNCATED, int(st[S_POS]), 0
    if phase == PHASE_RUNS:
        return TRUNCATED, n_words, 0
    return OK, -1, 0


# --- overlap check by masks ----------------------------------------------------

#: ``masks_overlap`` outcomes.
NO_OVERLAP = 0
OVERLAP = 1
UNDECIDED = 2  # check by rows instead (``sort_rows_in_place``, ``rows_overlap``)


@njit(nogil=True, cache=True)
def _pair_overlap(run_col, run_len, run_row, a, a_end, b, b_end, lo_row, hi_row):
    """Whether masks with sorted, self-disjoint runs ``a:a_end`` and ``b:b_end``
    share a pixel in rows ``lo_row..hi_row``; also the steps it took."""
    a += np.searchsorted(run_row[a:a_end], lo_row)
    b += np.searchsorted(run_row[b:b_end], lo_row)
    steps = 0
    while a < a_end and b < b_end:
        steps += 1
        ra = np.int64(run_row[a])
        rb = np.int64(run_row[b])
        if ra > hi_row or rb > hi_row:
            break
        if ra < rb:
            a += 1
        elif rb < ra:
            b += 1
        else:
            ca = np.int64(run_col[a])
            cb = np.int64(run_col[b])
            ea = ca + np.int64(run_len[a])
            eb = cb + np.int64(run_len[b])
            if ca < eb and cb < ea:
                return True, steps
            if ea <= eb:
                a += 1
            else:
                b += 1
    return False, steps


@njit(nogil=True, cache=True)
def masks_overlap(
    run_col, run_len, run_row, n_runs, mask_geo, n_masks, nrows, order, counts, budget
):
    """Whether two kept runs share a pixel, decided mask by mask.

    Runs of one mask are consecutive (``mask_geo[m, G_FIRST_RUN]`` on). When
    every mask's runs come sorted by (row, col) without overlapping each
    other (``G_ORDERED``, checked while scanning), two runs can only overlap
    if their masks' bounding boxes do; such pairs (found by a sweep over the
    masks sorted by first row) are merge-checked on the rows both span.

    Parameters
    ----------
    nrows : int
        The frame's rows.
    order : int32[:]
        Scratch of at least ``2 * n_masks`` entries.
    counts : int32[:]
        Scratch of ``nrows + 1`` entries to sort the masks by first row (in
        O(masks + rows)), or fewer (then they are sorted by comparisons).
    budget : int
        Steps (box comparisons and merge steps) to spend before giving up.

    Returns
    -------
    int
        ``NO_OVERLAP``, ``OVERLAP``, or ``UNDECIDED`` (a mask's runs are not
        sorted, or the budget ran out).
    """
    k = 0
    for m in range(n_masks):
        if mask_geo[m, G_AREA] == 0:
            continue
        if mask_geo[m, G_ORDERED] == 0:
            return UNDECIDED
        order[k] = m
        k += 1
    if k < 2:
        return NO_OVERLAP
    sorted_masks = order[n_masks : n_masks + k]
    if counts.shape[0] > nrows:
        counts[: nrows + 1] = 0
        for j in range(k):
            counts[mask_geo[order[j], G_MIN_ROW] + 1] += 1
        for r in range(nrows):
            counts[r + 1] += counts[r]
        for j in range(k):
            r = mask_geo[order[j], G_MIN_ROW]
            sorted_masks[counts[r]] = order[j]
            counts[r] += 1
    else:
        keys = np.empty(k, np.int64)
        for j in range(k):
            keys[j] = mask_geo[order[j], G_MIN_ROW]
        by_row = np.argsort(keys)
        for j in range(k):
            sorted_masks[j] = order[by_row[j]]
    steps = 0
    for p in range(k):
        i = sorted_masks[p]
        i_end = mask_geo[i + 1, G_FIRST_RUN] if i + 1 < n_masks else n_runs
        for q in range(p + 1, k):
            j = sorted_masks[q]
            steps += 1
            if mask_geo[j, G_MIN_ROW] > mask_geo[i, G_MAX_ROW]:
                break
            if (
                mask_geo[j, G_MIN_COL] <= mask_geo[i, G_MAX_COL]
                and mask_geo[i, G_MIN_COL] <= mask_geo[j, G_MAX_COL]
            ):
                j_end = mask_geo[j + 1, G_FIRST_RUN] if j + 1 < n_masks else n_runs
                hit, used = _pair_overlap(
                    run_col,
                    run_len,
                    run_row,
                    mask_geo[i, G_FIRST_RUN],
                    i_end,
                    mask_geo[j, G_FIRST_RUN],
                    j_end,
                    max(mask_geo[i, G_MIN_ROW], mask_geo[j, G_MIN_ROW]),
                    min(mask_geo[i, G_MAX_ROW], mask_geo[j, G_MAX_ROW]),
                )
                if hit:
                    return OVERLAP
                steps += used
            if steps > budget:
                return UNDECIDED
    return NO_OVERLAP


# --- grouping runs by row -----------------------------------------------------


@njit(nogil=True, cache=True)
def sort_rows_in_place(run_col, run_len, run_row, n, n_row_ids, bounds, fill):
    """Group runs ``0:n`` by row, in place (not stable).

    ``run_row`` holds row ids below ``n_row_ids``. Afterwards the runs of row
    id ``r`` are ``bounds[r]:bounds[r + 1]``. ``bounds`` and ``fill`` need
    ``n_row_ids + 1`` and ``n_row_ids`` entries.
    """
    bounds[: n_row_ids + 1] = 0
    for i in range(n):
        bounds[np.int64(run_row[i]) + 1] += 1
    for r in range(n_row_ids):
        bounds[r + 1] += bounds[r]
        fill[r] = bounds[r]
    for r in range(n_row_ids):
        end = bounds[r + 1]
        while fill[r] < end:
            i = fill[r]
            rr = np.int64(run_row[i])
            if rr == r:
                fill[r] += 1
                continue
            j = fill[rr]
            fill[rr] += 1
            run_col[i], run_col[j] = run_col[j], run_col[i]
            run_len[i], run_len[j] = run_len[j], run_len[i]
            run_row[i], run_row[j] = run_row[j], run_row[i]


@njit(nogil=True, cache=True)
def order_rows_stable(run_row, n, n_row_ids, bounds, order):
    """Stable grouping of runs ``0:n`` by row id: ``order[bounds[r]:bounds[r+1]]``
    are the runs of row id ``r`` in stream order."""
    bounds[: n_row_ids + 1] = 0
    for i in range(n):
        bounds[np.int64(run_row[i]) + 1] += 1
    for r in range(n_row_ids):
        bounds[r + 1] += bounds[r]
    for i in range(n):
        r = np.int64(run_row[i])
        order[bounds[r]] = i
        bounds[r] += 1
    for r in range(n_row_ids, 0, -1):
        bounds[r] = bounds[r - 1]
    bounds[0] = 0


@njit(nogil=True, cache=True)
def compact_row_ids(run_row, n):
    """Replace the rows of runs ``0:n`` by dense ids; return the rows by id.

    For frames with far more rows than runs, so that grouping costs O(runs).
    """
    rows = np.unique(run_row[:n].astype(np.int64))
    for i in range(n):
        run_row[i] = np.searchsorted(rows, np.int64(run_row[i]))
    return rows


@njit(nogil=True, cache=True)
def rows_overlap(run_col, run_len, bounds, n_row_ids, ncols, bits):
    """Whether two runs of one row share a pixel (runs grouped by row).

    ``bits`` is scratch of at least ``ceil(ncols / 64)`` uint64 words.
    """
    for r in range(n_row_ids):
        lo = bounds[r]
        hi = bounds[r + 1]
        if hi - lo > 1 and frame_has_overlap(run_col, run_len, lo, hi, 0, ncols, bits):
            return True
    return False


@njit(nogil=True, cache=True)
def accumulate_resolved(
    run_col,
    run_len,
    run_label,
    order,
    bounds,
    row_of_id,
    n_row_ids,
    ncols,
    labels,
    geo,
    val,
    image,
    bits,
    scratch_starts,
    scratch_lengths,
    scratch_values,
    piece_starts,
    piece_lengths,
    piece_values,
):
    """Statistics per label of a frame whose runs may overlap (later run wins).

    Runs are grouped by row in stream order (``order_rows_stable``); a row
    whose runs overlap is rewritten by ``resolve_later_wins`` into the pieces
    that stay visible.

    Parameters
    ----------
    run_col, run_len, run_label : arrays
        The frame's runs (stream order).
    order, bounds : int arrays
        From ``order_rows_stable``.
    row_of_id : int64[:]
        Row of each row id, or empty when row ids are rows.
    n_row_ids, ncols : int
    labels : int64[:]
        The frame's distinct ids, sorted; ``geo[k]`` / ``val[k]`` (zeroed by
        the caller with ``init_entries``) receive the statistics of ``labels[k]``.
    geo, val, image : arrays
        As in ``scan_words``.
    bits : uint64[:]
        Scratch of at least ``ceil(ncols / 64)`` words.
    scratch_* , piece_* : arrays
        Scratch for one row: at least the most runs of a row, and twice that
        for the pieces.
    """
    for r in range(n_row_ids):
        lo = bounds[r]
        hi = bounds[r + 1]
        if hi == lo:
            continue
        row = r if row_of_id.shape[0] == 0 else row_of_id[r]
        k = hi - lo
        for j in range(k):
            i = order[lo + j]
            scratch_starts[j] = run_col[i]
            scratch_lengths[j] = run_len[i]
            scratch_values[j] = run_label[i]
        if k > 1 and frame_has_overlap(
            scratch_starts, scratch_lengths, 0, k, 0, ncols, bits
        ):
            n_pieces = resolve_later_wins(
                scratch_starts,
                scratch_lengths,
                scratch_values,
                0,
                k,
                0,
                ncols,
                bits,
                piece_starts,
                piece_lengths,
                piece_values,
            )
            for j in range(n_pieces):
                e = np.searchsorted(labels, np.int64(piece_values[j]))
                _add_run(geo, val, e, row, piece_starts[j], piece_lengths[j], image)
        else:
            for j in range(k):
                e = np.searchsorted(labels, np.int64(scratch_values[j]))
                _add_run(geo, val, e, row, scratch_starts[j], scratch_lengths[j], image)


@njit(nogil=True, cache=True)
def init_entries(labels, geo):
    """Start one empty statistics entry per id of ``labels``."""
    scratch = np.empty(labels.shape[0], np.int64)
    for e in range(labels.shape[0]):
        _start_mask(geo, scratch, e, labels[e])


@njit(nogil=True, cache=True)
def distinct_labels(mask_label, n_masks):
    """The distinct ids of the first ``n_masks`` masks, sorted."""
    return np.unique(mask_label[:n_masks])


# --- table rows ---------------------------------------------------------------


@njit(nogil=True, cache=True)
def write_rows(labels, geo, val, n_entries, layer, frame, ints, floats, row0, row_end):
    """Write one frame's rows, sorted by id, into the output columns.

    Entries with the same id are merged; id 0 and entries without pixels give
    no row.

    Parameters
    ----------
    labels, geo, val : arrays
        ``n_entries`` entries (per mask or per id).
    layer, frame : int
        The values of the ``layer`` and ``frame`` columns.
    ints : tuple of ``INT_COLUMNS`` int64[:]
        ``layer, frame, label, bbox-0 .. bbox-3``; empty arrays are skipped.
    floats : tuple of ``FLOAT_COLUMNS`` float64[:]
        ``area, centroid-0, centroid-1, intensity_mean, _min, _max``.
    row0, row_end : int
        The frame's rows in the columns: ``row0:row_end``.

    Returns
    -------
    int
        Rows written, or -1 (and fewer written) when they do not fit.
    """
    in_order = True
    for e in range(1, n_entries):
        if labels[e] < labels[e - 1]:
            in_order = False
            break
    # Masks usually come in id order: no sort, no allocation.
    order = np.empty(0, np.int64) if in_order else np.argsort(labels[:n_entries])
    out = row0
    e = 0
    has_val = val.shape[0] > 0
    while e < n_entries:
        label = labels[e if in_order else order[e]]
        have = False
        area = sum_row = sum_col = min_row = max_row = min_col = max_col = 0
        s = lo = hi = 0
        while e < n_entries and labels[e if in_order else order[e]] == label:
            j = e if in_order else order[e]
            e += 1
            if geo[j, G_AREA] == 0:
                continue
            if not have:
                have = True
                area = geo[j, G_AREA]
                sum_row = geo[j, G_SUM_ROW]
                sum_col = geo[j, G_SUM_COL]
                min_row = geo[j, G_MIN_ROW]
                max_row = geo[j, G_MAX_ROW]
                min_col = geo[j, G_MIN_COL]
                max_col = geo[j, G_MAX_COL]
                if has_val:
                    s = val[j, V_SUM]
                    lo = val[j, V_MIN]
                    hi = val[j, V_MAX]
                continue
            area += geo[j, G_AREA]
            sum_row += geo[j, G_SUM_ROW]
            sum_col += geo[j, G_SUM_COL]
            min_row = min(min_row, geo[j, G_MIN_ROW])
            max_row = max(max_row, geo[j, G_MAX_ROW])
            min_col = min(min_col, geo[j, G_MIN_COL])
            max_col = max(max_col, geo[j, G_MAX_COL])
            if has_val:
                s += val[j, V_SUM]
                v = val[j, V_MIN]
                if v < lo or v != v:
                    lo = v
                v = val[j, V_MAX]
                if v > hi or v != v:
                    hi = v
        if label == 0 or not have:
            continue
        if out == row_end:
            return -1
        values_i = (layer, frame, label, min_row, min_col, max_row + 1, max_col + 1)
        for c in range(INT_COLUMNS):
            if ints[c].shape[0] > 0:
                ints[c][out] = values_i[c]
        a = np.float64(area)
        if floats[F_AREA].shape[0] > 0:
            floats[F_AREA][out] = a
        if floats[F_CENTROID0].shape[0] > 0:
            floats[F_CENTROID0][out] = np.float64(sum_row) / a
        if floats[F_CENTROID0 + 1].shape[0] > 0:
            floats[F_CENTROID0 + 1][out] = np.float64(sum_col) / a
        if has_val:
            if floats[F_MEAN].shape[0] > 0:
                floats[F_MEAN][out] = np.float64(s) / a
            if floats[F_MIN].shape[0] > 0:
                floats[F_MIN][out] = np.float64(lo)
            if floats[F_MAX].shape[0] > 0:
                floats[F_MAX][out] = np.float64(hi)
        out += 1
    return out - row0


# --- CUDA planning (host side) -------------------------------------------------


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
