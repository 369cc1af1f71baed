"""The front half's cost per frame: time against the floor, Python calls and GIL.

For each case (benchmarks/cases.py: ``np.asarray(layers)``, loader batches of
``decode(16 frames, out=buf)``, ``regionprops_table()``, and the CUDA
pipeline's host half), on one workload file written with ``write_nd2``:

- ``ms_per_frame`` and ``floor_ms_per_frame`` (inflating the same payloads in
  the same number of threads, plus the output fill where the case writes dense
  frames), alternated, median of ``--repeats``; their ratio;
- ``python_calls_per_frame``: Python-level calls in every thread;
- ``gil_us_per_frame``: GIL-held time per frame sampled by py-spy, beside the
  floor's own sampled time and the excess over it (null without py-spy).

Usage::

    python benchmarks/bench_front.py                 # 64 frames of 1024x1024 cells
    python benchmarks/bench_front.py --size 2048 --tag front-2048
    python benchmarks/bench_front.py --size 64 --frames 4 --repeats 1 --no-gil \\
        --out /tmp/smoke                             # a smoke test (CI)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from cases import CASES, make_case, make_floor
from common import RESULTS, build, read_nd2, run_header, write_results
from python_cost import count_calls, gil_profile, py_spy

import nd2gpu

#: The goals of the issue, per case: time over floor, calls and GIL µs per frame.
GOALS = {
    "asarray": 1.2,
    "loader": 1.3,
    "objects": 1.5,
    "gpu-host": 1.3,
}
MAX_CALLS = 25
MAX_GIL_US = 25


def seconds(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def bench_case(name: str, path: Path, repeats: int, gil: bool) -> dict:
    run, frames = make_case(name, path)
    floor, floor_frames = make_floor(name, path)
    run()  # warm: compiled, mapped
    floor()
    times, floors = [], []
    for _ in range(repeats):  # alternated: a busy machine slows both alike
        times.append(seconds(run))
        floors.append(seconds(floor))
    t = statistics.median(times) / frames
    fl = statistics.median(floors) / floor_frames
    row = {
        "what": CASES[name],
        "ms_per_frame": t * 1e3,
        "floor_ms_per_frame": fl * 1e3,
        "over_floor": t / fl,
        "goal_over_floor": GOALS[name],
        "python_calls_per_frame": count_calls(run) / frames,
        "gil_us_per_frame": None,
        "floor_gil_us_per_frame": None,
        "gil_us_above_floor": None,
    }
    profile = gil_profile(name, path) if gil else None
    if profile is not None:
        row.update(profile)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", default="cells")
    parser.add_argument("--size", type=int, default=1024, help="frame side, pixels")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--cases", default=",".join(GOALS))
    parser.add_argument("--no-gil", action="store_true", help="skip py-spy")
    parser.add_argument("--tag", default="front-cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    report: dict = {
        **run_header(),
        "workload": args.workload,
        "frame_shape": [args.size, args.size],
        "frames": args.frames,
        "gil_sampler": None if args.no_gil or py_spy() is None else "py-spy --gil",
        "cases": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path, _, stats = build(
            Path(tmp), args.workload, args.frames, (args.size, args.size)
        )
        report.update(stats)
        with nd2gpu.ND2File(path) as f:
            if not np.array_equal(np.asarray(f.binary_data), read_nd2(path)):
                raise AssertionError("nd2gpu differs from nd2")
        for name in args.cases.split(","):
            row = bench_case(name, path, args.repeats, not args.no_gil)
            report["cases"][name] = row
            print(f"{name}: {json.dumps(row)}", flush=True)
            write_results(args.out, args.tag, report, markdown(report))
    print(markdown(report))
    return 0


def markdown(r: dict) -> str:
    lines = [
        f"Machine: {r['machine']}; {r['threads']} decode threads; inflater "
        f"{r['inflater']}; {r['frames']} frames of {r['frame_shape'][0]}x"
        f"{r['frame_shape'][1]} '{r['workload']}' ({r['runs_per_frame']} runs a "
        f"frame); GIL: {r['gil_sampler'] or 'not sampled'}.",
        "",
        "| call | ms/frame | floor ms/frame | / floor (goal) | Python calls/frame "
        f"(goal <= {MAX_CALLS}) | GIL µs/frame sampled: case, floor | above the "
        f"floor (goal <= {MAX_GIL_US}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in r["cases"].items():
        gil, above = "-", "-"
        if c["gil_us_per_frame"] is not None:
            gil = f"{c['gil_us_per_frame']:.1f}, {c['floor_gil_us_per_frame']:.1f}"
            above = f"{c['gil_us_above_floor']:.1f}"
        lines.append(
            f"| {name} | {c['ms_per_frame']:.3f} | {c['floor_ms_per_frame']:.3f} "
            f"| {c['over_floor']:.2f} (<= {c['goal_over_floor']}) "
            f"| {c['python_calls_per_frame']:.1f} | {gil} | {above} |"
        )
    lines += ["", *(f"- {name}: {c['what']}" for name, c in r["cases"].items())]
    lines += [
        "",
        "GIL: py-spy counts a sample while a thread holds the GIL, and counts the "
        "floor's run (inflating in a thread pool with the GIL released) too; the "
        "case's excess over its floor's run on the same file is what the case "
        "adds.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
