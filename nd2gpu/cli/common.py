"""What the ``nd2gpu`` commands share: options, input files, errors, progress.

- the sample file shipped in the package, and the inputs of a command: local
  paths and URLs (``http(s)://``, ``s3://``, any fsspec URL; ``file://`` read as
  the local path it names) with ``--storage-option KEY=VALUE``,
- the options every command takes (``--traceback``) and argument types,
- `CLIError` (one line, exit status 1) and `UsageError` (exit status 2),
- progress bars: tqdm on stderr when stderr is a terminal, else nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import json
import struct
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._device import DEVICE_NAMES, DeviceRequest, check_request
from .._errors import DeviceUnavailableError
from .._nd2file import ND2File
from .._sources import file_url_path, is_url, remote_error, source_spec

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


@dataclass(frozen=True)
class Input:
    """One input file of a command: a local path, or a URL read through fsspec.

    Attributes
    ----------
    source : Path or str
        What ``nd2gpu.ND2File`` opens: a ``Path`` for a local file (a ``file://``
        URL as the path it names, so that output checks see it), else the URL.
    storage_options : mapping
        fsspec's options for a URL (``--storage-option``).
    """

    source: Path | str
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The path or URL, as messages name it."""
        return str(self.source)

    @property
    def local(self) -> Path | None:
        """The local path, or None for a URL."""
        return self.source if isinstance(self.source, Path) else None

    @property
    def open_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``nd2.ND2File`` (and ``nd2gpu.ND2File``)."""
        if self.local is not None or not self.storage_options:
            return {}
        return {"storage_options": dict(self.storage_options)}

    def open(self, **kwargs: Any) -> ND2File:
        """The file as an ``nd2gpu.ND2File`` (``kwargs``: its other arguments)."""
        with naming(self):
            if self.local is not None and self.local.is_dir():
                raise CLIError(f"{self.name}: is a directory, not an ND2 file")
            return ND2File(self.source, **self.open_kwargs, **kwargs)

    def size(self) -> int:
        """The file's size in bytes (for a URL, as its server reports it)."""
        if self.local is not None:
            return self.local.stat().st_size
        with naming(self):
            source = source_spec(self.source, dict(self.storage_options)).open()
            source.close()
        return source.size


def parse_input(text: str) -> Path | str:
    """A command-line input: a URL, or a path (``file://`` URLs give theirs)."""
    if not is_url(text):
        return Path(text)
    if urlsplit(text).scheme.lower() == "file":
        try:
            return Path(file_url_path(text))
        except ValueError as e:
            raise UsageError(str(e)) from None
    return text


@contextlib.contextmanager
def naming(item: Input, *, writes: bool = False) -> Iterator[None]:
    """Errors reading ``item`` name it and say what is wrong: a one-line error
    without its path or URL gets it in front; for a URL, an error that says no
    more than the URL, or one of its HTTP client's own, becomes one ``OSError``
    naming the URL and the root cause. ``writes``: the block also writes
    outputs, whose errors are left alone: only an error that says no more than
    the input's name is rewritten."""
    try:
        yield
    except (CLIError, UsageError, DeviceUnavailableError):
        raise
    except Exception as e:
        line = error_line(e) if isinstance(e, USER_ERRORS) else None
        if line != item.name and (writes or (line is not None and item.name in line)):
            raise
        if item.local is None:
            raise remote_error(item.name, "the file", e) from e
        if line is None or line == item.name:
            raise
        raise CLIError(f"{item.name}: {line}") from e


@contextlib.contextmanager
def inputs(
    files: Sequence[str], sample: bool, storage_options: Mapping[str, Any]
) -> Iterator[list[Input]]:
    """The inputs ``files``, with the sample file first when ``sample``."""
    given = [parse_input(f) for f in files]
    if storage_options and all(isinstance(g, Path) for g in given):
        raise UsageError("--storage-option applies to URLs; no input is a URL")
    items = [Input(g, storage_options) for g in given]
    if not sample:
        yield items
        return
    with sample_path() as path:
        yield [Input(path), *items]


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


def storage_option(text: str) -> tuple[str, Any]:
    """An argument type: ``KEY=VALUE``, VALUE a JSON literal (``true``, ``123``,
    ``null``, ``{"region_name": "eu-west-1"}``) or else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


def add_inputs(parser: argparse.ArgumentParser) -> None:
    """``--storage-option KEY=VALUE`` (repeatable): fsspec's options for URLs."""
    parser.add_argument(
        "--storage-option",
        dest="storage_options",
        type=storage_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an fsspec option for URL inputs (http(s)://, s3://, ...), e.g. "
        "anon=true; VALUE is read as JSON when it is (true, 123, null, {...}), "
        "else as a string; repeatable",
    )


def storage_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--storage-option`` values of a parsed command line, as a dict."""
    return dict(args.storage_options)


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


#: Where every command decodes unless ``--device`` says otherwise: NumPy on the
#: CPU, as the library without a device argument.
DEFAULT_DEVICE = "cpu"


def add_device_option(parser: argparse.ArgumentParser, *, what: str) -> None:
    """``--device {auto,cpu,cuda}``, parsed into a device request; ``what`` the
    command does there ("where to decode")."""
    parser.add_argument(
        "--device",
        type=check_request,
        choices=DEVICE_NAMES,
        default=DEFAULT_DEVICE,
        help=f"{what} (default: {DEFAULT_DEVICE}; auto: the GPU when usable, "
        "else the CPU)",
    )


def device_request(args: argparse.Namespace) -> DeviceRequest | None:
    """The ``--device`` of a parsed command line."""
    return check_request(args.device)
