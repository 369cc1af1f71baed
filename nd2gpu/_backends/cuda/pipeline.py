"""Decode many frames straight into one CUDA block.

The decode threads inflate, parse and stage the frames' runs batch by batch
(``batches.BatchPipeline``); each batch is copied to the GPU in one piece and
expanded there (``expander.CudaDevice``) into the block, which was allocated
and zeroed once on the device. No dense mask crosses PCIe: only 12 bytes a run
do, and the calling thread only closes batches and queues device work.
"""

from __future__ import annotations

from typing import Any

from ..._decode.plan import DecodePlan
from .arrays import clear
from .batches import BatchPipeline
from .expander import shared_device


def decode_frames_cuda(plan: DecodePlan, d_out: Any, *, zero: bool = False) -> None:
    """Decode ``plan`` into the ``(slots, Y, X)`` uint16 device block ``d_out``:
    zeroed, or zeroed here first when ``zero`` (a caller's reused block).

    Raises
    ------
    DecodeError
        The first corrupt frame in job order, naming file, layer and frame.
    """
    if zero:
        clear(d_out)
    shape = d_out.shape
    frame_shape = (int(shape[1]), int(shape[2]))
    device = shared_device()
    device.set_output(d_out)
    pipeline = BatchPipeline(device, frame_shape, device.ring)
    pipeline.run(plan, plan.slots * (frame_shape[0] * frame_shape[1]))
