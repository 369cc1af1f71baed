"""numba-CUDA kernel that expands a staged batch of runs into the output block.

A batch is staged by the decode threads (``_stage_kernels.stage_entries``) in
the layout of ``_batch_layout``: a frame table and, per run, its frame-local
offset, frame-local prefix sum and value.

Runs of a frame do not overlap (overlaps were resolved on the host), so pixels
are written in no particular order. A frame's painted pixels, numbered by the
prefix sums, are cut into tiles of ``blockDim * items``; each block takes tiles
grid-stride, thread ``t`` handling pixels ``tile_start + k * blockDim + t``, so
consecutive threads write consecutive pixels of a run and the work per thread is
the same whatever the run lengths. Per tile the block

1. finds the tile's frame (binary search over ``F_TILE_LO``) and its first run
   with a block-wide k-ary search over the frame's prefix sums
   (``syncthreads_count`` narrows the range ``blockDim``-fold per step),
2. loads the prefix sums of the runs the tile touches into shared memory (up to
   ``window`` of them; pixels past a full window search in global memory),
3. maps each pixel to its run by binary search in that window and writes
   ``out[base + offset[r] + p - prefix[r]] = value[r]``.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, NamedTuple

import numpy as np
from numba import cuda, types

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
#: Bytes of shared memory per window entry (prefix sums, as int64).
WINDOW_ENTRY_BYTES = 8
#: The largest window a launch can ask for: what fits the shared memory a block
#: gets without opting in.
MAX_WINDOW = SHARED_PER_BLOCK // WINDOW_ENTRY_BYTES

#: The exact argument types ``expand_runs`` passes to ``_expand``: flat uint16
#: output, the int64 frame table, the uint32 entries (C-contiguous device
#: arrays), then n_frames, n_tiles, items and window as int64.
EXPAND_SIGNATURE = types.void(
    types.uint16[::1],
    types.int64[:, ::1],
    types.uint32[:, ::1],
    types.int64,
    types.int64,
    types.int64,
    types.int64,
)


@cuda.jit(device=True)
def _last_le(values: Any, p: int, lo: int, hi: int) -> int:
    """Last ``r`` in ``[lo, hi)`` with ``values[r] <= p``, given ``values[lo] <= p``."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if values[mid] <= p:
            lo = mid
        else:
            hi = mid
    return lo


@cuda.jit(device=True)
def _last_prefix_le(entries: Any, run_lo: int, p: int, lo: int, hi: int) -> int:
    """``_last_le`` over the prefix sums of entries ``run_lo + [lo, hi)``."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if entries[run_lo + mid, E_PREFIX] <= p:
            lo = mid
        else:
            hi = mid
    return lo


def _expand(out, frames, entries, n_frames, n_tiles, items, window):
    # Dynamic shared memory of `window` int64 entries (sized at launch).
    win = cuda.shared.array(0, types.int64)
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    tile = nthreads * items
    for t in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
        # The tile's frame: the last with F_TILE_LO <= t (frames without pixels
        # share the next one's first tile and come before it).
        f_lo = 0
        f_hi = n_frames
        while f_hi - f_lo > 1:
            mid = (f_lo + f_hi) // 2
            if frames[mid, F_TILE_LO] <= t:
                f_lo = mid
            else:
                f_hi = mid
        run_lo = frames[f_lo, F_RUN_LO]
        n_runs = frames[f_lo, F_RUNS]
        base = frames[f_lo, F_BASE]
        tile_start = (t - frames[f_lo, F_TILE_LO]) * tile
        tile_end = min(tile_start + tile, frames[f_lo, F_PIXELS])

        # 1. r0: the run holding pixel tile_start, i.e. the last r with
        # prefix[r] <= tile_start. Probes are monotone in tid, so the count of
        # true probes locates the answer between two probes.
        lo = 0
        hi = n_runs
        while hi - lo > 1:
            step = (hi - lo + nthreads - 1) // nthreads
            idx = lo + (tid + 1) * step
            below = 0
            if idx < hi and entries[run_lo + idx, E_PREFIX] <= tile_start:
                below = 1
            lo += cuda.syncthreads_count(below) * step
            hi = min(hi, lo + step)
        r0 = lo

        # 2. Window: the prefix sums of the runs starting before tile_end.
        n_win = 0
        j = 0
        while j < window:
            inside = 0
            if j + tid < window:
                v = tile_end
                if r0 + j + tid < n_runs:
                    v = entries[run_lo + r0 + j + tid, E_PREFIX]
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
                    r = _last_prefix_le(entries, run_lo, p, r0 + window - 1, n_runs)
                    first = entries[run_lo + r, E_PREFIX]
                else:
                    i = _last_le(win, p, i, n_win)
                    r = r0 + i
                    first = win[i]
                e = run_lo + r
                value = np.uint16(entries[e, E_VALUE])
                out[base + entries[e, E_OFFSET] + (p - first)] = value
        cuda.syncthreads()


class ExpandLaunch(NamedTuple):
    """Launch configuration of ``_expand``."""

    grid: int
    block: int
    #: Dynamic shared memory, bytes: the window of prefix sums.
    dynamic_shared: int
    items: int
    window: int


def expand_launch(
    device: DeviceShape,
    n_tiles: int,
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
    n_tiles : int
        Tiles of the batch (``tile_count`` of each frame's pixels, summed).
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
    n_tiles = operator.index(n_tiles)
    block, items = operator.index(block), operator.index(items)
    if n_tiles <= 0:
        return None
    if n_tiles > INT64_MAX:
        raise ValueError("n_tiles must fit in int64")
    if not 2 <= block <= MAX_THREADS_PER_BLOCK:
        raise ValueError(f"block must be in [2, {MAX_THREADS_PER_BLOCK}]")
    if not 1 <= items <= INT32_MAX:  # the kernel's tile, block * items, is int64
        raise ValueError(f"items must be in [1, {INT32_MAX}]")
    tile = block * items
    window = min(tile, _MAX_WINDOW) if window is None else operator.index(window)
    if not 1 <= window <= MAX_WINDOW:
        raise ValueError(f"window must be in [1, {MAX_WINDOW}]")
    if grid is None:
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
    d_frames: Any,
    d_entries: Any,
    n_frames: int,
    n_tiles: int,
    stream: Any = None,
    *,
    block: int = DEFAULT_BLOCK,
    items: int = DEFAULT_ITEMS,
    grid: int | None = None,
    window: int | None = None,
) -> None:
    """Launch the expansion of a staged batch into the output.

    Parameters
    ----------
    d_out_flat : numba device array
        Flat ``uint16`` output block.
    d_frames : numba device array
        ``int64[:, FRAME_FIELDS]`` frame table (at least ``n_frames`` rows;
        ``F_TILE_LO`` numbered for ``block * items`` pixels a tile; see
        ``_batch_layout``).
    d_entries : numba device array
        ``uint32[:, ENTRY_FIELDS]`` entries (longer is fine).
    n_frames : int
        Frames of the table (those without pixels included).
    n_tiles : int
        Tiles of the batch.
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
        ``min(block * items, 4096)``.

    Raises
    ------
    TypeError
        If the arguments do not match ``EXPAND_SIGNATURE``.
    """
    launch = expand_launch(
        current_device_shape(),
        n_tiles,
        block=block,
        items=items,
        grid=grid,
        window=window,
    )
    if launch is None:
        return
    args = (
        d_out_flat,
        d_frames,
        d_entries,
        int(n_frames),
        int(n_tiles),
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
