"""``nd2gpu export FILE OUT``: the binary layers as OME-Zarr or OME-TIFF.

The command is ``nd2gpu.export`` with a progress bar (tqdm, on a terminal) and
its warnings (layers left out) shown as notes.
"""

from __future__ import annotations

import argparse
import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._write.export import export, export_format
from .._write.layer_frames import DEFAULT_BATCH_FRAMES, ProgressCallback
from .common import (
    Input,
    UsageError,
    add_common,
    add_device_option,
    add_inputs,
    add_sample,
    device_request,
    inputs,
    naming,
    nonnegative_int,
    note,
    positive_int,
    progress_factory,
    storage_options,
)

DESCRIPTION = """\
Write every binary layer of FILE that has a mask to OUT, decoding --batch-frames
frames at a time. OUT ending in .zarr: OME-Zarr (NGFF 0.5), the image with the
layers as labels in the layers' colours, written by nd2's writer. OUT ending in
.ome.tif, .ome.tiff, .tif or .tiff: OME-TIFF, all layers in one series (one
channel per layer, named after it). OUT is written under a temporary name beside
it and moved into place when complete; an error, Ctrl-C or SIGTERM leaves
nothing behind. OUT may never be FILE (or a link to it), hold FILE, be an ND2 file
or end in .nd2, even with --overwrite.
"""


def _chunks(text: str) -> str | tuple[int, int]:
    if text == "auto":
        return "auto"
    parts = text.replace("x", ",").split(",")
    try:
        y, x = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or Y,X (e.g. 512,512), not {text!r}"
        ) from None
    if y < 1 or x < 1:
        raise argparse.ArgumentTypeError(f"chunk sides must be at least 1: {text!r}")
    return (y, x)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``export``."""
    p = subparsers.add_parser(
        "export",
        usage="%(prog)s [options] FILE OUT\n       %(prog)s [options] --sample OUT",
        help="write the binary layers as OME-Zarr or OME-TIFF",
        description=DESCRIPTION,
    )
    p.add_argument(
        "paths",
        nargs="*",
        metavar="FILE OUT",
        help="the ND2 file (a path or URL) and the output path (only OUT with "
        "--sample)",
    )
    add_sample(p)
    add_inputs(p)
    p.add_argument(
        "--format", choices=("zarr", "tiff"), help="output format (default: from OUT)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT if it exists (an earlier export; never an input)",
    )
    p.add_argument(
        "--position",
        type=nonnegative_int,
        metavar="N",
        help="only XY position N (index along the P loop)",
    )
    zarr = p.add_argument_group("OME-Zarr")
    zarr.add_argument(
        "--chunks",
        type=_chunks,
        default="auto",
        metavar="auto|Y,X",
        help="chunk shape: nd2's automatic chunks (about 4 MB, one plane deep; "
        "default) or Y,X pixels of one plane",
    )
    zarr.add_argument(
        "--properties",
        action="store_true",
        help="carry each layer's object table (area, centroid, frame and its loop "
        "coordinates) in its label image's metadata",
    )
    zarr.add_argument(
        "--labels-only",
        action="store_true",
        help="write the labels alone (a standalone labels group), not the image",
    )
    tiff = p.add_argument_group("OME-TIFF")
    tiff.add_argument(
        "--split",
        action="store_true",
        help="one file per layer, OUT's stem + _NAME + OUT's suffix",
    )
    p.add_argument(
        "--batch-frames",
        type=positive_int,
        default=DEFAULT_BATCH_FRAMES,
        metavar="N",
        help=f"frames decoded at a time (default {DEFAULT_BATCH_FRAMES})",
    )
    add_device_option(p, what="where to decode")
    add_common(p, quiet="no progress bar, notes or summary")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """``nd2gpu export``."""
    if args.sample:
        if len(args.paths) != 1:
            raise UsageError("export --sample takes one path: OUT")
    elif len(args.paths) != 2:
        raise UsageError(
            "export takes two paths, FILE OUT (got "
            f"{len(args.paths)}); use --sample OUT for the sample file"
        )
    *files, out = args.paths
    with inputs(files, args.sample, storage_options(args)) as (item,):
        return _export(args, item, Path(out))


def _export(args: argparse.Namespace, item: Input, out: Path) -> int:
    try:
        kind = export_format(out, args.format)
    except ValueError as e:
        raise UsageError(str(e)) from None
    zarr_only = args.labels_only or args.properties or args.chunks != "auto"
    if kind == "tiff" and zarr_only:
        raise UsageError(
            "--labels-only, --properties and --chunks apply to OME-Zarr (.zarr) only"
        )
    if kind == "zarr" and args.split:
        raise UsageError("--split applies to OME-TIFF only")
    with (
        naming(item, writes=True),
        _warnings_as_notes(enabled=not args.quiet),
        _progress_bar(enabled=not args.quiet) as progress,
    ):
        what = export(
            item.source,
            out,
            format=kind,
            storage_options=item.open_kwargs.get("storage_options"),
            overwrite=args.overwrite,
            position=args.position,
            chunks=args.chunks,
            labels_only=args.labels_only,
            properties=args.properties,
            split=args.split,
            device=device_request(args),
            batch_frames=args.batch_frames,
            progress=progress,
        )
    if not args.quiet:
        print(f"wrote {out}: {what}")
    return 0


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator[ProgressCallback | None]:
    """``export``'s progress callback drawing a tqdm bar (None where none is drawn)."""
    factory = progress_factory("export", "plane", enabled=enabled)
    if factory is None:
        yield None
        return
    bars: list[Any] = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(factory(total))
        bars[0].update(done - bars[0].n)

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


@contextlib.contextmanager
def _warnings_as_notes(enabled: bool) -> Iterator[None]:
    """Show the export's UserWarnings as ``nd2gpu: note:`` lines (or not at all)."""
    with warnings.catch_warnings():
        warnings.simplefilter("always" if enabled else "ignore", UserWarning)
        if enabled:
            warnings.showwarning = lambda message, *_, **__: note(str(message))
        yield


__all__ = ["add_parser", "run"]
