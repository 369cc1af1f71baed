"""Decode a set of frames into one block on the chosen device."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._cpu_stack import FrameJob, check_allocation, decode_frames_cpu
from ._mask_source import MaskSource


def decode_block(
    source: MaskSource,
    jobs: Sequence[FrameJob],
    n_slots: int,
    frame_shape: tuple[int, int],
    device: str,
    max_bytes: int | None = None,
) -> Any:
    """Allocate a zeroed ``(n_slots, Y, X)`` uint16 block on ``device`` and fill it.

    Parameters
    ----------
    source : MaskSource
        Where the payloads are read from.
    jobs : sequence of FrameJob
        Which frame goes into which slot; slots without a job stay zero.
    n_slots, frame_shape :
        The block's shape.
    device : {"cpu", "cuda"}
        A resolved device name.
    max_bytes : int, optional
        Refuse (``MemoryError``) a block larger than this.

    Returns
    -------
    numpy.ndarray or device array
        NumPy on "cpu"; on "cuda" a CuPy array (a numba device array under the
        CUDA simulator without CuPy).
    """
    shape = (n_slots, *frame_shape)
    nbytes = 2 * math.prod(shape)
    check_allocation(nbytes, max_bytes, f"a {shape} uint16 block")
    if device == "cpu":
        out = np.zeros(shape, dtype=np.uint16)
        decode_frames_cpu(source, jobs, out)
        return out
    from ._cuda_stack import decode_frames_cuda

    return decode_frames_cuda(source, jobs, shape)
