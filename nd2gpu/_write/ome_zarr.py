"""OME-Zarr export through nd2's own writer (``nd2.ND2File.write_ome_zarr``).

nd2 writes an OME-NGFF 0.5 image (Zarr v3, metadata by yaozarrs) with the binary
layers as labels. It is called on a `ExportFile`, an ``nd2gpu.ND2File`` that
hands nd2 its binary layers prepared for the writer:

- as dask arrays decoded by nd2gpu a batch of frames at a time, so that nd2
  streams them chunk by chunk (its own layers would be decoded whole, in memory);
- without the loop axes of count 1, which ``nd2.ND2File.sizes`` leaves out (nd2
  would write labels with more axes than their metadata describes and fail);
- named without path separators (a layer named ``a/b`` would nest groups);
- only the layers that have a mask (nd2 warns about the others and skips them).

Where nd2 would pick a layout that breaks on XY-position loops (it takes a
position index for a frame index when it looks for a well plate, and fails or
mislabels wells), each position is written as its own image, by nd2, into a
bioformats2raw layout that nd2 would also write: ``OUT/0``, ``OUT/1``, ... with
``OUT/OME`` listing them. ``labels_only`` writes a standalone labels group
(``OUT/labels`` attributes at the root, one label image per layer) with yaozarrs,
the library nd2 writes with, and the same axes and scales as nd2's labels.

nd2 writes each label image with an empty ``image-label``; once the data are
written, nd2gpu fills it in (`label_metadata`): the layer's colour for every
label value, the link to the image, and, when asked for, the object table.
The writes run on threads the export owns (`zarr_writers`), so an interrupted
export stops every writer before its staged output is removed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from .._device import DeviceRequest, to_numpy
from .._layers import BinaryLayer
from .._nd2file import ND2File
from .label_metadata import SOURCE_IMAGE, image_label, layer_objects, set_image_label
from .layer_frames import (
    ProgressCallback,
    axis_letters,
    position_frames,
    progress_counter,
)
from .zarr_writers import settled_zarr_writes

#: ``nd2.ND2File.sizes`` keys that are not experiment loops.
CHANNEL, RGB, Y, X, POSITION = "C", "S", "Y", "X", "P"
#: Letters of the loop axes an OME-Zarr image can hold, in NGFF order.
NGFF_LOOP_ORDER = ("T", "Z")
#: Characters that would make a label's group name a path.
PATH_SEPARATORS = ("/", "\\")

Chunks = Literal["auto"] | tuple[int, int]
Tick = Callable[[int], object]


def _need_writer() -> None:
    try:
        import yaozarrs.write.v05  # noqa: F401
        import zarr

        if int(zarr.__version__.split(".")[0]) < 3:
            raise ImportError
    except ImportError:
        raise ValueError(
            "OME-Zarr export needs yaozarrs and zarr>=3: pip install 'nd2gpu[export]'"
        ) from None


@dataclass(frozen=True)
class _Label:
    """A binary layer as nd2's label writer reads one: a name and ``asarray()``."""

    name: str
    data: Any  # dask array, axes as in nd2's ``sizes`` without C and S

    def asarray(self) -> Any:
        return self.data


class ExportFile(ND2File):
    """An ``nd2gpu.ND2File`` whose binary layers are prepared for nd2's writer.

    ``binary_data`` gives the `_Label` list set by `prepare_labels` (the real
    layers stay at ``layers()``); ``to_dask`` counts the image planes computed.
    """

    _labels: list[_Label] | None = None
    _tick: Tick | None = None

    def layers(self) -> list[BinaryLayer]:
        """The file's binary layers (nd2gpu's own, unprepared)."""
        data = ND2File.binary_data.fget(self)  # type: ignore[attr-defined]
        return [] if data is None else list(data)

    @property
    def binary_data(self) -> list[_Label] | None:  # type: ignore[override]
        return self._labels

    def to_dask(self, *args: Any, **kwargs: Any) -> Any:
        array = super().to_dask(*args, **kwargs)
        if self._tick is None:
            return array
        plane = _image_plane_pixels(self.sizes)
        return cast(Any, array).map_blocks(
            _counted(self._tick, plane, host=False), dtype=array.dtype
        )


def _image_plane_pixels(sizes: dict[str, int] | Any) -> int:
    return sizes.get(Y, 1) * sizes.get(X, 1) * sizes.get(RGB, 1)


def _counted(tick: Tick, plane_pixels: int, *, host: bool) -> Callable[[Any], Any]:
    """A ``map_blocks`` function that reports the planes of each block computed."""

    def block(data: Any) -> Any:
        if host:
            data = to_numpy(data)
        tick(int(data.size) // plane_pixels)
        return data

    return block


def _loop_sizes(sizes: dict[str, int]) -> dict[str, int]:
    """The loop axes of nd2's ``sizes``, in order (P included)."""
    return {k: v for k, v in sizes.items() if k not in (CHANNEL, RGB, Y, X)}


def label_name(name: str) -> str:
    """A layer name usable as one group name (path separators replaced)."""
    for sep in PATH_SEPARATORS:
        name = name.replace(sep, "_")
    return name


def prepare_labels(
    f: ExportFile,
    layers: Sequence[BinaryLayer],
    *,
    device: DeviceRequest | None,
    batch_frames: int,
    tick: Tick,
) -> list[_Label]:
    """Dask arrays of ``layers`` with the axes nd2's ``sizes`` gives (no C, S).

    Raises
    ------
    ValueError
        The layers' loops do not match ``sizes`` (a file nd2 reads differently).
    """
    sizes = dict(f.sizes)
    expected = (*_loop_sizes(sizes).values(), sizes.get(Y, 1), sizes.get(X, 1))
    out = []
    for layer in layers:
        array = layer.to_dask(device=device, frames_per_chunk=batch_frames)
        assert array is not None  # only layers with a mask are exported
        # nd2's sizes leaves out loops of count 1; the layer keeps them.
        drop = tuple(
            0 if count == 1 else slice(None) for count in layer.coordinate_shape
        )
        array = array[drop]
        frame = layer.frame_shape[0] * layer.frame_shape[1]
        array = array.map_blocks(
            _counted(tick, frame, host=True),
            dtype=np.uint16,
            meta=np.empty((0,) * array.ndim, np.uint16),
        )
        if tuple(array.shape) != expected:
            raise ValueError(
                f"layer {layer.name!r} has shape {tuple(array.shape)} without its "
                f"loops of count 1, the image {expected}: cannot write it as labels"
            )
        out.append(_Label(label_name(layer.name), array))
    return out


def export_ome_zarr(
    f: ExportFile,
    layers: Sequence[BinaryLayer],
    out: Path,
    *,
    device: DeviceRequest | None,
    batch_frames: int,
    chunks: Chunks = "auto",
    position: int | None = None,
    labels_only: bool = False,
    properties: bool = False,
    progress: ProgressCallback | None = None,
) -> str:
    """Write the image of ``f`` and ``layers`` as labels to the new store ``out``.

    Parameters
    ----------
    f : ExportFile
        The open input.
    layers : sequence of BinaryLayer
        The layers to write (each with a mask in some frame).
    out : pathlib.Path
        The store to create; must not exist. Its name names the image.
    device, batch_frames
        Where and how many frames at a time the layers are decoded.
    chunks : "auto" or (Y, X)
        nd2's automatic chunks (about 4 MB, one plane deep), or one plane of
        ``Y x X`` pixels per chunk.
    position : int, optional
        Only this XY position (index along the P loop).
    labels_only : bool
        Write only the labels, as a standalone labels group.
    properties : bool
        Carry the object table in each label image's ``image-label``.
    progress : callable, optional
        Called with ``(done, total)`` planes (2-D each: the image's planes,
        the labels' planes, and the label planes measured for the metadata).

    Returns
    -------
    str
        What was written, for a summary line.

    Raises
    ------
    ValueError
        Options that do not fit the file (a position out of range, chunks on a
        multichannel file, labels-only on several positions).
    """
    _need_writer()
    sizes = dict(f.sizes)
    n_positions = sizes.get(POSITION, 1)
    if position is not None and not 0 <= position < n_positions:
        raise ValueError(
            f"position {position} is out of range: the file has {n_positions} "
            "XY position(s)"
        )
    positions = [position] if position is not None else list(range(n_positions))
    per_position = math.prod(v for k, v in _loop_sizes(sizes).items() if k != POSITION)
    label_planes = per_position * len(positions) * len(layers)
    image_planes = 0 if labels_only else per_position * sizes.get(CHANNEL, 1)
    total = 2 * label_planes + image_planes * len(positions)
    chunk_shape = _chunk_shape(sizes, chunks, labels_only)
    if labels_only and POSITION in sizes and position is None:
        raise ValueError(
            f"labels only: the file has {n_positions} XY positions; pass a "
            "position (--position N)"
        )
    nd2_position = position if POSITION in sizes else None
    with progress_counter(progress, total) as tick, settled_zarr_writes():
        f._labels = prepare_labels(
            f, layers, device=device, batch_frames=batch_frames, tick=tick
        )
        f._tick = None if labels_only else tick
        names = _nd2_label_paths(f._labels)
        if labels_only:
            _write_labels_only(f, out, nd2_position, chunk_shape)
            images = {nd2_position: out}
            what = f"OME-Zarr (NGFF 0.5) labels {', '.join(names)}"
        elif POSITION in sizes and position is None:
            _write_positions(f, out, positions, chunk_shape)
            images = {p: out / str(p) / "labels" for p in positions}
            what = (
                "OME-Zarr (NGFF 0.5) bioformats2raw layout, "
                f"{len(positions)} images (one per position) with labels "
                + ", ".join(names)
            )
        else:
            f.write_ome_zarr(
                out, chunk_shape=chunk_shape, backend="zarr", position=nd2_position
            )
            images = {nd2_position: out / "labels"}
            what = f"OME-Zarr (NGFF 0.5) image with labels {', '.join(names)}"
        letters = axis_letters(f)
        for p, labels_group in images.items():
            for layer, name in zip(layers, names, strict=True):
                frames = position_frames(layer.coordinate_shape, letters, p)
                objects = layer_objects(
                    layer,
                    frames.tolist(),
                    properties=properties,
                    device=device,
                    batch_frames=batch_frames,
                    tick=tick,
                )
                source = None if labels_only else SOURCE_IMAGE
                set_image_label(
                    labels_group / name, image_label(layer, objects, source=source)
                )
    return what


def _nd2_label_paths(labels: Sequence[_Label]) -> list[str]:
    """The group names nd2 gives the labels (``label_{i}_{name}``)."""
    out = []
    for i, label in enumerate(labels):
        safe = label.name.replace(" ", "_").replace("(", "").replace(")", "")
        out.append(f"label_{i}_{safe}" if safe else f"label_{i}")
    return out


def _chunk_shape(
    sizes: dict[str, int], chunks: Chunks, labels_only: bool
) -> tuple[int, ...] | Literal["auto"]:
    if chunks == "auto":
        return "auto"
    if not labels_only and (CHANNEL in sizes or RGB in sizes):
        # nd2 hands one chunk shape to the image and to its labels, which have
        # no channel axis: the shape cannot fit both.
        raise ValueError(
            "chunks Y,X: the file has several channels, and nd2 uses one chunk "
            "shape for the image and its labels; use auto chunks or labels only"
        )
    ndim = len([k for k in _loop_sizes(sizes) if k != POSITION]) + 2
    cy, cx = chunks
    return (*(1,) * (ndim - 2), cy, cx)


def _write_positions(
    f: ExportFile,
    out: Path,
    positions: Sequence[int],
    chunk_shape: tuple[int, ...] | Literal["auto"],
) -> None:
    """One image per position by nd2, in a bioformats2raw layout."""
    import zarr
    from yaozarrs import v05

    out.mkdir()
    for p in positions:
        f.write_ome_zarr(
            out / str(p), chunk_shape=chunk_shape, backend="zarr", position=p
        )
    layout = v05.Bf2Raw.model_validate({"bioformats2raw.layout": 3})
    series = v05.Series(series=[str(p) for p in positions])
    for path, model in ((out, layout), (out / "OME", series)):
        attrs: dict[str, Any] = {
            "ome": model.model_dump(mode="json", by_alias=True, exclude_none=True)
        }
        zarr.open_group(str(path), mode="a", zarr_format=3, attributes=attrs)
    try:
        xml = f.ome_metadata(include_unstructured=False).to_xml()
    except NotImplementedError:  # pragma: no cover - legacy files have no layers
        return
    (out / "OME" / "METADATA.ome.xml").write_text(xml, encoding="utf-8")


def _time_interval_ms(f: ND2File) -> float:
    """The time step nd2's writer puts in the scale of the t axis."""
    for loop in f.experiment:
        params: Any = getattr(loop, "parameters", None)
        if loop.type == "TimeLoop":
            if params.periodDiff and params.periodDiff.avg:
                return float(params.periodDiff.avg)
            return float(params.periodMs)
        if loop.type == "NETimeLoop":
            if params.periods:
                p = params.periods[0]
                if p.periodDiff and p.periodDiff.avg:
                    return float(p.periodDiff.avg)
                return float(p.periodMs)
            break
    return 1.0


def _write_labels_only(
    f: ExportFile,
    out: Path,
    position: int | None,
    chunk_shape: tuple[int, ...] | Literal["auto"],
) -> list[str]:
    """The labels as a standalone labels group at ``out``, axes as nd2 orders them."""
    from yaozarrs import v05
    from yaozarrs.write.v05 import LabelsBuilder

    sizes = dict(f.sizes)
    letters = [k for k in _loop_sizes(sizes)]
    kept = [k for k in letters if k != POSITION]
    unknown = [k for k in kept if k not in NGFF_LOOP_ORDER]
    if unknown:
        raise ValueError(
            f"labels only: loops {', '.join(unknown)} have no OME-Zarr axis type"
        )
    order = [k for k in NGFF_LOOP_ORDER if k in kept]
    voxel = f.voxel_size()
    axis_models: dict[str, Any] = {
        "T": v05.TimeAxis(name="t", unit="millisecond"),
        "Z": v05.SpaceAxis(name="z", unit="micrometer"),
        "Y": v05.SpaceAxis(name="y", unit="micrometer"),
        "X": v05.SpaceAxis(name="x", unit="micrometer"),
    }
    scale_of = {
        "T": _time_interval_ms(f),
        "Z": float(voxel.z),
        "Y": float(voxel.y),
        "X": float(voxel.x),
    }
    axes = [*order, Y, X]
    builder = LabelsBuilder(out, writer="zarr", chunks=chunk_shape)
    labels = f._labels or []
    names = _nd2_label_paths(labels)
    for label, name in zip(labels, names, strict=True):
        data = label.data
        if POSITION in letters:
            data = data[(slice(None),) * letters.index(POSITION) + (position,)]
        perm = [kept.index(k) for k in order] + [len(kept), len(kept) + 1]
        data = data.transpose(perm)
        multiscale = v05.Multiscale(
            name=label.name,
            axes=[axis_models[k] for k in axes],
            datasets=[
                v05.Dataset(
                    path="0",
                    coordinateTransformations=[
                        v05.ScaleTransformation(scale=[scale_of[k] for k in axes])
                    ],
                )
            ],
        )
        # "image-label" is not a Python name: the model takes it by alias.
        image = v05.LabelImage.model_validate(
            {"multiscales": [multiscale], "image-label": v05.ImageLabel()}
        )
        builder.write_label(name, image, data)
    return names


__all__ = ["export_ome_zarr", "label_name", "prepare_labels"]
