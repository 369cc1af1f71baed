"""Build raw RleZipBinarySequence word streams by hand, for tests."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

Run = tuple[int, int]
Row = tuple[int, Sequence[Run]]
Mask = tuple[int, Sequence[Row]]


def stream_words(
    nrows: int, ncols: int, masks: Sequence[Mask], version: int = 3
) -> np.ndarray:
    """Words of a frame stream: header, then each mask's rows and runs as given."""
    body: list[int] = []
    for roi_id, rows in masks:
        record: list[int] = []
        for row, runs in rows:
            record += [row, len(runs)]
            for col, length in runs:
                record += [col, length]
        nbytes = 4 * (9 + len(record))
        body += [roi_id, 0, 0, 0, 0, nbytes, len(rows), nbytes - 16, 0]
        body += record
    header = [version, ncols, nrows, len(masks), 4 * len(body), 0, 0]
    return np.array(header + body, dtype="<u4")


def payload(words: np.ndarray | bytes, level: int = 6) -> bytes:
    """The zlib stream of ``words`` (what follows the chunk's 4-byte prefix)."""
    raw = words if isinstance(words, bytes) else np.asarray(words, "<u4").tobytes()
    return zlib.compress(raw, level)
