"""``nd2gpu info``: describe the binary layers of a file, as text or JSON."""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._device import cuda_status, simulator_active
from .._layers import BinaryLayer
from .._write.layer_frames import axis_letters, host_frames, rgb_hex
from .common import input_path, open_layers


def _objects_per_frame(
    layer: BinaryLayer, present: Sequence[int], batch_frames: int
) -> list[int]:
    """Distinct nonzero ids in each frame of ``present``."""
    counts = []
    for frame in host_frames(layer, present, batch_frames, "cpu"):
        counts.append(int(np.count_nonzero(np.bincount(frame.ravel())[1:])))
    return counts


def _info(path: Path, device: str, batch_frames: int) -> dict[str, Any]:
    with open_layers(path, device) as (f, layers):
        loops = [
            {"letter": letter, "type": loop.type, "count": loop.count}
            for letter, loop in zip(axis_letters(f), f.experiment, strict=True)
        ]
        ok, why = cuda_status()
        info: dict[str, Any] = {
            "file": str(path),
            "size_bytes": path.stat().st_size,
            "loops": loops,
            "coordinate_shape": [loop["count"] for loop in loops],
            "frames": math.prod(loop["count"] for loop in loops),
            "device": f.device,
            "cuda": {"usable": ok and not simulator_active(), "status": why},
            "layers": [],
        }
        for i, layer in enumerate(layers):
            present = layer.frames_with_mask()
            counts = _objects_per_frame(layer, present, batch_frames)
            info["layers"].append(
                {
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
                    "frames_present": len(present),
                    "objects_per_frame": {
                        "min": min(counts),
                        "median": statistics.median(counts),
                        "max": max(counts),
                    }
                    if counts
                    else None,
                }
            )
    return info


def _print_info(info: dict[str, Any]) -> None:
    loops = ", ".join(f"{lp['letter']}={lp['count']}" for lp in info["loops"])
    cuda = "usable" if info["cuda"]["usable"] else "not usable"
    print(f"file:             {info['file']} ({info['size_bytes']:,} bytes)")
    print(f"loops:            {loops or '(none: one frame)'}")
    print(
        f"coordinate shape: {tuple(info['coordinate_shape'])} = {info['frames']} frames"
    )
    print(f"device:           {info['device']} (CUDA {cuda}: {info['cuda']['status']})")
    print(f"binary layers:    {len(info['layers'])}")
    for lay in info["layers"]:
        shape = lay["frame_shape"]
        opf = lay["objects_per_frame"]
        objects = (
            f"min {opf['min']}, median {opf['median']:g}, max {opf['max']}"
            if opf
            else "-"
        )
        color = "-" if lay["color"] is None else f"{lay['color_rgb']} ({lay['color']})"
        print()
        print(f"[{lay['index']}] {lay['name']}")
        print(f"    file tag:          {lay['file_tag']}")
        print(f"    component:         {lay['comp_name']} (order {lay['comp_order']})")
        print(f"    color:             {color}")
        print(
            f"    color mode/state:  {lay['color_mode']} / {lay['state']}"
            f"   layer id: {lay['layer_id']}"
        )
        print(f"    frame shape:       {shape[0]} x {shape[1]} (Y x X)")
        print(f"    frames present:    {lay['frames_present']} of {info['frames']}")
        print(f"    objects per frame: {objects}")


def cmd_info(args: argparse.Namespace) -> int:
    """``nd2gpu info``: describe the binary layers of a file."""
    with input_path(args.file) as path:
        info = _info(path, args.device, args.batch_frames)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_info(info)
    return 0


__all__ = ["cmd_info"]
