"""Training-loader benchmark: random batches of frames into one reused buffer.

Writes the "cells" workload (benchmarks/workloads.py) as an ND2 file, then times
``layer.decode(batch, out=buf)`` for random batches of ``--batch`` frames into
one reused NumPy buffer, per frame, against the floor measured in the same run:
inflating the same payloads (already in memory) in a pool of the same number of
threads, plus one memset of the reused buffer per batch. Both are the median of
``--repeats`` passes over the same batches.

Usage::

    python benchmarks/bench_loader.py                  # writes results/loader-cpu.*
    python benchmarks/bench_loader.py --size 64 --frames 4 --batch 2 --batches 2 \
        --repeats 1 --out /tmp/smoke                   # a smoke test (CI)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nd2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from workloads import WORKLOADS

import nd2gpu
from nd2gpu._decode import inflate as _inflate
from nd2gpu._decode.pool import worker_count
from nd2gpu._format.chunk_index import ChunkIndex
from nd2gpu._format.container import binary_frame_chunk_name
from nd2gpu._format.mask_stream import MASK_PREFIX_BYTES
from nd2gpu.cli.timing import machine_description

RESULTS = Path(__file__).parent / "results"
#: The loader's goal: per-frame time within this factor of the floor.
GOAL = 1.3


def build(workdir: Path, name: str, n_frames: int, size: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    labels = np.stack([WORKLOADS[name](rng, (size, size)) for _ in range(n_frames)])
    return nd2gpu.write_nd2(
        workdir / f"{name}.nd2", {name: labels}, loops=[("T", n_frames)]
    )


def seconds(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def payloads(path: Path, tag: str, n: int) -> list[bytes]:
    with ChunkIndex(path) as index:
        return [
            index.read(binary_frame_chunk_name(tag, seq))[MASK_PREFIX_BYTES:]
            for seq in range(n)
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", default="cells", choices=sorted(WORKLOADS))
    parser.add_argument("--size", type=int, default=2048, help="frame side, pixels")
    parser.add_argument("--frames", type=int, default=32, help="frames in the file")
    parser.add_argument("--batch", type=int, default=16, help="frames per batch")
    parser.add_argument("--batches", type=int, default=16, help="batches per pass")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="loader-cpu", help="results file name stem")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--note", default="", help="text appended to the .md")
    args = parser.parse_args(argv)

    threads = worker_count()
    rng = np.random.default_rng(args.seed + 1)
    batches = [
        np.sort(rng.choice(args.frames, args.batch, replace=args.batch > args.frames))
        for _ in range(args.batches)
    ]
    n_decoded = args.batch * args.batches
    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp), args.workload, args.frames, args.size, args.seed)
        file_bytes = path.stat().st_size
        with nd2.ND2File(path) as ref:
            expected = np.asarray(ref.binary_data)[0]
        with nd2gpu.ND2File(path) as f:
            layer = f.binary_data[0]
            data = payloads(path, layer.file_tag, args.frames)
            buf = np.empty((args.batch, args.size, args.size), np.uint16)
            for batch in batches:  # correctness first (and warm-up)
                layer.decode(batch, out=buf)
                if not np.array_equal(buf, expected[batch]):
                    raise AssertionError("nd2gpu differs from nd2")

            def loader() -> None:
                for batch in batches:
                    layer.decode(batch, out=buf)

            pool = ThreadPoolExecutor(threads)
            decompress = _inflate.INFLATER.decompress

            def floor() -> None:
                for batch in batches:
                    buf.fill(0)
                    list(pool.map(decompress, [data[i] for i in batch]))

            floor()
            # Alternated, so that anything else running on the machine slows
            # both alike; the median of each.
            loader_times, floor_times = [], []
            for _ in range(args.repeats):
                loader_times.append(seconds(loader))
                floor_times.append(seconds(floor))
            loader_s = statistics.median(loader_times)
            floor_s = statistics.median(floor_times)
            pool.shutdown()

    ms = 1e3 / n_decoded
    report = {
        "machine": machine_description(),
        "threads": threads,
        "inflater": _inflate.INFLATER_NAME,
        "nd2gpu_version": nd2gpu.__version__,
        "workload": args.workload,
        "frame_shape": [args.size, args.size],
        "frames_in_file": args.frames,
        "file_bytes_per_frame": file_bytes // args.frames,
        "batch": args.batch,
        "batches": args.batches,
        "repeats": args.repeats,
        "loader_ms_per_frame": loader_s * ms,
        "floor_ms_per_frame": floor_s * ms,
        "loader_over_floor": loader_s / floor_s,
        "loader_ms_per_frame_best": min(loader_times) * ms,
        "floor_ms_per_frame_best": min(floor_times) * ms,
        "goal": GOAL,
        "goal_met": loader_s / floor_s <= GOAL,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.tag}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report) + (f"\n{args.note}\n" if args.note else "")
    (args.out / f"{args.tag}.md").write_text(table)
    print(table)
    return 0


def markdown(r: dict) -> str:
    return (
        f"Machine: {r['machine']}; {r['threads']} decode threads; inflater "
        f"{r['inflater']}; workload {r['workload']}, "
        f"{r['frame_shape'][0]}x{r['frame_shape'][1]} frames, "
        f"{r['file_bytes_per_frame']} file bytes per frame; {r['batches']} random "
        f"batches of {r['batch']} frames (of {r['frames_in_file']}) into one reused "
        f"buffer, median of {r['repeats']} passes (loader and floor alternated; "
        f"best pass: {r['loader_ms_per_frame_best']:.3f} and "
        f"{r['floor_ms_per_frame_best']:.3f} ms/frame).\n\n"
        "| loader ms/frame | floor ms/frame | loader / floor | goal |\n"
        "|---|---|---|---|\n"
        f"| {r['loader_ms_per_frame']:.3f} | {r['floor_ms_per_frame']:.3f} "
        f"| {r['loader_over_floor']:.2f} | <= {r['goal']} "
        f"({'met' if r['goal_met'] else 'not met'}) |\n\n"
        "Floor: inflating the same payloads (in memory) in a pool of the same "
        "number of threads, plus one memset of the reused buffer per batch.\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
