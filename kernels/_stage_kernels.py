"""CPU kernels of the CUDA staging: a decode thread's recorded frames written as a
staged batch (``_batch_layout``), and the batch painted on the host (what the
GPU kernel does, for the host stand-in of the benchmarks and tests)."""

from __future__ import annotations

import numpy as np
from numba import njit

from ._batch_layout import (
    E_OFFSET,
    E_PREFIX,
    E_VALUE,
    F_BASE,
    F_PIXELS,
    F_RUN_LO,
    F_RUNS,
    F_TILE_LO,
)


@njit(nogil=True, cache=True)
def stage_entries(
    rows,
    cols,
    lengths,
    values,
    spans,
    n,
    statuses,
    ncols,
    bases,
    frames,
    f0,
    entries,
    e0,
    r0,
):
    """Write a group's first ``n`` recorded frames into a staged batch.

    Frame ``i`` of the group takes frame row ``f0 + i`` (zeros for a frame that
    was not recorded: status ``statuses[i] != 0``); its runs of nonzero value
    become entries from ``e0`` on in ``entries``, which stand at ``r0 + (e -
    e0)`` in the batch (``entries`` may be the batch's own array, ``e0 ==
    r0``, or a group's private one). Returns the entries written.
    """
    e = e0
    for i in range(n):
        f = f0 + i
        frames[f, F_RUN_LO] = r0 + (e - e0)
        frames[f, F_RUNS] = 0
        frames[f, F_PIXELS] = 0
        frames[f, F_BASE] = bases[i]
        frames[f, F_TILE_LO] = 0
        if statuses[i] != 0:
            continue
        first = e
        p = np.int64(0)
        for j in range(spans[i, 0], spans[i, 1]):
            v = values[j]
            if v == 0:
                continue
            entries[e, E_OFFSET] = rows[j] * ncols + cols[j]
            entries[e, E_PREFIX] = p
            entries[e, E_VALUE] = v
            p += lengths[j]
            e += 1
        frames[f, F_RUNS] = e - first
        frames[f, F_PIXELS] = p
    return e - e0


@njit(nogil=True, cache=True)
def paint_batch(out, frames, n_frames, entries):
    """Paint a staged batch into the flat block ``out`` (the GPU kernel's result,
    computed on the host)."""
    for f in range(n_frames):
        lo = frames[f, F_RUN_LO]
        n = frames[f, F_RUNS]
        base = frames[f, F_BASE]
        for r in range(lo, lo + n):
            end = frames[f, F_PIXELS] if r + 1 == lo + n else entries[r + 1, E_PREFIX]
            start = base + entries[r, E_OFFSET]
            out[start : start + end - entries[r, E_PREFIX]] = entries[r, E_VALUE]
