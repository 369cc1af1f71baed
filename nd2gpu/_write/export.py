"""Write the binary layers of an ND2 file as OME-Zarr or OME-TIFF: ``nd2gpu.export``.

`export` is the entry point (the ``nd2gpu export`` command calls it). It checks
the output first (`check_output`: never an input, never an ND2 file), then
writes under a temporary name beside the output and moves the result into
place only when it is complete (`atomic`); an error or an interrupt leaves
nothing behind:

- OME-Zarr (``ome_zarr``): nd2's own writer, the image with the layers as
  labels (NGFF 0.5) in the layers' NIS colours, or the labels alone;
- OME-TIFF (``ome_tiff``): all layers in one series (a channel each), or one
  file per layer.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any, Literal

from .._device import DeviceRequest
from .._layers import BinaryLayer
from .._nd2file import ND2File
from .._sources import source_spec
from .atomic import staged_path, staged_paths
from .interrupts import deferred_interrupts
from .layer_frames import DEFAULT_BATCH_FRAMES, ProgressCallback, progress_counter
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


def export(
    source: str | os.PathLike[str] | Any,
    out: str | os.PathLike[str],
    *,
    format: str | None = None,
    overwrite: bool = False,
    position: int | None = None,
    chunks: Chunks = "auto",
    labels_only: bool = False,
    properties: bool = False,
    split: bool = False,
    device: DeviceRequest | None = None,
    batch_frames: int = DEFAULT_BATCH_FRAMES,
    progress: ProgressCallback | None = None,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Write every binary layer of ``source`` that has a mask to ``out``.

    OME-Zarr (NGFF 0.5, written by nd2's own writer): the image with the
    layers as label images, each label value in its layer's NIS-Elements
    colour, linked to the image; or the labels alone. OME-TIFF: the layers as
    the channels of one series per XY position, or one file per layer. Frames
    are decoded ``batch_frames`` at a time and written before the next batch,
    so memory stays bounded whatever the file's size. ``out`` is written under
    a temporary name beside it and moved into place when complete: an error,
    Ctrl-C or SIGTERM leaves no partial output and an existing ``out`` as it
    was. Layers without a mask in any frame are left out, with a warning.

    Parameters
    ----------
    source : str, os.PathLike, URL or binary file object
        The ND2 file: anything ``nd2gpu.ND2File`` opens.
    out : str or os.PathLike
        The output: OME-Zarr when it ends in ``.zarr``, OME-TIFF when it ends in
        ``.ome.tif``, ``.ome.tiff``, ``.tif`` or ``.tiff`` (unless ``format``
        says).
    format : {"zarr", "tiff"}, optional
        The format; None tells it from the name of ``out``.
    overwrite : bool
        Replace ``out`` if it exists (an earlier export; never an input or an
        ND2 file: see docs/cli.md).
    position : int, optional
        Only this XY position (index along the P loop).
    chunks : "auto" or (Y, X)
        OME-Zarr: nd2's automatic chunks, or ``Y x X`` pixels of one plane.
    labels_only : bool
        OME-Zarr: the labels alone (a standalone labels group), not the image.
    properties : bool
        OME-Zarr: carry each layer's object table in its label image's
        ``image-label`` properties (per label value, a list per column with an
        element per frame: ``frame``, the loop coordinates ``T``, ``P``, ``Z``
        ..., ``area``, ``centroid-0``, ``centroid-1``).
    split : bool
        OME-TIFF: one file per layer (``STEM_NAME.ome.tif``) instead of one
        file with a channel per layer.
    device : {"cpu", "cuda", "auto"}, optional
        Where to decode; None: the CPU.
    batch_frames : int
        Frames decoded at a time.
    progress : callable, optional
        Called with ``(done, total)``, in planes, as the export goes (from
        worker threads too): ``(0, total)`` first, ``(total, total)`` last.
    storage_options : dict, optional
        fsspec's options for a URL ``source``.

    Returns
    -------
    str
        What was written (format, images, labels), as ``nd2gpu export`` prints
        it.

    Raises
    ------
    OutputRefusedError
        ``out`` may never be written: it ends in ``.nd2``, is (a link to) the
        input, holds the input, is an ND2 file, or is a directory that is not
        a Zarr store. A ``ValueError``.
    FileExistsError
        ``out`` exists (without ``overwrite``).
    FileNotFoundError
        ``out``'s directory does not exist.
    ValueError
        Options that do not fit the format or the file, a file without binary
        layers or without any mask, or loops that do not fit the format.

    Examples
    --------
    >>> nd2gpu.export("cells.nd2", "cells.zarr", overwrite=True)  # doctest: +SKIP
    'OME-Zarr (NGFF 0.5) image with labels label_0_cells, label_1_nuclei'
    """
    out = Path(out)
    kind = export_format(out, format)
    if kind == "tiff" and (labels_only or properties or chunks != "auto"):
        raise ValueError(
            "labels only, properties and chunks apply to OME-Zarr exports only"
        )
    if kind == "zarr" and split:
        raise ValueError("split applies to OME-TIFF exports only")
    spec = source_spec(source, storage_options)
    local = [Path(spec.target)] if spec.kind == "local" else []
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else spec.name
    # With split, OUT only names the files written beside it.
    check_output(local, out, overwrite=overwrite or split, tree=kind == "zarr")
    if local and local[0].is_dir():
        raise IsADirectoryError(f"{local[0]}: is a directory, not an ND2 file")
    options = {} if storage_options is None else {"storage_options": storage_options}
    opener = ExportFile if kind == "zarr" else ND2File
    with contextlib.ExitStack() as stack:
        # Opened whole or not at all: a signal while the file opens is raised
        # once it is in the stack that closes it.
        with deferred_interrupts():
            f = stack.enter_context(opener(source, device=device, **options))
        layers = _layers_with_masks(f, name)
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
                    properties=properties,
                    progress=progress,
                )
        return _export_tiff(
            f, layers, out, local, overwrite, split, position, device, batch_frames,
            progress,
        )  # fmt: skip


def _layers_with_masks(f: ND2File, name: str) -> list[BinaryLayer]:
    all_layers = (
        f.layers()
        if isinstance(f, ExportFile)
        else [layer for layer in f.binary_data or ()]
    )
    if not all_layers:
        raise ValueError(f"{name}: the file has no binary layers")
    layers = []
    for layer in all_layers:
        if layer.frame_shape != (0, 0):
            layers.append(layer)
        else:
            warnings.warn(
                f"layer {layer.name!r} has no mask in any frame; not exported",
                UserWarning,
                stacklevel=3,
            )
    if not layers:
        raise ValueError(f"{name}: no binary layer has a mask in any frame")
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
    progress: ProgressCallback | None,
) -> str:
    files = tiff_series(f, layers, split=split, position=position)
    targets = split_paths(out, layers) if split else [out]
    if split:
        for target in targets:
            check_output(inputs, target, overwrite=overwrite)
    total = sum(len(s.frames) * len(s.layers) for series in files for s in series)
    with (
        progress_counter(progress, total) as tick,
        staged_paths([t.absolute() for t in targets]) as tmps,
    ):
        for tmp, series in zip(tmps, files, strict=True):
            write_ome_tiff(
                f, series, tmp, device=device, batch_frames=batch_frames, done=tick
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
    "export",
    "export_format",
]
