"""GPU benchmark: file -> CuPy against nd2 + CuPy, and the expansion kernel's
bandwidth against a device-to-device copy, all from one run.

For each workload (benchmarks/workloads.py) written as an ND2 file of
``--frames`` frames, per frame (median of ``--repeats``):

- ``nd2+cupy``: ``cupy.asarray(np.asarray(nd2.ND2File(path).binary_data))``;
- ``cuda``: ``cupy.asarray(nd2gpu.ND2File(path, device="cuda").binary_data)``;
- ``cpu``: nd2gpu on this machine's CPU, for reference;

(wall clock, the device synchronized), each checked against nd2 first; then

- the expansion kernel alone: the file's whole run table, built as the decoding
  pipeline builds it, expanded into the output ``--launches`` times between two
  CUDA events (so that Python's launch cost does not sit in the timed region):
  time per launch, and the effective bandwidth of what the expansion must move,
  2 bytes per covered pixel written plus 18 bytes per run of the table read;
- a device-to-device copy of the output's size, timed the same way: its read +
  write bandwidth, the yardstick for the kernel;
- the host time to queue one kernel launch (numba's dispatch included).

Needs a CUDA GPU with CuPy and numba-cuda. ``--dry-run`` runs every step under
numba's CUDA simulator instead (``NUMBA_ENABLE_CUDASIM=1``, no CuPy), at tiny
sizes, to check the script without a GPU: its timings mean nothing.

Usage::

    python benchmarks/gpu_bench.py --out results      # on the GPU machine
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu_bench.py --dry-run --out /tmp/x
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, build, parse_shape, payloads, read_nd2, write_results
from workloads import FRAME_SHAPE

import nd2gpu
from nd2gpu.cli.timing import machine_description, median_seconds

#: Table bytes the kernel reads per run: int64 start, uint16 value, int64 prefix.
TABLE_BYTES_PER_RUN = 8 + 2 + 8
#: The simulator runs every CUDA thread as a Python thread: few blocks of few
#: threads, many pixels each.
SIMULATOR_LAUNCH = {"block": 32, "items": 32}
#: Defaults (GPU, dry run) of the options that size the run.
SIZES = {
    "frames": (64, 2),
    "repeats": (5, 1),
    "launches": (50, 2),
    "shape": (FRAME_SHAPE, (32, 32)),
}


class Gpu:
    """The device calls of the benchmark: CuPy on a GPU, numba's simulator in a
    dry run."""

    def __init__(self, dry_run: bool) -> None:
        from numba import cuda

        simulated = "simulator" in getattr(cuda.to_device, "__module__", "")
        if dry_run != simulated:
            raise SystemExit(
                "--dry-run needs NUMBA_ENABLE_CUDASIM=1"
                if dry_run
                else "numba's CUDA simulator is on: the GPU benchmark needs a GPU "
                "(or --dry-run)"
            )
        self.cuda = cuda
        self.cupy: Any = None if simulated else importlib.import_module("cupy")
        #: Kernel launch overrides: none on a GPU (the library's defaults).
        self.launch: dict[str, int] = SIMULATOR_LAUNCH if simulated else {}
        if simulated:  # the simulator's threads meet at barriers: switch often
            sys.setswitchinterval(1e-4)

    def describe(self) -> dict[str, Any]:
        import numba_cuda  # type: ignore[import-not-found]

        info: dict[str, Any] = {"numba_cuda": getattr(numba_cuda, "__version__", "")}
        if self.cupy is None:
            return {**info, "device": "numba CUDA simulator (dry run)"}
        runtime = self.cupy.cuda.runtime
        props = runtime.getDeviceProperties(self.cupy.cuda.Device().id)
        return {
            **info,
            "device": props["name"].decode(errors="replace"),
            "compute_capability": f"{props['major']}.{props['minor']}",
            "sm_count": props["multiProcessorCount"],
            "cuda_runtime": runtime.runtimeGetVersion(),
            "cuda_driver": runtime.driverGetVersion(),
            "cupy": self.cupy.__version__,
        }

    def synchronize(self) -> None:
        if self.cupy is not None:
            self.cupy.cuda.Device().synchronize()
        self.cuda.synchronize()

    def from_file(self, path: Path) -> Any:
        """nd2gpu: the file's layers straight into a device array."""
        with nd2gpu.ND2File(path, device="cuda") as f:
            if self.cupy is None:
                return f.binary_data.asarray()
            return self.cupy.asarray(f.binary_data)

    def from_nd2(self, path: Path) -> Any:
        """nd2, then a copy to the device."""
        array = read_nd2(path)
        if self.cupy is None:
            return self.cuda.to_device(array)
        return self.cupy.asarray(array)

    def to_host(self, array: Any) -> np.ndarray:
        get = getattr(array, "get", None)
        return get() if get is not None else array.copy_to_host()

    def zeros(self, n: int, dtype: Any) -> Any:
        """A zeroed 1-d numba device array."""
        if self.cupy is None:
            return self.cuda.to_device(np.zeros(n, dtype))
        return self.cuda.as_cuda_array(self.cupy.zeros(n, dtype))


def synced(gpu: Gpu, fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        out = fn()
        gpu.synchronize()
        return out

    return run


def event_ms(gpu: Gpu, fn: Callable[[], Any], launches: int, repeats: int) -> float:
    """Median over ``repeats`` of the device time per call of ``fn``, with
    ``launches`` calls queued between two CUDA events (after a warm-up call)."""
    cuda = gpu.cuda
    fn()
    gpu.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = cuda.event(), cuda.event()
        start.record()
        for _ in range(launches):
            fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / launches)
    return statistics.median(times)


def launch_us(gpu: Gpu, fn: Callable[[], Any], launches: int) -> float:
    """Host microseconds to queue one call of ``fn`` (the device not waited for)."""
    gpu.synchronize()
    start = time.perf_counter()
    for _ in range(launches):
        fn()
    seconds = time.perf_counter() - start
    gpu.synchronize()
    return seconds / launches * 1e6


def run_table(path: Path, shape: tuple[int, int]) -> Any:
    """The run table of every frame of the file's first layer, as the CUDA
    pipeline builds it (frames parsed, overlaps resolved, runs concatenated)."""
    from nd2gpu.kernels._run_table import RunTable

    from nd2gpu._decode.frame import parse_payload
    from nd2gpu.kernels._overlap_kernels import make_non_overlapping

    pixels = shape[0] * shape[1]
    starts, lengths, values, bounds = [], [], [], []
    n_runs = 0
    for seq, data in enumerate(payloads(path)):
        _, buffers, n = parse_payload(data, shape, seq * pixels)
        starts.append(buffers.starts[:n].copy())
        lengths.append(buffers.lengths[:n].copy())
        values.append(buffers.values[:n].copy())
        bounds.append((n_runs, n_runs + n, seq * pixels))
        n_runs += n
    table = RunTable.from_runs(
        np.concatenate(starts), np.concatenate(lengths), np.concatenate(values)
    )
    return make_non_overlapping(table, np.array(bounds, np.int64), pixels)


def per_second(n_bytes: int, ms: float) -> float | None:
    """GB/s, or None for a time the simulator cannot measure."""
    return n_bytes / ms / 1e6 if ms > 0 else None


def bench_workload(
    gpu: Gpu,
    path: Path,
    labels: np.ndarray,
    launches: int,
    repeats: int,
) -> dict[str, Any]:
    from nd2gpu.kernels._expand_cuda import expand_runs

    n_frames, shape = labels.shape[0], labels.shape[1:]
    expected = read_nd2(path)[0]
    if not np.array_equal(expected, labels):
        raise AssertionError(f"{path.name}: nd2 does not read back what was written")
    if not np.array_equal(gpu.to_host(gpu.from_file(path))[0], expected):
        raise AssertionError(f"{path.name}: device='cuda' differs from nd2")
    nd2_s = median_seconds(
        synced(gpu, lambda: gpu.from_nd2(path)), max(1, repeats // 3)
    )
    cuda_s = median_seconds(synced(gpu, lambda: gpu.from_file(path)), repeats)

    def cpu() -> np.ndarray:
        with nd2gpu.ND2File(path, device="cpu") as f:
            return f.binary_data.asarray()

    cpu_s = median_seconds(cpu, repeats)

    table = run_table(path, shape)
    size = labels.size
    d_out = gpu.zeros(size, np.uint16)
    d_starts = gpu.cuda.to_device(table.starts)
    d_values = gpu.cuda.to_device(table.values)
    d_prefix = gpu.cuda.to_device(table.prefix)

    def expand() -> None:
        expand_runs(
            d_out,
            d_starts,
            d_values,
            d_prefix,
            table.n_runs,
            table.n_pixels,
            **gpu.launch,
        )

    expand()
    gpu.synchronize()
    if not np.array_equal(d_out.copy_to_host(), expected.reshape(-1)):
        raise AssertionError(f"{path.name}: the kernel's output differs from nd2")
    kernel_ms = event_ms(gpu, expand, launches, repeats)
    queue_us = launch_us(gpu, expand, launches)

    src = gpu.zeros(2 * size, np.uint8)
    dst = gpu.zeros(2 * size, np.uint8)
    copy_ms = event_ms(gpu, lambda: dst.copy_to_device(src), launches, repeats)

    moved = 2 * table.n_pixels + TABLE_BYTES_PER_RUN * table.n_runs + 8
    kernel_gbps = per_second(moved, kernel_ms)
    copy_gbps = per_second(2 * src.nbytes, copy_ms)
    ms = 1e3 / n_frames
    return {
        "runs": table.n_runs,
        "covered_pixels": table.n_pixels,
        "nd2_cupy_ms": nd2_s * ms,
        "cuda_ms": cuda_s * ms,
        "cpu_ms": cpu_s * ms,
        "cuda_speedup_vs_nd2": nd2_s / cuda_s,
        "cuda_speedup_vs_cpu": cpu_s / cuda_s,
        "kernel_ms_per_launch": kernel_ms,
        "kernel_us_per_frame": kernel_ms * 1e3 / n_frames,
        "kernel_bytes_moved": moved,
        "kernel_gbps": kernel_gbps,
        "launch_us": queue_us,
        "copy_ms": copy_ms,
        "copy_bytes": src.nbytes,
        "copy_gbps": copy_gbps,
        "kernel_over_copy": (
            kernel_gbps / copy_gbps if kernel_gbps and copy_gbps else None
        ),
    }


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown_table(report: dict[str, Any]) -> str:
    gpu = report["gpu"]
    lines = [
        f"Machine: {report['machine']}; {gpu['device']}"
        + (f" ({gpu['sm_count']} SMs)" if "sm_count" in gpu else "")
        + f"; nd2 {report['nd2_version']}; {report['frames_per_workload']} frames of "
        f"{report['frame_shape'][0]}x{report['frame_shape'][1]} per workload; "
        f"kernel and copy: {report['launches']} launches between CUDA events.",
        "",
        "| workload | runs/frame | nd2+cupy ms/frame | nd2gpu cpu ms/frame "
        "| file->cupy ms/frame | cuda vs nd2 | cuda vs cpu |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = report["workloads"].items()
    for name, r in rows:
        lines.append(
            f"| {name} | {r['runs'] // report['frames_per_workload']} "
            f"| {r['nd2_cupy_ms']:.2f} | {r['cpu_ms']:.3f} | {r['cuda_ms']:.3f} "
            f"| {r['cuda_speedup_vs_nd2']:.0f}x | {r['cuda_speedup_vs_cpu']:.1f}x |"
        )
    lines += [
        "",
        "Expansion kernel (the whole file's run table per launch) against a "
        "device-to-device copy of the output's size:",
        "",
        "| workload | kernel ms/launch | us/frame | kernel GB/s | d2d copy GB/s "
        "| kernel / copy | host us/launch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['kernel_ms_per_launch']:.3f} "
            f"| {r['kernel_us_per_frame']:.1f} | {fmt(r['kernel_gbps'], '.0f')} "
            f"| {fmt(r['copy_gbps'], '.0f')} | {fmt(r['kernel_over_copy'], '.2f')} "
            f"| {r['launch_us']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--frames", type=int, help="frames per workload (default 64; dry run 2)"
    )
    parser.add_argument("--repeats", type=int, help="default 5 (dry run 1)")
    parser.add_argument(
        "--launches", type=int, help="kernel launches between events (default 50)"
    )
    parser.add_argument("--workloads", default="cells,tiny,dense")
    parser.add_argument(
        "--shape",
        type=parse_shape,
        help="frame shape, e.g. 256x256 (default 2048x2048; dry run 32x32)",
    )
    parser.add_argument("--tag", default="gpu", help="results file name stem")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="numba's CUDA simulator, tiny sizes: check the script without a GPU",
    )
    args = parser.parse_args(argv)
    for name, defaults in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, defaults[args.dry_run])
    shape = args.shape
    gpu = Gpu(args.dry_run)
    import nd2

    report: dict[str, Any] = {
        "machine": machine_description(),
        "gpu": gpu.describe(),
        "dry_run": args.dry_run,
        "nd2_version": nd2.__version__,
        "nd2gpu_version": nd2gpu.__version__,
        "frames_per_workload": args.frames,
        "frame_shape": list(shape),
        "launches": args.launches,
        "repeats": args.repeats,
        "workloads": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads.split(","):
            path, labels, stats = build(Path(tmp), name, args.frames, shape)
            row = {
                **stats,
                **bench_workload(gpu, path, labels, args.launches, args.repeats),
            }
            report["workloads"][name] = row
            print(f"{name}: {json.dumps(row)}", flush=True)
    table = markdown_table(report)
    write_results(args.out, args.tag, report, table)
    print()
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
