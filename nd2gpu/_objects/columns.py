"""The table's properties and columns: skimage's names and dtypes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..kernels import _objects_kernels as ok

if TYPE_CHECKING:
    pass


#: What ``regionprops_table`` can measure (skimage's names).
PROPERTIES: tuple[str, ...] = (
    "label",
    "area",
    "bbox",
    "centroid",
    "intensity_mean",
    "intensity_min",
    "intensity_max",
)
DEFAULT_PROPERTIES: tuple[str, ...] = ("label", "area", "bbox", "centroid")
INTENSITY_PROPERTIES: tuple[str, ...] = (
    "intensity_mean",
    "intensity_min",
    "intensity_max",
)
#: The columns of each property, as skimage names them.
PROPERTY_COLUMNS: dict[str, tuple[str, ...]] = {
    "label": ("label",),
    "area": ("area",),
    "bbox": ("bbox-0", "bbox-1", "bbox-2", "bbox-3"),
    "centroid": ("centroid-0", "centroid-1"),
    "intensity_mean": ("intensity_mean",),
    "intensity_min": ("intensity_min",),
    "intensity_max": ("intensity_max",),
}
#: Where each column sits in the kernels' column tuples, and its dtype (skimage's).
INT_COLUMN_INDEX: dict[str, int] = {
    "layer": ok.I_LAYER,
    "frame": ok.I_FRAME,
    "label": ok.I_LABEL,
    "bbox-0": ok.I_BBOX0,
    "bbox-1": ok.I_BBOX0 + 1,
    "bbox-2": ok.I_BBOX0 + 2,
    "bbox-3": ok.I_BBOX0 + 3,
}
FLOAT_COLUMN_INDEX: dict[str, int] = {
    "area": ok.F_AREA,
    "centroid-0": ok.F_CENTROID0,
    "centroid-1": ok.F_CENTROID0 + 1,
    "intensity_mean": ok.F_MEAN,
    "intensity_min": ok.F_MIN,
    "intensity_max": ok.F_MAX,
}


def check_properties(properties: str | Sequence[str]) -> tuple[str, ...]:
    """The requested property names, checked, in order, without repeats.

    Raises
    ------
    ValueError
        If a name is not one of ``PROPERTIES`` (the message lists them).
    TypeError
        If ``properties`` is not a string or a sequence of strings.
    """
    if isinstance(properties, str):
        properties = (properties,)
    try:
        names = list(properties)
    except TypeError:
        raise TypeError(
            "properties must be a sequence of property names, not "
            f"{type(properties).__name__}"
        ) from None
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or name not in PROPERTIES:
            raise ValueError(
                f"unknown property {name!r}; supported properties: "
                + ", ".join(PROPERTIES)
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def table_columns(properties: Sequence[str], layer_column: bool) -> list[str]:
    """The table's column names: ``[layer,] frame``, then each property's."""
    names = ["layer"] if layer_column else []
    names.append("frame")
    for prop in properties:
        names += PROPERTY_COLUMNS[prop]
    return names


def column_dtype(name: str) -> np.dtype:
    """dtype of a column (as ``skimage.measure.regionprops_table`` gives it)."""
    return np.dtype(np.int64 if name in INT_COLUMN_INDEX else np.float64)
