"""The ``image-label`` metadata of an exported label image: colours, source, objects.

NIS-Elements shows every object of a binary layer in the layer's colour. An
OME-Zarr label image says the same with one ``colors`` entry per label value,
all in that colour (the layer's ``color`` is a Windows COLORREF, 0x00BBGGRR),
``source`` links it to the image it segments, and, when asked for,
``properties`` carry the object table: for each label value, one list per
column with an element per frame the value occurs in (``frame``, the frame's
loop coordinates ``T``, ``P``, ``Z``..., ``area``, ``centroid-0``,
``centroid-1``), since a label value names one object per frame. The label
values are read from the mask runs (``BinaryLayer.regionprops_table``), a batch
of frames at a time: no layer is decoded whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from nd2.structures import Color

from .._device import DeviceRequest, to_numpy
from .._layers import BinaryLayer

#: The object-table columns carried as properties (skimage's names).
PROPERTY_COLUMNS = ("area", "centroid-0", "centroid-1")
#: ``image-label`` ``source`` of a label image under ``IMAGE/labels/NAME``.
SOURCE_IMAGE = "../../"


@dataclass(frozen=True)
class LayerObjects:
    """The objects of a layer in some frames: label values, and the table."""

    labels: np.ndarray  # sorted unique label values (uint16 as int64)
    table: dict[str, np.ndarray] | None  # rows sorted by (label, frame)


def layer_rgba(layer: BinaryLayer) -> list[int]:
    """The layer's colour as ``[r, g, b, 255]`` (opaque, as NIS draws it)."""
    color = Color.from_abgr_u4(int(layer.color or 0))
    return [color.r, color.g, color.b, 255]


def layer_objects(
    layer: BinaryLayer,
    frames: Sequence[int],
    *,
    properties: bool,
    device: DeviceRequest | None,
    batch_frames: int,
    tick: Callable[[int], object] | None = None,
) -> LayerObjects:
    """Measure the objects of ``frames``, ``batch_frames`` at a time, from the runs.

    ``tick(n)`` is called as each batch of ``n`` frames is measured.
    """
    axes = [a for a in layer.axes if a]  # the table's loop-coordinate columns
    columns = ("label", *PROPERTY_COLUMNS, *axes) if properties else ("label",)
    asked = ("label", "area", "centroid") if properties else ("label",)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ("frame", *columns)}
    for start in range(0, len(frames), batch_frames):
        batch = list(frames[start : start + batch_frames])
        table = layer.regionprops_table(batch, properties=asked, device=device)
        for name in parts:
            parts[name].append(to_numpy(table[name]))
        if tick is not None:
            tick(len(batch))
    joined = {
        name: np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
        for name, chunks in parts.items()
    }
    labels = np.unique(joined["label"]).astype(np.int64)
    if not properties:
        return LayerObjects(labels, None)
    order = np.lexsort((joined["frame"], joined["label"]))
    table = {name: column[order] for name, column in joined.items()}
    return LayerObjects(labels, table)


def image_label(
    layer: BinaryLayer, objects: LayerObjects, *, source: str | None
) -> dict[str, Any]:
    """The ``image-label`` attributes (OME-NGFF 0.5) of the layer's label image."""
    out: dict[str, Any] = {}
    rgba = layer_rgba(layer)
    if objects.labels.size:
        out["colors"] = [
            {"label-value": int(value), "rgba": rgba} for value in objects.labels
        ]
    if objects.table is not None and objects.labels.size:
        out["properties"] = _properties(objects.table)
    if source is not None:
        out["source"] = {"image": source}
    return out


def _properties(table: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One entry per label value: its rows, a list per column (label left out)."""
    labels = table["label"]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    ends = np.r_[starts[1:], labels.size]
    names = [name for name in table if name != "label"]
    lists = {name: table[name].tolist() for name in names}
    return [
        {"label-value": int(labels[lo])} | {n: lists[n][lo:hi] for n in names}
        for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True)
    ]


def set_image_label(group: Path, attributes: dict[str, Any]) -> None:
    """Replace the ``image-label`` attributes of the label image at ``group``."""
    import zarr

    g = zarr.open_group(str(group), mode="r+", zarr_format=3)
    ome: dict[str, Any] = dict(g.attrs["ome"])  # type: ignore[arg-type]
    ome["image-label"] = attributes
    g.attrs["ome"] = ome


__all__ = [
    "PROPERTY_COLUMNS",
    "LayerObjects",
    "image_label",
    "layer_objects",
    "layer_rgba",
    "set_image_label",
]
