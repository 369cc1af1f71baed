"""Regenerate ``sample.nd2``, the small ND2 file shipped with nd2gpu.

The file is what the ``nd2gpu`` command uses when it is given no file. It holds
synthetic cells: loops T=3, Z=2, 64x64 frames, two binary layers ("cells" and
"nuclei", a nucleus carrying its cell's id) and a uint8 image. The same numbers
give the same bytes every time::

    python tools/make_sample.py            # rewrites nd2gpu/data/sample.nd2
    python tools/make_sample.py OUT.nd2

(tests/test_cli.py checks that the shipped file is what this writes.)

64x64 keeps the file near 125 kB: every chunk of an ND2 file starts on a 4 KiB
boundary, so the image frames dominate the size.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import nd2gpu

SEED = 20240607
T, Z, SIZE = 3, 2, 64
N_CELLS = 10
#: Where the package keeps the sample (package data of ``nd2gpu.data``).
SAMPLE = Path(__file__).resolve().parents[1] / "nd2gpu" / "data" / "sample.nd2"


def _ellipse(cy: float, cx: float, ry: float, rx: float, angle: float) -> np.ndarray:
    y, x = np.mgrid[:SIZE, :SIZE]
    dy, dx = y - cy, x - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def make_labels() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The sample's label images and image frames, shape ``(T, Z, SIZE, SIZE)``."""
    rng = np.random.default_rng(SEED)
    centers: list[np.ndarray] = []
    while len(centers) < N_CELLS:
        c = rng.uniform(8, SIZE - 8, 2)
        if all(np.hypot(*(c - o)) > 12 for o in centers):
            centers.append(c)
    radii = rng.uniform(4.0, 7.0, (N_CELLS, 2))
    angles = rng.uniform(0, np.pi, N_CELLS)
    drift = rng.normal(0, 1.2, (N_CELLS, 2))
    cells = np.zeros((T, Z, SIZE, SIZE), np.uint16)
    nuclei = np.zeros_like(cells)
    for t in range(T):
        for z in range(Z):
            scale = 1.0 - 0.2 * z
            for i, center in enumerate(centers):
                cell_id = i + 1
                if (cell_id == N_CELLS and t == 0) or (cell_id == 3 and t == T - 1):
                    continue  # a cell that appears, one that leaves
                cy, cx = np.clip(center + t * drift[i], 6, SIZE - 7)
                ry, rx = radii[i] * scale
                cells[t, z][_ellipse(cy, cx, ry, rx, angles[i])] = cell_id
                inside = _ellipse(cy, cx, 0.45 * ry, 0.45 * rx, angles[i])
                nuclei[t, z][inside & (cells[t, z] == cell_id)] = cell_id
    noise = rng.integers(0, 20, cells.shape)
    image = (10 + 60 * (cells > 0) + 110 * (nuclei > 0) + noise).astype(np.uint8)
    return {"cells": cells, "nuclei": nuclei}, image


def main(argv: list[str] | None = None) -> None:
    """Write the sample to ``argv[0]``, or to the package's ``SAMPLE``."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else SAMPLE
    labels, image = make_labels()
    nd2gpu.write_nd2(out, labels, loops=[("T", T), ("Z", Z)], image=image)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
