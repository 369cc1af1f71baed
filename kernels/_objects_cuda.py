"""numba-CUDA kernels: object statistics reduced from a run table by (frame, id).

The run table of a batch (``_run_table``: flat ``starts``, ``lengths``, ids,
frames at ``slot * frame_pixels``, no overlapping runs) is cut on the host into
*pieces* (``_objects_kernels.plan_pieces``): stretches of consecutive runs of
one frame and one id, each a bounded amount of work. The reduction has two
levels, both segmented and free of atomics:

1. ``_reduce_geometry`` (one 32-thread group per piece) reduces a piece's runs
   to its area, row and column sums and bounding box; ``_reduce_intensity``
   (one group per piece, threads over the piece's pixels, coalesced) reduces the
   intensity image under them to sum, min and max.
2. ``_combine_rows`` (one group per output row) combines the pieces of each
   ``(frame, id)`` (``_objects_kernels.plan_rows`` lists them) and writes the
   row's columns.

A hot id (one object with millions of runs) is just many pieces and then one
row whose group strides over them: no thread waits on another's atomics.

Groups reduce with shared memory and ``syncthreads`` (every thread of a block
runs the same number of rounds), so the kernels also run under numba's CUDA
simulator, which has no warp shuffles. Shared memory per block:
``_reduce_geometry`` 14 KiB, ``_reduce_intensity`` 6 KiB, ``_combine_rows``
20 KiB for 256 threads, so an SM holds several 256-thread blocks.

Every kernel is compiled from an explicit signature (the argument types the
launch code in ``nd2gpu/_backends/cuda/objects.py`` passes, checked there before
each launch) and registered in ``_cuda_registry.KERNELS``, which builds it for
every target GPU in CI.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import numpy as np
from numba import cuda, types

from ._cuda_registry import OBJECT_IMAGE_DTYPES, DeviceShape, resident_blocks

__all__ = [
    "COMBINE_SIGNATURE",
    "DEFAULT_BLOCK",
    "GEOMETRY_SIGNATURE",
    "GROUP",
    "INTENSITY_DTYPES",
    "INTENSITY_SIGNATURES",
    "PIECE_PIXELS",
    "PIECE_RUNS",
    "SIMULATOR_BLOCK",
    "ObjectsLaunch",
    "combine_kernel",
    "geometry_kernel",
    "intensity_kernel",
    "objects_launch",
]

#: Threads that reduce one piece or one row together.
GROUP = 32
#: Threads per block on a GPU (8 groups); shared arrays are sized for it.
DEFAULT_BLOCK = 256
#: Threads per block under the simulator (each CUDA thread is a Python thread).
SIMULATOR_BLOCK = 64
#: A piece holds at most this many runs ...
PIECE_RUNS = 256
#: ... and, unless it is one longer run, at most this many pixels.
PIECE_PIXELS = 1 << 15

GEO_FIELDS = 7  # area, sum_row, sum_col, min_row, max_row, min_col, max_col
VAL_FIELDS = 3  # sum, min, max
#: Static shared memory of each kernel: int64 geometry fields and float64
#: intensity fields, one row per thread of a ``DEFAULT_BLOCK``-thread block.
GEOMETRY_SHARED_BYTES = DEFAULT_BLOCK * GEO_FIELDS * 8
INTENSITY_SHARED_BYTES = DEFAULT_BLOCK * VAL_FIELDS * 8
COMBINE_SHARED_BYTES = GEOMETRY_SHARED_BYTES + INTENSITY_SHARED_BYTES
#: Rows of ``_combine_rows``'s outputs: the geometry fields (as ``GEO_FIELDS``)
#: and the intensity fields (as ``VAL_FIELDS``) of each object.
INT_OUT = GEO_FIELDS
FLOAT_OUT = VAL_FIELDS
_BIG = 1 << 62

#: ``_reduce_geometry(starts, lengths, piece_lo, piece_base, ncols, n_pieces,
#: part_geo)``.
GEOMETRY_SIGNATURE = types.void(
    types.int64[::1],
    types.int32[::1],
    types.int64[::1],
    types.int64[::1],
    types.int64,
    types.int64,
    types.int64[:, ::1],
)

#: Image dtypes ``_reduce_intensity`` is compiled for (others are converted).
INTENSITY_DTYPES = OBJECT_IMAGE_DTYPES


def _intensity_signature(dtype: Any) -> Any:
    return types.void(
        types.int64[::1],  # starts
        types.int32[::1],  # lengths
        types.int64[::1],  # prefix
        types.int64[::1],  # piece_lo
        types.int64[::1],  # piece_base
        types.int64[::1],  # piece_image
        dtype[:, :, ::1],  # images (n, Y, X)
        types.int64,  # ncols
        types.int64,  # n_pieces
        types.float64[:, ::1],  # part_val (n_pieces, 3)
    )


#: ``_reduce_intensity(starts, lengths, prefix, piece_lo, piece_base,
#: piece_image, images, ncols, n_pieces, part_val)``, one per image dtype.
INTENSITY_SIGNATURES = {
    name: _intensity_signature(getattr(types, name)) for name in INTENSITY_DTYPES
}

#: ``_combine_rows(row_ptr, piece_order, part_geo, part_val, has_val, n_rows,
#: out_int, out_float)``.
COMBINE_SIGNATURE = types.void(
    types.int64[::1],
    types.int64[::1],
    types.int64[:, ::1],
    types.float64[:, ::1],
    types.int64,
    types.int64,
    types.int64[:, ::1],
    types.float64[:, ::1],
)


class ObjectsLaunch(NamedTuple):
    """How an objects kernel is launched (no dynamic shared memory)."""

    grid: int
    block: int
    dynamic_shared: int = 0


def objects_launch(
    device: DeviceShape, n_items: int, block: int = DEFAULT_BLOCK
) -> ObjectsLaunch | None:
    """The launch of an objects kernel over ``n_items`` pieces or rows.

    One thread group per item: enough blocks to fill every SM, but no more than
    there are groups of items. None when there is nothing to launch.

    Raises
    ------
    ValueError
        If ``block`` is not a multiple of ``GROUP`` up to ``DEFAULT_BLOCK`` (the
        shared arrays are sized for ``DEFAULT_BLOCK`` threads).
    """
    if block % GROUP or not GROUP <= block <= DEFAULT_BLOCK:
        raise ValueError(
            f"block must be a multiple of {GROUP} up to {DEFAULT_BLOCK}, not {block}"
        )
    if n_items <= 0:
        return None
    wanted = -(-n_items // (block // GROUP))
    return ObjectsLaunch(min(wanted, resident_blocks(device, block)), block)


# --- group reductions ---------------------------------------------------------


@cuda.jit(device=True, inline="always")
def _min_nan(a: float, b: float) -> float:
    """min that keeps NaN, as numpy's does."""
    if b < a or b != b:
        return b
    return a


@cuda.jit(device=True, inline="always")
def _max_nan(a: float, b: float) -> float:
    if b > a or b != b:
        return b
    return a


@cuda.jit(device=True)
def _reduce_geo_group(sh: Any, tid: int, lane: int) -> None:
    """Reduce rows ``sh[group start .. + GROUP]`` into the group's first row."""
    s = GROUP // 2
    while s > 0:
        if lane < s:
            o = tid + s
            sh[tid, 0] += sh[o, 0]
            sh[tid, 1] += sh[o, 1]
            sh[tid, 2] += sh[o, 2]
            sh[tid, 3] = min(sh[tid, 3], sh[o, 3])
            sh[tid, 4] = max(sh[tid, 4], sh[o, 4])
            sh[tid, 5] = min(sh[tid, 5], sh[o, 5])
            sh[tid, 6] = max(sh[tid, 6], sh[o, 6])
        cuda.syncthreads()
        s //= 2


@cuda.jit(device=True)
def _reduce_val_group(sh: Any, tid: int, lane: int) -> None:
    s = GROUP // 2
    while s > 0:
        if lane < s:
            o = tid + s
            sh[tid, 0] += sh[o, 0]
            sh[tid, 1] = _min_nan(sh[tid, 1], sh[o, 1])
            sh[tid, 2] = _max_nan(sh[tid, 2], sh[o, 2])
        cuda.syncthreads()
        s //= 2


@cuda.jit(device=True)
def _rounds(n_items: int, groups: int) -> int:
    """Rounds of this block's grid-stride loop (the same for all its threads)."""
    first = cuda.blockIdx.x * groups
    stride = cuda.gridDim.x * groups
    if first >= n_items:
        return 0
    return (n_items - first + stride - 1) // stride


# --- kernels --------------------------------------------------------------------


def _reduce_geometry(starts, lengths, piece_lo, piece_base, ncols, n_pieces, part):
    sh = cuda.shared.array((DEFAULT_BLOCK, GEO_FIELDS), types.int64)
    tid = cuda.threadIdx.x
    lane = tid % GROUP
    groups = cuda.blockDim.x // GROUP
    first = cuda.blockIdx.x * groups + tid // GROUP
    stride = cuda.gridDim.x * groups
    for k in range(_rounds(n_pieces, groups)):
        p = first + k * stride
        area = 0
        sum_row = 0
        sum_col = 0
        min_row = _BIG
        max_row = -1
        min_col = _BIG
        max_col = -1
        if p < n_pieces:
            base = piece_base[p]
            for r in range(piece_lo[p] + lane, piece_lo[p + 1], GROUP):
                local = starts[r] - base
                row = local // ncols
                col = local - row * ncols
                n = np.int64(lengths[r])
                area += n
                sum_row += row * n
                sum_col += n * col + (n * (n - 1)) // 2
                min_row = min(min_row, row)
                max_row = max(max_row, row)
                min_col = min(min_col, col)
                max_col = max(max_col, col + n - 1)
        sh[tid, 0] = area
        sh[tid, 1] = sum_row
        sh[tid, 2] = sum_col
        sh[tid, 3] = min_row
        sh[tid, 4] = max_row
        sh[tid, 5] = min_col
        sh[tid, 6] = max_col
        cuda.syncthreads()
        _reduce_geo_group(sh, tid, lane)
        if lane == 0 and p < n_pieces:
            for f in range(GEO_FIELDS):
                part[p, f] = sh[tid, f]
        cuda.syncthreads()


def _reduce_intensity(
    starts,
    lengths,
    prefix,
    piece_lo,
    piece_base,
    piece_image,
    images,
    ncols,
    n_pieces,
    part,
):
    sh = cuda.shared.array((DEFAULT_BLOCK, VAL_FIELDS), types.float64)
    tid = cuda.threadIdx.x
    lane = tid % GROUP
    groups = cuda.blockDim.x // GROUP
    first = cuda.blockIdx.x * groups + tid // GROUP
    stride = cuda.gridDim.x * groups
    for k in range(_rounds(n_pieces, groups)):
        p = first + k * stride
        total = 0.0
        lo = math.inf
        hi = -math.inf
        if p < n_pieces:
            base = piece_base[p]
            img = piece_image[p]
            r = piece_lo[p]
            end = prefix[piece_lo[p + 1]]
            # Threads take the piece's pixels (numbered by the prefix sum) in
            # turn, so neighbours read neighbouring pixels of a run.
            q = prefix[r] + lane
            row = np.int64(0)
            col = np.int64(0)
            cur = np.int64(-1)
            while q < end:
                while prefix[r + 1] <= q:
                    r += 1
                if r != cur:
                    local = starts[r] - base
                    row = local // ncols
                    col = local - row * ncols
                    cur = r
                v = np.float64(images[img, row, col + (q - prefix[r])])
                total += v
                lo = _min_nan(lo, v)
                hi = _max_nan(hi, v)
                q += GROUP
        sh[tid, 0] = total
        sh[tid, 1] = lo
        sh[tid, 2] = hi
        cuda.syncthreads()
        _reduce_val_group(sh, tid, lane)
        if lane == 0 and p < n_pieces:
            part[p, 0] = sh[tid, 0]
            part[p, 1] = sh[tid, 1]
            part[p, 2] = sh[tid, 2]
        cuda.syncthreads()


def _combine_rows(
    row_ptr, piece_order, part_geo, part_val, has_val, n_rows, out_int, out_float
):
    sh = cuda.shared.array((DEFAULT_BLOCK, GEO_FIELDS), types.int64)
    shv = cuda.shared.array((DEFAULT_BLOCK, VAL_FIELDS), types.float64)
    tid = cuda.threadIdx.x
    lane = tid % GROUP
    groups = cuda.blockDim.x // GROUP
    first = cuda.blockIdx.x * groups + tid // GROUP
    stride = cuda.gridDim.x * groups
    for k in range(_rounds(n_rows, groups)):
        row = first + k * stride
        sh[tid, 0] = 0
        sh[tid, 1] = 0
        sh[tid, 2] = 0
        sh[tid, 3] = _BIG
        sh[tid, 4] = -1
        sh[tid, 5] = _BIG
        sh[tid, 6] = -1
        shv[tid, 0] = 0.0
        shv[tid, 1] = math.inf
        shv[tid, 2] = -math.inf
        if row < n_rows:
            for j in range(row_ptr[row] + lane, row_ptr[row + 1], GROUP):
                p = piece_order[j]
                sh[tid, 0] += part_geo[p, 0]
                sh[tid, 1] += part_geo[p, 1]
                sh[tid, 2] += part_geo[p, 2]
                sh[tid, 3] = min(sh[tid, 3], part_geo[p, 3])
                sh[tid, 4] = max(sh[tid, 4], part_geo[p, 4])
                sh[tid, 5] = min(sh[tid, 5], part_geo[p, 5])
                sh[tid, 6] = max(sh[tid, 6], part_geo[p, 6])
                if has_val:
                    shv[tid, 0] += part_val[p, 0]
                    shv[tid, 1] = _min_nan(shv[tid, 1], part_val[p, 1])
                    shv[tid, 2] = _max_nan(shv[tid, 2], part_val[p, 2])
        cuda.syncthreads()
        _reduce_geo_group(sh, tid, lane)
        _reduce_val_group(shv, tid, lane)
        if lane == 0 and row < n_rows:
            for f in range(GEO_FIELDS):
                out_int[f, row] = sh[tid, f]
            if has_val:
                for f in range(VAL_FIELDS):
                    out_float[f, row] = shv[tid, f]
        cuda.syncthreads()


@functools.cache
def geometry_kernel() -> Any:
    """``_reduce_geometry`` compiled for ``GEOMETRY_SIGNATURE`` (on first use)."""
    return cuda.jit(GEOMETRY_SIGNATURE, cache=True)(_reduce_geometry)


@functools.cache
def intensity_kernel(dtype_name: str) -> Any:
    """``_reduce_intensity`` compiled for images of ``dtype_name``."""
    return cuda.jit(INTENSITY_SIGNATURES[dtype_name], cache=True)(_reduce_intensity)


@functools.cache
def combine_kernel() -> Any:
    """``_combine_rows`` compiled for ``COMBINE_SIGNATURE``."""
    return cuda.jit(COMBINE_SIGNATURE, cache=True)(_combine_rows)
