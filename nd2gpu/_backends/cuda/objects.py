"""Object tables on the GPU: run tables reduced by (frame, id) on the device.

Frames are inflated and parsed on the CPU a batch at a time, exactly as for
decoding (``pipeline.parse_frame``, overlapping runs rewritten so that the
later run wins, and ``pipeline.batch_table``); while the GPU reduces batch k the pool
parses batch k+1. Per batch the host cuts the run table into pieces and lists
the pieces of each output row (``_objects_kernels.plan_pieces`` /
``plan_rows``, O(runs)), and the kernels of ``kernels/_objects_cuda.py``
reduce pieces, then rows. Only run tables (and intensity images given on the
host) cross PCIe; the table's columns are CuPy arrays (host-backed
``SimulatedDeviceArray`` under numba's simulator).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._decode.frame import FrameHeader
from ..._decode.mask_source import MaskSource
from ..._decode.plan import FrameJob, warn_versions
from ..._decode.pool import thread_pool
from ..._format.layer_metadata import LayerMeta
from ...kernels import _objects_cuda as oc
from ...kernels._cuda_registry import check_arguments, current_device_shape
from ...kernels._objects_kernels import plan_pieces, plan_rows
from ...kernels._run_table import RunTable
from .arrays import SimulatedDeviceArray, cupy_module, numba_cuda
from .pipeline import BATCH_FRAMES, batch_table, parse_frame
from .probe import probe

__all__ = ["ImageSource", "RawTable", "regionprops_cuda", "table_columns"]

#: Image dtypes the intensity kernel is not compiled for, and what they become.
_CONVERT = {"bool": "uint8", "float16": "float32"}


@dataclass(frozen=True)
class ImageSource:
    """Intensity images: a device array indexed by frame, or host frames.

    Attributes
    ----------
    device_array : CUDA array or None
        ``(..., Y, X)``; frame ``i`` is ``device_array.reshape(-1, Y, X)[i]``.
    host_frames : callable or None
        Gives the ``(k, Y, X)`` host images of a list of frame indices.
    """

    device_array: Any = None
    host_frames: Callable[[Sequence[int]], np.ndarray] | None = None


@dataclass
class RawTable:
    """One layer's rows, sorted by (frame, id), on the device.

    ``ints`` is ``(4, n)`` int64 (bbox-0 .. bbox-3); ``floats`` is ``(6, n)``
    float64 (area, centroid-0, centroid-1, intensity mean, min, max).
    """

    frame: Any
    label: Any
    ints: Any
    floats: Any

    @property
    def n_rows(self) -> int:
        return int(self.frame.shape[0])


# --------------------------------------------------------------- device arrays


def _empty(shape: tuple[int, ...], dtype: Any) -> Any:
    """A new array on the device, as the table returns it (CuPy or simulated)."""
    cupy = cupy_module()
    if cupy is None:
        return SimulatedDeviceArray(np.empty(shape, dtype))
    return cupy.empty(shape, dtype)


def _upload(host: np.ndarray) -> Any:
    cupy = cupy_module()
    if cupy is None:
        return SimulatedDeviceArray(np.ascontiguousarray(host).copy())
    return cupy.asarray(host)


def _kernel_arg(array: Any) -> Any:
    """What a kernel launch takes for a table array."""
    if isinstance(array, SimulatedDeviceArray):
        return array.host
    return numba_cuda().as_cuda_array(array, sync=False)


def _concatenate(arrays: Sequence[Any], dtype: Any) -> Any:
    cupy = cupy_module()
    if cupy is None:
        hosts = [a.host for a in arrays]
        return SimulatedDeviceArray(
            np.concatenate(hosts) if hosts else np.empty(0, dtype)
        )
    return cupy.concatenate(arrays) if arrays else cupy.empty(0, dtype)


def _full(n: int, value: int) -> Any:
    cupy = cupy_module()
    if cupy is None:
        return SimulatedDeviceArray(np.full(n, value, np.int64))
    return cupy.full(n, value, np.int64)


def _stream() -> Any:
    cuda = numba_cuda()
    cupy = cupy_module()
    if cupy is None:
        return cuda.stream()
    ptr = int(cupy.cuda.get_current_stream().ptr)
    return cuda.external_stream(ptr) if ptr else cuda.default_stream()


def _block() -> int:
    return oc.SIMULATOR_BLOCK if probe().simulator else oc.DEFAULT_BLOCK


def _launch(
    kernel: Any,
    signature: Any,
    n_items: int,
    block: int,
    stream: Any,
    args: tuple[Any, ...],
) -> None:
    """Launch an objects kernel over ``n_items`` pieces or rows, its arguments
    checked against its signature first (a compiled kernel does not check)."""
    launch = oc.objects_launch(current_device_shape(), n_items, block)
    if launch is None:
        return
    check_arguments(signature.args, args)
    kernel[launch.grid, launch.block, stream](*args)


def _device_images(array: Any, frame_shape: tuple[int, int]) -> Any:
    """``array`` as a C-contiguous ``(n, Y, X)`` device array of a kernel dtype."""
    cupy = cupy_module()
    if isinstance(array, SimulatedDeviceArray) or cupy is None:
        host = array.host if isinstance(array, SimulatedDeviceArray) else array
        images = np.ascontiguousarray(host).reshape(-1, *frame_shape)
        return SimulatedDeviceArray(_kernel_dtype(images))
    images = cupy.ascontiguousarray(cupy.asarray(array)).reshape(-1, *frame_shape)
    name = _CONVERT.get(images.dtype.name, images.dtype.name)
    if name not in oc.INTENSITY_DTYPES:
        name = "float64"
    return images if images.dtype.name == name else images.astype(name)


def _kernel_dtype(images: np.ndarray) -> np.ndarray:
    name = _CONVERT.get(images.dtype.name, images.dtype.name)
    if name not in oc.INTENSITY_DTYPES:
        name = "float64"
    return images if images.dtype.name == name else images.astype(name)


# ------------------------------------------------------------------- reduction


@dataclass
class _Batch:
    seqs: list[int]
    images: list[int]
    parsed: list[Any]


def regionprops_cuda(
    source: MaskSource,
    layer: LayerMeta,
    seqs: Sequence[int],
    frame_shape: tuple[int, int],
    image_index: Sequence[int],
    images: ImageSource | None,
) -> RawTable:
    """Measure frames ``seqs`` (ascending) of one layer on the GPU.

    Parameters
    ----------
    source, layer : MaskSource, LayerMeta
        Where the layer's payloads are, and which layer.
    seqs : sequence of int
        Sequence indices, ascending, without repeats.
    frame_shape : (int, int)
        The layer's frame shape (a frame of another shape is a ``DecodeError``,
        as in decoding).
    image_index : sequence of int
        Each frame's index in ``images``.
    images : ImageSource or None
        Intensity images (None: no intensity columns).

    Returns
    -------
    RawTable
    """
    frame_pixels = frame_shape[0] * frame_shape[1]
    device_images = (
        None
        if images is None or images.device_array is None
        else _device_images(images.device_array, frame_shape)
    )
    pool = thread_pool()
    headers: list[FrameHeader] = []
    version_jobs: list[FrameJob] = []
    parts: list[RawTable] = []
    in_flight: deque[tuple[Any, list[Any]]] = deque()
    stream = _stream()
    groups = [
        list(range(lo, min(lo + BATCH_FRAMES, len(seqs))))
        for lo in range(0, len(seqs), BATCH_FRAMES)
    ]
    with source.reading() as index:

        def submit(group: list[int]) -> list[Future]:
            return [
                pool.submit(
                    parse_frame,
                    source,
                    index,
                    FrameJob(layer, seqs[i], slot),
                    frame_shape,
                    slot * frame_pixels,
                )
                for slot, i in enumerate(group)
            ]

        pending = submit(groups[0]) if groups else []
        for k, group in enumerate(groups):
            wait(pending)
            parsed = [f.result() for f in pending]
            pending = submit(groups[k + 1]) if k + 1 < len(groups) else []
            table = batch_table([p for p in parsed if p is not None])
            headers += [p.header for p in parsed if p is not None]
            version_jobs += [
                FrameJob(layer, seqs[i], 0)
                for i, p in zip(group, parsed, strict=True)
                if p is not None
            ]
            batch = _Batch(
                [seqs[i] for i in group], [image_index[i] for i in group], parsed
            )
            part, buffers = _reduce_batch(
                table, batch, frame_shape, images, device_images, stream
            )
            if part is not None:
                parts.append(part)
            # A batch's device buffers live until its kernels are done; at most
            # two batches are in flight.
            if buffers:
                done = numba_cuda().event()
                done.record(stream)
                in_flight.append((done, buffers))
            if len(in_flight) > 2:
                in_flight.popleft()[0].synchronize()
        stream.synchronize()
        in_flight.clear()
    warn_versions(version_jobs, headers)
    return RawTable(
        _concatenate([p.frame for p in parts], np.int64),
        _concatenate([p.label for p in parts], np.int64),
        _stack_columns([p.ints for p in parts], oc.INT_OUT, np.int64),
        _stack_columns([p.floats for p in parts], oc.FLOAT_OUT, np.float64),
    )


def _stack_columns(blocks: Sequence[Any], n_columns: int, dtype: Any) -> Any:
    """Blocks of shape ``(n_columns, n_i)`` side by side."""
    cupy = cupy_module()
    if cupy is None:
        hosts = [b.host for b in blocks]
        out = np.concatenate(hosts, axis=1) if hosts else np.empty((n_columns, 0))
        return SimulatedDeviceArray(out.astype(dtype, copy=False))
    if not blocks:
        return cupy.empty((n_columns, 0), dtype)
    return cupy.concatenate(blocks, axis=1)


def _reduce_batch(
    table: RunTable,
    batch: _Batch,
    frame_shape: tuple[int, int],
    images: ImageSource | None,
    device_images: Any,
    stream: Any,
) -> tuple[RawTable | None, list[Any]]:
    """Queue the reduction of one batch's runs.

    Returns its rows (None when it has no object) and the device buffers its
    kernels read, to keep until they are done.
    """
    if table.n_runs == 0:
        return None, []
    frame_pixels = frame_shape[0] * frame_shape[1]
    piece_lo, piece_frame, piece_label = plan_pieces(
        table.starts,
        table.values,
        table.prefix,
        frame_pixels,
        oc.PIECE_RUNS,
        oc.PIECE_PIXELS,
    )
    row_ptr, piece_order, row_frame, row_label = plan_rows(piece_frame, piece_label)
    n_rows = int(row_frame.shape[0])
    if n_rows == 0:
        return None, []
    n_pieces = int(piece_frame.shape[0])
    cuda = numba_cuda()
    block = _block()
    ncols = np.int64(frame_shape[1])

    buffers: list[Any] = []

    def up(host: np.ndarray) -> Any:
        device = cuda.to_device(np.ascontiguousarray(host), stream=stream)
        buffers.append(device)
        return device

    d_starts = up(table.starts)
    d_lengths = up(table.lengths)
    d_piece_lo = up(piece_lo)
    d_piece_base = up(piece_frame * frame_pixels)
    part_geo = cuda.device_array((n_pieces, oc.GEO_FIELDS), np.int64, stream=stream)
    buffers.append(part_geo)
    _launch(
        oc.geometry_kernel(),
        oc.GEOMETRY_SIGNATURE,
        n_pieces,
        block,
        stream,
        (
            d_starts,
            d_lengths,
            d_piece_lo,
            d_piece_base,
            ncols,
            np.int64(n_pieces),
            part_geo,
        ),
    )
    if images is not None:
        if device_images is not None:
            stack = device_images
            piece_image = np.asarray(batch.images, np.int64)[piece_frame]
        else:
            if images.host_frames is None:
                raise ValueError("an ImageSource needs device_array or host_frames")
            stack = _upload(_kernel_dtype(images.host_frames(batch.images)))
            buffers.append(stack)
            piece_image = piece_frame
        part_val = cuda.device_array(
            (n_pieces, oc.VAL_FIELDS), np.float64, stream=stream
        )
        buffers.append(part_val)
        _launch(
            oc.intensity_kernel(stack.dtype.name),
            oc.INTENSITY_SIGNATURES[stack.dtype.name],
            n_pieces,
            block,
            stream,
            (
                d_starts,
                d_lengths,
                up(table.prefix),
                d_piece_lo,
                d_piece_base,
                up(piece_image),
                _kernel_arg(stack),
                ncols,
                np.int64(n_pieces),
                part_val,
            ),
        )
        has_val = 1
    else:
        part_val = cuda.device_array((1, oc.VAL_FIELDS), np.float64, stream=stream)
        buffers.append(part_val)
        has_val = 0
    out_int = _empty((oc.INT_OUT, n_rows), np.int64)
    out_float = _empty((oc.FLOAT_OUT, n_rows), np.float64)
    _launch(
        oc.combine_kernel(),
        oc.COMBINE_SIGNATURE,
        n_rows,
        block,
        stream,
        (
            up(row_ptr),
            up(piece_order),
            part_geo,
            part_val,
            np.int64(has_val),
            np.int64(n_rows),
            _kernel_arg(out_int),
            _kernel_arg(out_float),
        ),
    )
    seqs = np.asarray(batch.seqs, np.int64)
    table_rows = RawTable(
        _upload(seqs[row_frame]), _upload(row_label), out_int, out_float
    )
    return table_rows, buffers


# ---------------------------------------------------------------------- columns


def table_columns(parts: Sequence[tuple[int, RawTable]], names: Sequence[str]) -> dict:
    """The named columns of the layers' tables, concatenated (device arrays).

    ``parts`` are ``(layer index, RawTable)`` in row order.
    """
    float_rows = {
        "area": 0,
        "centroid-0": 1,
        "centroid-1": 2,
        "intensity_mean": 3,
        "intensity_min": 4,
        "intensity_max": 5,
    }
    int_rows = {"bbox-0": 0, "bbox-1": 1, "bbox-2": 2, "bbox-3": 3}
    columns: dict[str, Any] = {}
    for name in names:
        pieces = []
        for layer_index, raw in parts:
            if name == "layer":
                pieces.append(_full(raw.n_rows, layer_index))
            elif name == "frame":
                pieces.append(raw.frame)
            elif name == "label":
                pieces.append(raw.label)
            elif name in int_rows:
                pieces.append(raw.ints[int_rows[name]])
            else:
                pieces.append(raw.floats[float_rows[name]])
        dtype = np.float64 if name in float_rows else np.int64
        columns[name] = (
            pieces[0]
            if len(pieces) == 1 and _contiguous(pieces[0])
            else _concatenate(pieces, dtype)
        )
    return columns


def _contiguous(array: Any) -> bool:
    if isinstance(array, SimulatedDeviceArray):
        return bool(array.host.flags.c_contiguous)
    return bool(array.flags.c_contiguous)
