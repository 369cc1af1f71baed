"""What bench.py (CPU) and gpu_bench.py (GPU) share: the workload files, their
statistics, the raw frame payloads, and writing results.

Timing helpers are nd2gpu's own (``nd2gpu.cli.timing``), shared with
``nd2gpu bench``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nd2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from workloads import FRAME_SHAPE, WORKLOADS, frames

import nd2gpu
from nd2gpu._format.chunk_index import ChunkIndex
from nd2gpu._format.container import binary_frame_chunk_name
from nd2gpu._format.mask_stream import MASK_PREFIX_BYTES

RESULTS = Path(__file__).parent / "results"


def parse_shape(text: str) -> tuple[int, int]:
    """``"2048x2048"`` -> ``(2048, 2048)``."""
    ny, nx = (int(n) for n in text.lower().split("x"))
    if ny < 8 or nx < 8:
        raise ValueError(f"frame shape {text} is smaller than 8x8")
    return ny, nx


def workload_labels(
    name: str, n_frames: int, shape: tuple[int, int] = FRAME_SHAPE
) -> np.ndarray:
    """``(n_frames, *shape)`` labels of workload ``name`` (workloads.frames at the
    standard shape; the same generators at another, for quick runs)."""
    if tuple(shape) == FRAME_SHAPE:
        return frames(name, n_frames)
    rng = np.random.default_rng(0)
    return np.stack([WORKLOADS[name](rng, tuple(shape)) for _ in range(n_frames)])


def build(
    workdir: Path, name: str, n_frames: int, shape: tuple[int, int] = FRAME_SHAPE
) -> tuple[Path, np.ndarray, dict]:
    """Write workload ``name`` as an ND2 file; its path, labels and statistics."""
    labels = workload_labels(name, n_frames, shape)
    path = nd2gpu.write_nd2(
        workdir / f"{name}.nd2", {name: labels}, loops=[("T", n_frames)]
    )
    left = np.pad(labels, ((0, 0), (0, 0), (1, 0)))[..., :-1]
    runs = int(((labels != 0) & (labels != left)).sum())
    rows = sum(
        len(np.unique(np.nonzero(f)[0].astype(np.int64) * 65536 + f[f != 0]))
        for f in labels
    )
    stats = {
        "objects_per_frame": sum(len(np.unique(f)) - 1 for f in labels) // n_frames,
        "rows_per_frame": rows // n_frames,
        "runs_per_frame": runs // n_frames,
        "file_bytes_per_frame": path.stat().st_size // n_frames,
    }
    return path, labels, stats


def payloads(path: Path) -> list[bytes]:
    """The zlib payload of every frame of the file's first binary layer."""
    with nd2.ND2File(path) as f:
        n = len(f.binary_data[0])
        tag = f.binary_data[0].file_tag
    with ChunkIndex(path) as index:
        return [
            index.read(binary_frame_chunk_name(tag, seq))[MASK_PREFIX_BYTES:]
            for seq in range(n)
        ]


def read_nd2(path: Path) -> np.ndarray:
    """The reference: ``np.asarray(nd2.ND2File(path).binary_data)``."""
    with nd2.ND2File(path) as f:
        return np.asarray(f.binary_data)


def run_header() -> dict:
    """What every report starts with: the machine, the decode threads, the
    inflater and the versions."""
    from nd2gpu._decode import inflate
    from nd2gpu._decode.pool import worker_count
    from nd2gpu.cli.timing import machine_description

    return {
        "machine": machine_description(),
        "threads": worker_count(),
        "inflater": inflate.INFLATER_NAME,
        "nd2_version": nd2.__version__,
        "nd2gpu_version": nd2gpu.__version__,
    }


def write_results(out: Path, tag: str, report: dict, table: str) -> None:
    """``{tag}.json`` and ``{tag}.md`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{tag}.md").write_text(table)
