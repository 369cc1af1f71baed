"""Write the binary layers of an ND2 file as OME-Zarr or OME-TIFF label images.

`export_labels` is the entry point (the ``nd2gpu export`` command calls it):

- OME-Zarr: NGFF 0.4 in the Zarr v2 format, one label image per layer under
  ``OUT/labels/NAME``, the loops reordered to NGFF's ``[t] [p] [z] y x``;
- OME-TIFF: one series per layer (per layer and XY position when the file has a
  P loop), the loops in the file's order.

Frames are decoded a batch at a time and streamed to a temporary path beside the
output, which replaces the output only when everything has been written.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .._layers import BinaryLayer
from .._nd2file import ND2File
from .atomic import staged_path
from .layer_frames import DEFAULT_BATCH_FRAMES, axis_letters, host_frames, rgb_hex

ZARR_SUFFIXES = (".zarr",)
TIFF_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff")
#: Stay clear of the 4 GiB limit of classic TIFF (offsets, OME-XML, IFDs).
BIGTIFF_ABOVE = 2**32 - 2**28


class Progress(Protocol):
    """A progress display: told how many more frames are done, then closed."""

    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


#: Makes the progress display of an export, given its total number of frames.
ProgressFactory = Callable[[int], Progress]


def export_labels(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    batch_frames: int = DEFAULT_BATCH_FRAMES,
    device: str = "cpu",
    overwrite: bool = False,
    progress: ProgressFactory | None = None,
    note: Callable[[str], None] | None = None,
) -> str:
    """Write every binary layer of ``path`` that has a mask to ``out``.

    Parameters
    ----------
    path : path-like
        The ND2 file.
    out : path-like
        The output: OME-Zarr when it ends in ``.zarr``, OME-TIFF when it ends in
        ``.ome.tif``, ``.ome.tiff``, ``.tif`` or ``.tiff`` (unless ``fmt`` says).
    fmt : {"zarr", "tiff"}, optional
        The format; None tells it from the name of ``out``.
    batch_frames : int
        Frames decoded at a time.
    device : {"auto", "cpu", "cuda"}
        Where to decode.
    overwrite : bool
        Replace ``out`` if it exists.
    progress : callable, optional
        Called with the total number of frames; returns the `Progress` updated as
        frames are written. None: no progress.
    note : callable, optional
        Called with a line about each layer left out (no mask in any frame).

    Returns
    -------
    str
        What was written (format and images), for a summary line.

    Raises
    ------
    FileExistsError
        ``out`` exists (without ``overwrite``).
    FileNotFoundError
        ``out``'s directory does not exist.
    ValueError
        The format cannot be told, the file has no binary layers, no layer has
        a mask, or the loops do not fit the format.
    """
    out_path = Path(out)
    fmt = _export_format(out_path, fmt)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, not an ND2 file")
    with ND2File(path, device=device) as f:
        all_layers = f.binary_data
        if all_layers is None:
            raise ValueError(f"{path}: the file has no binary layers")
        layers = []
        for layer in all_layers:
            if layer.frame_shape != (0, 0):
                layers.append(layer)
            elif note is not None:
                note(f"layer {layer.name!r} has no mask in any frame; not exported")
        if not layers:
            raise ValueError(f"{path}: no binary layer has a mask in any frame")
        write = _export_zarr if fmt == "zarr" else _export_tiff
        options = _WriteOptions(batch_frames, device, overwrite, progress)
        return write(f, layers, out_path, options)


@dataclass(frozen=True)
class _WriteOptions:
    """How the writers decode frames, replace the output and show progress."""

    batch_frames: int
    device: str
    overwrite: bool
    progress: ProgressFactory | None


@dataclass(frozen=True)
class _Axis:
    letter: str
    count: int
    kind: str | None  # OME-NGFF axis type: "time", "space" or None (custom)
    scale: float
    unit: str | None


def _loop_axes(f: ND2File) -> list[_Axis]:
    voxel = f.voxel_size()
    axes = []
    for letter, loop in zip(axis_letters(f), f.experiment, strict=True):
        if letter == "T":
            period = getattr(getattr(loop, "parameters", None), "periodMs", None)
            if period:
                axes.append(
                    _Axis("T", loop.count, "time", float(period), "millisecond")
                )
            else:
                axes.append(_Axis("T", loop.count, "time", 1.0, None))
        elif letter == "Z":
            axes.append(_Axis("Z", loop.count, "space", float(voxel.z), "micrometer"))
        else:
            axes.append(_Axis(letter, loop.count, None, 1.0, None))
    return axes


def _export_format(out: Path, fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    name = out.name.lower().rstrip("/")
    if name.endswith(ZARR_SUFFIXES):
        return "zarr"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    raise ValueError(
        f"{out}: cannot tell the format from the name: end it in .zarr (OME-Zarr) "
        "or .ome.tif (OME-TIFF), or pass --format"
    )


@contextlib.contextmanager
def _staged_output(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary path beside ``out``, moved onto ``out`` when the block succeeds."""
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{out}: the directory {parent} does not exist")
    with staged_path(out.absolute()) as tmp:
        yield tmp


def _zarr_paths(names: Sequence[str]) -> list[str]:
    """Zarr-safe, unique group names for the layers."""
    out: list[str] = []
    for i, name in enumerate(names):
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or f"layer{i}"
        path, n = base, 2
        while path in out:
            path, n = f"{base}_{n}", n + 1
        out.append(path)
    return out


def _ngff_layout(
    axes: list[_Axis], frame_scale: tuple[float, float]
) -> tuple[list[int], list[dict[str, Any]], list[float]]:
    """Loop-axis order, ``axes`` and scales for OME-NGFF 0.4.

    NGFF 0.4 wants at most one time axis, then at most one channel or custom
    axis, then 2 or 3 space axes; the loops are reordered to fit.
    """
    rank = {"time": 0, None: 1, "space": 2}
    order = sorted(range(len(axes)), key=lambda i: rank[axes[i].kind])
    kinds = [axes[i].kind for i in order]
    if (
        kinds.count("time") > 1
        or kinds.count(None) > 1
        or kinds.count("space") > 1
        or len(axes) > 3
    ):
        letters = ", ".join(a.letter for a in axes)
        raise ValueError(
            f"the loops {letters} do not fit OME-NGFF 0.4 axes (at most one time, "
            "one other and one z loop): export to OME-TIFF instead"
        )
    ngff_axes: list[dict[str, Any]] = []
    scales: list[float] = []
    for i in order:
        ax = axes[i]
        entry: dict[str, Any] = {"name": ax.letter.lower()}
        if ax.kind is not None:
            entry["type"] = ax.kind
        if ax.unit is not None:
            entry["unit"] = ax.unit
        ngff_axes.append(entry)
        scales.append(ax.scale)
    for name, scale in zip("yx", frame_scale, strict=True):
        ngff_axes.append({"name": name, "type": "space", "unit": "micrometer"})
        scales.append(scale)
    return order, ngff_axes, scales


def _zarr_module() -> Any:
    try:
        import zarr
    except ImportError:
        raise ValueError(
            "OME-Zarr export needs the zarr package: pip install 'nd2gpu[export]'"
        ) from None
    return zarr


def _zarr_major(zarr: Any) -> int:
    return int(str(zarr.__version__).split(".")[0])


def _zarr_group(zarr: Any, path: Path) -> Any:
    # OME-NGFF 0.4 is stored in the Zarr v2 format.
    if _zarr_major(zarr) >= 3:
        return zarr.open_group(str(path), mode="w", zarr_format=2)
    return zarr.open_group(str(path), mode="w")


def _zarr_array(zarr: Any, group: Any, shape: tuple[int, ...]) -> Any:
    chunks = (1,) * (len(shape) - 2) + shape[-2:]
    if _zarr_major(zarr) >= 3:
        return group.create_array(
            "0",
            shape=shape,
            chunks=chunks,
            dtype="uint16",
            fill_value=0,
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
    return group.create_dataset(
        "0",
        shape=shape,
        chunks=chunks,
        dtype="uint16",
        fill_value=0,
        dimension_separator="/",
    )


def _label_attrs(
    layer: BinaryLayer,
    ngff_axes: list[dict[str, Any]],
    scales: list[float],
    loop_letters: list[str],
) -> dict[str, Any]:
    """The attributes of a layer's OME-NGFF 0.4 label image (one resolution)."""
    dataset = {
        "path": "0",
        "coordinateTransformations": [{"type": "scale", "scale": scales}],
    }
    return {
        "multiscales": [
            {
                "version": "0.4",
                "name": layer.name,
                "axes": ngff_axes,
                "datasets": [dataset],
            }
        ],
        "image-label": {"version": "0.4"},
        "nd2gpu": {
            "name": layer.name,
            "file_tag": layer.file_tag,
            "color": layer.color,
            "color_rgb": rgb_hex(layer.color),
            "loops": loop_letters,
        },
    }


@contextlib.contextmanager
def _progress(
    progress: ProgressFactory | None, total: int
) -> Iterator[Progress | None]:
    """The progress display of ``total`` frames (None without ``progress``)."""
    bar = None if progress is None else progress(total)
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


def _done(bar: Progress | None) -> Callable[[int], None] | None:
    return None if bar is None else bar.update


def _export_zarr(
    f: ND2File, layers: list[BinaryLayer], out: Path, options: _WriteOptions
) -> str:
    zarr = _zarr_module()
    axes = _loop_axes(f)
    voxel = f.voxel_size()
    order, ngff_axes, scales = _ngff_layout(axes, (float(voxel.y), float(voxel.x)))
    coordinate_shape = layers[0].coordinate_shape
    paths = _zarr_paths([layer.name for layer in layers])
    total = sum(len(layer) for layer in layers)
    with (
        _progress(options.progress, total) as bar,
        _staged_output(out, options.overwrite) as tmp,
    ):
        root = _zarr_group(zarr, tmp)
        root.attrs["nd2gpu"] = {"source": Path(f.path).name}
        labels = root.create_group("labels")
        labels.attrs["labels"] = paths
        for layer, path in zip(layers, paths, strict=True):
            group = labels.create_group(path)
            group.attrs.update(
                _label_attrs(layer, ngff_axes, scales, [axes[i].letter for i in order])
            )
            shape = (*(coordinate_shape[i] for i in order), *layer.frame_shape)
            array = _zarr_array(zarr, group, shape)
            seqs = range(len(layer))
            frames = host_frames(
                layer, seqs, options.batch_frames, options.device, _done(bar)
            )
            for seq, frame in zip(seqs, frames, strict=True):
                coords = np.unravel_index(seq, coordinate_shape)
                target = tuple(int(coords[i]) for i in order)
                array[(*target, slice(None), slice(None))] = frame
    return (
        f"OME-Zarr (NGFF 0.4), label images {', '.join(f'labels/{p}' for p in paths)}"
    )


def _tiff_module() -> Any:
    try:
        import tifffile
    except ImportError:
        raise ValueError(
            "OME-TIFF export needs the tifffile package: pip install 'nd2gpu[export]'"
        ) from None
    return tifffile


def _tiff_series(
    layers: list[BinaryLayer], axes: list[_Axis]
) -> list[tuple[BinaryLayer, str, str, tuple[int, ...], list[int]]]:
    """``(layer, name, axes, shape, frames)`` of each OME image, in file order.

    One image per layer; with an XY-position loop, one per layer and position.
    """
    letters = [a.letter for a in axes]
    tiff_letters = {"T": "T", "Z": "Z", "U": "Q"}
    kept = [i for i, letter in enumerate(letters) if letter != "P"]
    tiff_axes = "".join(tiff_letters[letters[i]] for i in kept) + "YX"
    if len(set(tiff_axes)) != len(tiff_axes):
        raise ValueError(
            f"the loops {', '.join(letters)} do not fit OME-TIFF axes "
            "(at most one time, one z and one other loop)"
        )
    out = []
    for layer in layers:
        coordinate_shape = layer.coordinate_shape
        seq_grid = np.arange(len(layer)).reshape(coordinate_shape)
        shape = (*(coordinate_shape[i] for i in kept), *layer.frame_shape)
        if "P" not in letters:
            out.append((layer, layer.name, tiff_axes, shape, seq_grid.ravel().tolist()))
            continue
        p_axis = letters.index("P")
        for p in range(coordinate_shape[p_axis]):
            frames = seq_grid.take(p, axis=p_axis).ravel().tolist()
            out.append((layer, f"{layer.name} P{p}", tiff_axes, shape, frames))
    return out


def _export_tiff(
    f: ND2File, layers: list[BinaryLayer], out: Path, options: _WriteOptions
) -> str:
    tifffile = _tiff_module()
    axes = _loop_axes(f)
    series = _tiff_series(layers, axes)
    voxel = f.voxel_size()
    nbytes = sum(2 * math.prod(shape) for _, _, _, shape, _ in series)
    total = sum(len(frames) for *_, frames in series)
    with (
        _progress(options.progress, total) as bar,
        _staged_output(out, options.overwrite) as tmp,
        tifffile.TiffWriter(tmp, bigtiff=nbytes > BIGTIFF_ABOVE, ome=True) as tw,
    ):
        for layer, name, tiff_axes, shape, frames in series:
            metadata: dict[str, Any] = {
                "axes": tiff_axes,
                "Name": name,
                "PhysicalSizeX": float(voxel.x),
                "PhysicalSizeXUnit": "µm",
                "PhysicalSizeY": float(voxel.y),
                "PhysicalSizeYUnit": "µm",
            }
            if "Z" in tiff_axes:
                metadata["PhysicalSizeZ"] = float(voxel.z)
                metadata["PhysicalSizeZUnit"] = "µm"
            pages = host_frames(
                layer, frames, options.batch_frames, options.device, _done(bar)
            )
            try:
                tw.write(
                    pages,
                    shape=shape,
                    dtype=np.uint16,
                    compression="zlib",
                    metadata=metadata,
                )
            except tifffile.OmeXmlError as e:
                raise ValueError(f"cannot describe {name!r} in OME-XML: {e}") from e
    return f"OME-TIFF, {len(series)} series ({', '.join(s[1] for s in series)})"


__all__ = ["BIGTIFF_ABOVE", "TIFF_SUFFIXES", "ZARR_SUFFIXES", "export_labels"]
