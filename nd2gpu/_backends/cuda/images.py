"""Image frames to the GPU: filled into pinned host buffers, copied asynchronously.

The decode threads write each frame's image (inflated first where compressed)
into a pinned staging buffer; the calling thread queues one host-to-device copy
per group of frames on CuPy's current stream. Two buffers take turns, so group
k+1 is filled while group k is copied; a buffer is refilled only once its last
copy has finished. No pageable host memory is copied to the device.

Under numba's CUDA simulator device arrays live in host memory
(``SimulatedDeviceArray``) and "pinned" buffers are NumPy arrays; the same code
runs, streams and events included.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import suppress
from types import ModuleType
from typing import Any

import numpy as np

from ..._decode.pool import Tasks, thread_pool, worker_count
from .arrays import SimulatedDeviceArray, _c_strides, cupy_module, numba_cuda
from .probe import probe
from .streams import context, new_event, numba_stream, per_stream

__all__ = ["ImageStager", "check_device_out", "empty", "shared_stager"]

#: Bytes of one staging buffer (two take turns): a group holds as many frames
#: as fit, at least one, at most one per decode thread.
STAGING_BYTES = 64 << 20

#: ``fill(i, dest)`` writes frame ``i`` of a batch into ``dest``, a pinned array
#: of one frame's shape and dtype.
Fill = Callable[[int, np.ndarray], None]


def empty(shape: tuple[int, ...], dtype: np.dtype) -> Any:
    """A new device array of ``shape`` and ``dtype`` (CuPy; simulated under the
    simulator)."""
    cupy = cupy_module()
    if cupy is None:
        return SimulatedDeviceArray(np.empty(shape, dtype))
    return cupy.empty(shape, dtype)


def check_device_out(
    out: Any, shape: tuple[int, ...], dtype: np.dtype, what: str = "out"
) -> None:
    """Raise unless ``out`` is a C-contiguous device array of ``shape``/``dtype``.

    Raises
    ------
    TypeError
        If ``out`` is not a CUDA array (under the simulator: one nd2gpu made),
        or not of ``dtype``.
    ValueError
        If its shape differs or it is not C-contiguous.
    """
    if isinstance(out, np.ndarray) or not hasattr(out, "__cuda_array_interface__"):
        raise TypeError(
            f"out {what} must be a CUDA array (CuPy) for device 'cuda', not "
            f"{type(out).__name__}"
        )
    if probe().simulator and not isinstance(out, SimulatedDeviceArray):
        raise TypeError(
            f"under numba's CUDA simulator, out {what} must be an array nd2gpu "
            f"allocated (a SimulatedDeviceArray), not {type(out).__name__}"
        )
    face = out.__cuda_array_interface__
    got = np.dtype(face["typestr"])
    if got != dtype:
        raise TypeError(f"out {what} must be {dtype}, not {got}")
    if tuple(face["shape"]) != tuple(shape):
        raise ValueError(
            f"out {what} have shape {tuple(face['shape'])}, the result {tuple(shape)}"
        )
    strides = face.get("strides")
    if strides is not None and tuple(strides) != _c_strides(shape, got.itemsize):
        raise ValueError(f"out {what} must be C-contiguous")


class _Buffer:
    """One pinned staging buffer and the event of its last copy."""

    def __init__(self, cuda: ModuleType, shape: tuple[int, ...], dtype: np.dtype):
        self.host = cuda.pinned_array(shape, dtype=dtype)
        self.copied: Any = None


class ImageStager:
    """Copies batches of image frames to device arrays through pinned buffers.

    Not thread-safe: one stager per calling thread (``shared_stager``). Work
    goes on CuPy's current stream at construction (a numba stream under the
    simulator); the arrays are ready for later work on that stream.
    """

    def __init__(self) -> None:
        self._cuda = numba_cuda()
        self._context = context()
        with self._context:
            self._stream = numba_stream()
        self._buffers: list[_Buffer] = []
        self._key: tuple[Any, ...] | None = None

    def _device_view(self, d_out: Any) -> Any:
        if isinstance(d_out, SimulatedDeviceArray):
            from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

            return FakeCUDAArray(d_out.host)
        # sync=False: the copies below are queued on the stream that owns d_out.
        return self._cuda.as_cuda_array(d_out, sync=False)

    def _staging(self, group: int, frame: tuple[int, ...], dtype: np.dtype) -> None:
        key = (group, frame, dtype)
        if key == self._key:
            return
        self.synchronize()
        self._buffers = [_Buffer(self._cuda, (group, *frame), dtype) for _ in range(2)]
        self._key = key

    def upload(self, d_out: Any, fill: Fill) -> None:
        """Fill every frame of the device array ``d_out`` (``(B, *frame)``) with
        ``fill`` in the decode threads, and queue its copy to the device.

        Returns once every frame is filled and its copy queued. The first error
        of ``fill``, in frame order, is raised after every fill has finished.
        """
        count = int(d_out.shape[0])
        frame = tuple(int(n) for n in d_out.shape[1:])
        dtype = np.dtype(d_out.dtype)
        if count == 0:
            return
        frame_bytes = max(1, math.prod(frame) * dtype.itemsize)
        group = max(1, min(count, worker_count(), STAGING_BYTES // frame_bytes))
        pool = thread_pool()
        with self._context:
            self._staging(group, frame, dtype)
            device = self._device_view(d_out)
            starts = list(range(0, count, group))

            def submit(k: int) -> Tasks[None]:
                buffer = self._buffers[k % 2]
                if buffer.copied is not None:
                    buffer.copied.synchronize()  # its last copy is done
                lo = starts[k]
                hi = min(lo + group, count)
                return pool.start(lambda j: fill(lo + j, buffer.host[j]), hi - lo)

            pending: Tasks[None] | None = submit(0)
            try:
                for k, lo in enumerate(starts):
                    assert pending is not None
                    filled = pending.wait()
                    pending = submit(k + 1) if k + 1 < len(starts) else None
                    buffer = self._buffers[k % 2]
                    n = len(filled)
                    device[lo : lo + n].copy_to_device(
                        buffer.host[:n], stream=self._stream
                    )
                    buffer.copied = new_event()
                    buffer.copied.record(self._stream)
            finally:
                if pending is not None:  # no fill may write a buffer after an error
                    with suppress(BaseException):
                        pending.wait()

    def synchronize(self) -> None:
        """Wait until every copy queued by this stager has finished."""
        self._stream.synchronize()


def shared_stager() -> ImageStager:
    """This thread's stager for CuPy's current device and stream (kept between
    calls, so its pinned buffers are reused; see ``streams.per_stream``)."""
    return per_stream("images", ImageStager, ImageStager.synchronize)
