"""What the ``nd2gpu`` commands share: options, input files, errors, progress.

- the sample file shipped in the package and the input paths of a command,
- the options every command takes (``--traceback``) and argument types,
- `CLIError` (one line, exit status 1) and `UsageError` (exit status 2),
- progress bars: tqdm on stderr when stderr is a terminal, else nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import struct
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .._device import DEVICE_NAMES, DeviceRequest, check_request
from .._errors import DeviceUnavailableError

PROG = "nd2gpu"
SAMPLE = "sample.nd2"
#: Seconds of work before a progress bar shows (tqdm's ``delay``).
PROGRESS_DELAY = 0.5


class CLIError(Exception):
    """A problem reported to the user as one line, exit status 1."""


class UsageError(Exception):
    """A command that cannot run as given: one line, exit status 2."""


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


def error_line(exc: BaseException) -> str:
    """The one line that reports ``exc`` (without the program name)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    elif isinstance(exc, KeyError):
        text = f"missing key {exc}"
    else:
        text = str(exc) or type(exc).__name__
    if isinstance(exc, (struct.error, IndexError, KeyError, EOFError)):
        text = f"unreadable file ({type(exc).__name__}: {text})"
    return " ".join(text.split())


# --------------------------------------------------------------------------- files


@contextlib.contextmanager
def sample_path() -> Iterator[Path]:
    """The path of the sample ND2 file shipped in the package (a real file).

    Yields
    ------
    pathlib.Path
        Valid inside the ``with`` block (extracted to a temporary file when the
        package is installed as a zip).
    """
    ref = importlib.resources.files("nd2gpu") / "data" / SAMPLE
    with importlib.resources.as_file(ref) as path:
        yield Path(path)


@contextlib.contextmanager
def input_paths(files: Sequence[str], sample: bool) -> Iterator[list[Path]]:
    """The paths of ``files``, with the sample file first when ``sample``."""
    if not sample:
        yield [Path(f) for f in files]
        return
    with sample_path() as path:
        yield [path, *(Path(f) for f in files)]


# ------------------------------------------------------------------------- options


def add_common(parser: argparse.ArgumentParser, *, quiet: str | None = None) -> None:
    """The options every command takes: ``--traceback`` (and ``-q`` when given)."""
    parser.add_argument(
        "--traceback",
        action="store_true",
        default=argparse.SUPPRESS,  # keeps a --traceback given before the command
        help="show the full traceback of an error instead of one line",
    )
    if quiet is not None:
        parser.add_argument("-q", "--quiet", action="store_true", help=quiet)


def add_sample(parser: argparse.ArgumentParser) -> None:
    """``--sample``: use the small file shipped with nd2gpu as the input."""
    parser.add_argument(
        "--sample",
        action="store_true",
        help="use the small sample file shipped with nd2gpu as input",
    )


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
    return value


def positive_int(text: str) -> int:
    """An argument type: an integer of at least 1."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """An argument type: an integer of at least 0."""
    return _int_at_least(text, 0)


# ------------------------------------------------------------------------ progress


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (progress bars are drawn only there)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


def progress_factory(desc: str, unit: str, enabled: bool = True) -> Any:
    """A factory of tqdm bars on stderr, or None where none should be drawn.

    None when ``enabled`` is False, stderr is not a terminal (logs get no
    carriage returns) or tqdm is not installed (it comes with the ``export``
    extra). A bar appears only once the work has lasted ``PROGRESS_DELAY``.
    """
    if not enabled or not stderr_is_terminal():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None

    def make(total: int) -> Any:
        return tqdm(
            total=total,
            desc=f"{PROG} {desc}",
            unit=unit,
            file=sys.stderr,
            delay=PROGRESS_DELAY,
            leave=False,
        )

    return make


def note(text: str) -> None:
    """A line about something the command left out or chose, on stderr."""
    print(f"{PROG}: note: {text}", file=sys.stderr)


def add_device_option(
    parser: argparse.ArgumentParser, *, default: str, help: str
) -> None:
    """``--device {auto,cpu,cuda}``, parsed into a device request."""
    parser.add_argument(
        "--device", type=check_request, choices=DEVICE_NAMES, default=default, help=help
    )


def device_request(args: argparse.Namespace) -> DeviceRequest | None:
    """The ``--device`` of a parsed command line."""
    return check_request(args.device)
