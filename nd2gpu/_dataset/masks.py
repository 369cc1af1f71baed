"""The masks of a batch: every selected layer of every frame, in one decode call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._backends import decode_block
from .._decode.layer_ref import LayerRef
from .._decode.mask_source import MaskSource
from .._decode.plan import DecodePlan
from .._device import Device
from .._format.layer_metadata import LayerMeta


def decode_masks(
    source: MaskSource,
    layers: Sequence[LayerMeta],
    seqs: Sequence[int] | np.ndarray,
    frame_shape: tuple[int, int],
    device: Device,
    out: Any = None,
) -> Any:
    """Decode ``layers`` of frames ``seqs`` into one ``(B, n_layers, Y, X)`` block.

    Frame ``seqs[b]`` of layer ``l`` goes to slot ``b * n_layers + l`` of a
    ``(B * n_layers, Y, X)`` block, all decoded in parallel; a frame without a
    mask is zeros.

    Parameters
    ----------
    out : array, optional
        A C-contiguous ``(B, n_layers, Y, X)`` uint16 block on ``device`` to fill.

    Raises
    ------
    DecodeError
        If a frame is corrupt or not ``frame_shape`` (naming file, layer, frame).
    """
    n = len(layers)
    shape = (len(seqs) * n, *frame_shape)
    frames = np.asarray(seqs, np.int64)
    plan = DecodePlan.of(
        [LayerRef(source, meta, (), frame_shape) for meta in layers],
        np.tile(np.arange(n), frames.shape[0]),
        np.repeat(frames, n),
    )
    flat = None if out is None else out.reshape(shape)
    block = decode_block(plan, shape, device, out=flat)
    return block.reshape(len(seqs), n, *frame_shape)
