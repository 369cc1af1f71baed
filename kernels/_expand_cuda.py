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
import operator
from typing import Any, NamedTuple

from numba import cuda, types

from ._cuda_registry import (
    INT32_MAX,
    INT64_MAX,
    MAX_GRID_X,
    MAX_THREADS_PER_BLOCK,
    SHARED_PER_BLOCK,
    DeviceShape,
    check_arguments,
    current_device_shape,
    resident_blocks,
)

__all__ = [
    "DEFAULT_BLOCK",
    "DEFAULT_ITEMS",
    "EXPAND_SIGNATURE",
    "ExpandLaunch",
    "expand_kernel",
    "expand_launch",
    "expand_runs",
]

DEFAULT_BLOCK = 256
#: Pixels per thread per tile; tile = DEFAULT_BLOCK * DEFAULT_ITEMS pixels.
DEFAULT_ITEMS = 8
#: Default cap of the shared window, in runs (32 KiB, under the 48 KiB that
#: dynamic shared memory gets without opting in).
_MAX_WINDOW = 4096
#: Bytes of shared memory per window entry (``prefix`` values are int64).
WINDOW_ENTRY_BYTES = 8
#: The largest window a launch can ask for: what fits the shared memory a block
#: gets without opting in.
MAX_WINDOW = SHARED_PER_BLOCK // WINDOW_ENTRY_BYTES

#: The exact argument types ``expand_runs`` passes to ``_expand``: flat uint16
#: output, int64 starts, uint16 values, int64 prefix (C-contiguous device arrays),
#: then n_runs, total, items and window as int64. Sizes past 2**31 need the
#: int64s.
EXPAND_SIGNATURE = types.void(
    types.uint16[::1],
    types.int64[::1],
    types.uint16[::1],
    types.int64[::1],
    types.int64,
    types.int64,
    types.int64,
    types.int64,
)


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


class ExpandLaunch(NamedTuple):
    """Launch configuration of ``_expand``."""

    grid: int
    block: int
    #: Dynamic shared memory, bytes: the window of ``prefix`` entries.
    dynamic_shared: int
    items: int
    window: int


def expand_launch(
    device: DeviceShape,
    n_runs: int,
    total: int,
    *,
    block: int = DEFAULT_BLOCK,
    items: int = DEFAULT_ITEMS,
    grid: int | None = None,
    window: int | None = None,
) -> ExpandLaunch | None:
    """The launch configuration ``expand_runs`` uses (pure: no GPU needed).

    Parameters
    ----------
    device : DeviceShape
        SM count and per-SM limits (``_cuda_registry.current_device_shape()`` on
        a GPU, or an ``Architecture``).
    n_runs, total : int
        Runs and pixels of the table.
    block, items, grid, window
        As for ``expand_runs``.

    Returns
    -------
    ExpandLaunch or None
        None when there is nothing to expand.

    Raises
    ------
    ValueError
        If a launch parameter is outside what every target GPU allows.
    """
    n_runs, total = operator.index(n_runs), operator.index(total)
    block, items = operator.index(block), operator.index(items)
    if n_runs <= 0 or total <= 0:
        return None
    if total > INT64_MAX or n_runs > INT64_MAX:
        raise ValueError("n_runs and total must fit in int64")
    if not 2 <= block <= MAX_THREADS_PER_BLOCK:
        raise ValueError(f"block must be in [2, {MAX_THREADS_PER_BLOCK}]")
    if not 1 <= items <= INT32_MAX:  # the kernel's tile, block * items, is int64
        raise ValueError(f"items must be in [1, {INT32_MAX}]")
    tile = block * items
    window = min(tile, _MAX_WINDOW) if window is None else operator.index(window)
    if not 1 <= window <= MAX_WINDOW:
        raise ValueError(f"window must be in [1, {MAX_WINDOW}]")
    if grid is None:
        n_tiles = -(-total // tile)
        grid = min(n_tiles, resident_blocks(device, block))
    else:
        grid = operator.index(grid)
        if not 1 <= grid <= MAX_GRID_X:
            raise ValueError(f"grid must be in [1, {MAX_GRID_X}]")
    return ExpandLaunch(grid, block, WINDOW_ENTRY_BYTES * window, items, window)


@functools.cache
def expand_kernel() -> Any:
    """``_expand`` compiled for ``EXPAND_SIGNATURE`` (on first use)."""
    return cuda.jit(EXPAND_SIGNATURE, cache=True)(_expand)


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
        Threads per block (2 to 1024).
    items : int
        Pixels per thread per tile.
    grid : int, optional
        Blocks; default: enough to fill the device, at most one per tile.
    window : int, optional
        Shared-memory window, in runs (8 bytes each, at most 6144); default
        ``min(block * items, 4096)``. A window of ``block * items`` holds all
        runs a tile touches; pixels of runs past a full window are found by a
        search in global memory.

    Raises
    ------
    TypeError
        If the arguments do not match ``EXPAND_SIGNATURE``.
    """
    launch = expand_launch(
        current_device_shape(),
        n_runs,
        total,
        block=block,
        items=items,
        grid=grid,
        window=window,
    )
    if launch is None:
        return
    args = (
        d_out_flat,
        d_starts,
        d_values,
        d_prefix,
        int(n_runs),
        int(total),
        launch.items,
        launch.window,
    )
    # A kernel compiled for one signature launches with whatever it is given
    # (numba-cuda marshals the arguments by the signature, unchecked; the
    # simulator runs anything): check them here.
    check_arguments(EXPAND_SIGNATURE.args, args)
    stream = 0 if stream is None else stream
    kernel = expand_kernel()
    kernel[launch.grid, launch.block, stream, launch.dynamic_shared](*args)
