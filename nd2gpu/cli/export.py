"""``nd2gpu export FILE OUT``: the binary layers as OME-Zarr or OME-TIFF."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._write.export import export_format, export_labels
from .._write.layer_frames import DEFAULT_BATCH_FRAMES
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
layers as labels, written by nd2's writer. OUT ending in .ome.tif, .ome.tiff,
.tif or .tiff: OME-TIFF, all layers in one series (one channel per layer, named
after it). OUT is written under a temporary name beside it and moved into place
when complete. OUT may never be FILE (or a link to it), hold FILE, be an ND2 file
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
    if kind == "tiff" and (args.labels_only or args.chunks != "auto"):
        raise UsageError("--labels-only and --chunks apply to OME-Zarr (.zarr) only")
    if kind == "zarr" and args.split:
        raise UsageError("--split applies to OME-TIFF only")
    with naming(item, writes=True):
        what = export_labels(
            item.source,
            out,
            storage_options=item.open_kwargs.get("storage_options"),
            fmt=kind,
            batch_frames=args.batch_frames,
            device=device_request(args),
            overwrite=args.overwrite,
            position=args.position,
            chunks=args.chunks,
            labels_only=args.labels_only,
            split=args.split,
            progress=progress_factory("export", "plane", enabled=not args.quiet),
            note=None if args.quiet else note,
        )
    if not args.quiet:
        print(f"wrote {out}: {what}")
    return 0


__all__ = ["add_parser", "run"]
