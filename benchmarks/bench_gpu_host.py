"""The host half of the GPU pipeline, measured without a GPU.

The real pipeline code (``nd2gpu/_backends/cuda/batches.py``: decode threads
inflating, parsing, resolving overlaps and staging batches into a ring of
buffers; the calling thread closing batches) runs with only the device calls
replaced by a host stand-in (``host_device.HostDevice``): the copy to the device
is a copy into a host buffer, and the kernel is its host twin, which paints the
staged batches into a NumPy block. For each workload written as an ND2 file:

- ``exact``: the painted block equals nd2's arrays;
- ``host_ms_per_frame``: the host half alone (the stand-in copies each batch
  but does not paint), against ``inflate_ms_per_frame``: inflating the same
  payloads in the same number of threads, the same run, alternated, medians;
- ``python_calls_per_frame`` (all threads) and ``gil_us_per_frame`` (py-spy,
  null without it), beside ``floor_gil_us_per_frame`` (the floor's own run
  sampled the same way) and ``gil_us_above_floor``;
- ``h2d_bytes_per_frame`` and, per batch, the device calls the real device side
  makes: copies, launches, event records, waits.

Usage::

    python benchmarks/bench_gpu_host.py --json          # writes results/gpu-host.*
    python benchmarks/bench_gpu_host.py --size 64 --frames 8 --repeats 1 --no-gil \\
        --out /tmp/smoke --json                         # a smoke test (CI)
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

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, build, payloads, read_nd2, run_header, write_results
from host_device import HostDevice
from python_cost import count_calls, gil_profile, py_spy

import nd2gpu
from nd2gpu._backends.cuda.batches import BatchPipeline
from nd2gpu._decode import inflate as _inflate
from nd2gpu._decode.plan import DecodePlan
from nd2gpu._decode.pool import worker_count

#: The goal: the host half within this factor of inflating alone.
GOAL = 1.3


def seconds(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def bench_workload(path: Path, repeats: int, gil: bool) -> dict:
    expected = read_nd2(path)[0]
    data = payloads(path)
    with nd2gpu.ND2File(path) as f:
        layer = f.binary_data[0]
        n = len(layer)
        shape = layer.frame_shape
        plan = DecodePlan.of([layer.ref], 0, range(n))
        bases = plan.slots * (shape[0] * shape[1])

        painted = np.zeros((n, *shape), np.uint16)
        device = HostDevice(painted, paint=True)
        BatchPipeline(device, shape).run(plan, bases)
        exact = bool(np.array_equal(painted, expected.reshape(n, *shape)))

        host = HostDevice(painted, paint=False)
        ring: list = [None] * 3
        stats = []

        def host_half() -> None:
            pipeline = BatchPipeline(host, shape, ring)
            pipeline.run(plan, bases)
            stats.append(pipeline.stats)

        pool = ThreadPoolExecutor(worker_count())
        decompress = _inflate.INFLATER.decompress

        def inflate() -> None:
            list(pool.map(decompress, data))

        host_half()
        inflate()
        host.calls.clear()
        host.bytes_copied = 0
        stats.clear()
        times, floors = [], []
        for _ in range(repeats):  # alternated: a busy machine slows both alike
            times.append(seconds(host_half))
            floors.append(seconds(inflate))
        pool.shutdown()
        runs = len(stats)
        batches = sum(s.batches for s in stats)
        calls = dict(host.calls)
        bytes_copied = host.bytes_copied
        python_calls = count_calls(host_half) / n
    row = {
        "exact": exact,
        "host_ms_per_frame": statistics.median(times) / n * 1e3,
        "inflate_ms_per_frame": statistics.median(floors) / n * 1e3,
        "python_calls_per_frame": python_calls,
        "gil_us_per_frame": None,
        "floor_gil_us_per_frame": None,
        "gil_us_above_floor": None,
        "h2d_bytes_per_frame": bytes_copied / (runs * n),
        "batches_per_call": batches / runs,
        "per_batch": {
            "copies": calls.get("copies", 0) / batches,
            "launches": calls.get("launches", 0) / batches,
            "events": calls.get("events", 0) / batches,
            "syncs": calls.get("syncs", 0) / batches,
            "pinned_allocations": calls.get("pinned_allocations", 0) / batches,
        },
    }
    row["host_over_inflate"] = row["host_ms_per_frame"] / row["inflate_ms_per_frame"]
    profile = gil_profile("gpu-host", path) if gil else None
    if profile is not None:
        row.update(profile)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workloads", default="cells,tiny,dense")
    parser.add_argument("--size", type=int, default=2048, help="frame side, pixels")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-gil", action="store_true", help="skip py-spy")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--tag", default="gpu-host")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    report: dict = {
        **run_header(),
        "frame_shape": [args.size, args.size],
        "frames": args.frames,
        "goal_host_over_inflate": GOAL,
        "gil_sampler": None if args.no_gil or py_spy() is None else "py-spy --gil",
        "workloads": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads.split(","):
            path, _, stats = build(Path(tmp), name, args.frames, (args.size, args.size))
            row = {**stats, **bench_workload(path, args.repeats, not args.no_gil)}
            report["workloads"][name] = row
            write_results(args.out, args.tag, report, markdown(report))
            if not args.json:
                print(f"{name}: {json.dumps(row)}", flush=True)
    print(json.dumps(report, indent=2) if args.json else markdown(report))
    return 0 if all(r["exact"] for r in report["workloads"].values()) else 1


def markdown(r: dict) -> str:
    lines = [
        f"Machine: {r['machine']}; {r['threads']} decode threads; inflater "
        f"{r['inflater']}; {r['frames']} frames of {r['frame_shape'][0]}x"
        f"{r['frame_shape'][1]} per workload; the device calls done on the host "
        f"(copies only, no painting); GIL: {r['gil_sampler'] or 'not sampled'}.",
        "",
        "| workload | exact | host ms/frame | inflate ms/frame | host / inflate "
        f"(goal <= {r['goal_host_over_inflate']}) | Python calls/frame | GIL µs/frame "
        "sampled: host, floor | above the floor | H2D bytes/frame "
        "| copies, launches, events, syncs per batch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, w in r["workloads"].items():
        gil, above = "-", "-"
        if w["gil_us_per_frame"] is not None:
            gil = f"{w['gil_us_per_frame']:.1f}, {w['floor_gil_us_per_frame']:.1f}"
            above = f"{w['gil_us_above_floor']:.1f}"
        b = w["per_batch"]
        lines.append(
            f"| {name} | {w['exact']} | {w['host_ms_per_frame']:.3f} "
            f"| {w['inflate_ms_per_frame']:.3f} | {w['host_over_inflate']:.2f} "
            f"| {w['python_calls_per_frame']:.1f} | {gil} | {above} "
            f"| {w['h2d_bytes_per_frame']:,.0f} | {b['copies']:.2f}, "
            f"{b['launches']:.2f}, {b['events']:.2f}, {b['syncs']:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
