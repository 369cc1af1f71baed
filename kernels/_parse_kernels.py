"""CPU kernels: parse one frame's mask words into runs, and paint runs into a block.

The word stream is described in ``nd2gpu._format.mask_stream`` (and
docs/format.md). ``parse_frame_runs`` walks it once, validates every record it
reads and appends one run per pixel-writing run record to caller-provided arrays
(the *run table*). ``fill_runs`` paints a range of the table
into a flat uint16 output in table order, so a later run wins where runs overlap.
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

#: ``parse_frame_runs`` status codes (turned into ``DecodeError`` messages by the
#: caller, ``nd2gpu._decode.frame``).
OK = 0
TRUNCATED = 1
ROW_OUT_OF_RANGE = 2
VALUE_TOO_LARGE = 3
TOO_MANY_RUNS = 4


def max_runs(n_words: int) -> int:
    """Upper bound on the runs a stream of ``n_words`` words can emit."""
    return max(0, (n_words - HEADER_WORDS) // RUN_WORDS)


@njit(nogil=True, cache=True)
def parse_frame_runs(
    words,
    nrows,
    ncols,
    nmasks,
    frame_base,
    starts,
    lengths,
    values,
    prefix,
    first_run,
    first_pixel,
):
    """Append the runs of one frame's stream to the run table.

    Parameters
    ----------
    words : uint32[:]
        The inflated stream, header included (``len(words) >= 7``).
    nrows, ncols, nmasks : int
        Header words 2, 1 and 3.
    frame_base : int
        Flat offset of the frame's first pixel in the output block.
    starts, lengths, values, prefix : int64[:], int32[:], uint16[:], int64[:]
        The run table; runs are written from index ``first_run`` on. Capacity
        needed: ``max_runs(len(words))`` more entries.
    first_run : int
        Index of the first table entry to write.
    first_pixel : int
        Exclusive prefix sum of run lengths before ``first_run``.

    Returns
    -------
    status : int
        ``OK`` or an error code.
    end_run : int
        One past the last entry written.
    end_pixel : int
        ``first_pixel`` plus the pixels of the runs written.
    word : int
        Index of the word where an error was found (``-1`` if none).
    """
    n_words = words.shape[0]
    capacity = starts.shape[0]
    pos = np.int64(HEADER_WORDS)
    run = np.int64(first_run)
    pixel = np.int64(first_pixel)
    nrows = np.int64(nrows)
    ncols = np.int64(ncols)
    for _m in range(np.int64(nmasks)):
        if pos + MASK_WORDS > n_words:
            return TRUNCATED, run, pixel, pos
        mask_pos = pos
        roi_id = np.int64(words[pos])
        mask_rows = np.int64(words[pos + MASK_ROWS_WORD])
        pos += MASK_WORDS
        for _r in range(mask_rows):
            if pos + ROW_WORDS > n_words:
                return TRUNCATED, run, pixel, pos
            row_pos = pos
            row = np.int64(words[pos])
            nruns = np.int64(words[pos + 1])
            pos += ROW_WORDS
            if nruns == 0:
                continue
            if pos + RUN_WORDS * nruns > n_words:
                return TRUNCATED, run, pixel, n_words
            if row >= nrows:
                return ROW_OUT_OF_RANGE, run, pixel, row_pos
            if roi_id > MAX_LABEL:
                return VALUE_TOO_LARGE, run, pixel, mask_pos
            row_base = np.int64(frame_base) + row * ncols
            for _s in range(nruns):
                col = np.int64(words[pos])
                length = np.int64(words[pos + 1])
                pos += RUN_WORDS
                if col >= ncols or length == 0:
                    continue
                end = min(col + length, ncols)
                if run >= capacity:
                    return TOO_MANY_RUNS, run, pixel, pos - RUN_WORDS
                starts[run] = row_base + col
                lengths[run] = end - col
                values[run] = roi_id
                prefix[run] = pixel
                pixel += end - col
                run += 1
    return OK, run, pixel, np.int64(-1)


@njit(nogil=True, cache=True)
def fill_runs(out, starts, lengths, values, lo, hi):
    """Paint runs ``lo:hi`` of the table into the flat array ``out``, in order."""
    for i in range(lo, hi):
        s = starts[i]
        out[s : s + lengths[i]] = values[i]
