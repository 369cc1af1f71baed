"""Device selection: "cpu" or "cuda", and why CUDA is not usable when it is not.

Nothing here imports CuPy or numba.cuda before a device is resolved.

Under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` set before numba is first
imported) "cuda" is usable without CuPy or a GPU, and device arrays are numba
(simulated) device arrays. "auto" never picks the simulator: it is for testing
the CUDA code path, orders of magnitude slower than the CPU path.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from types import ModuleType
from typing import Literal, NamedTuple

from ._errors import DeviceUnavailableError

__all__ = ["cuda_status", "resolve_device", "simulator_active"]

Device = Literal["cpu", "cuda"]
DEVICE_NAMES = ("auto", "cpu", "cuda")

INSTALL_HINT = (
    'install the CUDA extra matching your driver: pip install "nd2gpu[cuda12]" '
    '(CUDA 12) or pip install "nd2gpu[cuda13]" (CUDA 13)'
)


class _Probe(NamedTuple):
    ok: bool
    message: str
    simulator: bool


def _import_numba_cuda() -> ModuleType:
    from numba import cuda

    return cuda


def _import_cupy() -> ModuleType:
    import cupy

    return cupy


def _cupy_installed() -> bool:
    return importlib.util.find_spec("cupy") is not None


def _is_simulator(cuda: ModuleType) -> bool:
    # The simulator is chosen once, when numba.cuda is first imported; its API
    # functions live in numba.cuda.simulator.
    return "simulator" in getattr(cuda.to_device, "__module__", "")


def _simulator_possible() -> bool:
    if "numba.cuda" in sys.modules:
        return True
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0").strip() not in ("", "0")


@functools.lru_cache(maxsize=1)
def _probe() -> _Probe:
    if not _simulator_possible() and not _cupy_installed():
        # Fast answer on CPU-only machines, without importing numba.cuda.
        return _Probe(False, f"CuPy is not installed; {INSTALL_HINT}", False)
    try:
        cuda = _import_numba_cuda()
    except ImportError as exc:
        return _Probe(False, f"numba-cuda is not usable ({exc}); {INSTALL_HINT}", False)
    except Exception as exc:  # e.g. CUDA bindings that do not match the driver
        return _Probe(False, f"numba-cuda failed to import ({exc})", False)
    if _is_simulator(cuda):
        return _Probe(
            True, "numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1), no CuPy", True
        )
    try:
        cupy = _import_cupy()
    except ImportError as exc:
        return _Probe(False, f"CuPy is not installed ({exc}); {INSTALL_HINT}", False)
    except Exception as exc:  # a CuPy wheel built for another CUDA major version
        return _Probe(False, f"CuPy failed to import ({exc}); {INSTALL_HINT}", False)
    if not cuda.is_available():
        err = cuda.cuda_error() if hasattr(cuda, "cuda_error") else None
        detail = f": {err}" if err else ""
        return _Probe(
            False,
            "no usable CUDA driver or GPU (numba.cuda.is_available() is False"
            f"{detail})",
            False,
        )
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
        device = cupy.cuda.Device()
        name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"]
    except Exception as exc:
        return _Probe(False, f"CuPy cannot use the GPU ({exc})", False)
    if n_devices == 0:
        return _Probe(False, "no CUDA GPU found by CuPy", False)
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    return _Probe(
        True, f"CUDA device {device.id}: {name} (CuPy {cupy.__version__})", False
    )


def cuda_status() -> tuple[bool, str]:
    """Whether the CUDA path is usable here, and a line saying what was found.

    Returns
    -------
    tuple[bool, str]
        ``(True, description of the device)`` or ``(False, what is missing and
        how to fix it)``. The result is cached for the process.
    """
    probe = _probe()
    return probe.ok, probe.message


def simulator_active() -> bool:
    """Whether "cuda" means numba's CUDA simulator in this process."""
    return _probe().simulator


def resolve_device(device: str | None, default: str = "auto") -> Device:
    """Turn a device request into the device to use.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"} or None
        The request; None means ``default``.
    default : {"auto", "cpu", "cuda"}
        Used when ``device`` is None.

    Returns
    -------
    {"cpu", "cuda"}
        "auto" gives "cuda" when a CUDA GPU and CuPy are usable (never the
        simulator), else "cpu".

    Raises
    ------
    ValueError
        If the name is not one of "auto", "cpu", "cuda".
    nd2gpu.DeviceUnavailableError
        If "cuda" is requested and not usable; the message names what is missing.
    """
    name = default if device is None else device
    if name not in DEVICE_NAMES:
        raise ValueError(f"device must be one of {DEVICE_NAMES}, not {name!r}")
    if name == "cpu":
        return "cpu"
    probe = _probe()
    if name == "auto":
        return "cuda" if probe.ok and not probe.simulator else "cpu"
    if not probe.ok:
        raise DeviceUnavailableError(
            f"device='cuda' was requested but CUDA is not usable: {probe.message}"
        )
    return "cuda"
