"""GPU tables: frames parsed into run tables as for decoding, reduced by (frame, id)
on the GPU (``nd2gpu/_backends/cuda/objects.py``)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .intensity import Images, host_frames
from .jobs import ObjectJob

if TYPE_CHECKING:
    pass


def table_cuda(
    jobs: Sequence[ObjectJob], names: Sequence[str], images: Images | None
) -> dict[str, Any]:
    from .._backends.cuda import objects as cuda_objects

    parts = []
    for (layer_index, layer), grouped in itertools.groupby(
        jobs, key=lambda job: (job.layer_index, job.layer)
    ):
        group = list(grouped)
        frame_shape = (int(layer.frame_shape[0]), int(layer.frame_shape[1]))
        if frame_shape == (0, 0):
            continue  # no frame of the layer has a mask
        source = None
        if images is not None:
            source = cuda_objects.ImageSource(
                device_array=images.array if images.on_device else None,
                host_frames=None if images.on_device else host_frames(images),
            )
        raw = cuda_objects.regionprops_cuda(
            layer.source,
            layer.meta,
            [job.seq for job in group],
            frame_shape,
            [job.image for job in group],
            source,
        )
        parts.append((layer_index, raw))
    return cuda_objects.table_columns(parts, names)
