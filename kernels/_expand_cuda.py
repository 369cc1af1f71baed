"""numba-CUDA kernel that expands a run table into the output block.

The pixels of all runs, concatenated in table order, are numbered
``p = 0 .. total - 1`` (run ``r`` owns ``prefix[r] <= p < prefix[r + 1]``). Each
block takes tiles of ``blockDim * items`` consecutive pixel numbers (grid-stride
over tiles) and thread ``t`` handles pixels ``tile_start + k * blockDim + t``, so
consecutive threads write consecutive pixels of a run and the work per thread is
the same whatever the run lengths. Per tile the block

1. finds the tile's first run with a block-wide k-ary search over ``prefix``
   (``syncthreads_count`` narrows the range ``blockDim``-fold per step),
2. loads the ``prefix`` entries of the runs the tile touches into shared memory
   (up to ``window`` of them; pixels past a full window search ``prefix`` in
   global memory instead),
3. maps each pixel to its run by binary search in that window and writes
   ``out[starts[r] + p - prefix[r]] = values[r]``.

Runs must not overlap (see ``_overlap_kernels.make_non_overlapping``): pixels are
written in no particular order.
"""

from __future__ import annotations

import functools
from typing import Any

from numba import cuda, types

__all__ = ["DEFAULT_BLOCK", "DEFAULT_ITEMS", "expand_runs"]

DEFAULT_BLOCK = 256
#: Pixels per thread per tile; tile = DEFAULT_BLOCK * DEFAULT_ITEMS pixels.
DEFAULT_ITEMS = 8
_MAX_THREADS_PER_SM = 2048
#: Default cap of the shared window, in runs (32 KiB, under the 48 KiB that
#: dynamic shared memory gets without opting in).
_MAX_WINDOW = 4096


@cuda.jit(device=True)
def _last_le(prefix: Any, p: int, lo: int, hi: int) -> int:
    """Last ``r`` in ``[lo, hi)`` with ``prefix[r] <= p``, given ``prefix[lo] <= p``."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if prefix[mid] <= p:
            lo = mid
        else:
            hi = mid
    return lo


@cuda.jit(cache=True)
def _expand(out, starts, values, prefix, n_runs, total, items, window):
    # Dynamic shared memory of `window` int64 entries (sized at launch).
    win = cuda.shared.array(0, types.int64)
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    tile = nthreads * items
    n_tiles = (total + tile - 1) // tile
    for t in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
        tile_start = t * tile
        tile_end = min(tile_start + tile, total)

        # 1. r0: the run holding pixel tile_start, i.e. the last r with
        # prefix[r] <= tile_start. Probes are monotone in tid, so the count of
        # true probes locates the answer between two probes.
        lo = 0
        hi = n_runs
        while hi - lo > 1:
            step = (hi - lo + nthreads - 1) // nthreads
            idx = lo + (tid + 1) * step
            below = 0
            if idx < hi and prefix[idx] <= tile_start:
                below = 1
            lo += cuda.syncthreads_count(below) * step
            hi = min(hi, lo + step)
        r0 = lo

        # 2. Window: prefix[r0 + j] for the runs starting before tile_end.
        n_win = 0
        j = 0
        while j < window:
            inside = 0
            if j + tid < window:
                v = tile_end
                if r0 + j + tid < n_runs:
                    v = prefix[r0 + j + tid]
                win[j + tid] = v
                if v < tile_end:
                    inside = 1
            count = cuda.syncthreads_count(inside)
            n_win = j + count
            if count < nthreads:
                break
            j += nthreads

        # 3. Expand. The run index only grows with p, so each search starts at
        # the previous answer.
        i = 0
        for k in range(items):
            p = tile_start + k * nthreads + tid
            if p < tile_end:
                if n_win == window and p >= win[window - 1]:
                    r = _last_le(prefix, p, r0 + window - 1, n_runs)
                    base = prefix[r]
                else:
                    i = _last_le(win, p, i, n_win)
                    r = r0 + i
                    base = win[i]
                out[starts[r] + (p - base)] = values[r]
        cuda.syncthreads()


@functools.cache
def _resident_blocks(block: int) -> int:
    sm_count = getattr(cuda.get_current_device(), "MULTIPROCESSOR_COUNT", None)
    if sm_count is None:  # the simulator: fewer blocks, fewer Python threads
        return 2
    return max(1, sm_count * max(1, _MAX_THREADS_PER_SM // block))


def expand_runs(
    d_out_flat: Any,
    d_starts: Any,
    d_values: Any,
    d_prefix: Any,
    n_runs: int,
    total: int,
    stream: Any = None,
    *,
    block: int = DEFAULT_BLOCK,
    items: int = DEFAULT_ITEMS,
    grid: int | None = None,
    window: int | None = None,
) -> None:
    """Launch the expansion of ``n_runs`` runs (``total`` pixels) into the output.

    Parameters
    ----------
    d_out_flat : numba device array
        Flat ``uint16`` output block.
    d_starts, d_values, d_prefix : numba device arrays
        ``int64`` starts, ``uint16`` values and ``int64`` exclusive prefix sum of
        the lengths; at least ``n_runs``, ``n_runs`` and ``n_runs + 1`` entries
        (longer buffers are fine: only those entries are read).
    n_runs : int
        Number of runs.
    total : int
        Pixels to write, ``prefix[n_runs]``.
    stream : numba stream, optional
        Stream to launch on; the default stream when None.
    block : int
        Threads per block (>= 2).
    items : int
        Pixels per thread per tile.
    grid : int, optional
        Blocks; default: enough to fill the device, at most one per tile.
    window : int, optional
        Shared-memory window, in runs (8 bytes each, at most 6144); default
        ``min(block * items, 4096)``. A window of ``block * items`` holds all
        runs a tile touches; pixels of runs past a full window are found by a
        search in global memory.
    """
    if n_runs <= 0 or total <= 0:
        return
    if block < 2 or items < 1:
        raise ValueError("block must be >= 2 and items >= 1")
    tile = block * items
    window = min(tile, _MAX_WINDOW) if window is None else int(window)
    if window < 1:
        raise ValueError("window must be >= 1")
    n_tiles = -(-total // tile)
    if grid is None:
        grid = min(n_tiles, _resident_blocks(block))
    shared_bytes = 8 * window
    launch = _expand[grid, block, 0 if stream is None else stream, shared_bytes]
    launch(
        d_out_flat, d_starts, d_values, d_prefix, int(n_runs), int(total), items, window
    )
