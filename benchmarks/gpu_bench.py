"""GPU benchmark: what file -> CuPy costs, against nd2, and where the time goes.

Each workload (benchmarks/workloads.py) is ``--distinct`` generated frames
tiled to N frames (frame ``s`` is distinct frame ``s % k``) and written with
``nd2gpu.write_nd2``, one file per N of ``--sizes``. Per workload, in order:

1. ``first-call`` (first workload only): a fresh process imports nd2gpu and
   CuPy, then loads the smallest file twice (``cupy.asarray(layers)``, synced);
   run twice, so that the second process finds numba's caches written;
2. ``file-to-cupy``: ``cupy.asarray(nd2gpu.ND2File(path).binary_data)`` from a
   fresh open per call at every N, each file checked first; the fixed cost and
   the per-frame slope fitted; the calling thread's time split per call
   (``PipelineStats``: waiting for the decode threads, ring slots, closing
   batches, device calls, waiting for the device at the end; ``outside`` is the
   open, the plan and the output's allocation);
3. ``nd2``: ``cupy.asarray(np.asarray(nd2.ND2File(path).binary_data))`` at
   ``--nd2-sizes`` only (nd2 takes ~50 ms a frame), checked; nd2gpu's speed-up
   at every N, extrapolated (linear fit) beyond the largest nd2 size;
4. ``loader``: ``layer.decode(16 random frames, device="cuda", out=buf)`` from
   the largest file, one buffer reused: latency per call, and its time split;
5. ``kernel``: the batches the real pipeline staged for ``--kernel-frames``
   frames, kept and replayed, one launch per batch as the pipeline launches
   them; device time between CUDA events queued behind a spin kernel (host
   queuing kept out), against a device-to-device copy that moves the same bytes
   (read + written: 12 per run, 40 per frame row, 2 per painted pixel) and the
   batches' host-to-device copies; flagged ``launch_bound`` where the kernel
   takes under twice the host's time to queue its launch;
6. ``objects``: ``regionprops_table(device="cuda")`` from the runs, checked
   against the CPU, against nd2gpu's dense decode + cuCIM's
   ``regionprops_table`` per frame where cuCIM is installed.

Before the workloads: an empty kernel's launch cost (host and device).
gpu.json and gpu.md are written after every section: a killed run keeps what it
measured. A section that fails is recorded (``errors``) and the run goes on; the
exit status is then 1. Past ``--budget-s`` seconds, sections are skipped (and
listed) so that the run ends on its own before the caller's timeout.

Needs a CUDA GPU with CuPy and numba-cuda. ``--dry-run`` runs every step under
numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, no CuPy) at tiny sizes and
builds the spin kernel for the GPU (NVRTC + ptxas), to check the script without
a GPU: its timings mean nothing.

Usage::

    python benchmarks/gpu_bench.py --out results          # on the GPU machine
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu_bench.py --dry-run --out /tmp/x
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, parse_shape, read_nd2, run_header, write_results
from gpu_report import markdown
from gpu_timing import Gpu, check_spin_source
from workloads import FRAME_SHAPE, WORKLOADS

import nd2gpu
from nd2gpu._device import to_numpy

#: Defaults (GPU, dry run) of the options that size the run.
SIZES: dict[str, tuple[Any, Any]] = {
    # Under the simulator "tiny"'s objects take minutes: the dry run leaves it
    # out (no step of the benchmark depends on the workload).
    "workloads": ("cells,tiny,dense", "cells,dense"),
    "shape": (FRAME_SHAPE, (32, 32)),
    "sizes": ("16,64,256,1024", "2,8"),
    "distinct": (16, 2),
    "nd2_sizes": ("16,64", "2,8"),
    "nd2_repeats": (2, 1),
    "loader_batch": (16, 2),
    "loader_calls": (50, 2),
    "kernel_frames": (256, 8),
    "objects_frames": (16, 2),
    "passes": (20, 1),
    "budget_s": (225.0, 0.0),
}
#: Seed of the generated frames (frame i of a workload: default_rng((SEED, i))).
SEED = 0
#: Launches of the empty kernel per timed pass.
EMPTY_LAUNCHES = 64
#: Fields of ``PipelineStats`` timed on the calling thread (seconds).
SPLIT_FIELDS = ("run_s", "waiting_s", "slot_s", "closing_s", "submit_s", "finish_s")
#: Bytes the expansion must move: per run read, per frame row read, per pixel
#: written (see kernels/_batch_layout.py).
RUN_BYTES, FRAME_ROW_BYTES, PIXEL_BYTES = 12, 40, 2


def repeats_for(n_frames: int, dry_run: bool) -> int:
    """Timed calls of file -> CuPy at ``n_frames``: more for small files."""
    return 1 if dry_run else max(3, min(8, 128 // n_frames))


# --------------------------------------------------------------- workloads


def make_frame(job: tuple[str, int, tuple[int, int]]) -> tuple[np.ndarray, bytes]:
    """Frame ``index`` of workload ``name`` and its mask chunk (a process pool's
    task: the generators and the encoder are single-threaded)."""
    from nd2gpu._format.mask_encode import encode_mask_chunk

    name, index, shape = job
    labels = WORKLOADS[name](np.random.default_rng((SEED, index)), shape)
    return labels, encode_mask_chunk(labels)


def generate(
    names: list[str], k: int, shape: tuple[int, int]
) -> dict[str, tuple[np.ndarray, list[bytes]]]:
    """``k`` distinct frames of each workload and their encoded chunks."""
    jobs = [(name, i, shape) for name in names for i in range(k)]
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
        done = list(pool.map(make_frame, jobs))
    out = {}
    for w, name in enumerate(names):
        part = done[w * k : (w + 1) * k]
        out[name] = (np.stack([labels for labels, _ in part]), [c for _, c in part])
    return out


@dataclass
class Workload:
    name: str
    distinct: np.ndarray
    chunks: list[bytes]
    paths: dict[int, Path] = field(default_factory=dict)

    def closest(self, n: int) -> int:
        """The largest size written that is at most ``n`` (else the smallest)."""
        below = [s for s in self.paths if s <= n]
        return max(below) if below else min(self.paths)


@contextlib.contextmanager
def reused_chunks(distinct: np.ndarray, chunks: list[bytes]) -> Iterator[None]:
    """``write_nd2`` taking the chunks of ``distinct``'s frames as encoded
    already (a tiled frame is a view of one of them, found by its address):
    encoding is 0.1-0.2 s a frame, a thousand frames per file."""
    from nd2gpu._write import nd2_writer

    encode = nd2_writer.encode_mask_chunk
    known = {
        distinct[i].__array_interface__["data"][0]: chunk
        for i, chunk in enumerate(chunks)
    }

    def cached(labels: Any, *args: Any, **kwargs: Any) -> bytes:
        if (
            isinstance(labels, np.ndarray)
            and labels.dtype == distinct.dtype
            and labels.shape == distinct.shape[1:]
            and labels.strides == distinct.strides[1:]
        ):
            chunk = known.get(labels.__array_interface__["data"][0])
            if chunk is not None:
                return chunk
        return encode(labels, *args, **kwargs)

    nd2_writer.encode_mask_chunk = cached
    try:
        yield
    finally:
        nd2_writer.encode_mask_chunk = encode


def write_files(workdir: Path, w: Workload, sizes: list[int]) -> dict[str, int]:
    """One file per size into ``w.paths``: loops T x P, frame ``s`` is
    ``w.distinct[s % k]``; the image planes are uint8 zeros (write_nd2 always
    writes them). Their sizes in bytes."""
    k = w.distinct.shape[0]
    with reused_chunks(w.distinct, w.chunks):
        for n in sizes:
            labels = np.broadcast_to(w.distinct, (n // k, *w.distinct.shape))
            image = np.broadcast_to(np.zeros((), np.uint8), labels.shape)
            w.paths[n] = nd2gpu.write_nd2(
                workdir / f"{w.name}-{n}.nd2",
                {w.name: labels},
                loops=[("T", n // k), ("P", k)],
                image=image,
            )
    return {str(n): path.stat().st_size for n, path in w.paths.items()}


def workload_stats(distinct: np.ndarray, chunks: list[bytes]) -> dict[str, Any]:
    """Per frame, averaged over the distinct frames."""
    k = distinct.shape[0]
    left = np.pad(distinct, ((0, 0), (0, 0), (1, 0)))[..., :-1]
    return {
        "distinct_frames": k,
        "objects_per_frame": sum(
            np.count_nonzero(np.bincount(f.reshape(-1))[1:]) for f in distinct
        )
        / k,
        "runs_per_frame": int(((distinct != 0) & (distinct != left)).sum()) / k,
        "painted_pixels_per_frame": int(np.count_nonzero(distinct)) / k,
        "mask_chunk_bytes_per_frame": sum(len(c) for c in chunks) / k,
    }


# ------------------------------------------------------------------ helpers


def timed(gpu: Gpu, fn: Callable[[], Any]) -> float:
    """Seconds of ``fn()`` until the device is idle."""
    start = time.perf_counter()
    fn()
    gpu.synchronize()
    return time.perf_counter() - start


@contextlib.contextmanager
def pipeline_calls() -> Iterator[list[Any]]:
    """The ``PipelineStats`` of every CUDA decode made inside (the decode path's
    ``BatchPipeline`` swapped for one that keeps them)."""
    from nd2gpu._backends.cuda import batches, pipeline

    calls: list[Any] = []

    class Kept(batches.BatchPipeline):
        def run(self, plan: Any, bases: np.ndarray) -> None:
            try:
                super().run(plan, bases)
            finally:
                calls.append(self.stats)

    pipeline.BatchPipeline = Kept  # type: ignore[misc]
    try:
        yield calls
    finally:
        pipeline.BatchPipeline = batches.BatchPipeline  # type: ignore[misc]


def split(walls: list[float], calls: list[Any]) -> dict[str, Any]:
    """The calling thread's time per call, ms (means over the calls)."""
    if len(calls) != len(walls):
        return {"error": f"{len(calls)} pipeline runs for {len(walls)} calls"}
    out = {"call_ms": statistics.mean(walls) * 1e3}
    for name in SPLIT_FIELDS:
        out[name.replace("_s", "_ms")] = (
            statistics.mean(getattr(s, name) for s in calls) * 1e3
        )
    out["outside_ms"] = out["call_ms"] - out["run_ms"]
    out["batches"] = statistics.mean(s.batches for s in calls)
    out["bytes_copied"] = statistics.mean(s.bytes_copied for s in calls)
    return out


def line_fit(points: dict[int, float]) -> dict[str, Any] | None:
    """``ms = fixed_ms + ms_per_frame * N`` (least squares), or None."""
    if len(points) < 2:
        return None
    slope, fixed = np.polyfit(list(points), list(points.values()), 1)
    return {"fixed_ms": float(fixed), "ms_per_frame": float(slope)}


def per_second(n_bytes: float, ms: float | None) -> float | None:
    """GB/s, or None for a time the simulator cannot measure."""
    return n_bytes / ms / 1e6 if ms else None


# ---------------------------------------------------------------- sections


def first_call(gpu: Gpu, w: Workload, timeout: float) -> dict[str, Any]:
    """Import and the first two loads of the smallest file in a fresh process,
    twice."""
    n = min(w.paths)
    script = """
import json, sys, time
start = time.perf_counter()
import nd2gpu
if sys.argv[2] == "gpu":
    import cupy
    def load():
        with nd2gpu.ND2File(sys.argv[1]) as f:
            cupy.asarray(f.binary_data)
        cupy.cuda.Device().synchronize()
else:
    def load():
        with nd2gpu.ND2File(sys.argv[1]) as f:
            f.binary_data.asarray(device="cuda")
imported = time.perf_counter()
load()
first = time.perf_counter()
load()
second = time.perf_counter()
print(json.dumps({"import_s": imported - start, "first_load_s": first - imported,
                  "second_load_s": second - first}))
"""
    mode = "sim" if gpu.simulated else "gpu"
    out: dict[str, Any] = {"workload": w.name, "frames": n}
    for process in ("first_process", "second_process"):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", script, str(w.paths[n]), mode],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{process} failed:\n{done.stderr[-4000:]}")
        out[process] = {
            **json.loads(done.stdout.splitlines()[-1]),
            "process_s": time.perf_counter() - start,
        }
    return out


def file_to_cupy(ctx: Context, w: Workload) -> dict[str, Any]:
    gpu = ctx.gpu
    rows: dict[str, Any] = {}
    for n, path in sorted(w.paths.items()):
        if ctx.over_budget():
            ctx.skip(w, f"file-to-cupy at N={n} and above")
            break

        def load(path: Path = path) -> Any:
            with nd2gpu.ND2File(path) as f:
                return gpu.layers_on_device(f.binary_data)

        block = load()
        gpu.synchronize()
        if not gpu.tiles_equal(block, w.distinct):
            raise AssertionError(f"{path.name}: nd2gpu's array differs from the frames")
        del block
        walls = []
        with pipeline_calls() as calls:
            for _ in range(repeats_for(n, ctx.dry_run)):
                walls.append(timed(gpu, load))
        ms = statistics.median(walls) * 1e3
        rows[str(n)] = {
            "repeats": len(walls),
            "ms": ms,
            "min_ms": min(walls) * 1e3,
            "ms_per_frame": ms / n,
            "split": split(walls, calls),
        }
    return {
        "sizes": rows,
        "fit": line_fit({int(n): r["ms"] for n, r in rows.items()}),
    }


def nd2_baseline(ctx: Context, w: Workload) -> dict[str, Any]:
    gpu = ctx.gpu
    k, ny, nx = w.distinct.shape
    rows: dict[str, Any] = {}
    sizes = sorted(n for n in ctx.nd2_sizes if n in w.paths)
    for n in sizes:
        if ctx.over_budget():
            ctx.skip(w, f"nd2 at N={n} and above")
            break
        path = w.paths[n]
        times = []
        for i in range(ctx.nd2_repeats):
            start = time.perf_counter()
            array = read_nd2(path)
            gpu.nd2_on_device(array)
            gpu.synchronize()
            times.append(time.perf_counter() - start)
            if i == 0 and not (array.reshape(-1, k, ny, nx) == w.distinct[None]).all():
                raise AssertionError(f"{path.name}: nd2 does not read back the frames")
        ms = statistics.median(times) * 1e3
        rows[str(n)] = {"repeats": len(times), "ms": ms, "ms_per_frame": ms / n}
    points = {int(n): r["ms"] for n, r in rows.items()}
    fit = line_fit(points)
    if fit is None and points:
        (n, ms), *_ = points.items()
        fit = {"fixed_ms": 0.0, "ms_per_frame": ms / n}
    return {"sizes": rows, "fit": fit}


def speedups(row: dict[str, Any]) -> dict[str, Any]:
    """nd2 + cupy.asarray over nd2gpu's file -> CuPy, at every N timed; nd2
    from its fit beyond the sizes it ran at."""
    nd2 = row.get("nd2") or {}
    fit = nd2.get("fit")
    out: dict[str, Any] = {}
    if not fit:
        return out
    measured = nd2["sizes"]
    largest = max(int(n) for n in measured)
    for n, r in (row.get("file-to-cupy") or {}).get("sizes", {}).items():
        if n in measured:
            nd2_ms = measured[n]["ms"]
        else:
            nd2_ms = fit["fixed_ms"] + fit["ms_per_frame"] * int(n)
        out[n] = {
            "nd2_ms": nd2_ms,
            "speedup": nd2_ms / r["ms"],
            "extrapolated": int(n) > largest,
        }
    return out


def loader(ctx: Context, w: Workload) -> dict[str, Any]:
    gpu = ctx.gpu
    n = max(w.paths)
    k = w.distinct.shape[0]
    batch = min(ctx.loader_batch, n)
    rng = np.random.default_rng(1)
    with nd2gpu.ND2File(w.paths[n]) as f:
        layer = f.binary_data[0]
        frames = rng.choice(n, batch, replace=False)
        buf = layer.decode(frames, device="cuda")
        gpu.synchronize()
        for _ in range(min(3, ctx.loader_calls)):  # warm-up, into the buffer
            frames = rng.choice(n, batch, replace=False)
            layer.decode(frames, device="cuda", out=buf)
        walls = []
        with pipeline_calls() as calls:
            for _ in range(ctx.loader_calls):
                frames = rng.choice(n, batch, replace=False)
                walls.append(
                    timed(
                        gpu,
                        lambda frames=frames: layer.decode(
                            frames, device="cuda", out=buf
                        ),
                    )
                )
        if not (to_numpy(buf) == w.distinct[frames % k]).all():
            raise AssertionError(f"{w.name}: decode(out=buf) differs from the frames")
    ms = sorted(t * 1e3 for t in walls)
    return {
        "file_frames": n,
        "batch": batch,
        "calls": len(ms),
        "median_ms": statistics.median(ms),
        "p90_ms": ms[min(len(ms) - 1, int(0.9 * len(ms)))],
        "min_ms": ms[0],
        "split": split(walls, calls),
    }


@dataclass
class KeptBatch:
    """A staged batch as the pipeline submitted it, kept for replaying."""

    host: np.ndarray
    device: Any
    max_frames: int
    n_frames: int
    n_runs: int
    n_tiles: int
    painted: int


class Recorder:
    """A ``DeviceSide`` that hands every call to the real ``CudaDevice`` and keeps
    a copy of each batch it submits (pinned host and device)."""

    def __init__(self, device: Any, cuda: Any) -> None:
        self.device = device
        self.cuda = cuda
        self.tile_pixels = device.tile_pixels
        self.kept: list[KeptBatch] = []

    def pinned(self, nbytes: int) -> np.ndarray:
        return self.device.pinned(nbytes)

    def wait_copied(self, slot: int) -> None:
        self.device.wait_copied(slot)

    def finish(self) -> None:
        self.device.finish()

    def submit(self, slot: int, batch: Any, n_tiles: int) -> None:
        from nd2gpu.kernels._batch_layout import F_PIXELS

        self.device.submit(slot, batch, n_tiles)
        used = batch.used_bytes
        host = self.cuda.pinned_array(used, np.uint8)
        host[:] = batch.host[:used]
        painted = int(batch.frames[: batch.n_frames, F_PIXELS].sum())
        self.kept.append(
            KeptBatch(
                host,
                self.cuda.to_device(host),
                batch.max_frames,
                batch.n_frames,
                batch.n_runs,
                n_tiles,
                painted,
            )
        )


def kernel(ctx: Context, w: Workload) -> dict[str, Any]:
    from nd2gpu._backends.cuda import arrays, expander
    from nd2gpu._backends.cuda.batches import BatchPipeline
    from nd2gpu._decode.plan import DecodePlan
    from nd2gpu.kernels._batch_layout import (
        ENTRY_FIELDS,
        FRAME_BYTES,
        FRAME_FIELDS,
    )
    from nd2gpu.kernels._cuda_registry import current_device_shape
    from nd2gpu.kernels._expand_cuda import expand_launch, expand_runs

    gpu = ctx.gpu
    n = w.closest(ctx.kernel_frames)
    with nd2gpu.ND2File(w.paths[n]) as f:
        layer = f.binary_data[0]
        shape = layer.frame_shape
        plan = DecodePlan.of([layer.ref], 0, np.arange(n))
        out = arrays.zeros((n, *shape))
        gpu.synchronize()  # zeroed on CuPy's stream; the benchmark's is another
        stream = gpu.stream if gpu.cupy_stream is None else gpu.cupy_stream
        device = expander.CudaDevice(stream)
        device.set_output(out)
        recorder = Recorder(device, gpu.cuda)
        BatchPipeline(recorder, shape).run(plan, plan.slots * (shape[0] * shape[1]))
    if not gpu.tiles_equal(out, w.distinct):
        raise AssertionError(f"{w.name}: the pipeline's output differs from the frames")

    kept = [b for b in recorder.kept if b.n_tiles]
    launches = []
    for b in kept:
        table = b.max_frames * FRAME_BYTES
        frames = b.device[:table].view(np.int64).reshape(b.max_frames, FRAME_FIELDS)
        entries = b.device[table:].view(np.uint32).reshape(b.n_runs, ENTRY_FIELDS)
        launches.append((frames, entries, b.n_frames, b.n_tiles))

    def replay() -> None:
        for frames, entries, n_frames, n_tiles in launches:
            expand_runs(
                device.out,
                frames,
                entries,
                n_frames,
                n_tiles,
                gpu.stream,
                block=device.block,
                items=device.items,
            )

    arrays.clear(out)
    gpu.synchronize()
    replay()
    gpu.stream.synchronize()
    if not gpu.tiles_equal(out, w.distinct):
        raise AssertionError(f"{w.name}: the replayed launches' output differs")

    runs = sum(b.n_runs for b in kept)
    painted = sum(b.painted for b in kept)
    moved = RUN_BYTES * runs + FRAME_ROW_BYTES * n + PIXEL_BYTES * painted
    expand = gpu.device_ms(replay, ctx.passes)
    h2d = gpu.device_ms(
        lambda: [b.device.copy_to_device(b.host, stream=gpu.stream) for b in kept],
        ctx.passes,
    )
    src, dst = gpu.device_bytes(moved // 2), gpu.device_bytes(moved // 2)
    copy = gpu.device_ms(lambda: dst.copy_to_device(src, stream=gpu.stream), ctx.passes)
    copied = sum(b.host.nbytes for b in kept)
    busiest = max(launches, key=lambda launch: launch[3])
    config = expand_launch(
        current_device_shape(),
        busiest[3],
        block=device.block,
        items=device.items,
    )
    kernel_us = None if expand.ms is None else expand.ms * 1e3 / len(launches)
    host_us = expand.host_us / len(launches)
    kernel_gbps, copy_gbps = per_second(moved, expand.ms), per_second(moved, copy.ms)
    return {
        "frames": n,
        "batches": len(recorder.kept),
        "launches": len(launches),
        "runs": runs,
        "painted_pixels": painted,
        "bytes_moved": moved,
        "grid": None if config is None else config.grid,
        "block": device.block,
        "items": device.items,
        "kernel_us_per_launch": kernel_us,
        "kernel_us_per_frame": None if expand.ms is None else expand.ms * 1e3 / n,
        "host_us_per_launch": host_us,
        "kernel_gbps": kernel_gbps,
        "copy_gbps": copy_gbps,
        "kernel_over_copy": kernel_gbps / copy_gbps
        if kernel_gbps and copy_gbps
        else None,
        "h2d_bytes": copied,
        "h2d_us_per_batch": None if h2d.ms is None else h2d.ms * 1e3 / len(kept),
        "h2d_gbps": per_second(copied, h2d.ms),
        "launch_bound": None if kernel_us is None else kernel_us < 2 * host_us,
        "hidden": {"kernel": expand.hidden, "copy": copy.hidden, "h2d": h2d.hidden},
    }


def objects(ctx: Context, w: Workload) -> dict[str, Any]:
    import bench_objects as bo

    gpu = ctx.gpu
    n = w.closest(ctx.objects_frames)
    path = w.paths[n]

    def runs() -> Any:
        with nd2gpu.ND2File(path) as f:
            return f.binary_data[0].regionprops_table(
                properties=bo.PROPERTIES, device="cuda"
            )

    expected = bo.table_from_runs(path)
    bo.check_equal(runs(), expected, f"{path.name}: objects on CUDA vs the CPU")
    times = [timed(gpu, runs) for _ in range(repeats_for(n, ctx.dry_run))]
    out: dict[str, Any] = {
        "frames": n,
        "objects": len(expected["label"]),
        "runs_ms_per_frame": statistics.median(times) * 1e3 / n,
    }
    try:
        from cucim.skimage.measure import regionprops_table
    except ImportError as exc:
        out["cucim"] = f"not importable ({exc})"
        return out
    with nd2gpu.ND2File(path) as f:
        masks = gpu.layers_on_device(f.binary_data)
    frame = masks.reshape(-1, *masks.shape[-2:])[0]
    for _ in range(2):  # the first call compiles cuCIM's kernels
        one = timed(gpu, lambda: regionprops_table(frame, properties=bo.PROPERTIES))
    if 2 * n * one > ctx.remaining() / 4:
        out["cucim"] = f"skipped: {one:.2f} s a frame, too slow for the time left"
        return out
    bo.check_equal(bo.table_from_dense_cucim(path), expected, f"{path.name}: cuCIM")
    dense = timed(gpu, lambda: bo.table_from_dense_cucim(path))
    out["cucim"] = "installed"
    out["dense_cucim_ms_per_frame"] = dense * 1e3 / n
    out["speedup_vs_cucim"] = dense * 1e3 / n / out["runs_ms_per_frame"]
    return out


SECTIONS: dict[str, Callable[[Context, Workload], dict[str, Any]]] = {
    "file-to-cupy": file_to_cupy,
    "nd2": nd2_baseline,
    "loader": loader,
    "kernel": kernel,
    "objects": objects,
}


# -------------------------------------------------------------------- run


def spin_build() -> dict[str, Any]:
    """The spin kernel built for the GPU here (dry run): its ptxas report, or
    why there is none (no CUDA toolchain: the ``ptx`` extra)."""
    try:
        return check_spin_source()
    except (ImportError, FileNotFoundError) as exc:
        return {"skipped": f"no NVRTC or ptxas here: {type(exc).__name__}: {exc}"}


def bench_workload(ctx: Context, tmp: Path, w: Workload) -> None:
    """Every section for one workload (and the first call, for the first)."""
    report = ctx.report
    if ctx.over_budget():
        ctx.skip(w, "the whole workload")
        return
    row = report["workloads"][w.name] = workload_stats(w.distinct, w.chunks)
    ctx.section(row, "files", lambda: write_files(tmp, w, ctx.args.sizes))
    if not w.paths:
        return
    if "first-call" not in report:
        # Two processes: each may take a third of what is left.
        timeout = max(30.0, min(ctx.remaining(), 2700) / 3)
        ctx.section(report, "first-call", lambda: first_call(ctx.gpu, w, timeout))
    for section, fn in SECTIONS.items():
        if ctx.over_budget():
            ctx.skip(w, section)
            continue
        ctx.section(row, section, lambda fn=fn: fn(ctx, w))
    row["speedups"] = speedups(row)
    for path in w.paths.values():
        path.unlink(missing_ok=True)
    ctx.save()


class Context:
    """The run's options, its device, its report and its clock."""

    def __init__(self, args: argparse.Namespace, gpu: Gpu, report: dict) -> None:
        self.args = args
        self.gpu = gpu
        self.report = report
        self.dry_run: bool = args.dry_run
        self.nd2_sizes = [int(s) for s in args.nd2_sizes.split(",")]
        self.nd2_repeats: int = args.nd2_repeats
        self.loader_batch: int = args.loader_batch
        self.loader_calls: int = args.loader_calls
        self.kernel_frames: int = args.kernel_frames
        self.objects_frames: int = args.objects_frames
        self.passes: int = args.passes
        self.started = time.monotonic()
        self.failed = False

    def remaining(self) -> float:
        """Seconds left of ``--budget-s`` (infinite without one)."""
        budget = self.args.budget_s
        if not budget:
            return float("inf")
        return budget - (time.monotonic() - self.started)

    def over_budget(self) -> bool:
        return self.remaining() < 0

    def skip(self, w: Workload, what: str) -> None:
        self.report["skipped"].append(f"{w.name}: {what} (past --budget-s)")

    def save(self) -> None:
        self.report["elapsed_s"] = time.monotonic() - self.started
        write_results(self.args.out, self.args.tag, self.report, markdown(self.report))

    def section(self, where: dict, name: str, fn: Callable[[], Any]) -> None:
        """``where[name] = fn()``, or the error recorded; then the results saved."""
        start = time.monotonic()
        try:
            where[name] = fn()
        except Exception:
            self.failed = True
            where.setdefault("errors", {})[name] = traceback.format_exc()
            print(f"{name} FAILED:\n{traceback.format_exc()}", file=sys.stderr)
        print(f"  {name}: {time.monotonic() - start:.1f} s", flush=True)
        self.save()


@contextlib.contextmanager
def workdir(parent: str | None) -> Iterator[Path]:
    """A temporary folder, in memory (/dev/shm) where there is one."""
    if parent is None and os.access("/dev/shm", os.W_OK):
        parent = "/dev/shm"
    path = Path(tempfile.mkdtemp(prefix="nd2gpu-bench-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def versions() -> dict[str, str]:
    """Versions of the GPU stack (nd2's and nd2gpu's are in ``run_header``)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in (
        "numpy",
        "numba",
        "numba-cuda",
        "cupy-cuda13x",
        "cupy-cuda12x",
        "cucim-cu13",
        "cucim-cu12",
    ):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--workloads", help="default cells,tiny,dense (dry run: cells,dense)"
    )
    parser.add_argument("--sizes", help="frames per file (default 16,64,256,1024)")
    parser.add_argument(
        "--distinct", type=int, help="distinct frames per workload (default 16)"
    )
    parser.add_argument("--nd2-sizes", help="sizes nd2 reads too (default 16,64)")
    parser.add_argument("--nd2-repeats", type=int, help="default 2")
    parser.add_argument("--loader-batch", type=int, help="default 16")
    parser.add_argument("--loader-calls", type=int, help="default 50")
    parser.add_argument("--kernel-frames", type=int, help="default 256")
    parser.add_argument("--objects-frames", type=int, help="default 16")
    parser.add_argument(
        "--passes", type=int, help="timed passes between CUDA events (default 20)"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        help="skip what starts later than this (default 225; 0: no limit)",
    )
    parser.add_argument(
        "--shape",
        type=parse_shape,
        help="frame shape, e.g. 256x256 (default 2048x2048; dry run 32x32)",
    )
    parser.add_argument("--tag", default="gpu", help="results file name stem")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--workdir", help="where the files go (default /dev/shm)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="numba's CUDA simulator, tiny sizes: check the script without a GPU",
    )
    args = parser.parse_args(argv)
    for name, defaults in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, defaults[args.dry_run])
    args.sizes = sorted({int(s) for s in args.sizes.split(",")})
    bad = [n for n in args.sizes if n % args.distinct]
    if bad:
        parser.error(f"--distinct {args.distinct} must divide every size ({bad})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gpu = Gpu(args.dry_run)
    from nd2gpu._backends.cuda import batches

    names = args.workloads.split(",")
    report: dict[str, Any] = {
        **run_header(),
        "gpu": gpu.describe(),
        "dry_run": args.dry_run,
        "versions": versions(),
        "batch_frames": [batches.FIRST_BATCH_FRAMES, batches.BATCH_FRAMES],
        "ring": batches.RING,
        "frame_shape": list(args.shape),
        "sizes": args.sizes,
        "nd2_sizes": [int(s) for s in args.nd2_sizes.split(",")],
        "passes": args.passes,
        "budget_s": args.budget_s,
        "launch": {},
        "workloads": {},
        "skipped": [],
    }
    ctx = Context(args, gpu, report)
    print(f"{report['gpu']['device']}; {report['machine']}", flush=True)
    frames: dict[str, tuple[np.ndarray, list[bytes]]] = {}

    def generated() -> dict[str, int]:
        frames.update(generate(names, args.distinct, args.shape))
        return {name: len(chunks) for name, (_, chunks) in frames.items()}

    ctx.section(report, "generate", generated)
    if args.dry_run:
        ctx.section(report, "spin-build", spin_build)
    ctx.section(
        report["launch"],
        "empty-kernel",
        lambda: gpu.launch_overhead(
            EMPTY_LAUNCHES if not args.dry_run else 2, args.passes
        ),
    )
    with workdir(args.workdir) as tmp:
        for name in names if frames else []:
            print(f"{name}:", flush=True)
            bench_workload(ctx, tmp, Workload(name, *frames.pop(name)))
    print()
    print(markdown(report))
    return 1 if ctx.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
