"""Checks of a caller's output block, shared by the back ends."""

from __future__ import annotations

import numpy as np


def check_layout(
    shape: tuple[int, ...],
    dtype: np.dtype,
    c_contiguous: bool,
    expected: tuple[int, ...],
) -> None:
    """Raise unless a block of ``shape``/``dtype`` can take a result of ``expected``.

    Raises
    ------
    TypeError
        If the dtype is not uint16.
    ValueError
        If the shape differs or the block is not C-contiguous.
    """
    if np.dtype(dtype) != np.uint16:
        raise TypeError(f"out must be a uint16 array, not {np.dtype(dtype)}")
    if tuple(shape) != tuple(expected):
        raise ValueError(f"out has shape {tuple(shape)}, the result {tuple(expected)}")
    if not c_contiguous:
        raise ValueError("out must be C-contiguous")
