"""``nd2gpu info FILE [FILE ...]``: the binary layers of files, as text or JSON.

Without ``--objects`` only the metadata, the chunk map and one frame header per
layer are read (for its frame shape): nothing is decoded, and the answer takes
milliseconds whatever the file's size. ``--objects`` decodes every frame that
has a mask, a batch at a time, to count the objects in it.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._device import DeviceRequest
from .._layers import BinaryLayer
from .._write.layer_frames import (
    DEFAULT_BATCH_FRAMES,
    axis_letters,
    host_frames,
    progress_bar,
    rgb_hex,
)
from .common import (
    PROG,
    USER_ERRORS,
    Input,
    add_common,
    add_device_option,
    add_inputs,
    add_sample,
    device_request,
    error_line,
    inputs,
    naming,
    positive_int,
    progress_factory,
    storage_options,
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``info``."""
    p = subparsers.add_parser(
        "info",
        help="describe the binary layers of files (fast: decodes nothing)",
        description="Layers, names, components, colours, frame shape and the "
        "frames that carry a mask, read from the metadata and the chunk map "
        "(nothing is decoded). --objects also counts the objects (distinct "
        "nonzero ids) in every frame. Without FILE: the sample file.",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="ND2 files: paths or URLs")
    add_sample(p)
    add_inputs(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON: one object, or a list of objects for several files",
    )
    p.add_argument(
        "--objects",
        action="store_true",
        help="count the objects per frame of every layer (decodes every frame)",
    )
    p.add_argument(
        "--batch-frames",
        type=positive_int,
        default=DEFAULT_BATCH_FRAMES,
        metavar="N",
        help=f"--objects: frames decoded at a time (default {DEFAULT_BATCH_FRAMES})",
    )
    add_device_option(p, what="--objects: where to decode")
    add_common(p, quiet="no progress bar")
    p.set_defaults(func=run)
    return p


def count_objects(
    layer: BinaryLayer,
    frames: Sequence[int],
    *,
    batch_frames: int = DEFAULT_BATCH_FRAMES,
    device: DeviceRequest | None = "cpu",
    done: Callable[[int], object] | None = None,
) -> list[int]:
    """The number of objects (distinct nonzero ids) in each of ``frames``.

    Decodes ``batch_frames`` frames at a time; ``done(n)`` is called as each
    batch is decoded.
    """
    counts = []
    for frame in host_frames(layer, frames, batch_frames, device, done):
        ids = np.bincount(frame.ravel())
        counts.append(int(np.count_nonzero(ids[1:])))
    return counts


def describe(
    item: Input,
    *,
    objects: bool = False,
    batch_frames: int = DEFAULT_BATCH_FRAMES,
    device: DeviceRequest | None = "cpu",
    progress: Any = None,
) -> dict[str, Any]:
    """What ``info`` reports about one file, as a JSON-ready dict."""
    with item.open() as f, naming(item):
        loops = [
            {"letter": letter, "type": loop.type, "count": loop.count}
            for letter, loop in zip(axis_letters(f), f.experiment, strict=True)
        ]
        layers = [layer for layer in f.binary_data or ()]
        info: dict[str, Any] = {
            "file": item.name,
            "size_bytes": item.size(),
            "loops": loops,
            "coordinate_shape": [loop["count"] for loop in loops],
            "frames": math.prod(loop["count"] for loop in loops),
            "layers": [],
        }
        present = [layer.frames_with_mask() for layer in layers]
        total = sum(len(p) for p in present) if objects else 0
        with progress_bar(progress if objects else None, total) as done:
            for i, (layer, frames) in enumerate(zip(layers, present, strict=True)):
                entry = _layer_entry(i, layer, len(frames))
                if objects:
                    counts = count_objects(
                        layer,
                        frames,
                        batch_frames=batch_frames,
                        device=device,
                        done=done,
                    )
                    entry["objects_per_frame"] = (
                        {
                            "min": min(counts),
                            "median": statistics.median(counts),
                            "max": max(counts),
                        }
                        if counts
                        else None
                    )
                info["layers"].append(entry)
    return info


def _layer_entry(i: int, layer: BinaryLayer, frames_with_mask: int) -> dict[str, Any]:
    return {
        "index": i,
        "name": layer.name,
        "file_tag": layer.file_tag,
        "comp_name": layer.comp_name,
        "comp_order": layer.comp_order,
        "color": layer.color,
        "color_rgb": rgb_hex(layer.color),
        "color_mode": layer.color_mode,
        "state": layer.state,
        "layer_id": layer.layer_id,
        "frame_shape": list(layer.frame_shape),
        "frames_with_mask": frames_with_mask,
    }


def _text(info: dict[str, Any]) -> str:
    loops = ", ".join(f"{lp['letter']}={lp['count']}" for lp in info["loops"])
    n = len(info["layers"])
    lines = [
        f"file:   {info['file']} ({info['size_bytes']:,} bytes)",
        f"loops:  {loops or '(none)'}, {info['frames']} frame(s)",
        f"{n} binary layer{'' if n == 1 else 's'}",
    ]
    for lay in info["layers"]:
        y, x = lay["frame_shape"]
        color = "-" if lay["color"] is None else f"{lay['color_rgb']} ({lay['color']})"
        lines += [
            f"  [{lay['index']}] {lay['name']}",
            f"      file tag:          {lay['file_tag']}",
            f"      component:         {lay['comp_name']} (order {lay['comp_order']})",
            f"      color:             {color}",
            f"      color mode/state:  {lay['color_mode']} / {lay['state']}"
            f"   layer id: {lay['layer_id']}",
            f"      frame shape:       {y} x {x} (Y x X)",
            f"      frames with mask:  {lay['frames_with_mask']} of {info['frames']}",
        ]
        if "objects_per_frame" in lay:
            opf = lay["objects_per_frame"]
            objects = (
                f"min {opf['min']}, median {opf['median']:g}, max {opf['max']}"
                if opf
                else "-"
            )
            lines.append(f"      objects per frame: {objects}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """``nd2gpu info``: describe each file; a file that fails is reported, not fatal."""
    sample = args.sample or not args.files
    status = 0
    results: list[dict[str, Any]] = []
    with inputs(args.files, sample, storage_options(args)) as items:
        for k, item in enumerate(items):
            try:
                info = describe(
                    item,
                    objects=args.objects,
                    batch_frames=args.batch_frames,
                    device=device_request(args),
                    progress=progress_factory(
                        "info --objects", "frame", enabled=not args.quiet
                    ),
                )
            except USER_ERRORS as e:
                if len(items) == 1 or getattr(args, "traceback", False):
                    raise
                print(f"{PROG}: error: {error_line(e)}", file=sys.stderr)
                results.append({"file": item.name, "error": error_line(e)})
                status = 1
                continue
            results.append(info)
            if not args.json:
                if k:
                    print()
                print(_text(info))
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    return status


__all__ = ["add_parser", "count_objects", "describe", "run"]
