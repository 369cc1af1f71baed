"""Object tables as dask data frames: whole files, or many, measured on a cluster.

One partition per layer and run of consecutive frames (cut as ``to_dask`` cuts
its blocks). A task holds the layer as plain data (a ``LayerRef``: its source,
metadata and shapes), so it runs on any worker that can read the file; workers
measure with the object tables' stage (``nd2gpu._objects``) and return a pandas
data frame.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._dask import frame_blocks, frame_chunks
from ._decode.layer_ref import LayerRef
from ._device import DeviceRequest, check_request, to_numpy
from ._layers import BinaryLayer, BinaryLayers, Spacing
from ._nd2file import ND2File
from ._objects import (
    DEFAULT_PROPERTIES,
    check_properties,
    column_dtype,
    regionprops_table,
    table_columns,
)

if TYPE_CHECKING:
    import dask.dataframe
    import pandas

__all__ = ["objects_partition", "regionprops_dask"]

Source = (
    BinaryLayer
    | BinaryLayers
    | str
    | os.PathLike[str]
    | Sequence[str | os.PathLike[str]]
)


def _frame_runs(layer: LayerRef, frames_per_chunk: int) -> list[range]:
    """Runs of consecutive frames of at most ``frames_per_chunk`` (``to_dask``'s)."""
    shape = tuple(layer.coordinate_shape)
    return [
        seqs
        for _, seqs, _ in frame_blocks(shape, frame_chunks(shape, frames_per_chunk))
    ]


def objects_partition(
    layer: LayerRef,
    seqs: range,
    properties: tuple[str, ...],
    intensity: int | str | None,
    spacing: tuple[float, float] | None,
    device: DeviceRequest | None,
    layer_index: int | None,
    path: str | None,
) -> pandas.DataFrame:
    """One partition: the table of frames ``seqs`` of ``layer`` as pandas.

    The task function of ``regionprops_dask``; ``layer`` arrives pickled on
    worker processes. Columns measured on a GPU are copied to the host.
    """
    import pandas

    table = regionprops_table(
        [(0, layer)],
        seqs,
        properties=properties,
        intensity=intensity,
        spacing=spacing,
        axes=layer.axes,
        device=device,
    )
    n = len(table["frame"])
    columns: dict[str, Any] = {}
    if path is not None:
        columns["path"] = pandas.Series([path] * n, dtype=object)
    if layer_index is not None:
        columns["layer"] = np.full(n, layer_index, np.int64)
    for name, column in table.items():
        columns[name] = to_numpy(column)
    return pandas.DataFrame(columns)


def _meta(names: Sequence[str], with_path: bool) -> pandas.DataFrame:
    import pandas

    columns: dict[str, Any] = {}
    if with_path:
        columns["path"] = pandas.Series([], dtype=object)
    for name in names:
        columns[name] = np.empty(0, column_dtype(name))
    return pandas.DataFrame(columns)


def regionprops_dask(
    source: Source,
    *,
    frames_per_chunk: int = 16,
    properties: str | Sequence[str] = DEFAULT_PROPERTIES,
    intensity: int | str | None = None,
    spacing: Spacing = None,
    device: DeviceRequest | None = None,
) -> dask.dataframe.DataFrame:
    """A dask data frame of the object tables of layers, files or many files.

    Parameters
    ----------
    source : BinaryLayer, BinaryLayers, path, or sequence of paths
        What to measure: one layer; every layer of a file (a ``layer`` column,
        the layer's index in the file); or ND2 files by path (``path`` and
        ``layer`` columns). Files are opened here only to read their metadata;
        the workers read the masks.
    frames_per_chunk : int
        The most frames in one partition (a run of consecutive frames of one
        layer, cut as ``to_dask`` cuts its blocks).
    properties : sequence of str
        As in ``BinaryLayer.regionprops_table``.
    intensity : int or str, optional
        A channel of the file(s) (index or name) for the intensity columns.
    spacing : (float, float) or "file", optional
        As in ``BinaryLayer.regionprops_table`` ("file": each file's own pixel
        size).
    device : {"cpu", "cuda", "auto"}, optional
        Where each partition is measured (checked by the workers); the
        partitions are pandas data frames either way.

    Returns
    -------
    dask.dataframe.DataFrame
        Columns ``[path,] [layer,] frame``, the loop axes, then the properties'
        columns, as ``BinaryLayer.regionprops_table`` gives them; partitions in order of
        file, layer and frame. Nothing is measured until computed.

    Raises
    ------
    TypeError
        If ``source`` or ``intensity`` is of another kind.
    ValueError
        For an unknown property or ``frames_per_chunk`` below 1.

    Examples
    --------
    >>> from distributed import Client, LocalCluster  # doctest: +SKIP
    >>> with LocalCluster(n_workers=4) as cluster, Client(cluster):  # doctest: +SKIP
    ...     df = nd2gpu.regionprops_dask(["a.nd2", "b.nd2"], frames_per_chunk=64)
    ...     areas = df.groupby("path")["area"].mean().compute()
    """
    import dask.dataframe as dd

    props = check_properties(properties)
    device = check_request(device)
    frame_chunks((1,), frames_per_chunk)  # checks frames_per_chunk
    if intensity is not None and (
        isinstance(intensity, bool) or not isinstance(intensity, (int, str))
    ):
        raise TypeError(
            "regionprops_dask takes intensity as a channel of the file (index or "
            f"name), not {type(intensity).__name__}: arrays do not travel to workers"
        )
    with_path = False
    layer_column = True
    layers: list[tuple[BinaryLayer, int | None, str | None]] = []
    if isinstance(source, BinaryLayer):
        layers = [(source, None, None)]
        layer_column = False
    elif isinstance(source, BinaryLayers):
        layers = [(layer, i, None) for i, layer in enumerate(layer for layer in source)]
    else:
        paths = _paths(source)
        with_path = True
        for path in paths:
            layers += [(layer, i, path) for i, layer in enumerate(_file_layers(path))]
    parts = [
        (layer.ref, layer._spacing(spacing), layer_index, path)
        for layer, layer_index, path in layers
    ]
    axes = _axes([ref for ref, *_ in parts])
    names = table_columns(props, layer_column, axes)
    args = [
        (ref, seqs, props, intensity, scale, device, layer_index, path)
        for ref, scale, layer_index, path in parts
        for seqs in _frame_runs(ref, frames_per_chunk)
    ]
    meta = _meta(names, with_path)
    if not args:
        return dd.from_pandas(meta, npartitions=1)
    return dd.from_map(
        _partition, args, meta=meta, enforce_metadata=False, label="nd2gpu-objects"
    )


def _partition(args: tuple[Any, ...]) -> pandas.DataFrame:
    return objects_partition(*args)


def _paths(source: Any) -> list[str]:
    if isinstance(source, (str, os.PathLike)):
        return [os.fspath(source)]
    if isinstance(source, Sequence) and all(
        isinstance(p, (str, os.PathLike)) for p in source
    ):
        return [os.fspath(p) for p in source]
    raise TypeError(
        "source must be a BinaryLayer, BinaryLayers, a path or a sequence of "
        f"paths, not {type(source).__name__}"
    )


def _axes(refs: Sequence[LayerRef]) -> list[str]:
    """The loop-axis columns of the layers' tables (they must agree: one frame)."""
    found = {tuple(a for a in ref.axes if a) for ref in refs}
    if len(found) > 1:
        raise ValueError(
            "the files' experiments have different loops "
            f"({', '.join('/'.join(a) or '-' for a in sorted(found))}): their "
            "object tables cannot share one data frame"
        )
    return list(found.pop()) if found else []


def _file_layers(path: str) -> list[BinaryLayer]:
    with ND2File(path) as f:
        layers = f.binary_data
        return [] if layers is None else [layer for layer in layers]
