"""The ``nd2gpu`` command: inspect, export, measure and benchmark binary layers.

::

    nd2gpu info [FILE ...] [--json] [--objects]
    nd2gpu export FILE OUT [--format {zarr,tiff}] [--overwrite] [-q] ...
    nd2gpu bench [FILE] [--json] [--repeats N] [--device {all,cpu,cuda}]
    nd2gpu objects FILE [-o TABLE.csv|TABLE.parquet] [--layer L] [--device D]

Each command lives in its own module, which registers it (``add_parser``); a new
command is one module and one entry in `COMMANDS`. Exit statuses: 0 success, 1
an error (one line on stderr, ``nd2gpu: error: ...``), 2 a usage error or an
output that may not be written, 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM); see `interrupts`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import ModuleType

import nd2

from .. import __version__
from .._write.outputs import OutputRefusedError
from . import bench, export, info, objects
from .common import PROG, USER_ERRORS, UsageError, error_line, sample_path
from .interrupts import handled_interrupts, ignore_interrupts

#: The commands, in the order ``--help`` lists them: modules with ``add_parser``.
COMMANDS: tuple[ModuleType, ...] = (info, export, bench, objects)

#: Errors reported with exit status 2: the command cannot run as given.
USAGE_ERRORS: tuple[type[BaseException], ...] = (
    UsageError,
    OutputRefusedError,
    FileExistsError,
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``nd2gpu`` command line, with every command registered."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect, export and benchmark the binary layers (segmentation "
        "masks) of Nikon ND2 files.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"{PROG} {__version__} (nd2 {nd2.__version__})",
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="show the full traceback of an error instead of one line "
        "(also accepted after the command)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


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
        stderr), 2 on a usage error or a refused output, 130 when interrupted
        (Ctrl-C), 143 when terminated (SIGTERM).
    """
    return _run(argv, restore_signals=True)


def entry() -> int:
    """The ``nd2gpu`` program (console script, ``python -m nd2gpu``).

    As `main`; then SIGINT and SIGTERM are ignored, so that none can cut the
    interpreter's exit short (it would otherwise put their default actions
    back, and a late Ctrl-C would kill a command that has completed).
    """
    status = _run(None, restore_signals=False)
    ignore_interrupts()
    return status


def _run(argv: Sequence[str] | None, *, restore_signals: bool) -> int:
    with handled_interrupts(restore=restore_signals) as interrupts:
        try:
            return _command(argv)
        except KeyboardInterrupt:
            interrupts.delivered = True
            print(f"{PROG}: {interrupts.message}", file=sys.stderr)
            return interrupts.status


def _command(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error argparse reported
        return e.code if isinstance(e.code, int) else 2
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader went away (``nd2gpu info | head``): stop quietly, like other
        # command-line tools; stdout is pointed at devnull so the interpreter's
        # final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except USAGE_ERRORS as e:
        if args.traceback:
            raise
        print(f"{PROG}: error: {error_line(e)}", file=sys.stderr)
        return 2
    except USER_ERRORS as e:
        if args.traceback:
            raise
        print(f"{PROG}: error: {error_line(e)}", file=sys.stderr)
        return 1


__all__ = ["COMMANDS", "build_parser", "entry", "main", "sample_path"]
