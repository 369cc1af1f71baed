"""What the kernel tests share: the painting reference, run-table generators, and
how CUDA kernels run here (numba's CUDA simulator unless a GPU is present).

tests/conftest.py turns the simulator on (NUMBA_ENABLE_CUDASIM=1) before numba is
first imported when no GPU driver is present.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from nd2gpu._backends.cuda.probe import probe
from nd2gpu.kernels._run_table import RunTable

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


# --- reference and generators ------------------------------------------------


def paint(starts, lengths, values, size: int) -> np.ndarray:
    """Sequential painting in table order: the definition of the result."""
    out = np.zeros(size, np.uint16)
    for s, n, v in zip(starts.tolist(), lengths.tolist(), values.tolist(), strict=True):
        out[s : s + n] = v
    return out


def coverage(table: RunTable, size: int) -> np.ndarray:
    cov = np.zeros(size, np.int64)
    for s, n in zip(table.starts.tolist(), table.lengths.tolist(), strict=True):
        cov[s : s + n] += 1
    return cov


@st.composite
def run_batches(
    draw, *, overlap: bool, max_frames: int = 4, max_pixels: int = 90, max_cols=30
):
    """A run table for a few frames, its frame bounds and frame pixel count.

    Runs lie inside one row (as the parser clips them). Without ``overlap``
    they are the maximal runs of a random label image, in a random order.
    """
    ncols = draw(st.integers(1, max_cols))
    nrows = draw(st.integers(1, max(1, max_pixels // ncols)))
    n_frames = draw(st.integers(1, max_frames))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    fp = nrows * ncols
    starts, lengths, bounds = [], [], []
    for f in range(n_frames):
        lo = len(starts)
        if overlap:
            for _ in range(int(rng.integers(0, 12))):
                row, col = int(rng.integers(nrows)), int(rng.integers(ncols))
                starts.append(f * fp + row * ncols + col)
                lengths.append(int(rng.integers(1, ncols - col + 1)))
        else:
            image = rng.integers(0, 4, (nrows, ncols)) * (rng.random() < 0.9)
            image = np.repeat(image, 1 + rng.integers(0, 6, ncols), axis=1)[:, :ncols]
            frame_runs = []
            for row in range(nrows):
                edges = np.flatnonzero(np.diff(image[row], prepend=-1, append=-1))
                for a, b in itertools.pairwise(edges):
                    if image[row, a]:
                        frame_runs.append((f * fp + row * ncols + a, b - a))
            if rng.random() < 0.5:
                rng.shuffle(frame_runs)
            starts += [s for s, _ in frame_runs]
            lengths += [n for _, n in frame_runs]
        bounds.append((lo, len(starts), f * fp))
    values = rng.choice(np.array([1, 2, 255, 256, 65534, 65535]), len(starts))
    table = RunTable.from_runs(
        np.array(starts, np.int64), np.array(lengths, np.int64), values
    )
    return table, np.array(bounds, np.int64).reshape(-1, 3), fp


def brute_force_overlap(table: RunTable, lo: int, hi: int, base: int, fp: int):
    cov = np.zeros(fp, np.int64)
    for i in range(lo, hi):
        a = int(table.starts[i]) - base
        cov[a : a + int(table.lengths[i])] += 1
    return bool(cov.max(initial=0) > 1)
