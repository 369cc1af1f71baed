"""What the ``nd2gpu`` commands share: the input file, its layers, progress.

- the sample file shipped in the package and the input path of a command,
- opening a file's binary layers, with one-line errors (`CLIError`),
- a progress bar on stderr.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._layers import BinaryLayers
from .._nd2file import ND2File

PROG = "nd2gpu"
SAMPLE = "sample.nd2"


class CLIError(Exception):
    """A problem reported to the user as one line, without a traceback."""


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
    ref = importlib.resources.files("nd2gpu").joinpath("data", SAMPLE)
    with importlib.resources.as_file(ref) as path:
        yield Path(path)


@contextlib.contextmanager
def input_path(file: str | None) -> Iterator[Path]:
    """The path of ``file``, or of the sample file when ``file`` is None."""
    if file is None:
        with sample_path() as path:
            yield path
    else:
        yield Path(file)


@contextlib.contextmanager
def open_layers(path: Path, device: str) -> Iterator[tuple[ND2File, BinaryLayers]]:
    """The open file at ``path`` and its binary layers (`CLIError` if it has none)."""
    if path.is_dir():
        raise CLIError(f"{path}: is a directory, not an ND2 file")
    with ND2File(path, device=device) as f:
        layers = f.binary_data
        if layers is None:
            raise CLIError(f"{path}: the file has no binary layers")
        yield f, layers


# ------------------------------------------------------------------------ progress


class Progress:
    """tqdm when it is installed, else a counter on stderr.

    Nothing is shown before the first update, so an error before any work
    leaves stderr to the one error line.
    """

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.n = total, desc, 0
        self._started = False
        self._bar: Any = None

    def _start(self) -> None:
        self._started = True
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(
            total=self.total, desc=self.desc, unit="frame", file=sys.stderr
        )

    def update(self, n: int) -> None:
        if not self._started:
            self._start()
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        else:
            sys.stderr.write(f"\r{self.desc}: {self.n}/{self.total} frames")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._started:
            sys.stderr.write("\n")
