"""CUDA back end: frames expanded on the GPU into CuPy blocks.

The only package of nd2gpu that imports ``numba.cuda`` or ``cupy`` (a lint rule
keeps it so), each on first use:

- ``probe``: whether CUDA is usable here, and why not (imports neither until it
  probes, and numba.cuda not at all on a machine without CuPy);
- ``arrays``: device blocks (CuPy, or host-backed under numba's simulator);
- ``expander``: run tables uploaded and expanded by the kernel;
- ``pipeline``: frames parsed on the CPU batch by batch while the GPU expands.

The back-end functions (see ``nd2gpu._backends.Backend``) are loaded on first
use, so importing this package (as the probe's package) imports no GPU library.
"""

from __future__ import annotations

import importlib
from typing import Any

_FUNCTIONS = {
    "check_out": ".arrays",
    "clear": ".arrays",
    "meta": ".arrays",
    "synchronize": ".arrays",
    "zeros": ".arrays",
    "decode_frames": ".pipeline",
}

__all__ = sorted(_FUNCTIONS)


def __getattr__(name: str) -> Any:
    if name not in _FUNCTIONS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_FUNCTIONS[name], __name__)
    if name == "decode_frames":
        return module.decode_frames_cuda
    return getattr(module, name)
