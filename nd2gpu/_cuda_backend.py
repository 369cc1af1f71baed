"""Device side of the pipeline: output allocation, run-table upload, expansion.

Two modes, chosen by ``nd2gpu._device``:

- CuPy (a real GPU): outputs are CuPy arrays; work goes on CuPy's current stream
  (wrapped for numba with ``cuda.external_stream``), so it is ordered with the
  CuPy code around it.
- numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``): outputs are numba
  (simulated) device arrays; streams and events exist but everything runs
  synchronously.

numba.cuda and CuPy are imported on first use, never when nd2gpu is imported.
"""

from __future__ import annotations

import functools
import math
import threading
from types import ModuleType
from typing import Any

import numpy as np

from ._device import cuda_status, simulator_active
from ._errors import DeviceUnavailableError
from .kernels._run_table import RunTable

__all__ = ["CudaExpander", "allocate_output", "shared_expander", "to_host"]

_MIN_CAPACITY = 4096
#: Launch shape under the simulator, where every CUDA thread is a Python thread.
_SIMULATOR_LAUNCH = {"block": 32, "items": 4}
_per_thread = threading.local()


def _numba_cuda() -> ModuleType:
    ok, message = cuda_status()
    if not ok:
        raise DeviceUnavailableError(f"CUDA is not usable: {message}")
    from numba import cuda

    return cuda


def _cupy() -> ModuleType | None:
    """CuPy, or None under the simulator (whose arrays live in host memory)."""
    _numba_cuda()
    if simulator_active():
        return None
    import cupy

    return cupy


@functools.cache
def _simulated_array_type() -> type:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    class SimulatedDeviceArray(FakeCUDAArray):
        """A simulator device array that also exports ``__cuda_array_interface__``.

        The pointer is to host memory, as all simulated device memory is; the
        interface lets code written for CuPy-like arrays run under the simulator.
        Views (reshape, indexing, ...) keep the type.
        """

        def _keep_type(self, out: Any) -> Any:
            if type(out) is FakeCUDAArray:
                return SimulatedDeviceArray(out._ary, out.stream)
            return out

        def __getitem__(self, key: Any) -> Any:
            return self._keep_type(super().__getitem__(key))

        def reshape(self, *args: Any, **kwargs: Any) -> Any:
            return self._keep_type(super().reshape(*args, **kwargs))

        def ravel(self, *args: Any, **kwargs: Any) -> Any:
            return self._keep_type(super().ravel(*args, **kwargs))

        def view(self, *args: Any, **kwargs: Any) -> Any:
            return self._keep_type(super().view(*args, **kwargs))

        def transpose(self, axes: Any = None) -> Any:
            return self._keep_type(super().transpose(axes))

        @property
        def __cuda_array_interface__(self) -> dict[str, Any]:
            a = self._ary
            return {
                "shape": a.shape,
                "strides": None if a.flags.c_contiguous else a.strides,
                "typestr": a.dtype.str,
                "data": (a.ctypes.data, False),
                "version": 3,
                "stream": None,
            }

    return SimulatedDeviceArray


def allocate_output(shape: int | tuple[int, ...]) -> Any:
    """Allocate a ``uint16`` output block of ``shape``, zeroed on the device.

    Parameters
    ----------
    shape : int or tuple of int
        Shape of the block, e.g. ``(n_layers, *coords, Y, X)``.

    Returns
    -------
    cupy.ndarray or numba device array
        A CuPy array (zeroed on CuPy's current stream), or under the simulator a
        numba simulator device array that also has ``__cuda_array_interface__``.

    Raises
    ------
    MemoryError
        If the GPU has less free memory (device plus CuPy's pool) than needed.
    nd2gpu.DeviceUnavailableError
        If CUDA is not usable.
    """
    shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
    nbytes = math.prod(shape) * np.dtype(np.uint16).itemsize
    cupy = _cupy()
    if cupy is None:
        # Simulated device memory is host memory: zeroing on the host is the same.
        return _simulated_array_type()(np.zeros(shape, dtype=np.uint16))
    free, _total = cupy.cuda.runtime.memGetInfo()
    cached = cupy.get_default_memory_pool().free_bytes()
    if nbytes > free + cached:
        raise MemoryError(
            f"the output block {shape} needs {nbytes} bytes of GPU memory, but only "
            f"{free + cached} bytes are free ({free} on the device, {cached} cached "
            "by CuPy's memory pool)"
        )
    return cupy.zeros(shape, dtype=np.uint16)


def to_host(d_arr: Any) -> np.ndarray:
    """Copy a device array (CuPy or numba) to a NumPy array, synchronously."""
    if hasattr(d_arr, "copy_to_host"):
        return d_arr.copy_to_host()
    if hasattr(d_arr, "get"):
        return d_arr.get()
    return np.asarray(d_arr)


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
        construction), or a new numba stream under the simulator. Outputs from
        ``allocate_output`` are zeroed on CuPy's current stream; with another
        stream, order the two yourself.
    block, items : int, optional
        Launch shape of the kernel (threads per block, pixels per thread per
        tile); the defaults suit a real GPU, and are smaller under the simulator.

    Examples
    --------
    >>> expander = CudaExpander()  # doctest: +SKIP
    >>> out = allocate_output((n_frames, ny, nx))  # doctest: +SKIP
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
        self._cuda = cuda = _numba_cuda()
        cupy = _cupy()
        from .kernels import _expand_cuda

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

    @property
    def stream(self) -> Any:
        """The numba stream everything is queued on."""
        return self._stream

    def _context(self) -> Any:
        return self._cuda.gpus[self._device_id]

    def _new_event(self) -> Any:
        if simulator_active():
            return self._cuda.event()
        return self._cuda.event(timing=False)

    def _flat_view(self, d_out: Any) -> Any:
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
        work on ``stream``) before reading ``d_out``.
        """
        out = self._flat_view(d_out)
        if check:
            table.check(out.size)
        n = table.n_runs
        if n == 0:
            return
        stream = self._stream
        with self._context():
            bufs = self._buffers(n)
            bufs.h_starts[:n] = table.starts
            bufs.h_values[:n] = table.values
            bufs.h_prefix[: n + 1] = table.prefix
            bufs.d_starts[:n].copy_to_device(bufs.h_starts[:n], stream=stream)
            bufs.d_values[:n].copy_to_device(bufs.h_values[:n], stream=stream)
            bufs.d_prefix[: n + 1].copy_to_device(bufs.h_prefix[: n + 1], stream=stream)
            bufs.copied.record(stream)
            self._expand_runs(
                out,
                bufs.d_starts,
                bufs.d_values,
                bufs.d_prefix,
                n,
                table.n_pixels,
                stream,
                **self._launch,
            )
            bufs.done.record(stream)

    def synchronize(self) -> None:
        """Wait until everything queued by this expander has finished."""
        self._stream.synchronize()

    def close(self) -> None:
        """Finish queued work and free the staging and device buffers.

        The expander stays usable; buffers are allocated again when needed.
        """
        self.synchronize()
        self._sets = [None, None]


def shared_expander() -> CudaExpander:
    """This thread's expander for CuPy's current device and stream.

    Reusing one expander keeps its staging and device buffers from one decode to
    the next. It is replaced (after finishing its work) when the current device
    or stream changes, so the expansion stays ordered after ``allocate_output``'s
    zeroing.
    """
    cupy = _cupy()
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
