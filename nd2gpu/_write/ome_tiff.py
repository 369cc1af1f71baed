"""OME-TIFF export: every layer in one series, so ``tifffile.imread`` shows them all.

Layout of one file (``split=False``):

- one series per XY position (one series when the file has no P loop), named
  ``P0``, ``P1``, ... (the file's name when there is none);
- axes ``C`` + the file's other loops in its order + ``YX``: the layers are the
  channels, named after the layers in the OME-XML, so a series has the shape of
  ``np.asarray(f.binary_data)`` without the P axis;
- zlib-compressed uint16 pages, streamed a batch of frames at a time; BigTIFF
  when the data exceed about 4 GB.

With ``split=True`` each layer goes to its own file, ``STEM_NAME.ome.tif``
beside ``OUT``, with the same series and axes less ``C``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._device import DeviceRequest
from .._layers import BinaryLayer
from .._nd2file import ND2File
from .layer_frames import axis_letters, host_frames, position_frames

#: Stay clear of the 4 GiB limit of classic TIFF (offsets, OME-XML, IFDs).
BIGTIFF_ABOVE = 2**32 - 2**28
#: Loop letters -> OME-TIFF axis letters (``Q``: another loop, as tifffile names it).
TIFF_AXES = {"T": "T", "Z": "Z", "U": "Q"}
TIFF_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff")


def _tiff_module() -> Any:
    try:
        import tifffile
    except ImportError:
        raise ValueError(
            "OME-TIFF export needs the tifffile package: pip install 'nd2gpu[export]'"
        ) from None
    return tifffile


@dataclass(frozen=True)
class _Series:
    """One OME image: its name, axes, shape, and the frames of each layer in it."""

    name: str
    axes: str
    shape: tuple[int, ...]
    layers: tuple[BinaryLayer, ...]
    frames: tuple[int, ...]  # sequence indices, the same for every layer


def split_paths(out: Path, layers: Sequence[BinaryLayer]) -> list[Path]:
    """The file of each layer with ``split``: ``STEM_NAME`` + ``OUT``'s suffix."""
    name = out.name
    suffix = next((s for s in TIFF_SUFFIXES if name.lower().endswith(s)), "")
    stem = name[: len(name) - len(suffix)]
    paths, seen = [], set()
    for i, layer in enumerate(layers):
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in layer.name)
        safe = safe.strip("._") or f"layer{i}"
        if safe in seen:
            safe = f"{safe}_{i}"
        seen.add(safe)
        paths.append(out.with_name(f"{stem}_{safe}{suffix or '.ome.tif'}"))
    return paths


def tiff_series(
    f: ND2File,
    layers: Sequence[BinaryLayer],
    *,
    split: bool,
    position: int | None = None,
) -> list[list[_Series]]:
    """The series of each output file (one file, or one per layer with ``split``).

    Raises
    ------
    ValueError
        Layers of different frame shapes in one file, loops that do not fit
        OME-TIFF's axes, or a position out of range.
    """
    letters = axis_letters(f)
    coordinate_shape = layers[0].coordinate_shape
    kept = [i for i, letter in enumerate(letters) if letter != "P"]
    loop_axes = "".join(TIFF_AXES[letters[i]] for i in kept)
    if len(set(loop_axes)) != len(loop_axes):
        raise ValueError(
            f"the loops {', '.join(letters)} do not fit OME-TIFF axes "
            "(at most one time, one z and one other loop)"
        )
    if "P" in letters:
        p_axis = letters.index("P")
        n_positions = coordinate_shape[p_axis]
        if position is not None and not 0 <= position < n_positions:
            raise ValueError(
                f"position {position} is out of range: the file has {n_positions} "
                "XY position(s)"
            )
        chosen = [position] if position is not None else range(n_positions)
        per_position = [
            (f"P{p}", position_frames(coordinate_shape, letters, p)) for p in chosen
        ]
    else:
        if position not in (None, 0):
            raise ValueError(
                f"position {position} is out of range: the file has 1 XY position"
            )
        per_position = [
            (Path(f.path).stem, position_frames(coordinate_shape, letters, None))
        ]
    loop_shape = tuple(coordinate_shape[i] for i in kept)
    groups = [[layer] for layer in layers] if split else [list(layers)]
    files = []
    for group in groups:
        shapes = {layer.frame_shape for layer in group}
        if len(shapes) > 1:
            raise ValueError(
                "the layers have frames of different shapes "
                f"({', '.join(f'{y}x{x}' for y, x in sorted(shapes))}): pass --split "
                "to write one file per layer"
            )
        frame_shape = group[0].frame_shape
        channel = () if split else (len(group),)
        files.append(
            [
                _Series(
                    name=name,
                    axes=("" if split else "C") + loop_axes + "YX",
                    shape=(*channel, *loop_shape, *frame_shape),
                    layers=tuple(group),
                    frames=tuple(int(s) for s in frames),
                )
                for name, frames in per_position
            ]
        )
    return files


def write_ome_tiff(
    f: ND2File,
    series: Sequence[_Series],
    out: Path,
    *,
    device: DeviceRequest | None,
    batch_frames: int,
    done: Callable[[int], object] | None = None,
) -> None:
    """Write ``series`` to the new file ``out``, a batch of frames at a time."""
    tifffile = _tiff_module()
    voxel = f.voxel_size()
    nbytes = sum(2 * math.prod(s.shape) for s in series)
    with tifffile.TiffWriter(out, bigtiff=nbytes > BIGTIFF_ABOVE, ome=True) as tw:
        for s in series:
            metadata: dict[str, Any] = {
                "axes": s.axes,
                "Name": s.name,
                "PhysicalSizeX": float(voxel.x),
                "PhysicalSizeXUnit": "µm",
                "PhysicalSizeY": float(voxel.y),
                "PhysicalSizeYUnit": "µm",
            }
            if "C" in s.axes:
                metadata["Channel"] = {"Name": [layer.name for layer in s.layers]}
            if "Z" in s.axes:
                metadata["PhysicalSizeZ"] = float(voxel.z)
                metadata["PhysicalSizeZUnit"] = "µm"
            try:
                tw.write(
                    _pages(s, device, batch_frames, done),
                    shape=s.shape,
                    dtype=np.uint16,
                    compression="zlib",
                    metadata=metadata,
                )
            except tifffile.OmeXmlError as e:
                raise ValueError(f"cannot describe {s.name!r} in OME-XML: {e}") from e


def _pages(
    s: _Series,
    device: DeviceRequest | None,
    batch_frames: int,
    done: Callable[[int], object] | None,
) -> Iterator[np.ndarray]:
    for layer in s.layers:
        yield from host_frames(layer, s.frames, batch_frames, device, done)


__all__ = [
    "BIGTIFF_ABOVE",
    "TIFF_SUFFIXES",
    "split_paths",
    "tiff_series",
    "write_ome_tiff",
]
