"""The benchmark workloads, as label images (built reproducibly).

- ``cells``: about 600 non-overlapping elliptical objects of radius 6-30 px per
  2048x2048 frame: about 22,000 row records and 22,000 runs (44,000 records).
- ``tiny``: about 20,000 objects of 1-3 px: many very short runs.
- ``dense``: a few large objects: few, long runs.
"""

from __future__ import annotations

import numpy as np

FRAME_SHAPE = (2048, 2048)


def _place_ellipses(
    rng: np.random.Generator,
    shape: tuple[int, int],
    n: int,
    radius: tuple[float, float],
) -> np.ndarray:
    out = np.zeros(shape, np.uint16)
    label = 0
    for _ in range(20 * n):
        if label == n:
            break
        ry, rx = rng.uniform(*radius, size=2)
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        y0, y1 = max(int(cy - ry), 0), min(int(cy + ry) + 2, shape[0])
        x0, x1 = max(int(cx - rx), 0), min(int(cx + rx) + 2, shape[1])
        yy = (np.arange(y0, y1)[:, None] - cy) / ry
        xx = (np.arange(x0, x1)[None, :] - cx) / rx
        r2 = yy**2 + xx**2
        body = r2 <= 1
        window = out[y0:y1, x0:x1]
        if not body.any() or window[body].any():
            continue
        label += 1
        window[body] = label
    return out


def cells(rng: np.random.Generator, shape=FRAME_SHAPE) -> np.ndarray:
    """~600 elliptical cells of radius 6-30 px."""
    return _place_ellipses(rng, shape, 600, (6, 30))


def tiny(rng: np.random.Generator, shape=FRAME_SHAPE) -> np.ndarray:
    """~20,000 objects of 1-3 px."""
    out = np.zeros(shape, np.uint16)
    n = 20_000
    ys = rng.integers(0, shape[0], n)
    xs = rng.integers(0, shape[1] - 3, n)
    widths = rng.integers(1, 4, n)
    for label, (y, x, w) in enumerate(zip(ys, xs, widths, strict=True), start=1):
        out[y, x : x + w] = label
    return out


def dense(rng: np.random.Generator, shape=FRAME_SHAPE) -> np.ndarray:
    """A few large ellipses: long runs."""
    return _place_ellipses(rng, shape, 6, (400, 900))


WORKLOADS = {"cells": cells, "tiny": tiny, "dense": dense}


def frames(name: str, n_frames: int, seed: int = 0) -> np.ndarray:
    """``(n_frames, 2048, 2048)`` uint16 labels of workload ``name``."""
    rng = np.random.default_rng(seed)
    return np.stack([WORKLOADS[name](rng) for _ in range(n_frames)])
