"""The ``nd2gpu`` command: inspect, export and benchmark the binary layers of ND2 files.

Without a FILE, every command uses the small sample file shipped in the package
(``nd2gpu/data/sample.nd2``)::

    nd2gpu info [FILE] [--json]
    nd2gpu export [FILE] OUT [--format {zarr,tiff}] [--batch-frames N] [--quiet]
    nd2gpu bench [FILE] [--repeats N] [--device {all,cpu,cuda}]

Errors (a missing file, a file that is not ND2, a file without binary layers,
corrupt data) print one line, ``nd2gpu: error: ...``, on stderr and exit with
status 1; usage errors exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import json
import math
import os
import re
import shutil
import statistics
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._device import cuda_status, simulator_active
from ._errors import DeviceUnavailableError
from ._layers import BinaryLayer, BinaryLayers, _host
from ._nd2file import ND2File

PROG = "nd2gpu"
SAMPLE = "sample.nd2"
DEFAULT_BATCH_FRAMES = 32
#: nd2's loop types -> the letters of ``nd2.ND2File.sizes``.
LOOP_LETTERS = {"TimeLoop": "T", "NETimeLoop": "T", "XYPosLoop": "P", "ZStackLoop": "Z"}
ZARR_SUFFIXES = (".zarr",)
TIFF_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff")
#: Stay clear of the 4 GiB limit of classic TIFF (offsets, OME-XML, IFDs).
BIGTIFF_ABOVE = 2**32 - 2**28
#: bench notes that frames smaller than this measure per-call overheads.
SMALL_FRAME_PIXELS = 512 * 512


class CLIError(Exception):
    """A problem reported to the user as one line, without a traceback."""


#: What ends a command with one line on stderr: the file cannot be read, is not
#: ND2, its data are corrupt (nd2gpu.DecodeError is a ValueError; nd2 raises
#: OSError and ValueError, and struct/index/key errors on truncated metadata), or
#: the device cannot be used.
USER_ERRORS: tuple[type[BaseException], ...] = (
    CLIError,
    OSError,
    ValueError,
    KeyError,
    IndexError,
    EOFError,
    struct.error,
    MemoryError,
    DeviceUnavailableError,
)


# --------------------------------------------------------------------------- files


@contextlib.contextmanager
def sample_path() -> Iterator[Path]:
    """The path of the sample ND2 file shipped in the package (a real file).

    Yields
    ------
    pathlib.Path
        Valid inside the ``with`` block (extracted to a temporary file when the
        package is installed as a zip).
    """
    ref = importlib.resources.files("nd2gpu").joinpath("data", SAMPLE)
    with importlib.resources.as_file(ref) as path:
        yield Path(path)


@contextlib.contextmanager
def _input(file: str | None) -> Iterator[Path]:
    if file is None:
        with sample_path() as path:
            yield path
    else:
        yield Path(file)


@contextlib.contextmanager
def _open_layers(path: Path, device: str) -> Iterator[tuple[ND2File, BinaryLayers]]:
    if path.is_dir():
        raise CLIError(f"{path}: is a directory, not an ND2 file")
    with ND2File(path, device=device) as f:
        layers = f.binary_data
        if layers is None:
            raise CLIError(f"{path}: the file has no binary layers")
        yield f, layers


def _loop_letters(f: ND2File) -> list[str]:
    return [LOOP_LETTERS.get(loop.type, "U") for loop in f.experiment]


def _present_frames(layer: BinaryLayer) -> list[int]:
    """Sequence indices of the frames of ``layer`` that have a mask."""
    source = layer._source
    with source.reading() as index:
        return [
            seq
            for seq in range(len(layer))
            if source.payload(index, layer.file_tag, seq) is not None
        ]


def _batches(seqs: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(seqs), size):
        yield seqs[start : start + size]


def _host_frames(
    layer: BinaryLayer,
    seqs: Sequence[int],
    batch_frames: int,
    device: str,
    progress: _Progress | None = None,
) -> Iterator[np.ndarray]:
    """Frames ``seqs`` of ``layer`` as NumPy, decoded ``batch_frames`` at a time."""
    for batch in _batches(seqs, batch_frames):
        block = _host(layer.decode(batch, device))
        # Counted before handing the frames out: a consumer (tifffile) may stop
        # asking for frames once it has the last one.
        if progress is not None:
            progress.update(len(batch))
        yield from block


def _rgb(color: int | None) -> str | None:
    """NIS stores layer colours as 0xAABBGGRR."""
    if color is None:
        return None
    c = int(color)
    return f"#{c & 0xFF:02x}{(c >> 8) & 0xFF:02x}{(c >> 16) & 0xFF:02x}"


# ------------------------------------------------------------------------ progress


class _Progress:
    """tqdm when it is installed, else a counter on stderr; nothing when quiet.

    Nothing is shown before the first update, so an error before any work
    leaves stderr to the one error line.
    """

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.total, self.desc, self.n = total, desc, 0
        self._enabled = enabled
        self._started = False
        self._bar: Any = None

    def _start(self) -> None:
        self._started = True
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(
            total=self.total, desc=self.desc, unit="frame", file=sys.stderr
        )

    def update(self, n: int) -> None:
        if not self._enabled:
            return
        if not self._started:
            self._start()
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        else:
            sys.stderr.write(f"\r{self.desc}: {self.n}/{self.total} frames")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._started:
            sys.stderr.write("\n")


# ---------------------------------------------------------------------------- info


def _objects_per_frame(
    layer: BinaryLayer, present: Sequence[int], batch_frames: int
) -> list[int]:
    """Distinct nonzero ids in each frame of ``present``."""
    counts = []
    for frame in _host_frames(layer, present, batch_frames, "cpu"):
        counts.append(int(np.count_nonzero(np.bincount(frame.ravel())[1:])))
    return counts


def _info(path: Path, device: str, batch_frames: int) -> dict[str, Any]:
    with _open_layers(path, device) as (f, layers):
        loops = [
            {"letter": letter, "type": loop.type, "count": loop.count}
            for letter, loop in zip(_loop_letters(f), f.experiment, strict=True)
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
            present = _present_frames(layer)
            counts = _objects_per_frame(layer, present, batch_frames)
            info["layers"].append(
                {
                    "index": i,
                    "name": layer.name,
                    "file_tag": layer.file_tag,
                    "comp_name": layer.comp_name,
                    "comp_order": layer.comp_order,
                    "color": layer.color,
                    "color_rgb": _rgb(layer.color),
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
    with _input(args.file) as path:
        info = _info(path, args.device, args.batch_frames)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_info(info)
    return 0


# -------------------------------------------------------------------------- export


@dataclass(frozen=True)
class _Axis:
    letter: str
    count: int
    kind: str | None  # OME-NGFF axis type: "time", "space" or None (custom)
    scale: float
    unit: str | None


def _loop_axes(f: ND2File) -> list[_Axis]:
    voxel = f.voxel_size()
    axes = []
    for letter, loop in zip(_loop_letters(f), f.experiment, strict=True):
        if letter == "T":
            period = getattr(getattr(loop, "parameters", None), "periodMs", None)
            if period:
                axes.append(
                    _Axis("T", loop.count, "time", float(period), "millisecond")
                )
            else:
                axes.append(_Axis("T", loop.count, "time", 1.0, None))
        elif letter == "Z":
            axes.append(_Axis("Z", loop.count, "space", float(voxel.z), "micrometer"))
        else:
            axes.append(_Axis(letter, loop.count, None, 1.0, None))
    return axes


def _export_format(out: Path, fmt: str | None) -> str:
    if fmt is not None:
        return fmt
    name = out.name.lower().rstrip("/")
    if name.endswith(ZARR_SUFFIXES):
        return "zarr"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    raise CLIError(
        f"{out}: cannot tell the format from the name: end it in .zarr (OME-Zarr) "
        "or .ome.tif (OME-TIFF), or pass --format"
    )


@contextlib.contextmanager
def _staged_output(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary path beside ``out``, moved onto ``out`` when the block succeeds."""
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise CLIError(f"{out}: already exists (pass --overwrite to replace it)")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise CLIError(f"{out}: the directory {parent} does not exist")
    tmp = parent / f".{out.name}.{os.getpid()}.partial"
    _remove(tmp)
    try:
        yield tmp
        if out.exists() or out.is_symlink():
            _remove(out)
        os.replace(tmp, out)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _zarr_paths(names: Sequence[str]) -> list[str]:
    """Zarr-safe, unique group names for the layers."""
    out: list[str] = []
    for i, name in enumerate(names):
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or f"layer{i}"
        path, n = base, 2
        while path in out:
            path, n = f"{base}_{n}", n + 1
        out.append(path)
    return out


def _ngff_layout(
    axes: list[_Axis], frame_scale: tuple[float, float]
) -> tuple[list[int], list[dict[str, Any]], list[float]]:
    """Loop-axis order, ``axes`` and scales for OME-NGFF 0.4.

    NGFF 0.4 wants at most one time axis, then at most one channel or custom
    axis, then 2 or 3 space axes; the loops are reordered to fit.
    """
    rank = {"time": 0, None: 1, "space": 2}
    order = sorted(range(len(axes)), key=lambda i: rank[axes[i].kind])
    kinds = [axes[i].kind for i in order]
    if (
        kinds.count("time") > 1
        or kinds.count(None) > 1
        or kinds.count("space") > 1
        or len(axes) > 3
    ):
        letters = ", ".join(a.letter for a in axes)
        raise CLIError(
            f"the loops {letters} do not fit OME-NGFF 0.4 axes (at most one time, "
            "one other and one z loop): export to OME-TIFF instead"
        )
    ngff_axes: list[dict[str, Any]] = []
    scales: list[float] = []
    for i in order:
        ax = axes[i]
        entry: dict[str, Any] = {"name": ax.letter.lower()}
        if ax.kind is not None:
            entry["type"] = ax.kind
        if ax.unit is not None:
            entry["unit"] = ax.unit
        ngff_axes.append(entry)
        scales.append(ax.scale)
    for name, scale in zip("yx", frame_scale, strict=True):
        ngff_axes.append({"name": name, "type": "space", "unit": "micrometer"})
        scales.append(scale)
    return order, ngff_axes, scales


def _zarr_module() -> Any:
    try:
        import zarr
    except ImportError:
        raise CLIError(
            "OME-Zarr export needs the zarr package: pip install 'nd2gpu[export]'"
        ) from None
    return zarr


def _zarr_major(zarr: Any) -> int:
    return int(str(zarr.__version__).split(".")[0])


def _zarr_group(zarr: Any, path: Path) -> Any:
    # OME-NGFF 0.4 is stored in the Zarr v2 format.
    if _zarr_major(zarr) >= 3:
        return zarr.open_group(str(path), mode="w", zarr_format=2)
    return zarr.open_group(str(path), mode="w")


def _zarr_array(zarr: Any, group: Any, shape: tuple[int, ...]) -> Any:
    chunks = (1,) * (len(shape) - 2) + shape[-2:]
    if _zarr_major(zarr) >= 3:
        return group.create_array(
            "0",
            shape=shape,
            chunks=chunks,
            dtype="uint16",
            fill_value=0,
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
    return group.create_dataset(
        "0",
        shape=shape,
        chunks=chunks,
        dtype="uint16",
        fill_value=0,
        dimension_separator="/",
    )


def _label_attrs(
    layer: BinaryLayer,
    ngff_axes: list[dict[str, Any]],
    scales: list[float],
    loop_letters: list[str],
) -> dict[str, Any]:
    """The attributes of a layer's OME-NGFF 0.4 label image (one resolution)."""
    dataset = {
        "path": "0",
        "coordinateTransformations": [{"type": "scale", "scale": scales}],
    }
    return {
        "multiscales": [
            {
                "version": "0.4",
                "name": layer.name,
                "axes": ngff_axes,
                "datasets": [dataset],
            }
        ],
        "image-label": {"version": "0.4"},
        "nd2gpu": {
            "name": layer.name,
            "file_tag": layer.file_tag,
            "color": layer.color,
            "color_rgb": _rgb(layer.color),
            "loops": loop_letters,
        },
    }


def _export_zarr(
    f: ND2File, layers: list[BinaryLayer], out: Path, args: argparse.Namespace
) -> str:
    zarr = _zarr_module()
    axes = _loop_axes(f)
    voxel = f.voxel_size()
    order, ngff_axes, scales = _ngff_layout(axes, (float(voxel.y), float(voxel.x)))
    coordinate_shape = layers[0].coordinate_shape
    paths = _zarr_paths([layer.name for layer in layers])
    total = sum(len(layer) for layer in layers)
    progress = _Progress(total, f"{PROG} export", not args.quiet)
    try:
        with _staged_output(out, args.overwrite) as tmp:
            root = _zarr_group(zarr, tmp)
            root.attrs["nd2gpu"] = {"source": Path(f.path).name}
            labels = root.create_group("labels")
            labels.attrs["labels"] = paths
            for layer, path in zip(layers, paths, strict=True):
                group = labels.create_group(path)
                group.attrs.update(
                    _label_attrs(
                        layer, ngff_axes, scales, [axes[i].letter for i in order]
                    )
                )
                shape = (
                    *(coordinate_shape[i] for i in order),
                    *layer.frame_shape,
                )
                array = _zarr_array(zarr, group, shape)
                seqs = range(len(layer))
                frames = _host_frames(
                    layer, seqs, args.batch_frames, args.device, progress
                )
                for seq, frame in zip(seqs, frames, strict=True):
                    coords = np.unravel_index(seq, coordinate_shape)
                    target = tuple(int(coords[i]) for i in order)
                    array[(*target, slice(None), slice(None))] = frame
    finally:
        progress.close()
    return (
        f"OME-Zarr (NGFF 0.4), label images {', '.join(f'labels/{p}' for p in paths)}"
    )


def _tiff_module() -> Any:
    try:
        import tifffile
    except ImportError:
        raise CLIError(
            "OME-TIFF export needs the tifffile package: pip install 'nd2gpu[export]'"
        ) from None
    return tifffile


def _tiff_series(
    layers: list[BinaryLayer], axes: list[_Axis]
) -> list[tuple[BinaryLayer, str, str, tuple[int, ...], list[int]]]:
    """``(layer, name, axes, shape, frames)`` of each OME image, in file order.

    One image per layer; with an XY-position loop, one per layer and position.
    """
    letters = [a.letter for a in axes]
    tiff_letters = {"T": "T", "Z": "Z", "U": "Q"}
    kept = [i for i, letter in enumerate(letters) if letter != "P"]
    tiff_axes = "".join(tiff_letters[letters[i]] for i in kept) + "YX"
    if len(set(tiff_axes)) != len(tiff_axes):
        raise CLIError(
            f"the loops {', '.join(letters)} do not fit OME-TIFF axes "
            "(at most one time, one z and one other loop)"
        )
    out = []
    for layer in layers:
        coordinate_shape = layer.coordinate_shape
        seq_grid = np.arange(len(layer)).reshape(coordinate_shape)
        shape = (*(coordinate_shape[i] for i in kept), *layer.frame_shape)
        if "P" not in letters:
            out.append((layer, layer.name, tiff_axes, shape, seq_grid.ravel().tolist()))
            continue
        p_axis = letters.index("P")
        for p in range(coordinate_shape[p_axis]):
            frames = seq_grid.take(p, axis=p_axis).ravel().tolist()
            out.append((layer, f"{layer.name} P{p}", tiff_axes, shape, frames))
    return out


def _export_tiff(
    f: ND2File, layers: list[BinaryLayer], out: Path, args: argparse.Namespace
) -> str:
    tifffile = _tiff_module()
    axes = _loop_axes(f)
    series = _tiff_series(layers, axes)
    voxel = f.voxel_size()
    total = sum(len(frames) for *_, frames in series)
    nbytes = sum(2 * math.prod(shape) for _, _, _, shape, _ in series)
    progress = _Progress(total, f"{PROG} export", not args.quiet)
    try:
        with (
            _staged_output(out, args.overwrite) as tmp,
            tifffile.TiffWriter(tmp, bigtiff=nbytes > BIGTIFF_ABOVE, ome=True) as tw,
        ):
            for layer, name, tiff_axes, shape, frames in series:
                metadata: dict[str, Any] = {
                    "axes": tiff_axes,
                    "Name": name,
                    "PhysicalSizeX": float(voxel.x),
                    "PhysicalSizeXUnit": "µm",
                    "PhysicalSizeY": float(voxel.y),
                    "PhysicalSizeYUnit": "µm",
                }
                if "Z" in tiff_axes:
                    metadata["PhysicalSizeZ"] = float(voxel.z)
                    metadata["PhysicalSizeZUnit"] = "µm"
                pages = _host_frames(
                    layer, frames, args.batch_frames, args.device, progress
                )
                try:
                    tw.write(
                        pages,
                        shape=shape,
                        dtype=np.uint16,
                        compression="zlib",
                        metadata=metadata,
                    )
                except tifffile.OmeXmlError as e:
                    raise CLIError(f"cannot describe {name!r} in OME-XML: {e}") from e
    finally:
        progress.close()
    return f"OME-TIFF, {len(series)} series ({', '.join(s[1] for s in series)})"


def cmd_export(args: argparse.Namespace) -> int:
    """``nd2gpu export``: write the binary layers as OME-Zarr or OME-TIFF."""
    if len(args.paths) > 2:
        raise CLIError("export takes [FILE] OUT: at most two paths")
    file, out = (None, args.paths[0]) if len(args.paths) == 1 else args.paths
    out_path = Path(out)
    fmt = _export_format(out_path, args.format)
    with _input(file) as path, _open_layers(path, args.device) as (f, all_layers):
        layers = []
        for layer in all_layers:
            if layer.frame_shape == (0, 0):
                if not args.quiet:
                    print(
                        f"{PROG}: note: layer {layer.name!r} has no mask in any frame;"
                        " not exported",
                        file=sys.stderr,
                    )
            else:
                layers.append(layer)
        if not layers:
            raise CLIError(f"{path}: no binary layer has a mask in any frame")
        write = _export_zarr if fmt == "zarr" else _export_tiff
        what = write(f, layers, out_path, args)
    if not args.quiet:
        print(f"wrote {out_path}: {what}")
    return 0


# --------------------------------------------------------------------------- bench


def _median_seconds(run: Callable[[], Any], repeats: int) -> float:
    run()  # warm up: JIT compilation, page cache, device context
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _decode_everything(layers: Sequence[Any], stack: bool, **kwargs: Any) -> Any:
    if stack:
        return layers.asarray(**kwargs)  # type: ignore[attr-defined]
    return [layer.asarray(**kwargs) for layer in layers]


def _bench_nd2gpu(layers: BinaryLayers, device: str, stack: bool) -> Callable[[], Any]:
    present = [layer for layer in layers if layer.frame_shape != (0, 0)]
    sync: Callable[[], Any] = lambda: None  # noqa: E731
    if device == "cuda":
        import cupy

        sync = cupy.cuda.runtime.deviceSynchronize

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
    with _input(args.file) as path, _open_layers(path, "cpu") as (_, layers):
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
                rows.append(("nd2", _median_seconds(run, args.repeats), ""))
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
            rows.append((label, _median_seconds(run, args.repeats), ""))
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


# ---------------------------------------------------------------------------- main


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect, export and benchmark the binary layers (segmentation "
        "masks) of Nikon ND2 files. Without FILE, the sample file shipped with "
        "nd2gpu is used.",
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="show the full traceback of an error instead of one line",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    device = argparse.ArgumentParser(add_help=False)
    device.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to decode (default: auto, the GPU when usable)",
    )
    batch = argparse.ArgumentParser(add_help=False)
    batch.add_argument(
        "--batch-frames",
        type=_positive_int,
        default=DEFAULT_BATCH_FRAMES,
        metavar="N",
        help=f"frames decoded at a time (default {DEFAULT_BATCH_FRAMES})",
    )

    p = sub.add_parser(
        "info",
        parents=[device, batch],
        help="describe the binary layers of a file",
        description="Layers, names, components, colors, frame and coordinate "
        "shapes, frames present and objects (distinct nonzero ids) per frame.",
    )
    p.add_argument("file", nargs="?", metavar="FILE", help="ND2 file (default: sample)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "export",
        parents=[device, batch],
        usage="%(prog)s [options] [FILE] OUT",
        help="write the binary layers as OME-Zarr or OME-TIFF",
        description="Write every binary layer that has a mask, streaming "
        "--batch-frames frames at a time. OUT ending in .zarr: OME-Zarr (NGFF 0.4, "
        "Zarr v2 format): one label image per layer under OUT/labels/NAME, axes "
        "[t] [p] [z] y x. OUT ending in .ome.tif, .ome.tiff, .tif or .tiff: one "
        "OME-TIFF file with one series per layer (per layer and XY position when "
        "the file has a P loop), axes in the file's loop order.",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="[FILE] OUT",
        help="the ND2 file (default: the sample) and the output path",
    )
    p.add_argument(
        "--format", choices=("zarr", "tiff"), help="output format (default: from OUT)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "bench",
        help="time decoding on this machine (nd2gpu on cpu and cuda, and nd2)",
        description="Decode every binary layer of FILE, one warm-up run and then "
        "--repeats timed runs, and report the median per frame.",
    )
    p.add_argument("file", nargs="?", metavar="FILE", help="ND2 file (default: sample)")
    p.add_argument(
        "--repeats", type=_positive_int, default=5, metavar="N", help="timed runs"
    )
    p.add_argument(
        "--device",
        choices=("all", "cpu", "cuda"),
        default="all",
        help="devices to time (default: all; cuda is skipped when not usable)",
    )
    p.add_argument("--no-nd2", action="store_true", help="do not time nd2")
    p.set_defaults(func=cmd_bench)
    return parser


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    elif isinstance(exc, KeyError):
        text = f"missing key {exc}"
    else:
        text = str(exc) or type(exc).__name__
    if isinstance(exc, (struct.error, IndexError, KeyError, EOFError)):
        text = f"unreadable file ({type(exc).__name__}: {text})"
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nd2gpu`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (without the program name); None reads ``sys.argv``.

    Returns
    -------
    int
        The exit status: 0 on success, 1 on an error (reported as one line on
        stderr), 2 on a usage error, 130 when interrupted.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse has reported
        return e.code if isinstance(e.code, int) else 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        if args.traceback:
            raise
        print(f"{PROG}: error: {_message(e)}", file=sys.stderr)
        return 1


__all__ = ["main", "sample_path"]
