"""Device names, and what a device request resolves to on this machine.

"cpu" gives NumPy arrays; "cuda" gives CuPy arrays decoded on the GPU; "auto" is
an explicit opt-in: "cuda" when a GPU and CuPy are usable (never numba's CUDA
simulator), else "cpu". No request (None) means "cpu": without a device argument
every API returns what nd2 returns.

The CUDA probe lives in the CUDA back end and is imported only when a request
needs it, so nothing here imports CuPy or numba.cuda.
"""

from __future__ import annotations

from typing import Any, get_args

import numpy as np

from ._errors import DeviceUnavailableError
from ._typing import Device, DeviceRequest

__all__ = [
    "DEVICE_NAMES",
    "Device",
    "DeviceRequest",
    "check_request",
    "cuda_status",
    "gpu_usable",
    "resolve_device",
    "simulator_active",
    "to_numpy",
]

#: What a caller may ask for.
DEVICE_NAMES: tuple[str, ...] = get_args(DeviceRequest)


def check_request(device: str | None) -> DeviceRequest | None:
    """``device`` if it is a device name or None, else ``ValueError``."""
    if device is not None and device not in DEVICE_NAMES:
        raise ValueError(
            f"device must be one of {DEVICE_NAMES} or None, not {device!r}"
        )
    return device  # type: ignore[return-value]


def cuda_status() -> tuple[bool, str]:
    """Whether the CUDA path is usable here, and a line saying what was found.

    Returns
    -------
    tuple[bool, str]
        ``(True, description of the device)`` or ``(False, what is missing and
        how to fix it)``. The result is cached for the process.
    """
    from ._backends.cuda.probe import probe

    found = probe()
    return found.ok, found.message


def simulator_active() -> bool:
    """Whether "cuda" means numba's CUDA simulator in this process."""
    from ._backends.cuda.probe import probe

    return probe().simulator


def gpu_usable() -> bool:
    """Whether a real GPU with CuPy is usable (not the simulator)."""
    from ._backends.cuda.probe import probe

    found = probe()
    return found.ok and not found.simulator


def resolve_device(device: str | None) -> Device:
    """Turn a device request into the device to use.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"} or None
        The request; None means "cpu".

    Returns
    -------
    {"cpu", "cuda"}

    Raises
    ------
    ValueError
        If the name is not one of "auto", "cpu", "cuda".
    nd2gpu.DeviceUnavailableError
        If "cuda" is requested and not usable; the message names what is missing.
    """
    request = check_request(device)
    if request is None or request == "cpu":
        return "cpu"
    if request == "auto":
        return "cuda" if gpu_usable() else "cpu"
    ok, message = cuda_status()
    if not ok:
        raise DeviceUnavailableError(
            f"device='cuda' was requested but CUDA is not usable: {message}"
        )
    return "cuda"


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy array of ``array``, copied from the device when it lives there.

    Takes NumPy arrays as they are, CuPy (and simulated) device arrays through
    their ``get()``, numba device arrays through ``copy_to_host()``.
    """
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "get"):
        return np.asarray(array.get())
    if hasattr(array, "copy_to_host"):
        return np.asarray(array.copy_to_host())
    return np.asarray(array)
