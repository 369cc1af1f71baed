"""Benchmark object tables from the runs against a dense decode + skimage.

For each workload (benchmarks/workloads.py) it writes an ND2 file with
``nd2gpu.write_nd2`` and measures, per frame, file -> table:

- ``runs``: ``nd2gpu.ND2File(path).binary_data[0].regionprops_table()``,
- ``dense``: nd2gpu's own dense decode (``layer.asarray()``) and
  ``skimage.measure.regionprops_table`` on every frame (same properties:
  label, area, bbox, centroid), with a frame column,

checks that both tables are equal (integers exactly, floats to 1e-12), and
records the peak memory the ``runs`` call allocates beyond its returned table
(tracemalloc, warm call), against one dense frame. Timings alternate between
the two readers (runs, dense, runs, ...) so that both see the same machine
load; the load average is recorded too.

With ``--devices cpu,cuda`` (on a GPU machine) it also times
``regionprops_table(device="cuda")`` (file -> CuPy columns, GPU synchronised)
and, when cuCIM is installed, nd2gpu's dense CuPy decode followed by
``cucim.skimage.measure.regionprops_table`` on every frame.

Usage::

    python benchmarks/bench_objects.py                    # results/objects-cpu.*
    python benchmarks/bench_objects.py --frames 1 --size 256  # smoke test, no files
    python benchmarks/bench_objects.py --devices cpu,cuda  # GPU: objects-gpu.*
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from workloads import FRAME_SHAPE, WORKLOADS

import nd2gpu
from nd2gpu._decode import inflate as _inflate
from nd2gpu._decode.pool import worker_count
from nd2gpu._device import to_numpy
from nd2gpu.cli.timing import machine_description

RESULTS = Path(__file__).parent / "results"
PROPERTIES = ("label", "area", "bbox", "centroid")
DEFAULT_FRAMES = 16


def build(workdir: Path, name: str, n_frames: int, size: int) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    labels = np.stack([WORKLOADS[name](rng, (size, size)) for _ in range(n_frames)])
    path = nd2gpu.write_nd2(
        workdir / f"{name}.nd2", {name: labels}, loops=[("T", n_frames)]
    )
    left = np.pad(labels, ((0, 0), (0, 0), (1, 0)))[..., :-1]
    stats = {
        "objects_per_frame": int(sum(np.count_nonzero(np.unique(f)) for f in labels))
        // n_frames,
        "runs_per_frame": int(((labels != 0) & (labels != left)).sum()) // n_frames,
        "file_bytes_per_frame": path.stat().st_size // n_frames,
    }
    return path, stats


def table_from_runs(path: Path, device: str = "cpu") -> dict[str, Any]:
    with nd2gpu.ND2File(path) as f:
        return f.binary_data[0].regionprops_table(properties=PROPERTIES, device=device)


def table_from_dense(path: Path) -> dict[str, np.ndarray]:
    from skimage.measure import regionprops_table

    with nd2gpu.ND2File(path, device="cpu") as f:
        masks = f.binary_data[0].asarray()
    return _concat(
        [
            (seq, regionprops_table(frame, properties=PROPERTIES))
            for seq, frame in enumerate(masks)
        ]
    )


def table_from_dense_cucim(path: Path) -> dict[str, Any]:
    import cupy
    from cucim.skimage.measure import regionprops_table

    with nd2gpu.ND2File(path) as f:
        masks = f.binary_data[0].asarray(device="cuda")
    parts = [
        (seq, regionprops_table(frame, properties=PROPERTIES))
        for seq, frame in enumerate(masks)
    ]
    cupy.cuda.Device().synchronize()
    return _concat([(seq, {k: to_numpy(v) for k, v in t.items()}) for seq, t in parts])


def _concat(parts: list[tuple[int, dict]]) -> dict[str, np.ndarray]:
    """One table from per-frame tables; the files have one T loop, so a row's
    ``T`` is its frame."""
    names = ["frame", "T", *parts[0][1]] if parts else ["frame", "T"]
    out = {}
    for name in names:
        if name in ("frame", "T"):
            pieces = [np.full(len(t["label"]), seq, np.int64) for seq, t in parts]
        else:
            pieces = [np.asarray(t[name]) for _, t in parts]
        out[name] = np.concatenate(pieces)
    return out


def check_equal(got: dict, expected: dict, what: str) -> None:
    got = {k: to_numpy(v) for k, v in got.items()}
    if list(got) != list(expected):
        raise AssertionError(f"{what}: columns {list(got)} != {list(expected)}")
    for name, column in expected.items():
        if got[name].dtype != column.dtype or got[name].shape != column.shape:
            raise AssertionError(f"{what}: column {name} differs in dtype or length")
        if column.dtype.kind == "f":
            np.testing.assert_allclose(got[name], column, rtol=1e-12, atol=0)
        else:
            np.testing.assert_array_equal(got[name], column)


def rounds(
    runs: Callable[[], object],
    dense: Callable[[], object],
    n_rounds: int,
    per_round: int,
    warmup: int,
) -> dict[str, float]:
    """Rounds of: ``warmup`` untimed calls of ``runs``, ``per_round`` timed
    ones (their median kept), then one timed call of ``dense``. Each reader is
    timed in its steady state (on this machine the second CPU takes some
    calls to come back after the single-threaded dense call), and adjacent
    timings see the same load.

    Returns the median seconds of each and the median of the per-round ratios.
    """
    dense()
    fast, slow, ratios = [], [], []
    for _ in range(n_rounds):
        for _ in range(warmup):
            runs()
        best = statistics.median(_seconds(runs) for _ in range(per_round))
        once = _seconds(dense)
        fast.append(best)
        slow.append(once)
        ratios.append(once / best)
    return {
        "runs": statistics.median(fast),
        "dense": statistics.median(slow),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def _seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def interleaved(
    runs: dict[str, Callable[[], object]], repeats: dict[str, int]
) -> dict[str, float]:
    """Median seconds of each function, calls alternating between them (after
    one warm-up call each)."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for k in range(max(repeats.values())):
        for name, run in runs.items():
            if k < repeats[name]:
                times[name].append(_seconds(run))
    return {name: statistics.median(t) for name, t in times.items()}


def peak_extra_bytes(run: Callable[[], dict]) -> tuple[int, int]:
    """Peak traced bytes of a warm call beyond what it returns, and its table."""
    run()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        table = run()
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    size = sum(to_numpy(c).nbytes for c in table.values())
    return peak - size, size


def bench_cpu(
    path: Path, n_frames: int, repeats: int, dense_repeats: int, warmup: int
) -> dict:
    runs_table = table_from_runs(path)
    check_equal(runs_table, table_from_dense(path), f"{path.name}: runs vs dense")
    seconds = rounds(
        lambda: table_from_runs(path),
        lambda: table_from_dense(path),
        dense_repeats,
        repeats,
        warmup,
    )
    extra, table_bytes = peak_extra_bytes(lambda: table_from_runs(path))
    dense_extra, _ = peak_extra_bytes(lambda: table_from_dense(path))
    ms = 1e3 / n_frames
    return {
        "rows": len(runs_table["label"]),
        "runs_ms": seconds["runs"] * ms,
        "dense_ms": seconds["dense"] * ms,
        "speedup": seconds["ratio"],
        "speedup_min": seconds["ratio_min"],
        "speedup_max": seconds["ratio_max"],
        "runs_peak_extra_bytes": extra,
        "table_bytes": table_bytes,
        "dense_peak_extra_bytes": dense_extra,
    }


def bench_cuda(path: Path, n_frames: int, repeats: int) -> dict:
    import cupy

    def runs() -> dict:
        table = table_from_runs(path, "cuda")
        cupy.cuda.Device().synchronize()
        return table

    check_equal(runs(), table_from_runs(path), f"{path.name}: cuda vs cpu")
    funcs: dict[str, Callable[[], object]] = {"cuda_runs": runs}
    try:
        import cucim  # noqa: F401
    except ImportError:
        cucim_ok = False
    else:
        cucim_ok = True
        check_equal(
            table_from_dense_cucim(path), table_from_runs(path), f"{path.name}: cucim"
        )
        funcs["cuda_dense_cucim"] = lambda: table_from_dense_cucim(path)
    seconds = interleaved(funcs, dict.fromkeys(funcs, repeats))
    ms = 1e3 / n_frames
    row = {f"{name}_ms": s * ms for name, s in seconds.items()}
    if cucim_ok:
        row["cuda_speedup_vs_cucim"] = (
            seconds["cuda_dense_cucim"] / seconds["cuda_runs"]
        )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    parser.add_argument("--size", type=int, default=FRAME_SHAPE[0], help="frame side")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed calls from the runs per round"
    )
    parser.add_argument(
        "--warmup", type=int, default=10, help="untimed calls from the runs per round"
    )
    parser.add_argument(
        "--dense-repeats", type=int, default=5, help="rounds (one dense call each)"
    )
    parser.add_argument("--devices", default="cpu", help="cpu or cpu,cuda")
    parser.add_argument("--workloads", default="cells,tiny,dense")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default: benchmarks/results at the default sizes, "
        "else nothing is written)",
    )
    args = parser.parse_args(argv)
    devices = args.devices.split(",")
    defaults = args.frames == DEFAULT_FRAMES and args.size == FRAME_SHAPE[0]
    out = args.out if args.out is not None else (RESULTS if defaults else None)

    report: dict[str, Any] = {
        "machine": machine_description(),
        "threads": worker_count(),
        "inflater": _inflate.INFLATER_NAME,
        "nd2gpu_version": nd2gpu.__version__,
        "frames_per_workload": args.frames,
        "frame_shape": [args.size, args.size],
        "dense_frame_bytes": 2 * args.size * args.size,
        "load_average_before": os.getloadavg()[0],
        "workloads": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads.split(","):
            path, stats = build(Path(tmp), name, args.frames, args.size)
            row = {
                **stats,
                **bench_cpu(
                    path, args.frames, args.repeats, args.dense_repeats, args.warmup
                ),
            }
            if "cuda" in devices:
                row.update(bench_cuda(path, args.frames, args.repeats))
            report["workloads"][name] = row
            print(f"{name}: {json.dumps(row)}", flush=True)
    report["load_average_after"] = os.getloadavg()[0]
    table = markdown_table(report, devices)
    print()
    print(table)
    if out is not None:
        tag = "objects-gpu" if "cuda" in devices else "objects-cpu"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{tag}.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / f"{tag}.md").write_text(table)
    return 0


def markdown_table(report: dict, devices: list[str]) -> str:
    dense = report["dense_frame_bytes"]
    lines = [
        f"Machine: {report['machine']}; {report['threads']} decode threads; "
        f"inflater {report['inflater']}; {report['frames_per_workload']} frames of "
        f"{report['frame_shape'][0]}x{report['frame_shape'][1]} per workload; load "
        f"average {report['load_average_before']:.2f} before, "
        f"{report['load_average_after']:.2f} after. File -> table (label, area, bbox, "
        "centroid), ms per frame: medians over rounds of (median of several calls "
        "from the runs after untimed ones, then one dense call); speed-up: median "
        "(min-max) of the rounds' ratios.",
        "",
        "| workload | objects/frame | runs/frame | dense decode + skimage ms/frame "
        "| from the runs ms/frame | speed-up | peak extra bytes (runs) "
        "| / dense frame | peak extra bytes (dense + skimage) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["workloads"].items():
        extra = r["runs_peak_extra_bytes"]
        lines.append(
            f"| {name} | {r['objects_per_frame']} | {r['runs_per_frame']} "
            f"| {r['dense_ms']:.2f} | {r['runs_ms']:.3f} | {r['speedup']:.0f}x "
            f"({r['speedup_min']:.0f}-{r['speedup_max']:.0f}) "
            f"| {extra:,} | {extra / dense:.3f} "
            f"| {r['dense_peak_extra_bytes']:,} |"
        )
    if "cuda" in devices:
        lines += [
            "",
            "| workload | from the runs on CUDA ms/frame | dense CuPy + cuCIM ms/frame "
            "| speed-up |",
            "|---|---|---|---|",
        ]
        for name, r in report["workloads"].items():
            cucim = r.get("cuda_dense_cucim_ms")
            lines.append(
                f"| {name} | {r['cuda_runs_ms']:.3f} | "
                + (
                    f"{cucim:.2f} | {r['cuda_speedup_vs_cucim']:.0f}x |"
                    if cucim
                    else "- | - |"
                )
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
