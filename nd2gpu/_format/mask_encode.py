"""Encoder of label images into ND2 ``RleZipBinarySequence`` frame payloads.

The inflated payload is a stream of little-endian ``uint32`` words
(``mask_stream``; docs/format.md):

* frame header, 7 words: ``3, ncols, nrows, nmasks, tot_bytes, 0, 0`` where
  ``tot_bytes`` is the byte count of everything after the header;
* per object (distinct nonzero id, ascending), 9 words ``roi_id, c0, r0, c1, r1,
  roi_bytes, nrows_in_mask, roi_bytes - 16, 0`` (inclusive bounding box;
  ``roi_bytes`` counts the record including these 9 words), then per row of the
  object, ascending: ``row, nruns`` and ``nruns`` pairs ``col, length``.

The encoder is vectorised: one pass of NumPy over the pixels finds every run,
and every word's position in the output follows in closed form from the run,
row-group and object indices, so there is no Python loop per run or per object.
"""

from __future__ import annotations

import zlib
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .mask_stream import (
    H_BYTES_AFTER,
    H_NCOLS,
    H_NMASKS,
    H_NROWS,
    H_VERSION,
    HEADER_WORDS,
    MASK_BYTES_LESS_16_WORD,
    MASK_BYTES_WORD,
    MASK_COL0_WORD,
    MASK_COL1_WORD,
    MASK_ID_WORD,
    MASK_PREFIX_BYTES,
    MASK_ROW0_WORD,
    MASK_ROW1_WORD,
    MASK_ROWS_WORD,
    MASK_WORDS,
    MAX_LABEL,
    ROW_NRUNS_WORD,
    ROW_ROW_WORD,
    ROW_WORDS,
    RUN_COL_WORD,
    RUN_LENGTH_WORD,
    RUN_WORDS,
    STREAM_VERSION,
)

__all__ = ["check_label_values", "encode_label_frame", "encode_mask_chunk"]

#: The bytes before the zlib stream; their meaning is unknown and the reference
#: discards them, so we write zeros.
MASK_CHUNK_PREFIX: Final = bytes(MASK_PREFIX_BYTES)


def check_label_values(labels: np.ndarray, what: str = "labels") -> None:
    """Raise unless ``labels`` is a bool/integer array with values in 0..65535.

    Parameters
    ----------
    labels : numpy.ndarray
        The array to check.
    what : str
        How to name the array in error messages.

    Raises
    ------
    TypeError
        If the dtype is not bool or integer.
    ValueError
        If a value is negative or above 65535.
    """
    kind = labels.dtype.kind
    if kind not in "biu":
        raise TypeError(
            f"{what} must be a bool or integer array (label ids 0..{MAX_LABEL}), "
            f"got dtype {labels.dtype}"
        )
    if kind == "b" or labels.size == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0:
        raise ValueError(f"{what} has negative label id {lo}; ids must be >= 0")
    if hi > MAX_LABEL:
        raise ValueError(f"{what} has label id {hi} above the maximum {MAX_LABEL}")


def _as_label_frame(labels: ArrayLike) -> NDArray[np.uint16]:
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"a label frame must be 2-D (Y, X), got shape {arr.shape}")
    check_label_values(arr, "label frame")
    return arr.astype(np.uint16, copy=False)


def encode_label_frame(labels: ArrayLike) -> bytes:
    """Encode one 2-D label image as an inflated RleZipBinarySequence stream.

    Parameters
    ----------
    labels : ArrayLike
        2-D ``(Y, X)`` bool or integer array; 0 is background, every other value
        (1..65535) is an object id. A frame with no objects gives a valid stream
        with no masks.

    Returns
    -------
    bytes
        The uint32 word stream (before zlib compression).

    Raises
    ------
    TypeError
        If the array is not bool or integer.
    ValueError
        If it is not 2-D or holds ids outside 0..65535.

    Examples
    --------
    >>> import numpy as np
    >>> words = np.frombuffer(encode_label_frame(np.array([[0, 7, 7]])), "<u4")
    >>> words.tolist()
    [3, 3, 1, 1, 52, 0, 0, 7, 1, 0, 2, 0, 52, 1, 36, 0, 0, 1, 1, 2]
    """
    frame = _as_label_frame(labels)
    nrows, ncols = frame.shape

    # Runs: a run starts where a nonzero pixel differs from its left neighbour
    # (or sits in column 0) and ends where it differs from its right neighbour.
    nonzero = frame != 0
    differs = frame[:, 1:] != frame[:, :-1]
    is_start = nonzero.copy()
    is_start[:, 1:] &= differs
    is_end = nonzero  # reused in place: no longer needed as is
    is_end[:, :-1] &= differs
    starts = np.flatnonzero(is_start)  # row-major, so sorted by (row, col)
    ends = np.flatnonzero(is_end)
    del is_start, is_end, differs, nonzero

    if starts.size == 0:
        header = [STREAM_VERSION, ncols, nrows, 0, 0, 0, 0]
        return np.asarray(header, dtype="<u4").tobytes()

    run_ids = frame.ravel()[starts]
    # stable sort by id keeps (row, col) order within each object
    order = np.argsort(run_ids, kind="stable")
    run_ids = run_ids[order].astype(np.int64)
    run_rows = (starts // ncols)[order]
    run_cols = (starts % ncols)[order]
    run_lens = (ends - starts)[order] + 1
    n_runs = run_ids.size

    # group boundaries: a new object, and a new (object, row) pair
    new_mask = np.empty(n_runs, dtype=bool)
    new_mask[0] = True
    np.not_equal(run_ids[1:], run_ids[:-1], out=new_mask[1:])
    new_group = new_mask.copy()
    new_group[1:] |= run_rows[1:] != run_rows[:-1]

    mask_of_run = np.cumsum(new_mask) - 1
    group_of_run = np.cumsum(new_group) - 1
    mask_first_run = np.flatnonzero(new_mask)
    group_first_run = np.flatnonzero(new_group)
    n_masks = mask_first_run.size
    n_groups = group_first_run.size
    mask_of_group = mask_of_run[group_first_run]
    mask_first_group = group_of_run[mask_first_run]

    runs_per_group = np.diff(np.append(group_first_run, n_runs))
    runs_per_mask = np.diff(np.append(mask_first_run, n_runs))
    groups_per_mask = np.diff(np.append(mask_first_group, n_groups))
    mask_words = MASK_WORDS + ROW_WORDS * groups_per_mask + RUN_WORDS * runs_per_mask
    total_words = HEADER_WORDS + int(mask_words.sum())

    # Word positions: everything before an item is the frame header, the mask
    # headers, row headers and runs that precede it.
    mask_pos = (
        HEADER_WORDS
        + MASK_WORDS * np.arange(n_masks)
        + ROW_WORDS * mask_first_group
        + RUN_WORDS * mask_first_run
    )
    group_pos = (
        HEADER_WORDS
        + MASK_WORDS * (mask_of_group + 1)
        + ROW_WORDS * np.arange(n_groups)
        + RUN_WORDS * group_first_run
    )
    run_pos = (
        HEADER_WORDS
        + MASK_WORDS * (mask_of_run + 1)
        + ROW_WORDS * (group_of_run + 1)
        + RUN_WORDS * np.arange(n_runs)
    )

    out = np.zeros(total_words, dtype="<u4")
    roi_bytes = 4 * mask_words
    out[H_VERSION] = STREAM_VERSION
    out[H_NCOLS] = ncols
    out[H_NROWS] = nrows
    out[H_NMASKS] = n_masks
    out[H_BYTES_AFTER] = 4 * (total_words - HEADER_WORDS)
    last_run = np.append(mask_first_run[1:], n_runs) - 1
    out[mask_pos + MASK_ID_WORD] = run_ids[mask_first_run]
    out[mask_pos + MASK_COL0_WORD] = np.minimum.reduceat(run_cols, mask_first_run)
    out[mask_pos + MASK_ROW0_WORD] = run_rows[mask_first_run]
    out[mask_pos + MASK_COL1_WORD] = np.maximum.reduceat(
        run_cols + run_lens - 1, mask_first_run
    )
    out[mask_pos + MASK_ROW1_WORD] = run_rows[last_run]
    out[mask_pos + MASK_BYTES_WORD] = roi_bytes
    out[mask_pos + MASK_ROWS_WORD] = groups_per_mask
    out[mask_pos + MASK_BYTES_LESS_16_WORD] = roi_bytes - 16
    out[group_pos + ROW_ROW_WORD] = run_rows[group_first_run]
    out[group_pos + ROW_NRUNS_WORD] = runs_per_group
    out[run_pos + RUN_COL_WORD] = run_cols
    out[run_pos + RUN_LENGTH_WORD] = run_lens
    return out.tobytes()


def encode_mask_chunk(labels: ArrayLike, level: int = 6) -> bytes:
    """Encode one 2-D label image as the data of a ``CustomDataSeq`` mask chunk.

    Parameters
    ----------
    labels : ArrayLike
        2-D ``(Y, X)`` bool or integer label image (0 = background, ids 1..65535).
    level : int
        zlib compression level, 0..9.

    Returns
    -------
    bytes
        The 4-byte prefix (zeros; the reference discards it) followed by the zlib
        stream (RFC 1950) of :func:`encode_label_frame`.

    Examples
    --------
    >>> import numpy as np
    >>> from nd2._binary import decode_binary_mask
    >>> labels = np.array([[0, 2, 2], [1, 0, 2]], dtype=np.uint16)
    >>> chunk = encode_mask_chunk(labels)
    >>> bool((decode_binary_mask(chunk[4:]) == labels).all())
    True
    """
    return MASK_CHUNK_PREFIX + zlib.compress(encode_label_frame(labels), level)
