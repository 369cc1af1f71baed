"""CUDA back end: frames expanded on the GPU into CuPy blocks.

The only package of nd2gpu that imports ``numba.cuda`` or ``cupy`` (a lint rule
keeps it so), each on first use:

- ``probe``: whether CUDA is usable here, and why not;
- ``arrays``: device blocks (CuPy, or host-backed under numba's simulator);
- ``expander``: run tables uploaded and expanded by the kernel;
- ``pipeline``: frames parsed on the CPU batch by batch while the GPU expands.
"""

from __future__ import annotations

from .arrays import check_out, clear, meta, synchronize, zeros
from .pipeline import decode_frames_cuda as decode_frames

__all__ = ["check_out", "clear", "decode_frames", "meta", "synchronize", "zeros"]
