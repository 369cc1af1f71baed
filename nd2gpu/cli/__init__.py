"""The ``nd2gpu`` command: inspect, export and benchmark the binary layers of ND2 files.

Without a FILE, every command uses the small sample file shipped in the package
(``nd2gpu/data/sample.nd2``)::

    nd2gpu info [FILE] [--json]
    nd2gpu export [FILE] OUT [--format {zarr,tiff}] [--batch-frames N] [--quiet]
    nd2gpu bench [FILE] [--repeats N] [--device {all,cpu,cuda}]

Errors (a missing file, a file that is not ND2, a file without binary layers,
corrupt data) print one line, ``nd2gpu: error: ...``, on stderr and exit with
status 1; usage errors exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
from collections.abc import Sequence
from pathlib import Path

from .._errors import DeviceUnavailableError
from .._write.export import export_labels
from .._write.layer_frames import DEFAULT_BATCH_FRAMES
from .bench import cmd_bench
from .common import PROG, CLIError, Progress, input_path, sample_path
from .info import cmd_info
from .objects import add_parser as add_objects_parser

#: What ends a command with one line on stderr: the file cannot be read, is not
#: ND2, its data are corrupt (nd2gpu.DecodeError is a ValueError; nd2 raises
#: OSError and ValueError, and struct/index/key errors on truncated metadata), or
#: the device cannot be used.
USER_ERRORS: tuple[type[BaseException], ...] = (
    CLIError,
    OSError,
    ValueError,
    KeyError,
    IndexError,
    EOFError,
    struct.error,
    MemoryError,
    DeviceUnavailableError,
)


def cmd_export(args: argparse.Namespace) -> int:
    """``nd2gpu export``: write the binary layers as OME-Zarr or OME-TIFF."""
    if len(args.paths) > 2:
        raise CLIError("export takes [FILE] OUT: at most two paths")
    file, out = (None, args.paths[0]) if len(args.paths) == 1 else args.paths
    with input_path(file) as path:
        what = export_labels(
            path,
            out,
            fmt=args.format,
            batch_frames=args.batch_frames,
            device=args.device,
            overwrite=args.overwrite,
            progress=None if args.quiet else _export_progress,
            note=None if args.quiet else _note,
        )
    if not args.quiet:
        print(f"wrote {Path(out)}: {what}")
    return 0


def _export_progress(total: int) -> Progress:
    return Progress(total, f"{PROG} export")


def _note(text: str) -> None:
    print(f"{PROG}: note: {text}", file=sys.stderr)


# ---------------------------------------------------------------------------- main


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect, export and benchmark the binary layers (segmentation "
        "masks) of Nikon ND2 files. Without FILE, the sample file shipped with "
        "nd2gpu is used.",
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="show the full traceback of an error instead of one line",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to decode (default: auto, the GPU when usable)",
    )
    batch = argparse.ArgumentParser(add_help=False)
    batch.add_argument(
        "--batch-frames",
        type=_positive_int,
        default=DEFAULT_BATCH_FRAMES,
        metavar="N",
        help=f"frames decoded at a time (default {DEFAULT_BATCH_FRAMES})",
    )

    p = sub.add_parser(
        "info",
        parents=[device, batch],
        help="describe the binary layers of a file",
        description="Layers, names, components, colors, frame and coordinate "
        "shapes, frames present and objects (distinct nonzero ids) per frame.",
    )
    p.add_argument("file", nargs="?", metavar="FILE", help="ND2 file (default: sample)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "export",
        parents=[device, batch],
        usage="%(prog)s [options] [FILE] OUT",
        help="write the binary layers as OME-Zarr or OME-TIFF",
        description="Write every binary layer that has a mask, streaming "
        "--batch-frames frames at a time. OUT ending in .zarr: OME-Zarr (NGFF 0.4, "
        "Zarr v2 format): one label image per layer under OUT/labels/NAME, axes "
        "[t] [p] [z] y x. OUT ending in .ome.tif, .ome.tiff, .tif or .tiff: one "
        "OME-TIFF file with one series per layer (per layer and XY position when "
        "the file has a P loop), axes in the file's loop order.",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="[FILE] OUT",
        help="the ND2 file (default: the sample) and the output path",
    )
    p.add_argument(
        "--format", choices=("zarr", "tiff"), help="output format (default: from OUT)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "bench",
        help="time decoding on this machine (nd2gpu on cpu and cuda, and nd2)",
        description="Decode every binary layer of FILE, one warm-up run and then "
        "--repeats timed runs, and report the median per frame.",
    )
    p.add_argument("file", nargs="?", metavar="FILE", help="ND2 file (default: sample)")
    p.add_argument(
        "--repeats", type=_positive_int, default=5, metavar="N", help="timed runs"
    )
    p.add_argument(
        "--device",
        choices=("all", "cpu", "cuda"),
        default="all",
        help="devices to time (default: all; cuda is skipped when not usable)",
    )
    p.add_argument("--no-nd2", action="store_true", help="do not time nd2")
    p.set_defaults(func=cmd_bench)
    add_objects_parser(sub)
    return parser


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    elif isinstance(exc, KeyError):
        text = f"missing key {exc}"
    else:
        text = str(exc) or type(exc).__name__
    if isinstance(exc, (struct.error, IndexError, KeyError, EOFError)):
        text = f"unreadable file ({type(exc).__name__}: {text})"
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nd2gpu`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (without the program name); None reads ``sys.argv``.

    Returns
    -------
    int
        The exit status: 0 on success, 1 on an error (reported as one line on
        stderr), 2 on a usage error, 130 when interrupted.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse has reported
        return e.code if isinstance(e.code, int) else 2
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader went away (``nd2gpu info | head``): stop quietly, like other
        # command-line tools; stdout is pointed at devnull so the interpreter's
        # final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if args.traceback:
            raise
        print(f"{PROG}: error: {_message(e)}", file=sys.stderr)
        return 1


__all__ = ["main", "sample_path"]
