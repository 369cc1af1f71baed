"""Object tables on the GPU: staged runs reduced by (frame, id) on the device.

The decode threads stage the frames' runs exactly as for decoding
(``batches.BatchPipeline``: overlaps resolved, and with a spacing each frame's
runs in row-major order per id). Per batch, ``ObjectsDevice.submit`` cuts the
runs into pieces and lists the pieces of each output row
(``kernels/_objects_plan.py``, O(runs), on the calling thread), and the kernels
of ``kernels/_objects_cuda.py`` reduce pieces, then rows, while the decode
threads stage the next batches. Only runs (and intensity images given on the
host) cross PCIe; the entries stay on the device (CuPy arrays; host-backed
``SimulatedDeviceArray`` under numba's simulator).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._decode.plan import DecodePlan
from ...kernels import _objects_cuda as oc
from ...kernels._batch_layout import F_BASE
from ...kernels._cuda_registry import check_arguments, current_device_shape
from ...kernels._objects_kernels import (
    F_MAX,
    F_MIN,
    F_SUM,
    F_SUM_COL,
    F_SUM_ROW,
    FLOAT_FIELDS,
    S_AREA,
    S_FRAME,
    S_LABEL,
    S_MAX_COL,
    S_MAX_ROW,
    S_MIN_COL,
    S_MIN_ROW,
    S_SUM_COL,
    S_SUM_ROW,
    STAT_FIELDS,
    scaled_sums_group,
)
from ...kernels._objects_plan import batch_run_table, plan_pieces, plan_rows
from .arrays import SimulatedDeviceArray, cupy_module, numba_cuda
from .batches import BatchPipeline, StagedBatch
from .probe import probe
from .streams import numba_stream

__all__ = ["ImageSource", "array_module", "as_device", "measure_cuda"]

#: Image dtypes the intensity kernel is not compiled for, and what they become.
_CONVERT = {"bool": "uint8", "float16": "float32"}
#: Where each field of ``_combine_rows``'s integer output goes in an entry.
_GEO_TO_STAT = (
    S_AREA,
    S_SUM_ROW,
    S_SUM_COL,
    S_MIN_ROW,
    S_MAX_ROW,
    S_MIN_COL,
    S_MAX_COL,
)


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


def array_module() -> Any:
    """CuPy on a GPU, NumPy under the simulator (whose memory is the host's)."""
    cupy = cupy_module()
    return np if cupy is None else cupy


_xp = array_module


def as_device(array: Any) -> Any:
    """A table column as the GPU table gives it: a CuPy array, or under the
    simulator a ``SimulatedDeviceArray``."""
    if isinstance(array, np.ndarray):
        cupy = cupy_module()
        return SimulatedDeviceArray(array) if cupy is None else cupy.asarray(array)
    return array


def _kernel_arg(array: Any) -> Any:
    """What a kernel launch takes for an array of ``_xp()``."""
    if isinstance(array, np.ndarray):
        return array
    return numba_cuda().as_cuda_array(array, sync=False)


def _block() -> int:
    return oc.SIMULATOR_BLOCK if probe().simulator else oc.DEFAULT_BLOCK


def _launch(
    kernel: Any,
    signature: Any,
    launch: oc.ObjectsLaunch | None,
    stream: Any,
    args: tuple[Any, ...],
) -> None:
    """Launch an objects kernel, its arguments checked against its signature
    first (a compiled kernel does not check)."""
    if launch is None:
        return
    check_arguments(signature.args, args)
    kernel[launch.grid, launch.block, stream](*args)


def _kernel_dtype(images: Any) -> Any:
    name = _CONVERT.get(images.dtype.name, images.dtype.name)
    if name not in oc.INTENSITY_DTYPES:
        name = "float64"
    return images if images.dtype.name == name else images.astype(name)


def _device_images(array: Any, frame_shape: tuple[int, int]) -> Any:
    """``array`` as a C-contiguous ``(n, Y, X)`` device array of a kernel dtype."""
    if isinstance(array, SimulatedDeviceArray):
        array = array.host
    xp = _xp()
    images = xp.ascontiguousarray(xp.asarray(array)).reshape(-1, *frame_shape)
    return _kernel_dtype(images)


@dataclass
class _Part:
    """One batch's rows, on the device (``_xp()`` arrays)."""

    job: Any
    label: Any
    geo: Any
    val: Any
    scaled: Any


class ObjectsDevice:
    """The GPU as the batch pipeline sees it, reducing batches into rows."""

    tile_pixels = 1  # tiles are not used: the frame table's F_TILE_LO is unused

    def __init__(
        self,
        frame_shape: tuple[int, int],
        images: ImageSource | None,
        image_index: np.ndarray,
        spacing: tuple[float, float] | None,
    ) -> None:
        self._cuda = numba_cuda()
        self._shape = frame_shape
        self._images = images
        self._image_index = image_index
        self._spacing = None if spacing is None else np.asarray(spacing, np.float64)
        self._device_images = (
            None
            if images is None or images.device_array is None
            else _device_images(images.device_array, frame_shape)
        )
        self._stream = numba_stream()
        self._block = _block()
        self.parts: list[_Part] = []
        #: Device buffers of batches whose kernels may still run.
        self._in_flight: deque[tuple[Any, list[Any]]] = deque()

    def pinned(self, nbytes: int) -> np.ndarray:
        return np.empty(nbytes, np.uint8)  # read on the host, never copied as is

    def wait_copied(self, slot: int) -> None:
        """Batches are read on the host when submitted: nothing to wait for."""

    def finish(self) -> None:
        self._stream.synchronize()
        self._in_flight.clear()

    def _up(self, host: np.ndarray, keep: list[Any]) -> Any:
        device = self._cuda.to_device(np.ascontiguousarray(host), stream=self._stream)
        keep.append(device)
        return device

    def submit(self, slot: int, batch: StagedBatch, n_tiles: int) -> None:
        frame_pixels = self._shape[0] * self._shape[1]
        frames = batch.frames[: batch.n_frames]
        starts, lengths, values, prefix = batch_run_table(
            frames, batch.n_frames, batch.entries, frame_pixels
        )
        if starts.shape[0] == 0:
            return
        piece_lo, piece_frame, piece_label = plan_pieces(
            starts, values, prefix, frame_pixels, oc.PIECE_RUNS, oc.PIECE_PIXELS
        )
        row_ptr, piece_order, row_frame, row_label = plan_rows(piece_frame, piece_label)
        n_rows = int(row_frame.shape[0])
        if n_rows == 0:
            return
        n_pieces = int(piece_frame.shape[0])
        cuda = self._cuda
        stream = self._stream
        keep: list[Any] = []
        shape = current_device_shape()
        ncols = np.int64(self._shape[1])
        d_starts = self._up(starts, keep)
        d_lengths = self._up(lengths, keep)
        d_piece_lo = self._up(piece_lo, keep)
        d_piece_base = self._up(piece_frame * frame_pixels, keep)
        d_row_ptr = self._up(row_ptr, keep)
        d_piece_order = self._up(piece_order, keep)
        part_geo = cuda.device_array((n_pieces, oc.GEO_FIELDS), np.int64, stream=stream)
        keep.append(part_geo)
        launch = oc.objects_launch(shape, n_pieces, self._block)
        _launch(
            oc.geometry_kernel(),
            oc.GEOMETRY_SIGNATURE,
            launch,
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
        jobs = frames[:, F_BASE][row_frame]
        xp = _xp()
        has_val = self._images is not None
        if has_val:
            images = self._images
            assert images is not None
            frame_jobs = frames[:, F_BASE]
            if self._device_images is not None:
                stack = self._device_images
                piece_image = self._image_index[frame_jobs][piece_frame]
            else:
                if images.host_frames is None:
                    raise ValueError("an ImageSource needs device_array or host_frames")
                host = _kernel_dtype(
                    images.host_frames(self._image_index[frame_jobs].tolist())
                )
                stack = xp.asarray(host)
                keep.append(stack)
                piece_image = piece_frame
            part_val = cuda.device_array(
                (n_pieces, oc.VAL_FIELDS), np.float64, stream=stream
            )
            keep.append(part_val)
            _launch(
                oc.intensity_kernel(stack.dtype.name),
                oc.INTENSITY_SIGNATURES[stack.dtype.name],
                launch,
                stream,
                (
                    d_starts,
                    d_lengths,
                    self._up(prefix, keep),
                    d_piece_lo,
                    d_piece_base,
                    self._up(np.ascontiguousarray(piece_image, np.int64), keep),
                    _kernel_arg(stack),
                    ncols,
                    np.int64(n_pieces),
                    part_val,
                ),
            )
        else:
            part_val = cuda.device_array((1, oc.VAL_FIELDS), np.float64, stream=stream)
            keep.append(part_val)
        geo = xp.empty((oc.INT_OUT, n_rows), np.int64)
        val = xp.zeros((oc.FLOAT_OUT, n_rows), np.float64)
        _launch(
            oc.combine_kernel(),
            oc.COMBINE_SIGNATURE,
            oc.objects_launch(shape, n_rows, self._block),
            stream,
            (
                d_row_ptr,
                d_piece_order,
                part_geo,
                part_val,
                np.int64(has_val),
                np.int64(n_rows),
                _kernel_arg(geo),
                _kernel_arg(val),
            ),
        )
        scaled = None
        if self._spacing is not None:
            scaled = xp.asarray(_scaled_rows(batch, row_frame, row_label))
        self.parts.append(
            _Part(xp.asarray(jobs), xp.asarray(row_label), geo, val, scaled)
        )
        # A batch's device buffers live until its kernels are done; at most
        # two batches are in flight.
        event = cuda.event()
        event.record(stream)
        self._in_flight.append((event, keep))
        if len(self._in_flight) > 2:
            self._in_flight.popleft()[0].synchronize()

    def entries(self) -> tuple[Any, Any]:
        """The rows of every batch, as ``_objects_kernels`` entries (device
        arrays: CuPy, or NumPy under the simulator)."""
        xp = _xp()
        n = sum(int(p.job.shape[0]) for p in self.parts)
        stats = xp.zeros((n, STAT_FIELDS), np.int64)
        fstats = xp.zeros((n, FLOAT_FIELDS), np.float64)
        at = 0
        for p in self.parts:
            rows = slice(at, at + int(p.job.shape[0]))
            stats[rows, S_FRAME] = p.job
            stats[rows, S_LABEL] = p.label
            for k, field in enumerate(_GEO_TO_STAT):
                stats[rows, field] = p.geo[k]
            fstats[rows, F_SUM] = p.val[0]
            fstats[rows, F_MIN] = p.val[1]
            fstats[rows, F_MAX] = p.val[2]
            if p.scaled is not None:
                fstats[rows, F_SUM_ROW] = p.scaled[0]
                fstats[rows, F_SUM_COL] = p.scaled[1]
            at = rows.stop
        return stats, fstats


def _scaled_rows(
    batch: StagedBatch, row_frame: np.ndarray, row_label: np.ndarray
) -> np.ndarray:
    """The scaled coordinate sums of a batch's rows (``(2, n_rows)``), from what
    the decode threads computed (``_keep_scaled_sums``)."""
    found = sorted(batch.extras, key=lambda extra: extra[0])
    frames = np.concatenate([f for _, f, _, _ in found])
    labels = np.concatenate([lab for _, _, lab, _ in found])
    sums = np.concatenate([s for _, _, _, s in found])
    if not np.array_equal(frames, row_frame) or not np.array_equal(labels, row_label):
        raise AssertionError("the GPU's objects are not the host's")  # pragma: no cover
    return np.ascontiguousarray(sums.T)


def _keep_scaled_sums(spacing: np.ndarray, ncols: int) -> Any:
    """A group hook that computes the group's scaled coordinate sums (skimage's
    centroid with a spacing needs numpy's pairwise sums, done on the host)."""

    def hook(
        batch: StagedBatch,
        row: int,
        runs: Any,
        spans: np.ndarray,
        n: int,
        statuses: np.ndarray,
    ) -> None:
        frames, labels, sums = scaled_sums_group(
            runs.rows,
            runs.cols,
            runs.lengths,
            runs.values,
            spans,
            n,
            statuses,
            ncols,
            spacing,
        )
        with batch.lock:
            batch.extras.append((row, frames + row, labels, sums))

    return hook


def measure_cuda(
    plan: DecodePlan,
    frame_shape: tuple[int, int],
    images: ImageSource | None,
    image_index: np.ndarray,
    spacing: tuple[float, float] | None,
) -> tuple[Any, Any]:
    """The object entries of a plan's frames (one layer's), on the GPU.

    Returns
    -------
    stats, fstats
        As ``nd2gpu._objects.cpu.measure_cpu`` gives them (intensity sums in
        ``F_SUM``, float64, whatever the image's dtype), as device arrays (CuPy;
        NumPy under the simulator), rows in job order, by label in a frame.

    Raises
    ------
    DecodeError
        For the first corrupt frame in job order (naming file, layer, frame).
    """
    device = ObjectsDevice(frame_shape, images, image_index, spacing)
    hook = (
        None
        if spacing is None
        else _keep_scaled_sums(np.asarray(spacing, np.float64), frame_shape[1])
    )
    pipeline = BatchPipeline(device, frame_shape, group_hook=hook)
    pipeline.run(plan, np.arange(plan.n_jobs, dtype=np.int64))
    return device.entries()
