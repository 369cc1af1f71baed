"""Training-dataset benchmark: random batches of (image, masks) frames.

Writes the "cells" workload (benchmarks/workloads.py) with an image channel
(cells brighter than a noisy background), once with uncompressed images and
once zlib-compressed, and for each file times, in the same run:

- first batch from a fresh open: ``--first`` random frames, from opening the
  file to having the batch, for nd2 (``nd2.ND2File``, ``read_frame`` of each
  frame and its masks from ``binary_data``, which decodes every mask of the
  file first) and nd2gpu (``FrameDataset(path)[frames]``);
- steady state: ``--batches`` random batches of ``--batch`` frames, nd2 from an
  open file whose ``binary_data`` is already decoded (``read_frame`` and the
  masks stacked into new arrays), nd2gpu with ``ds.get(frames, out=buffers)``
  into reused buffers, and the floor: copying the same image bytes from the
  memory-mapped file into a reused buffer (compressed images: inflating their
  streams) plus inflating the masks' payloads (already in memory), in a pool
  of as many threads as nd2gpu decodes with;
- peak memory of each (tracemalloc, in separate untimed runs): what a fresh
  first batch allocates, and what a steady-state batch allocates beyond the
  reused buffers.

Steady-state figures are the median of ``--repeats`` passes, nd2gpu and the
floor alternated; fresh opens the median of ``--fresh-repeats``. Results are
checked against nd2 first. With ``--device cuda`` (a GPU machine) nd2gpu
decodes to CuPy and nd2's batches are moved with ``cupy.asarray``; ``--quick``
(a smoke test: tiny frames, one pass) runs the CUDA path under numba's
simulator.

Usage::

    python benchmarks/bench_dataset.py                 # writes results/dataset-cpu.*
    python benchmarks/bench_dataset.py --json          # the report on stdout, as JSON
    python benchmarks/bench_dataset.py --quick --out /tmp/smoke   # smoke test (CI)
"""

from __future__ import annotations

import argparse
import json
import mmap
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import nd2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import workload_labels

import nd2gpu
from nd2gpu._decode import inflate as _inflate
from nd2gpu._decode.pool import worker_count
from nd2gpu._device import to_numpy
from nd2gpu._format.chunk_index import ChunkIndex
from nd2gpu._format.container import binary_frame_chunk_name
from nd2gpu._format.image_frames import (
    FRAME_TIMESTAMP,
    PIXELS_OFFSET,
    image_frame_chunk_name,
)
from nd2gpu._format.mask_stream import MASK_PREFIX_BYTES
from nd2gpu.cli.timing import machine_description

RESULTS = Path(__file__).parent / "results"
#: Goals (issue 19): the first batch at least this much faster than nd2, and
#: steady-state batches within this factor of the floor.
FIRST_BATCH_GOAL = 10.0
STEADY_GOAL = 1.3
FORMS = {"uncompressed": None, "lossless": "lossless"}
#: The file holding the first half of the frames (peak memory against frames).
HALF = "half"
QUICK = {
    "size": 64,
    "frames": 6,
    "batch": 4,
    "first": 2,
    "batches": 2,
    "repeats": 1,
    "fresh_repeats": 1,
}


def build(
    workdir: Path, workload: str, n_frames: int, size: int, seed: int
) -> dict[str, Path]:
    """The workload with an image channel, once per storage form of the image,
    and (key ``HALF``) its first half, uncompressed."""
    labels = workload_labels(workload, n_frames, (size, size))
    rng = np.random.default_rng(seed)
    image = rng.normal(200, 20, labels.shape) + (labels > 0) * 800
    image = np.clip(image, 0, 65535).astype(np.uint16)
    files = {form: (labels, image, compression) for form, compression in FORMS.items()}
    half = max(1, n_frames // 2)
    files[HALF] = (labels[:half], image[:half], None)
    return {
        form: nd2gpu.write_nd2(
            workdir / f"{workload}-{form}.nd2",
            {workload: masks},
            loops=[("T", len(masks))],
            image=pixels,
            image_compression=compression,
        )
        for form, (masks, pixels, compression) in files.items()
    }


class Nd2Reader:
    """Batches the way nd2 gives them: ``read_frame`` and ``binary_data``."""

    def __init__(self, path: Path, to_device: Callable[[np.ndarray], Any]) -> None:
        self.file = nd2.ND2File(path)
        self.layers = self.file.binary_data  # decodes every mask of the file
        self.to_device = to_device
        self.zeros = np.zeros(self.file.shape[-2:], np.uint16)

    def batch(self, frames: np.ndarray) -> tuple[Any, Any]:
        images = np.stack([self.file.read_frame(int(i)) for i in frames])
        masks = np.stack(
            [
                [
                    m if (m := layer.data[int(i)]) is not None else self.zeros
                    for layer in self.layers
                ]
                for i in frames
            ]
        )
        return self.to_device(images), self.to_device(masks)

    def close(self) -> None:
        self.file.close()


class Floor:
    """Copy (or inflate) the image bytes and inflate the masks' payloads of a
    batch, in a pool of nd2gpu's number of threads; with ``fill``, also zero
    each frame's slot of a reused masks buffer (writing the dense masks once,
    as the loader benchmark's floor does)."""

    def __init__(self, path: Path, threads: int, batch: int) -> None:
        with nd2.ND2File(path) as f:
            self.compressed = f.attributes.compressionType == "lossless"
            n = f._frame_count
            self.shape = tuple(f.shape[-2:])
            tag = f.binary_data[0].file_tag
            layers = len(f.binary_data)
        self.pool = ThreadPoolExecutor(threads)
        with ChunkIndex(path) as index:
            self.masks = [
                index.read(binary_frame_chunk_name(tag, seq))[MASK_PREFIX_BYTES:]
                for seq in range(n)
            ]
            if self.compressed:
                self.images = [
                    index.read(image_frame_chunk_name(seq))[FRAME_TIMESTAMP.size :]
                    for seq in range(n)
                ]
            else:
                self.offsets = [
                    index.offsets[image_frame_chunk_name(seq)] + PIXELS_OFFSET
                    for seq in range(n)
                ]
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.map = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
        self.buffer = np.empty((batch, *self.shape), np.uint16)
        self.masks_out = np.empty((batch, layers, *self.shape), np.uint16)

    def _copy(self, slot: int, seq: int) -> None:
        count = self.shape[0] * self.shape[1]
        src = np.frombuffer(self.map, np.uint16, count, self.offsets[seq])
        np.copyto(self.buffer[slot], src.reshape(self.shape))

    def batch(self, frames: np.ndarray, fill: bool = False) -> None:
        decompress = _inflate.INFLATER.decompress
        if self.compressed:
            tasks = [self.pool.submit(decompress, self.images[i]) for i in frames]
        else:
            tasks = [self.pool.submit(self._copy, j, i) for j, i in enumerate(frames)]
        tasks += [self.pool.submit(decompress, self.masks[i]) for i in frames]
        if fill:
            slots = self.masks_out[: len(frames)]
            tasks += [self.pool.submit(slot.fill, 0) for slot in slots]
        wait(tasks)
        for task in tasks:
            task.result()

    def close(self) -> None:
        self.pool.shutdown()
        del self.buffer, self.masks_out
        self.map.close()
        self._fh.close()


def seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def peak_bytes(run: Callable[[], object]) -> int:
    """Peak bytes traced by tracemalloc during ``run`` (beyond what was held)."""
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


def device_tools(device: str) -> tuple[Callable[[np.ndarray], Any], Callable[[], None]]:
    """How nd2's NumPy batches reach the device, and how to wait for it."""
    if device == "cpu":
        return (lambda a: a), (lambda: None)
    try:
        import cupy
    except ImportError:  # numba's simulator (--quick): its own device copies
        from numba import cuda

        return cuda.to_device, (lambda: None)
    return cupy.asarray, (lambda: cupy.cuda.Device().synchronize())


def first_batch(
    path: Path, first: np.ndarray, device: str
) -> tuple[Callable[[], None], Callable[[], None]]:
    """nd2's and nd2gpu's first batch of ``first`` frames from a fresh open."""
    to_device, sync = device_tools(device)

    def nd2_first() -> None:
        ref = Nd2Reader(path, to_device)
        ref.batch(first)
        sync()
        ref.close()

    def nd2gpu_first() -> None:
        ds = nd2gpu.FrameDataset(path, device=None if device == "cpu" else "cuda")
        ds[first]
        sync()
        ds.close()

    return nd2_first, nd2gpu_first


def first_batch_peaks(path: Path, first: np.ndarray, device: str) -> dict[str, int]:
    """Peak memory of nd2's and nd2gpu's first batch from a fresh open."""
    nd2_first, nd2gpu_first = first_batch(path, first, device)
    return {
        "nd2_first_peak_bytes": peak_bytes(nd2_first),
        "nd2gpu_first_peak_bytes": peak_bytes(nd2gpu_first),
    }


def check(ds: nd2gpu.FrameDataset, ref: Nd2Reader, frames: np.ndarray) -> None:
    got = ds[frames]
    want = ref.batch(frames)
    for g, w, what in zip(got, want, ("images", "masks"), strict=True):
        if not np.array_equal(to_numpy(g), to_numpy(w)):
            raise AssertionError(f"nd2gpu's {what} differ from nd2's")


def bench_form(path: Path, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    to_device, sync = device_tools(args.device)
    device = None if args.device == "cpu" else "cuda"
    rng = np.random.default_rng(args.seed + 1)
    first = np.sort(rng.choice(args.frames, args.first, replace=False))
    batches = [
        np.sort(rng.choice(args.frames, args.batch, replace=args.batch > args.frames))
        for _ in range(args.batches)
    ]

    nd2_first, nd2gpu_first = first_batch(path, first, args.device)
    ref = Nd2Reader(path, to_device)
    ds = nd2gpu.FrameDataset(path, device=device)
    for frames in [first, *batches]:  # correctness first (and warm-up)
        check(ds, ref, frames)
    nd2_first()
    nd2gpu_first()
    fresh_nd2, fresh_ours = [], []
    for _ in range(args.fresh_repeats):
        fresh_nd2.append(seconds(nd2_first))
        fresh_ours.append(seconds(nd2gpu_first))

    images, masks = ds[batches[0]]  # the reused buffers
    out = (images, masks)
    floor = Floor(path, threads, args.batch) if args.device == "cpu" else None

    def ours() -> None:
        for frames in batches:
            ds.get(frames, out=out)
        sync()

    def theirs() -> None:
        for frames in batches:
            ref.batch(frames)
        sync()

    def floor_pass(fill: bool = False) -> None:
        assert floor is not None
        for frames in batches:
            floor.batch(frames, fill)

    runs: dict[str, list[float]] = {"nd2gpu": [], "nd2": [], "floor": [], "fill": []}
    for _ in range(args.repeats):
        runs["nd2gpu"].append(seconds(ours))
        if floor is not None:
            runs["floor"].append(seconds(floor_pass))
            runs["fill"].append(seconds(lambda: floor_pass(fill=True)))
        runs["nd2"].append(seconds(theirs))

    peaks = {
        **first_batch_peaks(path, first, args.device),
        "nd2_steady_peak_bytes": peak_bytes(lambda: ref.batch(batches[0])),
        "nd2gpu_steady_peak_bytes": peak_bytes(lambda: ds.get(batches[0], out=out)),
    }
    if floor is not None:
        floor.close()
    ref.close()
    ds.close()

    per_frame = 1e3 / (args.batch * args.batches)
    row: dict[str, Any] = {
        "first_nd2_ms": statistics.median(fresh_nd2) * 1e3,
        "first_nd2gpu_ms": statistics.median(fresh_ours) * 1e3,
        "steady_nd2_ms_per_frame": statistics.median(runs["nd2"]) * per_frame,
        "steady_nd2gpu_ms_per_frame": statistics.median(runs["nd2gpu"]) * per_frame,
        "batch_bytes": int(to_numpy(images).nbytes + to_numpy(masks).nbytes),
        **peaks,
    }
    row["first_speedup"] = row["first_nd2_ms"] / row["first_nd2gpu_ms"]
    row["first_goal_met"] = row["first_speedup"] >= FIRST_BATCH_GOAL
    if runs["floor"]:
        row["steady_floor_ms_per_frame"] = statistics.median(runs["floor"]) * per_frame
        row["steady_over_floor"] = (
            row["steady_nd2gpu_ms_per_frame"] / row["steady_floor_ms_per_frame"]
        )
        row["steady_goal_met"] = row["steady_over_floor"] <= STEADY_GOAL
        row["steady_floor_fill_ms_per_frame"] = (
            statistics.median(runs["fill"]) * per_frame
        )
        row["steady_over_floor_fill"] = (
            row["steady_nd2gpu_ms_per_frame"] / row["steady_floor_fill_ms_per_frame"]
        )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", default="cells")
    parser.add_argument("--size", type=int, default=2048, help="frame side, pixels")
    parser.add_argument("--frames", type=int, default=32, help="frames in the file")
    parser.add_argument("--batch", type=int, default=16, help="frames per batch")
    parser.add_argument(
        "--first", type=int, default=4, help="frames of the first batch"
    )
    parser.add_argument("--batches", type=int, default=8, help="batches per pass")
    parser.add_argument("--repeats", type=int, default=9, help="steady-state passes")
    parser.add_argument("--fresh-repeats", type=int, default=3, help="fresh opens")
    parser.add_argument("--forms", default=",".join(FORMS), help="image storage forms")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tag", default=None, help="results file stem (dataset-DEVICE)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--json", action="store_true", help="print the JSON report")
    parser.add_argument("--quick", action="store_true", help="a smoke test: tiny sizes")
    parser.add_argument("--note", default="", help="text appended to the .md")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    forms = [f for f in args.forms.split(",") if f]
    if unknown := set(forms) - set(FORMS):
        parser.error(f"unknown forms {sorted(unknown)}; choose from {list(FORMS)}")
    if args.device == "cuda" and not args.quick:
        from nd2gpu._device import gpu_usable

        if not gpu_usable():
            parser.error("--device cuda needs a GPU and CuPy (or --quick: simulated)")

    threads = worker_count()
    with tempfile.TemporaryDirectory() as tmp:
        paths = build(Path(tmp), args.workload, args.frames, args.size, args.seed)
        file_bytes = {form: paths[form].stat().st_size // args.frames for form in forms}
        rows = {form: bench_form(paths[form], args, threads) for form in forms}
        half = max(1, args.frames // 2)
        first = np.arange(min(args.first, half))
        halved = {
            "frames_in_file": half,
            "first_frames": len(first),
            **first_batch_peaks(paths[HALF], first, args.device),
            "frames_in_full_file": args.frames,
            **{
                f"full_{key}": value
                for key, value in first_batch_peaks(
                    paths["uncompressed"], first, args.device
                ).items()
            },
        }
    report = {
        "machine": machine_description(),
        "device": args.device,
        "quick": args.quick,
        "threads": threads,
        "inflater": _inflate.INFLATER_NAME,
        "nd2gpu_version": nd2gpu.__version__,
        "nd2_version": nd2.__version__,
        "workload": args.workload,
        "frame_shape": [args.size, args.size],
        "frames_in_file": args.frames,
        "file_bytes_per_frame": file_bytes,
        "batch": args.batch,
        "first": args.first,
        "batches": args.batches,
        "repeats": args.repeats,
        "fresh_repeats": args.fresh_repeats,
        "goals": {"first_speedup": FIRST_BATCH_GOAL, "steady_over_floor": STEADY_GOAL},
        "forms": rows,
        "first_batch_peaks_against_frames": halved,
    }
    tag = args.tag or f"dataset-{args.device}"
    table = markdown(report) + (f"\n{args.note}\n" if args.note else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{tag}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{tag}.md").write_text(table)
    print(json.dumps(report, indent=2) if args.json else table)
    return 0


def markdown(r: dict[str, Any]) -> str:
    mib = 1 << 20
    quick = " (quick smoke run)" if r["quick"] else ""
    lines = [
        f"Machine: {r['machine']}; {r['threads']} decode threads; inflater "
        f"{r['inflater']}; device {r['device']}{quick}; "
        f"workload {r['workload']} with an image channel (uint16), "
        f"{r['frame_shape'][0]}x{r['frame_shape'][1]} frames, {r['frames_in_file']} "
        f"in the file; first batch: {r['first']} random frames from a fresh open "
        f"(median of {r['fresh_repeats']}); steady state: {r['batches']} random "
        f"batches of {r['batch']} frames, median of {r['repeats']} passes.",
        "",
        "| images | first batch: nd2 ms | nd2gpu ms | speed-up | steady: nd2 "
        "ms/frame | nd2gpu ms/frame | floor ms/frame | nd2gpu / floor "
        "| floor + mask fill ms/frame | nd2gpu / that |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for form, row in r["forms"].items():
        floor = ratio = fill = fill_ratio = "-"
        if "steady_floor_ms_per_frame" in row:
            floor = f"{row['steady_floor_ms_per_frame']:.3f}"
            ratio = f"{row['steady_over_floor']:.2f}"
        if "steady_floor_fill_ms_per_frame" in row:
            fill = f"{row['steady_floor_fill_ms_per_frame']:.3f}"
            fill_ratio = f"{row['steady_over_floor_fill']:.2f}"
        lines.append(
            f"| {form} | {row['first_nd2_ms']:.1f} | {row['first_nd2gpu_ms']:.1f} "
            f"| {row['first_speedup']:.1f}x | {row['steady_nd2_ms_per_frame']:.3f} "
            f"| {row['steady_nd2gpu_ms_per_frame']:.3f} | {floor} | {ratio} "
            f"| {fill} | {fill_ratio} |"
        )
    lines += [
        "",
        "Peak memory allocated (tracemalloc, MiB): a fresh first batch, and one "
        "steady-state batch (nd2gpu into reused buffers).",
        "",
        "| images | first: nd2 | first: nd2gpu | steady: nd2 | steady: nd2gpu "
        "| one batch's arrays |",
        "|---|---|---|---|---|---|",
    ]
    for form, row in r["forms"].items():
        lines.append(
            f"| {form} | {row['nd2_first_peak_bytes'] / mib:.1f} "
            f"| {row['nd2gpu_first_peak_bytes'] / mib:.1f} "
            f"| {row['nd2_steady_peak_bytes'] / mib:.1f} "
            f"| {row['nd2gpu_steady_peak_bytes'] / mib:.1f} "
            f"| {row['batch_bytes'] / mib:.1f} |"
        )
    h = r["first_batch_peaks_against_frames"]
    lines += [
        "",
        f"Peak memory of a fresh first batch against the file's frames "
        f"(uncompressed images, frames 0-{h['first_frames'] - 1}, MiB): nd2 "
        f"{h['nd2_first_peak_bytes'] / mib:.1f} with {h['frames_in_file']} frames, "
        f"{h['full_nd2_first_peak_bytes'] / mib:.1f} with "
        f"{h['frames_in_full_file']}; nd2gpu {h['nd2gpu_first_peak_bytes'] / mib:.1f} "
        f"and {h['full_nd2gpu_first_peak_bytes'] / mib:.1f}.",
    ]
    lines += [
        "",
        "nd2: `nd2.ND2File`, `read_frame` per frame and the masks from "
        "`binary_data` (decoded whole on first use), stacked. Floor: copying the "
        "image bytes from the memory-mapped file into a reused buffer "
        "(compressed: inflating the image streams) plus inflating the masks' "
        "payloads (in memory), in a pool of the same number of threads; floor + "
        "mask fill: that, plus zeroing each frame's slot of a reused masks "
        "buffer (the dense masks written once). Goals: "
        f"first batch >= {r['goals']['first_speedup']:.0f}x nd2; steady state <= "
        f"{r['goals']['steady_over_floor']}x the floor.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
