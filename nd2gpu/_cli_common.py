"""What the ``nd2gpu`` commands share: the input file, its layers, frames, progress.

- the sample file shipped in the package and the input path of a command,
- opening a file's binary layers, with one-line errors (`CLIError`),
- the frames of a layer: which are present, decoded to NumPy a batch at a time,
- a progress bar on stderr.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._cuda_backend import to_host
from ._layers import BinaryLayer, BinaryLayers
from ._nd2file import ND2File

PROG = "nd2gpu"
SAMPLE = "sample.nd2"
DEFAULT_BATCH_FRAMES = 32
#: nd2's loop types -> the letters of ``nd2.ND2File.sizes``.
LOOP_LETTERS = {"TimeLoop": "T", "NETimeLoop": "T", "XYPosLoop": "P", "ZStackLoop": "Z"}


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


def axis_letters(f: ND2File) -> list[str]:
    """The letter of each loop of ``f`` (T, P, Z; U for others), outermost first."""
    return [LOOP_LETTERS.get(loop.type, "U") for loop in f.experiment]


def rgb_hex(color: int | None) -> str | None:
    """``#rrggbb`` of a layer colour; NIS stores layer colours as 0xAABBGGRR."""
    if color is None:
        return None
    c = int(color)
    return f"#{c & 0xFF:02x}{(c >> 8) & 0xFF:02x}{(c >> 16) & 0xFF:02x}"


# -------------------------------------------------------------------------- frames


def batches(seqs: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    """``seqs`` in consecutive slices of at most ``size``."""
    for start in range(0, len(seqs), size):
        yield seqs[start : start + size]


def host_frames(
    layer: BinaryLayer,
    seqs: Sequence[int],
    batch_frames: int,
    device: str,
    progress: Progress | None = None,
) -> Iterator[np.ndarray]:
    """Frames ``seqs`` of ``layer`` as NumPy, decoded ``batch_frames`` at a time."""
    for batch in batches(seqs, batch_frames):
        block = to_host(layer.decode(batch, device))
        # Counted before handing the frames out: a consumer (tifffile) may stop
        # asking for frames once it has the last one.
        if progress is not None:
            progress.update(len(batch))
        yield from block


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
