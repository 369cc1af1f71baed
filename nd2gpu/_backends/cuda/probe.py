"""Is the CUDA back end usable here, and if not, why not.

Nothing here imports CuPy or numba.cuda before the first probe, and on a machine
without CuPy (and without the simulator asked for) the probe answers without
importing numba.cuda at all.

Under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` set before numba.cuda is
first imported) the back end is usable without CuPy or a GPU: device arrays then
live in host memory (see ``arrays``). ``device="auto"`` never picks the simulator,
which is for testing the CUDA code path and orders of magnitude slower.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from types import ModuleType
from typing import NamedTuple

INSTALL_HINT = (
    'install the CUDA extra matching your driver: pip install "nd2gpu[cuda12]" '
    '(CUDA 12) or pip install "nd2gpu[cuda13]" (CUDA 13)'
)


class CudaProbe(NamedTuple):
    """What the probe found: usable or not, a line saying why, simulator or not."""

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
def probe() -> CudaProbe:
    """Probe once per process (cached): numba-cuda, the simulator, CuPy, a GPU."""
    if not _simulator_possible() and not _cupy_installed():
        # Fast answer on CPU-only machines, without importing numba.cuda.
        return CudaProbe(False, f"CuPy is not installed; {INSTALL_HINT}", False)
    try:
        cuda = _import_numba_cuda()
    except ImportError as exc:
        return CudaProbe(
            False, f"numba-cuda is not usable ({exc}); {INSTALL_HINT}", False
        )
    except Exception as exc:  # e.g. CUDA bindings that do not match the driver
        return CudaProbe(False, f"numba-cuda failed to import ({exc})", False)
    if _is_simulator(cuda):
        return CudaProbe(
            True, "numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1), no CuPy", True
        )
    try:
        cupy = _import_cupy()
    except ImportError as exc:
        return CudaProbe(False, f"CuPy is not installed ({exc}); {INSTALL_HINT}", False)
    except Exception as exc:  # a CuPy wheel built for another CUDA major version
        return CudaProbe(False, f"CuPy failed to import ({exc}); {INSTALL_HINT}", False)
    if not cuda.is_available():
        err = cuda.cuda_error() if hasattr(cuda, "cuda_error") else None
        detail = f": {err}" if err else ""
        return CudaProbe(
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
        return CudaProbe(False, f"CuPy cannot use the GPU ({exc})", False)
    if n_devices == 0:
        return CudaProbe(False, "no CUDA GPU found by CuPy", False)
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    return CudaProbe(
        True, f"CUDA device {device.id}: {name} (CuPy {cupy.__version__})", False
    )
