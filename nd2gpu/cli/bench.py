"""``nd2gpu bench FILE``: decode timings on this machine, nd2 against nd2gpu.

Every timed run opens the file afresh and decodes every binary layer, as a
script reading the file once does: nd2 (``np.asarray(f.binary_data)`` on a new
``nd2.ND2File``; nd2 keeps the decoded layers on the open file, so reusing one
would time only stacking) and nd2gpu on the CPU and, where a GPU is usable, on
CUDA (synchronised before the clock stops; numba's CUDA simulator is never
timed). The first run of each reader is not timed; its result is compared with
nd2's, so a timing is only reported for values that agree.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, get_args

import numpy as np

from .._backends import backend
from .._device import Device, cuda_status, simulator_active, to_numpy
from .._errors import DeviceUnavailableError
from .common import (
    CLIError,
    Input,
    UsageError,
    add_common,
    add_inputs,
    add_sample,
    inputs,
    naming,
    positive_int,
    storage_options,
)
from .timing import machine_description, median_seconds

#: Frames smaller than this measure per-call overheads more than decoding.
SMALL_FRAME_PIXELS = 512 * 512
SMALL_FRAMES_NOTE = (
    "frames this small time the fixed cost of opening and of a call more than "
    "decoding; time a file with large frames (e.g. 2048x2048) to compare decoders"
)
DEVICES: tuple[Device, ...] = get_args(Device)
NOT_ASKED = "not asked for (--device)"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench``."""
    p = subparsers.add_parser(
        "bench",
        help="time decoding on this machine: nd2, nd2gpu cpu and cuda",
        description="Decode every binary layer of FILE with nd2 and nd2gpu, "
        "opening the file afresh for every run: one untimed run (its values are "
        "compared with nd2's), then --repeats timed runs; report the median per "
        "frame. Without FILE: the sample file.",
    )
    p.add_argument("file", nargs="?", metavar="FILE", help="ND2 file: a path or URL")
    add_sample(p)
    add_inputs(p)
    p.add_argument(
        "--repeats", type=positive_int, default=5, metavar="N", help="timed runs"
    )
    p.add_argument(
        "--device",
        choices=("all", *DEVICES),
        default="all",
        help="nd2gpu devices to time (default: all; cuda is skipped when not usable)",
    )
    p.add_argument("--no-nd2", action="store_true", help="do not time nd2")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_common(p, quiet="print only the table")
    p.set_defaults(func=run)
    return p


def _stackable(shapes: list[tuple[int, ...]]) -> bool:
    return len(set(shapes)) == 1


def nd2_run(item: Input) -> Callable[[], list[np.ndarray | None]]:
    """Decode every layer with a fresh ``nd2.ND2File``, as nd2 users do."""
    import nd2

    def run() -> list[np.ndarray | None]:
        with nd2.ND2File(item.source, **item.open_kwargs) as f:
            data = f.binary_data  # nd2 decodes every frame here
            if data is None:
                return []
            present = [layer for layer in data if layer.frame_shape != (0, 0)]
            if _stackable([layer.frame_shape for layer in present]):
                return list(np.asarray(data))
            return [layer.asarray() for layer in present]

    return run


def nd2gpu_run(item: Input, device: Device) -> Callable[[], list[Any]]:
    """Decode every layer with a fresh ``nd2gpu.ND2File`` on ``device``."""
    sync = backend(device).synchronize

    def run() -> list[Any]:
        with item.open(device=device) as f:
            layers = f.binary_data
            if layers is None:
                return []
            present = [layer for layer in layers if layer.frame_shape != (0, 0)]
            if _stackable([layer.frame_shape for layer in present]):
                out = list(layers.asarray(device=device))
            else:
                out = [layer.asarray(device=device) for layer in present]
            sync()
            return out

    return run


def _cuda_skip_reason() -> str | None:
    ok, why = cuda_status()
    if ok and simulator_active():
        return "numba's CUDA simulator only (no GPU)"
    return None if ok else f"CUDA is not usable: {why}"


def _check(name: str, got: list[Any], ref: list[np.ndarray | None]) -> None:
    if len(got) != len(ref) or any(
        (a is None) != (b is None)
        or (b is not None and not np.array_equal(to_numpy(a), b))
        for a, b in zip(got, ref, strict=False)
    ):
        raise CLIError(f"nd2gpu {name} does not give nd2's values on this file")


def bench(
    item: Input, *, repeats: int, devices: list[str], with_nd2: bool, strict_cuda: bool
) -> dict[str, Any]:
    """Time the readers on ``item``; the result is what ``--json`` prints."""
    with naming(item):
        return _bench(item, repeats, devices, with_nd2, strict_cuda)


def _bench(
    item: Input, repeats: int, devices: list[str], with_nd2: bool, strict_cuda: bool
) -> dict[str, Any]:
    with item.open() as f:
        layers = f.binary_data
        if layers is None:
            raise CLIError(f"{item.name}: the file has no binary layers")
        present = [layer for layer in layers if layer.frame_shape != (0, 0)]
        if not present:
            raise CLIError(f"{item.name}: no binary layer has a mask in any frame")
        n_frames = sum(len(layer) for layer in present)
        frame_shape = list(present[0].frame_shape)
        shapes = sorted({layer.frame_shape for layer in present})
    reference = nd2_run(item)()  # also nd2's warm-up
    ms: dict[str, float | None] = {"nd2": None, "cpu": None, "cuda": None}
    skipped: dict[str, str] = {}
    if with_nd2:
        ms["nd2"] = _ms(median_seconds(nd2_run(item), repeats, warmup=0), n_frames)
    else:
        skipped["nd2"] = "--no-nd2"
    for device in DEVICES:
        if device not in devices:
            skipped[device] = NOT_ASKED
            continue
        if device == "cuda" and (why := _cuda_skip_reason()) is not None:
            if strict_cuda:
                raise DeviceUnavailableError(why)
            skipped[device] = why
            continue
        run = nd2gpu_run(item, device)
        _check(device, run(), reference)  # also the warm-up
        ms[device] = _ms(median_seconds(run, repeats, warmup=0), n_frames)
    nd2_ms = ms["nd2"]
    speedup = {
        d: (nd2_ms / t if nd2_ms and t else None) for d, t in ms.items() if d != "nd2"
    }
    y, x = frame_shape
    return {
        "file": item.name,
        "layers": len(present),
        "frames": n_frames,
        "frame_shape": frame_shape,
        "frame_shapes": [list(s) for s in shapes],
        "repeats": repeats,
        "ms_per_frame": ms,
        "speedup_vs_nd2": speedup,
        "skipped": skipped,
        "values_agree": True,
        "machine": machine_description(),
        "note": SMALL_FRAMES_NOTE if y * x < SMALL_FRAME_PIXELS else None,
    }


def _ms(seconds: float, n_frames: int) -> float:
    return 1e3 * seconds / n_frames


def _print(result: dict[str, Any], quiet: bool) -> None:
    if not quiet:
        shapes = " / ".join(f"{y}x{x}" for y, x in result["frame_shapes"])
        print(f"file:    {result['file']}")
        print(
            f"decoded: {result['layers']} layer(s), {result['frames']} frames of "
            f"{shapes} per run; median of {result['repeats']} runs, each opening "
            "the file afresh, after one untimed run"
        )
        print(f"machine: {result['machine']}")
    print(f"{'reader':<14}{'ms/frame':>12}{'vs nd2':>10}")
    for name in ("nd2", *DEVICES):
        label = "nd2" if name == "nd2" else f"nd2gpu {name}"
        value = result["ms_per_frame"][name]
        if value is None:
            why = result["skipped"].get(name)
            if name != "nd2" and why != NOT_ASKED:
                print(f"{label:<14}  skipped: {why}")
            continue
        ratio = result["speedup_vs_nd2"].get(name)
        shown = f"{ratio:.3g}x" if ratio else "-"
        print(f"{label:<14}{value:>12.4f}{shown:>10}")
    if not quiet:
        print("values:  nd2gpu gives nd2's values on every layer")
        if result["note"]:
            print(f"note: {result['note']}")


def run(args: argparse.Namespace) -> int:
    """``nd2gpu bench``."""
    sample = args.sample or args.file is None
    if args.sample and args.file is not None:
        raise UsageError("bench takes FILE or --sample, not both")
    devices = list(DEVICES) if args.device == "all" else [args.device]
    files = [] if sample else [args.file]
    with inputs(files, sample, storage_options(args)) as (item,):
        result = bench(
            item,
            repeats=args.repeats,
            devices=devices,
            with_nd2=not args.no_nd2,
            strict_cuda=args.device == "cuda",
        )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result, args.quiet)
    return 0


__all__ = ["add_parser", "bench", "nd2_run", "nd2gpu_run", "run"]
