"""GPU tables: the runs staged by the shared front half, reduced by (frame, id) on
the GPU (``nd2gpu/_backends/cuda/objects.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._decode.plan import DecodePlan
from .intensity import Images


def measure_cuda(
    plan: DecodePlan,
    frame_shape: tuple[int, int],
    images: Images | None,
    image_index: np.ndarray,
    spacing: tuple[float, float] | None,
) -> tuple[Any, Any]:
    raise NotImplementedError


def to_device_columns(columns: dict[str, np.ndarray]) -> dict[str, Any]:
    raise NotImplementedError
