"""What the exporters (and the CLI) read off a file: loop letters, colours, frames.

Also how progress is reported: exporters call ``progress(done, total)``
(`progress_counter`); ``info`` draws a bar (`progress_bar`).
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import nd2
import numpy as np

from .._device import DeviceRequest, to_numpy
from .._format.loops import LOOP_AXES
from .._layers import BinaryLayer

DEFAULT_BATCH_FRAMES = 32


class Progress(Protocol):
    """A progress display: told how many more units are done, then closed."""

    def update(self, n: int) -> object: ...

    def close(self) -> None: ...


#: Makes the progress display of a task, given its total number of units.
ProgressFactory = Callable[[int], Progress]
#: Told ``(done, total)`` as an export goes: units done so far, and in all.
ProgressCallback = Callable[[int, int], object]


@contextlib.contextmanager
def progress_counter(
    progress: ProgressCallback | None, total: int
) -> Iterator[Callable[[int], None]]:
    """A ``tick(n)``, safe to call from any thread, that reports to ``progress``.

    ``progress(0, total)`` is called first, then ``progress(done, total)``
    after each tick of ``n > 0`` more units.
    """
    lock = threading.Lock()
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        if progress is None or not n:
            return
        with lock:
            done += n
            progress(done, total)

    if progress is not None:
        progress(0, total)
    yield tick


@contextlib.contextmanager
def progress_bar(
    progress: ProgressFactory | None, total: int
) -> Iterator[Callable[[int], object] | None]:
    """The ``update`` of a display of ``total`` units (None without ``progress``)."""
    bar = None if progress is None else progress(total)
    try:
        yield None if bar is None else bar.update
    finally:
        if bar is not None:
            bar.close()


def axis_letters(f: nd2.ND2File) -> list[str]:
    """The letter of each loop of ``f`` (T, P, Z; U for others), outermost first."""
    return [LOOP_AXES.get(loop.type, "U") for loop in f.experiment]


def position_frames(
    coordinate_shape: Sequence[int], letters: Sequence[str], position: int | None
) -> np.ndarray:
    """The sequence indices of one XY position's frames, in order.

    Every frame when ``position`` is None or there is no P loop.
    """
    frames = np.arange(math.prod(coordinate_shape)).reshape(tuple(coordinate_shape))
    if position is None or "P" not in letters:
        return frames.ravel()
    return frames.take(position, axis=list(letters).index("P")).ravel()


def rgb_hex(color: int | None) -> str | None:
    """``#rrggbb`` of a layer colour; NIS stores layer colours as 0xAABBGGRR."""
    if color is None:
        return None
    c = int(color)
    return f"#{c & 0xFF:02x}{(c >> 8) & 0xFF:02x}{(c >> 16) & 0xFF:02x}"


def host_frames(
    layer: BinaryLayer,
    seqs: Sequence[int],
    batch_frames: int,
    device: DeviceRequest | None,
    done: Callable[[int], object] | None = None,
) -> Iterator[np.ndarray]:
    """Frames ``seqs`` of ``layer`` as NumPy, decoded ``batch_frames`` at a time.

    ``done(n)`` is called as each batch of ``n`` frames is decoded, before its
    frames are handed out (a consumer may stop asking once it has the last).
    """
    for start in range(0, len(seqs), batch_frames):
        batch = seqs[start : start + batch_frames]
        block = to_numpy(layer.decode(list(batch), device))
        if done is not None:
            done(len(batch))
        yield from block
