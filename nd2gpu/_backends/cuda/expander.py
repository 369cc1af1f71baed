"""Run tables to the GPU and expanded there: the CUDA half of decoding.

On a GPU, work goes on CuPy's current stream (wrapped for numba with
``cuda.external_stream``), so it is ordered with the CuPy code around it. Under
numba's CUDA simulator streams and events exist but everything runs
synchronously, on host memory.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ...kernels import _expand_cuda
from ...kernels._run_table import RunTable
from .arrays import SimulatedDeviceArray, cupy_module, numba_cuda
from .probe import probe

__all__ = ["CudaExpander", "StagingBuffers", "shared_expander"]

_MIN_CAPACITY = 4096
#: Launch shape under the simulator, where every CUDA thread is a Python thread.
_SIMULATOR_LAUNCH = {"block": 32, "items": 4}
_per_thread = threading.local()


class _BufferSet:
    """Pinned staging and device buffers for one in-flight run table."""

    def __init__(self, cuda: ModuleType, capacity: int, events: tuple[Any, Any]):
        self.capacity = capacity
        self.h_starts = cuda.pinned_array(capacity, dtype=np.int64)
        self.h_values = cuda.pinned_array(capacity, dtype=np.uint16)
        self.h_prefix = cuda.pinned_array(capacity + 1, dtype=np.int64)
        self.d_starts = cuda.device_array(capacity, dtype=np.int64)
        self.d_values = cuda.device_array(capacity, dtype=np.uint16)
        self.d_prefix = cuda.device_array(capacity + 1, dtype=np.int64)
        # copied: the staging buffers may be rewritten; done: the device buffers
        # are no longer read by a kernel.
        self.copied, self.done = events


@dataclass(frozen=True)
class StagingBuffers:
    """Pinned host arrays that a run table is written to before its upload."""

    starts: np.ndarray
    values: np.ndarray
    prefix: np.ndarray
    owner: _BufferSet


class CudaExpander:
    """Uploads run tables and expands them into device output blocks.

    Double-buffered: ``expand`` returns once the upload and the kernel are
    queued, so the caller can prepare the next batch while this one runs; a set
    of staging buffers is reused only after its previous upload finished. Not
    thread-safe: use one expander per thread.

    Parameters
    ----------
    stream : CuPy stream, numba stream or None
        Where uploads and kernels go. None: CuPy's current stream (at
        construction), or a new numba stream under the simulator. Blocks from
        ``arrays.zeros`` are zeroed on CuPy's current stream; with another
        stream, order the two yourself.
    block, items : int, optional
        Launch shape of the kernel (threads per block, pixels per thread per
        tile); the defaults suit a real GPU, and are smaller under the simulator.

    Examples
    --------
    >>> expander = CudaExpander()  # doctest: +SKIP
    >>> out = arrays.zeros((n_frames, ny, nx))  # doctest: +SKIP
    >>> for table in tables:  # doctest: +SKIP
    ...     expander.expand(out, table)
    >>> expander.synchronize()  # doctest: +SKIP
    """

    def __init__(
        self,
        stream: Any = None,
        *,
        block: int | None = None,
        items: int | None = None,
    ) -> None:
        self._cuda = cuda = numba_cuda()
        cupy = cupy_module()
        self._expand_runs = _expand_cuda.expand_runs
        launch = (
            _SIMULATOR_LAUNCH
            if cupy is None
            else {
                "block": _expand_cuda.DEFAULT_BLOCK,
                "items": _expand_cuda.DEFAULT_ITEMS,
            }
        )
        self._launch = {
            "block": block or launch["block"],
            "items": items or launch["items"],
        }
        self._device_id = 0 if cupy is None else cupy.cuda.Device().id
        with self._context():
            if stream is None:
                stream = (
                    cuda.stream() if cupy is None else cupy.cuda.get_current_stream()
                )
            if hasattr(stream, "ptr"):  # a CuPy stream
                ptr = int(stream.ptr)
                stream = cuda.external_stream(ptr) if ptr else cuda.default_stream()
            self._stream = stream
        self._sets: list[_BufferSet | None] = [None, None]
        self._turn = 0

    def _context(self) -> Any:
        return self._cuda.gpus[self._device_id]

    def _new_event(self) -> Any:
        if probe().simulator:
            return self._cuda.event()
        return self._cuda.event(timing=False)

    def _flat_view(self, d_out: Any) -> Any:
        if isinstance(d_out, SimulatedDeviceArray):
            view = d_out.host
            if view.dtype != np.uint16 or not view.flags.c_contiguous:
                raise ValueError("d_out must be a C-contiguous uint16 device array")
            return view.reshape(-1)
        if getattr(d_out, "__cuda_ndarray__", False):
            view = d_out
        elif hasattr(d_out, "__cuda_array_interface__"):
            # sync=False: the work below is queued on the stream that owns d_out.
            view = self._cuda.as_cuda_array(d_out, sync=False)
        else:
            raise TypeError(
                f"d_out must be a CuPy or numba device array, not {type(d_out)}"
            )
        if view.dtype != np.uint16 or not view.is_c_contiguous():
            raise ValueError("d_out must be a C-contiguous uint16 device array")
        return view if view.ndim == 1 else view.reshape(view.size)

    def _buffers(self, n: int) -> _BufferSet:
        i = self._turn
        self._turn ^= 1
        bufs = self._sets[i]
        if bufs is not None and bufs.capacity >= n:
            bufs.copied.synchronize()
            return bufs
        if bufs is not None:
            bufs.done.synchronize()
            capacity = max(n, 2 * bufs.capacity)
            events = (bufs.copied, bufs.done)
        else:
            capacity = max(n, _MIN_CAPACITY)
            events = (self._new_event(), self._new_event())
        self._sets[i] = bufs = _BufferSet(self._cuda, capacity, events)
        return bufs

    def staging(self, n_runs: int) -> StagingBuffers:
        """Pinned host buffers for a table of ``n_runs`` runs, free to be filled.

        Fill ``starts[:n]``, ``values[:n]`` and ``prefix[:n + 1]`` (the
        exclusive prefix sum of the lengths, ``prefix[n]`` the total), then pass
        the buffers to ``expand_staged``. Waits until the previous upload from
        these buffers (two expansions ago) has finished.
        """
        with self._context():
            bufs = self._buffers(n_runs)
        return StagingBuffers(bufs.h_starts, bufs.h_values, bufs.h_prefix, bufs)

    def expand_staged(
        self, d_out: Any, staged: StagingBuffers, n_runs: int, total: int
    ) -> None:
        """Queue the upload of the staged table and its expansion into ``d_out``.

        The table must describe runs inside ``d_out`` that do not overlap (the
        decode pipeline guarantees it: every run was validated by the parser and
        by the overlap check of its frame). Returns before the work is done.
        """
        out = self._flat_view(d_out)
        if n_runs == 0:
            return
        bufs = staged.owner
        stream = self._stream
        with self._context():
            bufs.d_starts[:n_runs].copy_to_device(bufs.h_starts[:n_runs], stream=stream)
            bufs.d_values[:n_runs].copy_to_device(bufs.h_values[:n_runs], stream=stream)
            bufs.d_prefix[: n_runs + 1].copy_to_device(
                bufs.h_prefix[: n_runs + 1], stream=stream
            )
            bufs.copied.record(stream)
            self._expand_runs(
                out,
                bufs.d_starts,
                bufs.d_values,
                bufs.d_prefix,
                n_runs,
                total,
                stream,
                **self._launch,
            )
            bufs.done.record(stream)

    def expand(self, d_out: Any, table: RunTable, *, check: bool = True) -> None:
        """Queue the upload of ``table`` and its expansion into ``d_out``.

        Parameters
        ----------
        d_out : cupy.ndarray or numba device array
            C-contiguous ``uint16`` output block (any shape); ``table.starts``
            are flat offsets into it. Pixels no run covers are left as they are.
        table : RunTable
            Runs without overlaps (see ``make_non_overlapping``).
        check : bool
            Check in O(n_runs) on the host that every run lies inside ``d_out``
            and that ``prefix`` matches ``lengths``; a bad table would otherwise
            write outside the output.

        Notes
        -----
        Returns before the work is done: call ``synchronize`` (or order later
        work on the stream) before reading ``d_out``.
        """
        out = self._flat_view(d_out)
        if check:
            table.check(out.size)
        n = table.n_runs
        if n == 0:
            return
        staged = self.staging(n)
        staged.starts[:n] = table.starts
        staged.values[:n] = table.values
        staged.prefix[: n + 1] = table.prefix
        self.expand_staged(d_out, staged, n, table.n_pixels)

    def synchronize(self) -> None:
        """Wait until everything queued by this expander has finished."""
        self._stream.synchronize()


def shared_expander() -> CudaExpander:
    """This thread's expander for CuPy's current device and stream.

    Reusing one expander keeps its staging and device buffers from one decode to
    the next. It is replaced (after finishing its work) when the current device
    or stream changes, so the expansion stays ordered after ``arrays.zeros``'s
    zeroing.
    """
    cupy = cupy_module()
    key = None
    if cupy is not None:
        key = (cupy.cuda.Device().id, cupy.cuda.get_current_stream().ptr)
    expander = getattr(_per_thread, "expander", None)
    if expander is None or _per_thread.key != key:
        if expander is not None:
            expander.synchronize()
        expander = _per_thread.expander = CudaExpander()
        _per_thread.key = key
    return expander
