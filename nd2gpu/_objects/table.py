"""``regionprops_table``: the object table of frames of layers, on either device."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from .._decode.layer_ref import LayerRef
from .._decode.plan import DecodePlan
from .._device import DeviceRequest, resolve_device
from .._typing import Intensity
from ..kernels._objects_kernels import integer_sums
from .columns import (
    DEFAULT_PROPERTIES,
    INTENSITY_PROPERTIES,
    check_properties,
    column_dtype,
    entry_columns,
    table_columns,
)
from .cpu import measure_cpu
from .gpu import measure_cuda, to_device_columns
from .intensity import check_images


def regionprops_table(
    layers: Sequence[tuple[int, LayerRef]],
    seqs: Sequence[int] | np.ndarray,
    *,
    single: bool = False,
    properties: str | Sequence[str] = DEFAULT_PROPERTIES,
    intensity: Intensity | None = None,
    spacing: tuple[float, float] | None = None,
    axes: Sequence[str] = (),
    device: DeviceRequest | None = None,
    layer_column: bool = False,
) -> dict[str, Any]:
    """The object table of frames ``seqs`` of ``layers`` (see the layer methods).

    Parameters
    ----------
    layers : sequence of (int, LayerRef)
        The layers to measure and their indices in the file (one file).
    seqs : sequence of int
        Sequence indices, in range, without repeats.
    single : bool
        ``frames`` was one integer (then a ``(Y, X)`` intensity image is taken).
    properties, intensity, device
        As in ``BinaryLayer.regionprops_table``.
    spacing : (float, float), optional
        ``(dy, dx)``, checked (``columns.check_spacing``).
    axes : sequence of str
        The names of the loop-coordinate columns, one per entry of the layers'
        ``coordinate_shape`` that has one (``""`` for a loop without a column).
    layer_column : bool
        Whether the table has a ``layer`` column.

    Returns
    -------
    dict of str to numpy.ndarray or cupy.ndarray
    """
    props = check_properties(properties)
    named_axes = [a for a in axes if a]
    names = table_columns(props, layer_column, named_axes)
    asked = np.asarray(seqs, np.int64).reshape(-1)
    if np.unique(asked).shape[0] != asked.shape[0]:
        raise ValueError("frames must not repeat a frame (rows are keyed by frame)")
    want_values = any(p in INTENSITY_PROPERTIES for p in props)
    if want_values and intensity is None:
        raise ValueError(
            "intensity_mean, intensity_min and intensity_max need intensity=: the "
            "frames' images (an array) or a channel of the file (index or name)"
        )
    refs = [ref for _, ref in layers]
    images = (
        None
        if intensity is None or not layers
        else check_images(intensity, refs, asked.shape[0], single)
    )
    dev = resolve_device(device)
    use = images if want_values else None
    order = np.argsort(asked, kind="stable")
    sorted_seqs = asked[order]
    image_index = (
        np.empty(0, np.int64) if use is None else use.index(order, sorted_seqs)
    )
    parts = []
    xp: ModuleType = np
    for layer_index, ref in layers:
        if ref.frame_shape == (0, 0) or not asked.shape[0]:
            continue  # no frame of the layer has a mask
        plan = DecodePlan.of([ref], 0, sorted_seqs)
        if dev == "cuda":
            stats, fstats, xp = measure_cuda(
                plan, ref.frame_shape, use, image_index, spacing
            )
            int_sums = False
        else:
            stats, fstats = measure_cpu(
                plan, ref.frame_shape, use, image_index, spacing
            )
            int_sums = use is not None and integer_sums(use.dtype)
        parts.append(
            entry_columns(
                names,
                stats,
                fstats,
                seqs=xp.asarray(sorted_seqs),
                layer=layer_index,
                coordinate_shape=ref.coordinate_shape,
                axes=list(axes),
                int_sums=int_sums,
                spacing=spacing,
                xp=xp,
            )
        )
        del stats, fstats
    if len(parts) == 1:
        columns = parts.pop()
    else:
        columns = {
            name: (
                xp.concatenate([p[name] for p in parts])
                if parts
                else xp.empty(0, column_dtype(name))
            )
            for name in names
        }
    return to_device_columns(columns) if dev == "cuda" else columns
