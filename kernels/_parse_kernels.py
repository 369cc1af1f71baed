"""The one parser of a frame's mask stream, and the CPU decode built on it (numba).

The word stream is described in ``nd2gpu._format.mask_stream`` (and
docs/format.md). ``walk_frame`` is the only code that reads it: it checks the
header against the frame shape the caller expects, validates every record it
reads, and hands every pixel-writing run either

- straight to the frame's output (*paint* mode: ``out[off:off + n] = value``,
  in stream order, so where runs overlap the later one wins), or
- to a *run list* (*record* mode): ``row``, ``col``, ``length`` (clipped to the
  row, > 0) and ``value`` of each run, in stream order, for the consumers that
  need the runs themselves (the CUDA staging and the object tables).

``decode_group`` paints a group of frames, one call per group; the staging and
object kernels call ``walk_frame`` in record mode. Status codes become
``DecodeError`` messages in ``nd2gpu._decode.frame``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from nd2gpu._format.mask_stream import (
    H_NCOLS,
    H_NMASKS,
    H_NROWS,
    H_VERSION,
    HEADER_WORDS,
    MASK_ID_WORD,
    MASK_ROWS_WORD,
    MASK_WORDS,
    MAX_LABEL,
    ROW_NRUNS_WORD,
    ROW_ROW_WORD,
    ROW_WORDS,
    RUN_COL_WORD,
    RUN_LENGTH_WORD,
    RUN_WORDS,
)

#: Status codes of ``walk_frame`` (``R_STATUS``).
OK = 0
TRUNCATED = 1
ROW_OUT_OF_RANGE = 2
VALUE_TOO_LARGE = 3
#: The run list is full: grow it (to at most ``result[R_RUNS]`` runs) and call
#: again.
NEED_RUNS = 4
HEADER_TRUNCATED = 5
SHAPE_MISMATCH = 6
#: The frame has no mask (no chunk, or nothing after the chunk's prefix).
ABSENT = 7

#: Fields of a frame's result row (``int64[RESULT_FIELDS]``).
R_STATUS = 0
R_RUNS = 1  # runs recorded (record mode), or runs needed (NEED_RUNS)
R_PIXELS = 2  # pixels the runs cover (overlaps counted once per run)
R_WORD = 3  # word index of an error, -1 if none
R_VALUE = 4  # the offending value (a row or an id) of an error
R_VERSION = 5  # header word 0
R_NROWS = 6  # the header's frame shape
R_NCOLS = 7
R_BYTES = 8  # bytes of the inflated stream
RESULT_FIELDS = 9

#: Frames per ``decode_group`` call: groups are passed as a tuple of exactly this
#: many streams (shorter groups are padded with empty ones), so the kernel is
#: compiled once.
GROUP_FRAMES = 8


def max_runs(n_bytes: int) -> int:
    """Upper bound on the runs an inflated stream of ``n_bytes`` bytes can hold."""
    return max(0, (n_bytes // 4 - HEADER_WORDS) // RUN_WORDS)


@njit(nogil=True, cache=True)
def stream_words(stream):
    """The little-endian ``uint32`` words of an inflated stream (``uint8[:]``);
    a trailing partial word is dropped (a record that needs it is truncated)."""
    n = (stream.shape[0] // 4) * 4
    return stream[:n].view(np.uint32)


@njit(nogil=True, cache=True)
def walk_frame(
    stream, nrows, ncols, paint, out, rows, cols, lengths, values, first_run, result
):
    """Validate one frame's stream and paint or record its runs.

    Parameters
    ----------
    stream : uint8[:]
        The inflated stream, header included.
    nrows, ncols : int
        The shape the frame must have (its header is checked against it).
    paint : bool
        Paint into ``out`` (else record into the run list).
    out : uint16[:]
        The frame's pixels, flat (paint mode; anything in record mode).
    rows, cols, lengths : int32[:]
        The run list (record mode). When it is full the status is ``NEED_RUNS``
        and ``result[R_RUNS]`` the most it may need (``first_run +
        max_runs(len(stream))``): grow it and walk the frame again.
    values : uint16[:]
        The run list's values.
    first_run : int
        Where this frame's runs start in the run list.
    result : int64[RESULT_FIELDS]
        Filled with the outcome (see the ``R_*`` fields).

    Returns
    -------
    int
        The status (also ``result[R_STATUS]``).
    """
    n_bytes = stream.shape[0]
    words = stream_words(stream)
    n_words = np.int64(words.shape[0])
    result[:] = 0
    result[R_WORD] = -1
    result[R_BYTES] = n_bytes
    if n_bytes < 4 * HEADER_WORDS:
        result[R_STATUS] = HEADER_TRUNCATED
        return HEADER_TRUNCATED
    result[R_VERSION] = words[H_VERSION]
    result[R_NCOLS] = words[H_NCOLS]
    result[R_NROWS] = words[H_NROWS]
    if np.int64(words[H_NROWS]) != nrows or np.int64(words[H_NCOLS]) != ncols:
        result[R_STATUS] = SHAPE_MISMATCH
        result[R_WORD] = H_NCOLS
        return SHAPE_MISMATCH
    nmasks = np.int64(words[H_NMASKS])
    nrows = np.int64(nrows)
    ncols = np.int64(ncols)
    pos = np.int64(HEADER_WORDS)
    run = np.int64(first_run)
    pixels = np.int64(0)
    status = OK
    word = np.int64(-1)
    value = np.int64(0)
    for _m in range(nmasks):
        if pos + MASK_WORDS > n_words:
            status, word = TRUNCATED, pos
            break
        mask_pos = pos
        roi_id = np.int64(words[pos + MASK_ID_WORD])
        mask_rows = np.int64(words[pos + MASK_ROWS_WORD])
        pos += MASK_WORDS
        for _r in range(mask_rows):
            if pos + ROW_WORDS > n_words:
                status, word = TRUNCATED, pos
                break
            row_pos = pos
            row = np.int64(words[pos + ROW_ROW_WORD])
            nruns = np.int64(words[pos + ROW_NRUNS_WORD])
            pos += ROW_WORDS
            if nruns == 0:
                continue
            if pos + RUN_WORDS * nruns > n_words:
                status, word = TRUNCATED, n_words
                break
            if row >= nrows:
                status, word, value = ROW_OUT_OF_RANGE, row_pos, row
                break
            if roi_id > MAX_LABEL:
                status, word, value = VALUE_TOO_LARGE, mask_pos, roi_id
                break
            label = np.uint16(roi_id)
            row_base = row * ncols
            for _s in range(nruns):
                col = np.int64(words[pos + RUN_COL_WORD])
                length = np.int64(words[pos + RUN_LENGTH_WORD])
                pos += RUN_WORDS
                if col >= ncols or length == 0:
                    continue
                n = min(col + length, ncols) - col
                pixels += n
                if paint:
                    out[row_base + col : row_base + col + n] = label
                    continue
                if run == rows.shape[0]:
                    result[R_STATUS] = NEED_RUNS
                    result[R_RUNS] = first_run + (n_words - HEADER_WORDS) // RUN_WORDS
                    return NEED_RUNS
                rows[run] = row
                cols[run] = col
                lengths[run] = n
                values[run] = label
                run += 1
        if status != OK:
            break
    result[R_STATUS] = status
    result[R_RUNS] = run - first_run
    result[R_PIXELS] = pixels
    result[R_WORD] = word
    result[R_VALUE] = value
    return status


@njit(nogil=True, cache=True)
def decode_group(streams, present, first, n, nrows, ncols, out, bases, zero, results):
    """Paint frames ``first:n`` of a group into the flat output block.

    Parameters
    ----------
    streams : UniTuple of ``GROUP_FRAMES`` uint8[:]
        The group's inflated streams.
    present : uint8[:]
        0 for a frame without a mask (its stream is empty; status ``ABSENT``).
    first, n : int
        The frames to decode.
    nrows, ncols : int
        The block's frame shape.
    out : uint16[:]
        The whole output block, flat.
    bases : int64[:]
        Flat offset of each frame's slot in ``out``.
    zero : bool
        Zero each frame's slot just before painting it (a reused block).
    results : int64[:, RESULT_FIELDS]
        One result row per frame of the group.

    Returns
    -------
    int
        The index of the first frame that failed, ``n`` if none did.
    """
    pixels = np.int64(nrows) * np.int64(ncols)
    empty = np.empty(0, np.int32)
    no_values = np.empty(0, np.uint16)
    for i in range(first, n):
        frame = out[bases[i] : bases[i] + pixels]
        if zero:
            frame[:] = 0
        if not present[i]:
            results[i, :] = 0
            results[i, R_STATUS] = ABSENT
            continue
        status = walk_frame(
            streams[i],
            nrows,
            ncols,
            True,
            frame,
            empty,
            empty,
            empty,
            no_values,
            0,
            results[i],
        )
        if status != OK:
            return i
    return n
