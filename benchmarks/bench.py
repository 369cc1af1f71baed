"""Benchmark nd2gpu against nd2 on the benchmark workloads, all from one run.

For each workload it writes an ND2 file with ``nd2gpu.write_nd2`` and reports, per
2048x2048 frame (median of repeats):

- ``nd2``: ``np.asarray(nd2.ND2File(path).binary_data)`` (the reference),
- ``cpu``: ``np.asarray(nd2gpu.ND2File(path, device="cpu").binary_data)``,
- ``floor``: inflating every payload in the same thread pool with the same
  inflater, plus allocating and writing a zeroed output of the same size: what any
  CPU decoder of these files must at least do.

The GPU rows are gpu_bench.py's.

Usage::

    python benchmarks/bench.py       # writes results/cpu.json and results/cpu.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    RESULTS,
    build,
    parse_shape,
    payloads,
    read_nd2,
    run_header,
    write_results,
)
from workloads import FRAME_SHAPE

import nd2gpu
from nd2gpu._decode import inflate as _inflate
from nd2gpu._decode.pool import worker_count
from nd2gpu.cli.timing import median_seconds


def floor_fn(path: Path, shape: tuple[int, int]) -> Callable[[], object]:
    """Inflate every payload and write its zeroed output frame, frames in parallel.

    The same thread count and inflater as nd2gpu, and the same kind of output
    block (``np.zeros``, whose pages are first touched by the writes).
    """
    data = payloads(path)
    pool = ThreadPoolExecutor(worker_count())

    def run() -> None:
        out = np.zeros((len(data), *shape), np.uint16)

        def one(i: int) -> None:
            _inflate.INFLATER.decompress(data[i])
            out[i].fill(0)

        list(pool.map(one, range(len(data))))

    return run


def bench_inflaters(path: Path, n_frames: int, repeats: int) -> dict[str, float]:
    """Single-thread inflate ms/frame of each installed inflater (how isal won)."""
    data = payloads(path)
    return {
        f"inflate_{name}_ms": median_seconds(
            lambda m=module: [m.decompress(p) for p in data], repeats
        )
        * 1e3
        / n_frames
        for name, module in _inflate.available_inflaters().items()
    }


def read_nd2gpu(path: Path) -> np.ndarray:
    with nd2gpu.ND2File(path, device="cpu") as f:
        return f.binary_data.asarray()


def bench_cpu(path: Path, n_frames: int, repeats: int, shape: tuple[int, int]) -> dict:
    expected = read_nd2(path)
    got = read_nd2gpu(path)
    if not np.array_equal(expected, got):
        raise AssertionError(f"{path.name}: nd2gpu differs from nd2")
    nd2_s = median_seconds(lambda: read_nd2(path), max(1, repeats // 3))
    cpu_s = median_seconds(lambda: read_nd2gpu(path), repeats)
    floor_s = median_seconds(floor_fn(path, shape), repeats)
    ms = 1e3 / n_frames
    return {
        "nd2_ms": nd2_s * ms,
        "cpu_ms": cpu_s * ms,
        "floor_ms": floor_s * ms,
        "speedup_vs_nd2": nd2_s / cpu_s,
        "cpu_over_floor": cpu_s / floor_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=16, help="frames per workload")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--workloads", default="cells,tiny,dense")
    parser.add_argument(
        "--shape",
        type=parse_shape,
        default=FRAME_SHAPE,
        help="frame shape, e.g. 256x256 (default 2048x2048)",
    )
    parser.add_argument("--tag", default="cpu", help="results file name stem")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    report: dict = {
        **run_header(),
        "frames_per_workload": args.frames,
        "frame_shape": list(args.shape),
        "workloads": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads.split(","):
            path, _, stats = build(Path(tmp), name, args.frames, args.shape)
            row = {**stats, **bench_cpu(path, args.frames, args.repeats, args.shape)}
            row.update(bench_inflaters(path, args.frames, args.repeats))
            report["workloads"][name] = row
            print(f"{name}: {json.dumps(row)}", flush=True)

    table = markdown_table(report)
    write_results(args.out, args.tag, report, table)
    print()
    print(table)
    return 0


def markdown_table(report: dict) -> str:
    lines = [
        f"Machine: {report['machine']}; {report['threads']} decode threads; "
        f"inflater {report['inflater']}; nd2 {report['nd2_version']}; "
        f"{report['frames_per_workload']} frames of "
        f"{report['frame_shape'][0]}x{report['frame_shape'][1]} per workload.",
        "",
        "| workload | runs/frame | nd2 ms/frame | nd2gpu cpu ms/frame | floor ms/frame "
        "| cpu vs nd2 | cpu / floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report["workloads"].items():
        lines.append(
            f"| {name} | {r['runs_per_frame']} | {r['nd2_ms']:.2f} | {r['cpu_ms']:.3f} "
            f"| {r['floor_ms']:.3f} | {r['speedup_vs_nd2']:.0f}x "
            f"| {r['cpu_over_floor']:.2f} |"
        )
    names = [
        k for k in next(iter(report["workloads"].values())) if k.startswith("inflate_")
    ]
    lines += [
        "",
        "Single-thread inflate, ms/frame (how the inflater was chosen):",
        "",
        "| workload | " + " | ".join(n[8:-3] for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for name, r in report["workloads"].items():
        lines.append(f"| {name} | " + " | ".join(f"{r[n]:.3f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
