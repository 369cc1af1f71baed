"""Device output blocks: CuPy arrays on a GPU, host-backed arrays under the simulator.

numba's CUDA simulator runs kernels in Python on host memory and has no CuPy, so
under it a device block is a ``SimulatedDeviceArray``: a NumPy array behind the
small part of CuPy's array API that nd2gpu and its callers use, including
``__cuda_array_interface__`` (a host pointer, as all simulated device memory is).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from ..._errors import DeviceUnavailableError
from ..layout import check_layout
from .probe import probe


def numba_cuda() -> ModuleType:
    """``numba.cuda``, once the probe says the CUDA back end is usable."""
    found = probe()
    if not found.ok:
        raise DeviceUnavailableError(f"CUDA is not usable: {found.message}")
    from numba import cuda

    return cuda


def cupy_module() -> ModuleType | None:
    """CuPy on a GPU; None under the simulator (whose arrays live in host memory)."""
    numba_cuda()
    if probe().simulator:
        return None
    import cupy

    return cupy


class SimulatedDeviceArray:
    """A device array under numba's CUDA simulator: host memory, CuPy's manners.

    Like a CuPy array it converts to NumPy only explicitly (``get()``), so code
    that would copy a GPU array to the host by accident fails under the simulator
    as it would on a GPU. Indexing and ``reshape`` give views.

    Parameters
    ----------
    host : numpy.ndarray
        The memory the simulated device array lives in.
    """

    __slots__ = ("host",)

    def __init__(self, host: np.ndarray) -> None:
        self.host = host

    shape = property(lambda self: self.host.shape)
    dtype = property(lambda self: self.host.dtype)
    ndim = property(lambda self: self.host.ndim)
    size = property(lambda self: self.host.size)
    nbytes = property(lambda self: self.host.nbytes)

    def __len__(self) -> int:
        return len(self.host)

    def __repr__(self) -> str:
        return f"SimulatedDeviceArray(shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key: Any) -> Any:
        item = self.host[key]
        return SimulatedDeviceArray(item) if isinstance(item, np.ndarray) else item

    def reshape(self, *shape: Any) -> SimulatedDeviceArray:
        return SimulatedDeviceArray(self.host.reshape(*shape))

    def astype(self, dtype: Any) -> SimulatedDeviceArray:
        return SimulatedDeviceArray(self.host.astype(dtype))

    def fill(self, value: int) -> None:
        self.host.fill(value)

    def get(self) -> np.ndarray:
        """A NumPy copy (CuPy's name)."""
        return self.host.copy()

    def copy_to_host(self) -> np.ndarray:
        """A NumPy copy (numba's name)."""
        return self.host.copy()

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        a = self.host
        return {
            "shape": a.shape,
            "strides": None if a.flags.c_contiguous else a.strides,
            "typestr": a.dtype.str,
            "data": (a.ctypes.data, False),
            "version": 3,
            "stream": None,
        }


def zeros(shape: tuple[int, ...]) -> Any:
    """A new ``uint16`` block of ``shape``, zeroed on the device.

    Returns
    -------
    cupy.ndarray or SimulatedDeviceArray
        A CuPy array (zeroed on CuPy's current stream), or under the simulator a
        ``SimulatedDeviceArray``.

    Raises
    ------
    MemoryError
        If the GPU has less free memory (device plus CuPy's pool) than needed.
    nd2gpu.DeviceUnavailableError
        If CUDA is not usable.
    """
    shape = tuple(int(s) for s in shape)
    nbytes = math.prod(shape) * np.dtype(np.uint16).itemsize
    cupy = cupy_module()
    if cupy is None:
        return SimulatedDeviceArray(np.zeros(shape, dtype=np.uint16))
    free, _total = cupy.cuda.runtime.memGetInfo()
    cached = cupy.get_default_memory_pool().free_bytes()
    if nbytes > free + cached:
        raise MemoryError(
            f"the output block {shape} needs {nbytes} bytes of GPU memory, but only "
            f"{free + cached} bytes are free ({free} on the device, {cached} cached "
            "by CuPy's memory pool)"
        )
    return cupy.zeros(shape, dtype=np.uint16)


def check_out(out: Any, shape: tuple[int, ...]) -> None:
    """Raise unless ``out`` is a device block that can take ``shape``."""
    if isinstance(out, np.ndarray) or not hasattr(out, "__cuda_array_interface__"):
        raise TypeError(
            "out must be a CUDA array (CuPy, or anything with "
            f"__cuda_array_interface__) for device 'cuda', not {type(out).__name__}"
        )
    if probe().simulator and not isinstance(out, SimulatedDeviceArray):
        raise TypeError(
            "under numba's CUDA simulator, out must be a block nd2gpu allocated "
            f"(a SimulatedDeviceArray), not {type(out).__name__}"
        )
    face = out.__cuda_array_interface__
    strides = face.get("strides")
    dtype = np.dtype(face["typestr"])
    contiguous = strides is None or tuple(strides) == _c_strides(
        face["shape"], dtype.itemsize
    )
    check_layout(tuple(face["shape"]), dtype, contiguous, shape)


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides = []
    step = itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def clear(out: Any) -> None:
    """Zero ``out`` on the device (on CuPy's current stream)."""
    if isinstance(out, SimulatedDeviceArray):
        out.fill(0)
        return
    cupy = cupy_module()
    assert cupy is not None
    cupy.asarray(out).fill(0)


def meta(ndim: int) -> Any:
    """An empty uint16 CuPy array (NumPy where CuPy cannot be imported).

    Needs no GPU: dask clients without one build graphs for GPU workers.
    """
    try:
        import cupy
    except ImportError:
        return np.empty((0,) * ndim, dtype=np.uint16)
    return cupy.empty((0,) * ndim, dtype=np.uint16)


def synchronize() -> None:
    """Wait for the current GPU (nothing to wait for under the simulator)."""
    cupy = cupy_module()
    if cupy is not None:
        cupy.cuda.Device().synchronize()
