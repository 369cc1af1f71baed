"""GPU tables: the runs staged by the shared front half, reduced by (frame, id) on
the GPU (``nd2gpu/_backends/cuda/objects.py``)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .._decode.plan import DecodePlan
from .intensity import Images, host_frames


def measure_cuda(
    plan: DecodePlan,
    frame_shape: tuple[int, int],
    images: Images | None,
    image_index: np.ndarray,
    spacing: tuple[float, float] | None,
) -> tuple[Any, Any, ModuleType]:
    """The object entries of a plan's frames on the GPU, and their array module.

    Intensity sums are in the float field whatever the image's dtype.
    """
    from .._backends.cuda import objects as cuda_objects

    source = None
    if images is not None:
        source = cuda_objects.ImageSource(
            device_array=images.array if images.on_device else None,
            host_frames=None if images.on_device else host_frames(images),
        )
    stats, fstats = cuda_objects.measure_cuda(
        plan, frame_shape, source, image_index, spacing
    )
    return stats, fstats, cuda_objects.array_module()


def to_device_columns(columns: dict[str, Any]) -> dict[str, Any]:
    """Columns as the GPU table gives them: CuPy arrays (the simulator's
    device arrays for host columns under numba's simulator)."""
    from .._backends.cuda import objects as cuda_objects

    return {name: cuda_objects.as_device(c) for name, c in columns.items()}
