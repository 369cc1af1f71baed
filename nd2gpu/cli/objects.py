"""``nd2gpu objects``: the objects of every frame as a CSV or Parquet table.

One row per object of each frame of each binary layer: ``layer, frame, label,
area, bbox-0 .. bbox-3, centroid-0, centroid-1`` (and ``intensity_mean``,
``_min``, ``_max`` with ``--intensity``), measured from the mask runs by
``BinaryLayer.regionprops_table``, a batch of frames at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .._device import to_numpy
from .._layers import BinaryLayer, BinaryLayers
from .._objects import DEFAULT_PROPERTIES, INTENSITY_PROPERTIES
from .._write.atomic import atomic_file
from .._write.outputs import check_output
from .common import (
    CLIError,
    Input,
    UsageError,
    add_common,
    add_device_option,
    add_inputs,
    add_sample,
    device_request,
    inputs,
    progress_factory,
    storage_options,
)

#: Frames measured per call (bounded memory on files of any length).
BATCH_FRAMES = 256
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
PYARROW_HINT = "writing Parquet needs pyarrow: pip install pyarrow"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``objects`` command to the ``nd2gpu`` parser's subparsers."""
    p = subparsers.add_parser(
        "objects",
        help="measure the objects of every frame (area, bbox, centroid) as a table",
        description="One row per object of each frame of each binary layer, "
        "measured from the mask runs (no label image is built): layer, frame, "
        "label, area, bbox-0 .. bbox-3, centroid-0, centroid-1, as "
        "skimage.measure.regionprops_table names them. CSV on stdout, or the "
        "table -o names (.csv, or .parquet with pyarrow installed), written "
        "atomically. Without FILE: the sample file.",
    )
    p.add_argument("file", nargs="?", metavar="FILE", help="ND2 file: a path or URL")
    add_sample(p)
    add_inputs(p)
    p.add_argument(
        "-o",
        "--output",
        metavar="TABLE",
        help="write TABLE (.csv or .parquet) instead of CSV on stdout",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace TABLE if it exists"
    )
    p.add_argument(
        "--layer",
        metavar="NAME|INDEX",
        help="measure one layer, by name or index (default: every layer)",
    )
    p.add_argument(
        "--intensity",
        metavar="CHANNEL",
        help="add intensity_mean, intensity_min and intensity_max of the image "
        "channel CHANNEL (name or index)",
    )
    add_device_option(p, what="where to measure")
    add_common(p, quiet="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """``nd2gpu objects``: write the object table of a file."""
    sample = args.sample or args.file is None
    if args.sample and args.file is not None:
        raise UsageError("objects takes FILE or --sample, not both")
    files = [] if sample else [args.file]
    with inputs(files, sample, storage_options(args)) as (item,):
        target, fmt = _output(args.output, item, args.overwrite)
        with item.open(device=device_request(args)) as f:
            layers = f.binary_data
            chosen = [] if layers is None else _choose_layers(layers, args.layer)
            properties = DEFAULT_PROPERTIES
            intensity: int | str | None = None
            if args.intensity is not None:
                properties += INTENSITY_PROPERTIES
                intensity = _channel(args.intensity, f)
            frames = sum(len(layer) for _, layer in chosen)
            factory = progress_factory("objects", "frame", not args.quiet)
            bar = None if factory is None else factory(frames)
            try:
                with _writer(target, fmt) as write:
                    for index, layer in chosen:
                        for batch in _batches(layer, index, properties, intensity):
                            write(batch)
                            if bar is not None:
                                bar.update(len(batch["seqs"]))
            finally:
                if bar is not None:
                    bar.close()
    return 0


def _output(
    output: str | None, item: Input, overwrite: bool
) -> tuple[Path | None, str]:
    """The output path and format; never one that would destroy the input."""
    if output is None:
        return None, "csv"
    local = [] if item.local is None else [item.local]
    target = check_output(
        local, output, overwrite=overwrite, suffixes=CSV_SUFFIXES + PARQUET_SUFFIXES[:1]
    )
    suffix = target.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return target, "csv"
    if suffix in PARQUET_SUFFIXES:
        if importlib.util.find_spec("pyarrow") is None:
            raise CLIError(PYARROW_HINT)
        return target, "parquet"
    raise UsageError(
        f"{target}: unknown table format {suffix or '(no suffix)'!r}; use .csv or "
        ".parquet"
    )


def _choose_layers(
    layers: BinaryLayers, which: str | None
) -> list[tuple[int, BinaryLayer]]:
    everything = list(enumerate([layer for layer in layers]))
    if which is None:
        return everything
    for index, layer in everything:
        if layer.name == which:
            return [(index, layer)]
    if which.lstrip("-").isdigit() and -len(everything) <= int(which) < len(everything):
        index = int(which) % len(everything)
        return [everything[index]]
    names = ", ".join(f"{i}: {layer.name!r}" for i, layer in everything)
    raise CLIError(f"no binary layer {which!r}; the layers are {names}")


def _channel(text: str, f: Any) -> int | str:
    names = [c.channel.name for c in (f.metadata.channels or [])]
    if text in names:
        return text
    if text.isdigit():
        return int(text)
    raise CLIError(f"no channel {text!r}; the channels are {', '.join(names)}")


def _batches(
    layer: BinaryLayer,
    index: int,
    properties: Sequence[str],
    intensity: int | str | None,
) -> Iterator[dict[str, Any]]:
    """The layer's table, ``BATCH_FRAMES`` frames at a time, with ``layer``."""
    for lo in range(0, len(layer), BATCH_FRAMES):
        seqs = range(lo, min(lo + BATCH_FRAMES, len(layer)))
        table = layer.regionprops_table(
            seqs, properties=properties, intensity=intensity
        )
        n = len(table["frame"])
        columns: dict[str, Any] = {"layer": np.full(n, index, np.int64)}
        columns.update((name, to_numpy(column)) for name, column in table.items())
        yield {"seqs": seqs, "columns": columns}


@contextlib.contextmanager
def _writer(target: Path | None, fmt: str) -> Iterator[Any]:
    """A function writing batches to ``target`` (stdout when None), atomically."""
    if target is None:
        yield _csv_writer(sys.stdout)
        sys.stdout.flush()
        return
    with atomic_file(target) as fh:
        if fmt == "csv":
            text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
            try:
                yield _csv_writer(text)
                text.flush()
            finally:
                text.detach()
        else:
            with _parquet_writer(fh) as write:
                yield write


def _csv_writer(stream: TextIO) -> Any:
    writer = csv.writer(stream, lineterminator="\n")
    header: list[str] = []

    def write(batch: dict[str, Any]) -> None:
        columns = batch["columns"]
        if not header:
            header.extend(columns)
            writer.writerow(header)
        writer.writerows(zip(*(columns[name].tolist() for name in header), strict=True))

    return write


@contextlib.contextmanager
def _parquet_writer(fh: Any) -> Iterator[Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise CLIError(PYARROW_HINT) from None
    state: dict[str, Any] = {}

    def write(batch: dict[str, Any]) -> None:
        table = pa.table(batch["columns"])
        if "writer" not in state:
            state["writer"] = pq.ParquetWriter(fh, table.schema)
        state["writer"].write_table(table)

    yield write
    if "writer" in state:
        state["writer"].close()


__all__ = ["add_parser", "run"]
