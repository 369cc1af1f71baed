"""The table's properties and columns: skimage's names and dtypes, and the columns
made from the measured entries."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from ..kernels import _objects_kernels as ok

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
#: Columns of float64 (skimage's dtype); every other column is int64.
FLOAT_COLUMNS: frozenset[str] = frozenset(
    {"area", "centroid-0", "centroid-1", *INTENSITY_PROPERTIES}
)


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


def check_spacing(spacing: object) -> tuple[float, float] | None:
    """``spacing`` as ``(dy, dx)`` floats (None: pixels).

    Raises
    ------
    ValueError
        If it is not two positive, finite numbers.
    """
    if spacing is None:
        return None
    try:
        values = np.asarray(spacing, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"spacing must be two numbers (dy, dx) or 'file', not {spacing!r}"
        ) from None
    if values.shape == ():
        values = np.full(2, values)
    if values.shape != (2,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(
            f"spacing must be two positive numbers (dy, dx) or 'file', not {spacing!r}"
        )
    return (float(values[0]), float(values[1]))


def table_columns(
    properties: Sequence[str], layer_column: bool, axes: Sequence[str]
) -> list[str]:
    """The table's column names: ``[layer,] frame``, the loop axes, then each
    property's."""
    names = ["layer"] if layer_column else []
    names.append("frame")
    names += axes
    for prop in properties:
        names += PROPERTY_COLUMNS[prop]
    return names


def column_dtype(name: str) -> np.dtype:
    """dtype of a column (as ``skimage.measure.regionprops_table`` gives it)."""
    return np.dtype(np.float64 if name in FLOAT_COLUMNS else np.int64)


def entry_columns(
    names: Sequence[str],
    stats: np.ndarray,
    fstats: np.ndarray,
    *,
    seqs: np.ndarray,
    layer: int,
    coordinate_shape: tuple[int, ...],
    axes: Sequence[str],
    int_sums: bool,
    spacing: tuple[float, float] | None,
    xp: ModuleType = np,
) -> dict[str, Any]:
    """The named columns of one layer's measured entries.

    ``xp`` is the array module of ``stats``, ``fstats`` and ``seqs`` (NumPy, or
    CuPy for the GPU's entries): the columns are made where the entries are.

    ``stats[:, S_FRAME]`` indexes ``seqs`` (the jobs' sequence indices); with a
    ``spacing``, area and centroid are in its units, computed as skimage
    computes them (``area``: pixels times ``dy * dx``; ``centroid``: the mean of
    the scaled coordinates, summed pixel by pixel by the kernel).
    """
    frame = seqs[stats[:, ok.S_FRAME]]
    count = stats[:, ok.S_AREA].astype(np.float64)
    coords = xp.unravel_index(frame, coordinate_shape) if any(axes) else ()
    out: dict[str, Any] = {}
    for name in names:
        column: Any
        if name == "layer":
            column = xp.full(stats.shape[0], layer, np.int64)
        elif name == "frame":
            column = frame.astype(np.int64)
        elif name in axes:
            column = coords[list(axes).index(name)]
        elif name == "label":
            column = stats[:, ok.S_LABEL].copy()
        elif name == "area":
            # skimage: the pixel count times np.prod(spacing), i.e. dy * dx.
            column = count if spacing is None else count * (spacing[0] * spacing[1])
        elif name.startswith("bbox-"):
            k = int(name[-1])
            field = (ok.S_MIN_ROW, ok.S_MIN_COL, ok.S_MAX_ROW, ok.S_MAX_COL)[k]
            column = stats[:, field] + (1 if k >= 2 else 0)
        elif name.startswith("centroid-"):
            k = int(name[-1])
            if spacing is None:
                column = stats[:, (ok.S_SUM_ROW, ok.S_SUM_COL)[k]] / count
            else:
                column = fstats[:, (ok.F_SUM_ROW, ok.F_SUM_COL)[k]] / count
        elif name == "intensity_mean":
            total = stats[:, ok.S_SUM_INT] if int_sums else fstats[:, ok.F_SUM]
            column = total / count
        elif name == "intensity_min":
            column = fstats[:, ok.F_MIN].copy()
        elif name == "intensity_max":
            column = fstats[:, ok.F_MAX].copy()
        else:  # pragma: no cover - names come from table_columns
            raise AssertionError(name)
        out[name] = xp.ascontiguousarray(column, dtype=column_dtype(name))
    return out
