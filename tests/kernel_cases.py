"""What the kernel tests share: the painting reference, run-list generators, and
how CUDA kernels run here (numba's CUDA simulator unless a GPU is present).

tests/conftest.py turns the simulator on (NUMBA_ENABLE_CUDASIM=1) before numba is
first imported when no GPU driver is present.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from nd2gpu._backends.cuda.probe import probe

SIMULATOR = probe().simulator
REAL_GPU = probe().ok and not SIMULATOR
needs_cuda = pytest.mark.skipif(
    not probe().ok, reason=f"the CUDA back end is not usable: {probe().message}"
)
# The simulator runs every CUDA thread as a Python thread: keep launches small.
SMALL_LAUNCH = {"block": 16, "items": 2} if SIMULATOR else {}
FEW = settings(
    max_examples=25 if SIMULATOR else 100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
MANY = settings(max_examples=100, deadline=None)


@dataclass
class Frames:
    """Frames' runs as the run list holds them (frame-local, one after another:
    frame ``i``'s are ``spans[i, 0]:spans[i, 1]``)."""

    nrows: int
    ncols: int
    rows: np.ndarray
    cols: np.ndarray
    lengths: np.ndarray
    values: np.ndarray
    spans: np.ndarray

    @property
    def n_frames(self) -> int:
        return int(self.spans.shape[0])

    @property
    def n_runs(self) -> int:
        return int(self.rows.shape[0])

    def paint(self, i: int) -> np.ndarray:
        """Frame ``i`` painted in list order: the definition of the result."""
        out = np.zeros((self.nrows, self.ncols), np.uint16)
        lo, hi = self.spans[i]
        for j in range(lo, hi):
            r, c, n = int(self.rows[j]), int(self.cols[j]), int(self.lengths[j])
            out[r, c : c + n] = self.values[j]
        return out

    def overlaps(self, i: int) -> bool:
        """Whether two of frame ``i``'s runs share a pixel (brute force)."""
        cover = np.zeros((self.nrows, self.ncols), np.int64)
        lo, hi = self.spans[i]
        for j in range(lo, hi):
            r, c, n = int(self.rows[j]), int(self.cols[j]), int(self.lengths[j])
            cover[r, c : c + n] += 1
        return bool(cover.max(initial=0) > 1)


def frames_of(
    nrows: int, ncols: int, runs: list[list[tuple[int, int, int, int]]]
) -> Frames:
    """Frames from ``(row, col, length, value)`` runs per frame."""
    flat = [run for frame in runs for run in frame]
    bounds = np.cumsum([0, *(len(frame) for frame in runs)])
    a = np.array(flat, np.int64).reshape(-1, 4)
    return Frames(
        nrows,
        ncols,
        a[:, 0].astype(np.int32),
        a[:, 1].astype(np.int32),
        a[:, 2].astype(np.int32),
        a[:, 3].astype(np.uint16),
        np.stack([bounds[:-1], bounds[1:]], 1).astype(np.int64),
    )


@st.composite
def run_frames(
    draw, *, overlap: bool, max_frames: int = 4, max_pixels: int = 90, max_cols=30
):
    """Frames of runs inside one row each (as the parser clips them). Without
    ``overlap`` they are the maximal runs of random label images (value 0
    runs included), in a random order; with it, random runs."""
    ncols = draw(st.integers(1, max_cols))
    nrows = draw(st.integers(1, max(1, max_pixels // ncols)))
    n_frames = draw(st.integers(1, max_frames))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = np.array([0, 1, 2, 255, 256, 65534, 65535])
    frames = []
    for _ in range(n_frames):
        runs = []
        if overlap:
            for _ in range(int(rng.integers(0, 12))):
                row, col = int(rng.integers(nrows)), int(rng.integers(ncols))
                n = int(rng.integers(1, ncols - col + 1))
                runs.append((row, col, n, int(rng.choice(values))))
        else:
            image = rng.choice(values[:4], (nrows, ncols)) * (rng.random() < 0.9)
            image = np.repeat(image, 1 + rng.integers(0, 6, ncols), axis=1)[:, :ncols]
            for row in range(nrows):
                edges = np.flatnonzero(np.diff(image[row], prepend=-1, append=-1))
                for a, b in itertools.pairwise(edges):
                    runs.append((row, int(a), int(b - a), int(image[row, a])))
            if rng.random() < 0.5:
                rng.shuffle(runs)
        frames.append(runs)
    return frames_of(nrows, ncols, frames)
