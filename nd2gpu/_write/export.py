"""Write the binary layers of an ND2 file as OME-Zarr or OME-TIFF.

`export_labels` is the entry point (the ``nd2gpu export`` command calls it). It
checks the output first (`check_output`: never an input, never an ND2 file),
then writes under a temporary name beside the output and moves the result into
place only when it is complete:

- OME-Zarr (``ome_zarr``): nd2's own writer, the image with the layers as
  labels (NGFF 0.5), or the labels alone;
- OME-TIFF (``ome_tiff``): all layers in one series (a channel each), or one
  file per layer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from .._device import DeviceRequest
from .._layers import BinaryLayer
from .._nd2file import ND2File
from .._sources import source_spec
from .atomic import staged_path
from .layer_frames import DEFAULT_BATCH_FRAMES, ProgressFactory, progress_bar
from .ome_tiff import TIFF_SUFFIXES, split_paths, tiff_series, write_ome_tiff
from .ome_zarr import Chunks, ExportFile, export_ome_zarr
from .outputs import OutputRefusedError, check_output

ZARR_SUFFIXES = (".zarr",)
Format = Literal["zarr", "tiff"]


def export_format(out: str | os.PathLike[str], fmt: str | None = None) -> Format:
    """The format of an export to ``out``: ``fmt``, else told by ``out``'s name.

    Raises
    ------
    ValueError
        ``fmt`` is not "zarr" or "tiff", or the name ends in neither ``.zarr``
        nor a TIFF suffix.
    """
    if fmt is not None:
        if fmt not in ("zarr", "tiff"):
            raise ValueError(f"unknown format {fmt!r}: use 'zarr' or 'tiff'")
        return fmt  # type: ignore[return-value]
    name = Path(out).name.lower()
    if name.endswith(ZARR_SUFFIXES):
        return "zarr"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    raise ValueError(
        f"{out}: cannot tell the format from the name: end it in .zarr (OME-Zarr) "
        "or .ome.tif (OME-TIFF), or pass --format"
    )


def export_labels(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    batch_frames: int = DEFAULT_BATCH_FRAMES,
    device: DeviceRequest | None = "cpu",
    overwrite: bool = False,
    position: int | None = None,
    chunks: Chunks = "auto",
    labels_only: bool = False,
    split: bool = False,
    progress: ProgressFactory | None = None,
    note: Callable[[str], None] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Write every binary layer of ``path`` that has a mask to ``out``.

    Parameters
    ----------
    path : path-like or URL
        The ND2 file: a local path, a ``file://`` URL, or any URL fsspec reads.
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
        Replace ``out`` if it exists (an earlier export; never an input or an
        ND2 file, see `check_output`).
    position : int, optional
        Only this XY position (index along the P loop).
    chunks : "auto" or (Y, X)
        OME-Zarr: nd2's automatic chunks, or ``Y x X`` pixels of one plane.
    labels_only : bool
        OME-Zarr: the labels alone (a standalone labels group), not the image.
    split : bool
        OME-TIFF: one file per layer (``STEM_NAME.ome.tif``) instead of one
        file with a channel per layer.
    progress : callable, optional
        Called with the total number of planes to write; returns the display
        updated as they are written. None: no progress.
    note : callable, optional
        Called with a line about each layer left out (no mask in any frame).
    storage_options : dict, optional
        fsspec's options for a URL.

    Returns
    -------
    str
        What was written (format and images), for a summary line.

    Raises
    ------
    OutputRefusedError
        ``out`` may never be written: it ends in ``.nd2``, is (a link to) the
        input, holds the input, is an ND2 file, or is a directory that is not
        a Zarr store.
    FileExistsError
        ``out`` exists (without ``overwrite``).
    FileNotFoundError
        ``out``'s directory does not exist.
    ValueError
        Options that do not fit the format or the file, a file without binary
        layers or without any mask, or loops that do not fit the format.
    """
    out = Path(out)
    spec = source_spec(path, storage_options)
    # The local file read, which the output may never be (a URL is never one).
    inputs = [Path(spec.target)] if spec.kind == "local" else []
    kind = export_format(out, fmt)
    if kind == "tiff" and (labels_only or chunks != "auto"):
        raise ValueError("labels only and chunks apply to OME-Zarr exports only")
    if kind == "zarr" and split:
        raise ValueError("split applies to OME-TIFF exports only")
    # With split, OUT only names the files written beside it.
    check_output(inputs, out, overwrite=overwrite or split, tree=kind == "zarr")
    if any(p.is_dir() for p in inputs):
        raise IsADirectoryError(f"{path}: is a directory, not an ND2 file")
    opener = ExportFile if kind == "zarr" else ND2File
    with opener(path, device=device, storage_options=storage_options) as f:
        layers = _layers_with_masks(f, path, note)
        if kind == "zarr":
            assert isinstance(f, ExportFile)
            with staged_path(out.absolute(), keep_name=True) as tmp:
                return export_ome_zarr(
                    f,
                    layers,
                    tmp,
                    device=device,
                    batch_frames=batch_frames,
                    chunks=chunks,
                    position=position,
                    labels_only=labels_only,
                    progress=progress,
                )
        return _export_tiff(
            f, layers, out, inputs, overwrite, split, position, device, batch_frames,
            progress,
        )  # fmt: skip


def _layers_with_masks(
    f: ND2File, path: str | os.PathLike[str], note: Callable[[str], None] | None
) -> list[BinaryLayer]:
    all_layers = (
        f.layers()
        if isinstance(f, ExportFile)
        else [layer for layer in f.binary_data or ()]
    )
    if not all_layers:
        raise ValueError(f"{path}: the file has no binary layers")
    layers = []
    for layer in all_layers:
        if layer.frame_shape != (0, 0):
            layers.append(layer)
        elif note is not None:
            note(f"layer {layer.name!r} has no mask in any frame; not exported")
    if not layers:
        raise ValueError(f"{path}: no binary layer has a mask in any frame")
    return layers


def _export_tiff(
    f: ND2File,
    layers: list[BinaryLayer],
    out: Path,
    inputs: list[Path],
    overwrite: bool,
    split: bool,
    position: int | None,
    device: DeviceRequest | None,
    batch_frames: int,
    progress: ProgressFactory | None,
) -> str:
    files = tiff_series(f, layers, split=split, position=position)
    targets = split_paths(out, layers) if split else [out]
    if split:
        for target in targets:
            check_output(inputs, target, overwrite=overwrite)
    total = sum(len(s.frames) * len(s.layers) for series in files for s in series)
    with progress_bar(progress, total) as done, contextlib.ExitStack() as stack:
        for target, series in zip(targets, files, strict=True):
            tmp = stack.enter_context(staged_path(target.absolute()))
            write_ome_tiff(
                f, series, tmp, device=device, batch_frames=batch_frames, done=done
            )
    names = ", ".join(s.name for s in files[0])
    if split:
        return f"OME-TIFF, {len(targets)} files ({', '.join(t.name for t in targets)})"
    channels = ", ".join(layer.name for layer in layers)
    return f"OME-TIFF, {len(files[0])} series ({names}), channels {channels}"


__all__ = [
    "ZARR_SUFFIXES",
    "OutputRefusedError",
    "check_output",
    "export_format",
    "export_labels",
]
