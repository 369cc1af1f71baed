"""CuPy's current device and stream as numba sees them, and the objects a thread
keeps per stream (their pinned and device buffers reused from call to call).

Work goes on CuPy's current stream (wrapped for numba with
``cuda.external_stream``), so it is ordered with the CuPy code around it; under
numba's CUDA simulator (no CuPy) on a numba stream of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .arrays import cupy_module, numba_cuda
from .probe import probe

T = TypeVar("T")
_per_thread = threading.local()


def device_id() -> int:
    """CuPy's current device (0 under the simulator)."""
    cupy = cupy_module()
    return 0 if cupy is None else int(cupy.cuda.Device().id)


def context() -> Any:
    """The numba context of CuPy's current device (a ``with`` block)."""
    return numba_cuda().gpus[device_id()]


def numba_stream(stream: Any = None) -> Any:
    """``stream`` (a CuPy or numba stream; None: CuPy's current one) as a numba
    stream; a new numba stream under the simulator."""
    cuda = numba_cuda()
    cupy = cupy_module()
    if stream is None:
        stream = cuda.stream() if cupy is None else cupy.cuda.get_current_stream()
    if hasattr(stream, "ptr"):  # a CuPy stream
        ptr = int(stream.ptr)
        return cuda.external_stream(ptr) if ptr else cuda.default_stream()
    return stream


def new_event() -> Any:
    """An event for ordering, not timing (numba's simulator takes no flags)."""
    cuda = numba_cuda()
    return cuda.event() if probe().simulator else cuda.event(timing=False)


def per_stream(name: str, make: Callable[[], T], finish: Callable[[T], None]) -> T:
    """This thread's ``name`` object for CuPy's current device and stream.

    Made by ``make`` on first use, and again (after ``finish`` of the old one)
    when the current device or stream changes, so its work stays ordered after
    the CuPy work of the caller.
    """
    cupy = cupy_module()
    key = None
    if cupy is not None:
        key = (cupy.cuda.Device().id, cupy.cuda.get_current_stream().ptr)
    kept = getattr(_per_thread, name, None)
    if kept is not None and kept[0] == key:
        return kept[1]
    if kept is not None:
        finish(kept[1])
    made = make()
    setattr(_per_thread, name, (key, made))
    return made
