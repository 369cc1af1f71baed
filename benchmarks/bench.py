"""Benchmark nd2gpu against nd2 on the benchmark workloads, all from one run.

For each workload it writes an ND2 file with ``nd2gpu.write_nd2`` and reports, per
2048x2048 frame (median of repeats):

- ``nd2``: ``np.asarray(nd2.ND2File(path).binary_data)`` (the reference),
- ``cpu``: ``np.asarray(nd2gpu.ND2File(path, device="cpu").binary_data)``,
- ``floor``: inflating every payload in the same thread pool with the same
  inflater, plus allocating and writing a zeroed output of the same size: what any
  CPU decoder of these files must at least do,
- on a GPU (``--devices cpu,cuda``): ``cuda``, file -> ``cupy.asarray(layers)``;
  ``nd2+cupy``, nd2 then ``cupy.asarray``; and the expansion kernel's write
  bandwidth against a device-to-device copy measured in the same run.

Usage::

    python benchmarks/bench.py                      # CPU, writes results/cpu-*.json/md
    python benchmarks/bench.py --devices cpu,cuda   # also the GPU rows
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nd2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from workloads import FRAME_SHAPE, frames

import nd2gpu
from nd2gpu._decode import inflate as _inflate
from nd2gpu._decode.pool import worker_count
from nd2gpu._format.chunk_index import ChunkIndex
from nd2gpu._format.container import binary_frame_chunk_name
from nd2gpu._format.mask_stream import MASK_PREFIX_BYTES
from nd2gpu.cli.timing import machine_description, median_seconds

RESULTS = Path(__file__).parent / "results"


def build(workdir: Path, name: str, n_frames: int) -> tuple[Path, dict]:
    labels = frames(name, n_frames)
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
    return path, stats


def payloads(path: Path) -> list[bytes]:
    with nd2.ND2File(path) as f:
        n = len(f.binary_data[0])
        tag = f.binary_data[0].file_tag
    with ChunkIndex(path) as index:
        return [
            index.read(binary_frame_chunk_name(tag, seq))[MASK_PREFIX_BYTES:]
            for seq in range(n)
        ]


def floor_fn(path: Path) -> Callable[[], object]:
    """Inflate every payload and write its zeroed output frame, frames in parallel.

    The same thread count and inflater as nd2gpu, and the same kind of output
    block (``np.zeros``, whose pages are first touched by the writes).
    """
    data = payloads(path)
    pool = ThreadPoolExecutor(worker_count())

    def run() -> None:
        out = np.zeros((len(data), *FRAME_SHAPE), np.uint16)

        def one(i: int) -> None:
            _inflate._zlib.decompress(data[i])
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


def read_nd2(path: Path) -> np.ndarray:
    with nd2.ND2File(path) as f:
        return np.asarray(f.binary_data)


def read_nd2gpu(path: Path, device: str):
    with nd2gpu.ND2File(path, device=device) as f:
        return f.binary_data.asarray()


def bench_cpu(path: Path, n_frames: int, repeats: int) -> dict:
    expected = read_nd2(path)
    got = read_nd2gpu(path, "cpu")
    if not np.array_equal(expected, got):
        raise AssertionError(f"{path.name}: nd2gpu differs from nd2")
    nd2_s = median_seconds(lambda: read_nd2(path), max(1, repeats // 3))
    cpu_s = median_seconds(lambda: read_nd2gpu(path, "cpu"), repeats)
    floor_s = median_seconds(floor_fn(path), repeats)
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
    parser.add_argument("--devices", default="cpu", help="cpu or cpu,cuda")
    parser.add_argument("--workloads", default="cells,tiny,dense")
    parser.add_argument("--tag", default=None, help="results file name stem")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    devices = args.devices.split(",")

    report: dict = {
        "machine": machine_description(),
        "threads": worker_count(),
        "inflater": _inflate.INFLATER_NAME,
        "nd2_version": nd2.__version__,
        "nd2gpu_version": nd2gpu.__version__,
        "frames_per_workload": args.frames,
        "frame_shape": list(FRAME_SHAPE),
        "workloads": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads.split(","):
            path, stats = build(Path(tmp), name, args.frames)
            row = {**stats, **bench_cpu(path, args.frames, args.repeats)}
            row.update(bench_inflaters(path, args.frames, args.repeats))
            if "cuda" in devices:
                from gpu_bench import bench_cuda

                row.update(bench_cuda(path, args.frames, args.repeats))
            report["workloads"][name] = row
            print(f"{name}: {json.dumps(row)}", flush=True)

    tag = args.tag or ("gpu" if "cuda" in devices else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{tag}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown_table(report, devices)
    (args.out / f"{tag}.md").write_text(table)
    print()
    print(table)
    return 0


def markdown_table(report: dict, devices: list[str]) -> str:
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
    if "cuda" in devices:
        lines += [
            "",
            "| workload | nd2+cupy ms/frame | file->cupy ms/frame | cuda vs nd2 "
            "| kernel GB/s | d2d copy GB/s | kernel / copy |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in report["workloads"].items():
            lines.append(
                f"| {name} | {r['nd2_cupy_ms']:.2f} | {r['cuda_ms']:.3f} "
                f"| {r['cuda_speedup_vs_nd2']:.0f}x | {r['kernel_gbps']:.0f} "
                f"| {r['copy_gbps']:.0f} | {r['kernel_over_copy']:.2f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
