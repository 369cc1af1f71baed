"""``nd2gpu bench``: time decoding on this machine, nd2gpu (cpu, cuda) and nd2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._backends import backend
from .._device import cuda_status, simulator_active
from .._errors import DeviceUnavailableError
from .._layers import BinaryLayers
from .common import CLIError, input_path, open_layers
from .timing import median_seconds

#: Frames smaller than this measure per-call overheads more than decoding.
SMALL_FRAME_PIXELS = 512 * 512


def _decode_everything(layers: Sequence[Any], stack: bool, **kwargs: Any) -> Any:
    if stack:
        return layers.asarray(**kwargs)  # type: ignore[attr-defined]
    return [layer.asarray(**kwargs) for layer in layers]


def _bench_nd2gpu(layers: BinaryLayers, device: str, stack: bool) -> Callable[[], Any]:
    present = [layer for layer in layers if layer.frame_shape != (0, 0)]
    sync = backend(device).synchronize

    def run() -> None:
        _decode_everything(layers if stack else present, stack, device=device)
        sync()

    return run


def _bench_nd2(path: Path, stack: bool) -> tuple[Callable[[], Any], Any]:
    import nd2

    ref = nd2.ND2File(path)

    def run() -> None:
        data = ref.binary_data  # nd2 decodes every frame here
        if stack:
            np.asarray(data)
        else:
            [layer.asarray() for layer in data]

    return run, ref


def cmd_bench(args: argparse.Namespace) -> int:
    """``nd2gpu bench``: decode timings of nd2gpu on this machine, and of nd2."""
    with input_path(args.file) as path, open_layers(path, "cpu") as (_, layers):
        present = [layer for layer in layers if layer.frame_shape != (0, 0)]
        if not present:
            raise CLIError(f"{path}: no binary layer has a mask in any frame")
        stack = len({layer.frame_shape for layer in present}) == 1
        n_frames = sum(len(layer) for layer in present)
        shapes = " / ".join(
            sorted({f"{y}x{x}" for y, x in (p.frame_shape for p in present)})
        )
        print(f"file:    {path}")
        print(
            f"decoded: {len(present)} layer(s) x {len(present[0])} frames of {shapes}"
            f" = {n_frames} frames per run; median of {args.repeats} runs"
            " after one warm-up run"
        )
        rows: list[tuple[str, float | None, str]] = []
        if not args.no_nd2:
            run, ref = _bench_nd2(path, stack)
            try:
                rows.append(("nd2", median_seconds(run, args.repeats), ""))
            finally:
                ref.close()
        devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
        for device in devices:
            label = f"nd2gpu {device}"
            if device == "cuda":
                ok, why = cuda_status()
                if ok and simulator_active():
                    ok, why = False, "numba's CUDA simulator only (no GPU)"
                if not ok:
                    if args.device == "cuda":
                        raise DeviceUnavailableError(f"CUDA is not usable: {why}")
                    rows.append((label, None, f"skipped: CUDA is not usable: {why}"))
                    continue
            run = _bench_nd2gpu(layers, device, stack)
            rows.append((label, median_seconds(run, args.repeats), ""))
    reference = rows[0][1] if not args.no_nd2 else None
    print(f"{'reader':<14}{'ms/frame':>12}{'total ms':>12}{'vs nd2':>10}")
    for label, seconds, note in rows:
        if seconds is None:
            print(f"{label:<14}  {note}")
            continue
        per_frame = 1e3 * seconds / n_frames
        ratio = f"{reference / seconds:.3g}x" if reference and seconds > 0 else "-"
        print(f"{label:<14}{per_frame:>12.4f}{1e3 * seconds:>12.3f}{ratio:>10}")
    if max(math.prod(layer.frame_shape) for layer in present) < SMALL_FRAME_PIXELS:
        print(
            "note: frames this small time the fixed cost of a call more than "
            "decoding; time a file with large frames (e.g. 2048x2048) to compare"
        )
    return 0


__all__ = ["cmd_bench"]
