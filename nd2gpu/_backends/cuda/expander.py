"""The device side of decoding: staged batches copied to the GPU in one piece and
expanded there into the output block.

Work goes on CuPy's current stream (wrapped for numba with
``cuda.external_stream``), so it is ordered with the CuPy code around it. Each
ring slot has a device buffer as large as its pinned one; the copy of a batch
is one ``cudaMemcpyAsync`` of its frame table and entries, and an event after it
says when the slot's host buffer may be written again. Under numba's CUDA
simulator streams and events exist but everything runs synchronously, on host
memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...kernels import _expand_cuda
from ...kernels._batch_layout import (
    ENTRY_BYTES,
    ENTRY_FIELDS,
    FRAME_BYTES,
    FRAME_FIELDS,
)
from .arrays import SimulatedDeviceArray, cupy_module, numba_cuda
from .batches import RING, StagedBatch
from .streams import context, new_event, numba_stream, per_stream

__all__ = ["CudaDevice", "flat_view", "shared_device"]

#: Launch shape under the simulator, where every CUDA thread is a Python thread.
_SIMULATOR_LAUNCH = {"block": 32, "items": 4}


class CudaDevice:
    """The GPU as the batch pipeline sees it, expanding into one output block.

    Not thread-safe: one per thread (``shared_device``). Keeps its pinned ring
    and device buffers from one call to the next.

    Parameters
    ----------
    stream : CuPy stream, numba stream or None
        Where copies and kernels go. None: CuPy's current stream (at
        construction), or a new numba stream under the simulator.
    block, items : int, optional
        Launch shape of the kernel (threads per block, pixels per thread per
        tile); the defaults suit a real GPU, and are smaller under the simulator.
    """

    def __init__(
        self,
        stream: Any = None,
        *,
        block: int | None = None,
        items: int | None = None,
    ) -> None:
        self._cuda = numba_cuda()
        cupy = cupy_module()
        launch = (
            _SIMULATOR_LAUNCH
            if cupy is None
            else {
                "block": _expand_cuda.DEFAULT_BLOCK,
                "items": _expand_cuda.DEFAULT_ITEMS,
            }
        )
        self.block = block or launch["block"]
        self.items = items or launch["items"]
        self.tile_pixels = self.block * self.items
        self._context = context()
        with self._context:
            self._stream = numba_stream(stream)
        self.ring: list[StagedBatch | None] = [None] * RING
        self._device_buffers: list[Any] = [None] * RING
        self._copied: list[Any] = [None] * RING
        self.out: Any = None
        #: Device calls made (copies, launches, event records, waits), for the
        #: benchmarks.
        self.calls = {"copies": 0, "launches": 0, "events": 0, "syncs": 0}

    def pinned(self, nbytes: int) -> np.ndarray:
        with self._context:
            return self._cuda.pinned_array(nbytes, dtype=np.uint8)

    def wait_copied(self, slot: int) -> None:
        event = self._copied[slot]
        if event is not None:
            event.synchronize()
            self.calls["syncs"] += 1

    def submit(self, slot: int, batch: StagedBatch, n_tiles: int) -> None:
        cuda = self._cuda
        stream = self._stream
        with self._context:
            d_buf = self._device_buffers[slot]
            if d_buf is None or d_buf.shape[0] < batch.host.shape[0]:
                d_buf = self._device_buffers[slot] = cuda.device_array(
                    batch.host.shape[0], np.uint8
                )
            nbytes = batch.used_bytes
            d_buf[:nbytes].copy_to_device(batch.host[:nbytes], stream=stream)
            self.calls["copies"] += 1
            event = self._copied[slot]
            if event is None:
                event = self._copied[slot] = new_event()
            event.record(stream)
            self.calls["events"] += 1
            if n_tiles == 0:
                return
            table = batch.max_frames * FRAME_BYTES
            frames = (
                d_buf[:table].view(np.int64).reshape(batch.max_frames, FRAME_FIELDS)
            )
            entries = (
                d_buf[table : table + batch.capacity * ENTRY_BYTES]
                .view(np.uint32)
                .reshape(batch.capacity, ENTRY_FIELDS)
            )
            _expand_cuda.expand_runs(
                self.out,
                frames,
                entries,
                batch.n_frames,
                n_tiles,
                stream,
                block=self.block,
                items=self.items,
            )
            self.calls["launches"] += 1

    def finish(self) -> None:
        self._stream.synchronize()
        self.calls["syncs"] += 1

    def set_output(self, d_out: Any) -> None:
        """The block the next batches expand into."""
        self.out = flat_view(self._cuda, d_out)


def flat_view(cuda: Any, d_out: Any) -> Any:
    """``d_out`` as a flat uint16 array the kernel takes.

    Raises
    ------
    TypeError, ValueError
        If ``d_out`` is not a C-contiguous uint16 CUDA array.
    """
    if isinstance(d_out, SimulatedDeviceArray):
        view = d_out.host
        if view.dtype != np.uint16 or not view.flags.c_contiguous:
            raise ValueError("d_out must be a C-contiguous uint16 device array")
        return view.reshape(-1)
    if getattr(d_out, "__cuda_ndarray__", False):
        view = d_out
    elif hasattr(d_out, "__cuda_array_interface__"):
        # sync=False: the work is queued on the stream that owns d_out.
        view = cuda.as_cuda_array(d_out, sync=False)
    else:
        raise TypeError(
            f"d_out must be a CuPy or numba device array, not {type(d_out)}"
        )
    if view.dtype != np.uint16 or not view.is_c_contiguous():
        raise ValueError("d_out must be a C-contiguous uint16 device array")
    return view if view.ndim == 1 else view.reshape(view.size)


def shared_device() -> CudaDevice:
    """This thread's device side for CuPy's current device and stream (its ring
    and device buffers kept from one decode to the next; see
    ``streams.per_stream``)."""
    return per_stream("expander", CudaDevice, CudaDevice.finish)
