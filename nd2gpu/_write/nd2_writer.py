"""Writer of modern (v3, CLX-lite metadata) ND2 files with binary layers.

The files are minimal but complete: what ``nd2`` (the reference reader) needs for
``sizes``, ``experiment``, ``asarray()``, ``metadata``, ``frame_metadata``,
``events``, ``custom_data`` and ``binary_data``, with no warnings. They serve as
test fixtures and as a way to hand label images to NIS-Elements users.

Layout (every chunk starts on a 4096-byte boundary, as in files NIS writes; see
``_ChunkWriter`` for the padding)::

    ND2 FILE SIGNATURE CHUNK NAME01!     64 bytes: "Ver3.0", NUL padded
    ImageAttributesLV!                   SLxImageAttributes
    ImageMetadataLV!                     SLxExperiment (only with loops)
    ImageMetadataSeqLV|0!                SLxPictureMetadata, one plane per channel
    ImageDataSeq|{seq}!                  float64 time + pixels at chunk + 4096,
                                         or + one zlib stream of them
    CustomData|AcqTimesCache!            float64 time (ms) per frame
    CustomDataVar|BinaryMetadata_v1!     one item per layer
    CustomDataSeq|{FileTag}|{seq}!       4-byte prefix + zlib RLE stream
    ND2 FILEMAP SIGNATURE NAME 0001!     chunk map, ending in the 40-byte tail
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final

import numpy as np
from numpy.typing import ArrayLike

from .._format.clx_lite import UInt32, UInt64, encode_clx_lite
from .._format.container import (
    BINARY_METADATA_CHUNK,
    CHUNK_ALIGNMENT,
    CHUNK_HEADER,
    CHUNK_MAGIC,
    CHUNKMAP_ENTRY,
    CHUNKMAP_LOCATION,
    CHUNKMAP_SIGNATURE,
    FILE_SIGNATURE,
    FILEMAP_SIGNATURE,
    binary_frame_chunk_name,
)
from .._format.image_frames import (
    COMPRESSION_CODES,
    FRAME_TIMESTAMP,
    LOSSLESS,
    image_frame_chunk_name,
    row_bytes,
)
from .._format.mask_encode import check_label_values, encode_mask_chunk
from .atomic import atomic_file

__all__ = ["write_nd2"]

#: Loop counts, frame counts and frame sides are stored as uint32.
UINT32_MAX: Final = 0xFFFFFFFF
#: Loop letter (as in ``nd2.ND2File.sizes``) -> ``eType`` of the experiment loop.
LOOP_TYPES: Final = {"T": 1, "P": 2, "Z": 4}
FILE_VERSION: Final = b"Ver3.0"
#: The file-signature chunk holds 64 data bytes.
FILE_VERSION_BYTES: Final = 64
#: Least NUL padding after a chunk name (as NIS-Elements writes them).
CHUNK_NAME_RESERVE: Final = 20
TIME_PERIOD_MS: Final = 1000.0
Z_STEP_UM: Final = 1.0
XY_SPACING_UM: Final = 100.0
CHANNEL_NAME: Final = "Mono"
#: Image dtypes written (nd2 reads 32 bits per component as float32).
IMAGE_DTYPES: Final = ("uint8", "uint16", "float32")
#: zlib level of compressed image frames (inflating costs the same at any level).
IMAGE_ZLIB_LEVEL: Final = 1
#: Display colours of image channels (ABGR): white for one channel, else these.
CHANNEL_COLORS: Final = (0x0000FF, 0x00FF00, 0xFF0000, 0xFF00FF, 0x00FFFF, 0xFFFF00)
#: Layer colours (ABGR, as NIS stores them): red, green, blue, yellow, magenta, cyan.
LAYER_COLORS: Final = (0x0000FF, 0x00FF00, 0xFF0000, 0x00FFFF, 0xFF00FF, 0xFFFF00)


def write_nd2(
    path: str | os.PathLike[str],
    labels: Mapping[str, ArrayLike],
    *,
    loops: Sequence[tuple[str, int]] = (),
    image: ArrayLike | None = None,
    channel_names: Sequence[str] | None = None,
    image_compression: str | None = None,
) -> Path:
    """Write a modern (v3) ND2 file holding binary layers (label images).

    The file is written to a temporary file in the same directory, flushed to
    disk and then moved onto ``path`` in one step: on any error nothing is left
    behind and an existing file at ``path`` is untouched.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. It is replaced if it exists; it must not be a
        directory, and its parent directory must exist.
    labels : Mapping[str, ArrayLike]
        Layer name -> label array of shape ``(*counts, Y, X)``: 0 is background,
        1..65535 are object ids. Bool and any integer dtype are accepted; all
        layers must have the same shape. Layers keep the mapping's order in
        ``nd2.ND2File.binary_data``.
    loops : Sequence[tuple[str, int]], optional
        Experiment loops, outermost first, e.g. ``[("T", 4), ("P", 2), ("Z", 3)]``:
        ``"T"`` time loop, ``"P"`` XY positions, ``"Z"`` z-stack. Each letter at
        most once, each count >= 1; the counts must equal the leading axes of
        the arrays. Frames (sequence indices) follow the C order of these axes.
        Default: no loops, a single frame.
    image : ArrayLike, optional
        ``uint8``, ``uint16`` or ``float32`` array of the image frames: shape
        ``(*counts, Y, X)`` for one channel, ``(*counts, C, Y, X)`` for ``C``
        (stored interleaved; nd2's ``read_frame`` gives ``(C, Y, X)``).
        ``None`` (default) writes zeros as ``uint16``, one channel.
    channel_names : Sequence[str], optional
        One name per image channel (nd2's ``metadata.channels[i].channel.name``);
        default ``"Mono"`` for one channel, ``"Ch1"``, ``"Ch2"``, ... for more.
    image_compression : {None, "lossless"}, optional
        None (default) stores each frame's pixels as they are; ``"lossless"``
        stores each as one zlib stream (nd2's ``attributes.compressionType``).

    Returns
    -------
    pathlib.Path
        ``path`` as a ``Path``.

    Raises
    ------
    TypeError
        If a layer name is not a ``str``, a label array is not bool/integer,
        ``image`` is not ``uint8``/``uint16``/``float32``, or a channel name is
        not a ``str``.
    ValueError
        If ``labels`` is empty, shapes disagree with each other or with
        ``loops``, a label id is negative or above 65535, a loop letter is
        unknown or repeated, a count is below 1, a count, the number of frames
        or a frame side does not fit the file's uint32 fields, a layer name holds
        a NUL character (the names are stored as NUL-terminated UTF-16), or an
        input array is a memory map of the file at ``path`` (which is being
        replaced), the channel names do not match the image's channels, or
        ``image_compression`` is unknown. Nothing is written then.
    IsADirectoryError
        If ``path`` is an existing directory.

    Notes
    -----
    ``nd2.ND2File.sizes`` omits axes of size 1 (a loop with count 1, or a frame
    1 pixel high or wide): such a loop is in ``experiment`` and in each layer's
    ``coordinate_shape``, but not in ``sizes``.
    Every frame of every layer gets a mask chunk, also frames with no objects.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> import nd2, numpy as np
    >>> cells = np.zeros((3, 64, 64), dtype=np.uint16)
    >>> cells[:, 10:20, 10:30] = 1
    >>> cells[2, 40:50, 5:9] = 2
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "cells.nd2"
    >>> out = write_nd2(path, {"cells": cells}, loops=[("T", 3)])
    >>> with nd2.ND2File(out) as f:
    ...     print(dict(f.sizes))
    ...     print(f.binary_data[0].name, np.array_equal(f.binary_data[0], cells))
    {'T': 3, 'Y': 64, 'X': 64}
    cells True
    """
    target = Path(os.fspath(path))
    if target.is_dir():
        raise IsADirectoryError(f"cannot write an ND2 file onto directory {target}")
    loop_list = _check_loops(loops)
    counts = tuple(count for _, count in loop_list)
    layers = _check_labels(labels, counts)
    frame_shape = next(iter(layers.values())).shape[-2:]
    pixels = _check_image(image, counts, frame_shape)
    names = _check_channel_names(channel_names, pixels.shape[-3])
    compression = _check_compression(image_compression)
    _refuse_own_input(
        target,
        [(f"labels[{name!r}]", arr) for name, arr in layers.items()]
        + ([] if image is None else [("image", np.asarray(image))]),
    )

    # Everything that can fail on user input is encoded before the file exists.
    n_frames = math.prod(counts)
    times = _frame_times(loop_list)
    metadata = [
        (
            b"ImageAttributesLV!",
            _attributes(frame_shape, pixels.dtype, n_frames, len(names), compression),
        ),
        *([(b"ImageMetadataLV!", _experiment(loop_list))] if loop_list else []),
        (b"ImageMetadataSeqLV|0!", _picture_metadata(names)),
    ]
    file_tags, binary_meta = _binary_metadata(list(layers), names[0])

    with atomic_file(target) as fh:
        out = _ChunkWriter(fh)
        for name, data in metadata:
            out.add(name, data)
        for seq, index in enumerate(np.ndindex(*counts)):
            out.add(
                image_frame_chunk_name(seq),
                FRAME_TIMESTAMP.pack(times[seq]),
                _frame_body(pixels[index], compression),
            )
        out.add(b"CustomData|AcqTimesCache!", times.astype("<f8").tobytes())
        out.add(BINARY_METADATA_CHUNK, binary_meta)
        for tag, layer in zip(file_tags, layers.values(), strict=True):
            for seq, index in enumerate(np.ndindex(*counts)):
                out.add(
                    binary_frame_chunk_name(tag, seq), encode_mask_chunk(layer[index])
                )
        out.finish()
    return target


# ---------------------------------------------------------------------------
# argument checks


def _check_loops(loops: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    if isinstance(loops, Mapping):
        loops = list(loops.items())
    if isinstance(loops, (str, bytes)):
        raise TypeError(
            f"loops must be a sequence of (letter, count) pairs, got {loops!r}"
        )
    out: list[tuple[str, int]] = []
    for item in loops:
        try:
            letter, count = item
        except (TypeError, ValueError):
            raise TypeError(
                f"each loop must be a (letter, count) pair, got {item!r}"
            ) from None
        if letter not in LOOP_TYPES:
            raise ValueError(
                f"unknown loop {letter!r}: use one of {', '.join(LOOP_TYPES)}"
            )
        if any(letter == seen for seen, _ in out):
            raise ValueError(f"loop {letter!r} given more than once in {list(loops)}")
        if isinstance(count, (bool, np.bool_)) or not isinstance(
            count, (int, np.integer)
        ):
            raise TypeError(f"loop {letter!r} count must be an int, got {count!r}")
        if count < 1:
            raise ValueError(f"loop {letter!r} count must be >= 1, got {count}")
        if count > UINT32_MAX:
            raise ValueError(
                f"loop {letter!r} count {count} does not fit an ND2 file "
                f"(at most {UINT32_MAX})"
            )
        out.append((letter, int(count)))
    n_frames = math.prod(count for _, count in out)
    if n_frames > UINT32_MAX:
        raise ValueError(
            f"loops {out} make {n_frames} frames, more than an ND2 file holds "
            f"({UINT32_MAX})"
        )
    return out


def _check_labels(
    labels: Mapping[str, ArrayLike], counts: tuple[int, ...]
) -> dict[str, np.ndarray]:
    if not isinstance(labels, Mapping):
        kind = type(labels).__name__
        raise TypeError(f"labels must be a mapping of layer name -> array, got {kind}")
    if not labels:
        raise ValueError("labels is empty: give at least one binary layer")
    expected = (*counts, "Y", "X")
    layers: dict[str, np.ndarray] = {}
    first_shape: tuple[int, ...] | None = None
    for name, value in labels.items():
        if not isinstance(name, str):
            raise TypeError(f"layer names must be str, got {name!r}")
        arr = np.asarray(value)
        what = f"labels[{name!r}]"
        if arr.dtype.kind not in "biu":
            check_label_values(arr, what)  # raises TypeError naming the dtype
        # Shapes first: checking the values of a huge (broadcast) array is slow.
        if arr.ndim != len(counts) + 2 or arr.shape[: len(counts)] != counts:
            raise ValueError(
                f"{what} has shape {arr.shape}, but loops {counts} need shape "
                f"({', '.join(map(str, expected))})"
            )
        if 0 in arr.shape[-2:]:
            raise ValueError(f"{what} has an empty frame shape {arr.shape[-2:]}")
        if max(arr.shape[-2:]) > UINT32_MAX:
            raise ValueError(
                f"{what} has frame shape {arr.shape[-2:]}: an ND2 frame side is at "
                f"most {UINT32_MAX} pixels"
            )
        if first_shape is None:
            first_shape = arr.shape
        elif arr.shape != first_shape:
            raise ValueError(
                f"all layers must have the same shape: {what} is {arr.shape}, "
                f"the first layer is {first_shape}"
            )
        check_label_values(arr, what)
        layers[name] = arr
    return layers


def _check_image(
    image: ArrayLike | None, counts: tuple[int, ...], frame_shape: tuple[int, ...]
) -> np.ndarray:
    """The image as a little-endian ``(*counts, C, Y, X)`` array (zeros, uint16,
    one channel, broadcast for None)."""
    if image is None:
        return np.broadcast_to(np.zeros((), "<u2"), (*counts, 1, *frame_shape))
    arr = np.asarray(image)
    if arr.dtype.name not in IMAGE_DTYPES:
        *first, last = IMAGE_DTYPES
        raise TypeError(
            f"image must be {', '.join(first)} or {last}, got dtype {arr.dtype}"
        )
    channel_axes = arr.ndim - len(counts) - 2
    if (
        arr.shape[: len(counts)] != counts
        or arr.shape[-2:] != frame_shape
        or channel_axes not in (0, 1)
    ):
        raise ValueError(
            f"image has shape {arr.shape}, the labels need {(*counts, *frame_shape)} "
            f"(one channel) or {(*counts, 'C', *frame_shape)}"
        )
    if not channel_axes:
        arr = arr[..., None, :, :]
    if arr.shape[-3] == 0:
        raise ValueError(f"image has shape {arr.shape}: no channel")
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False)


def _check_channel_names(names: Sequence[str] | None, n: int) -> list[str]:
    if names is None:
        return [CHANNEL_NAME] if n == 1 else [f"Ch{i + 1}" for i in range(n)]
    if isinstance(names, str):
        raise TypeError(f"channel_names must be a sequence of str, not {names!r}")
    out = list(names)
    if len(out) != n:
        raise ValueError(f"{len(out)} channel names for {n} image channel(s)")
    for name in out:
        if not isinstance(name, str):
            raise TypeError(f"channel names must be str, got {name!r}")
        if "\x00" in name:
            raise ValueError(f"channel name {name!r} holds a NUL character")
    return out


def _check_compression(compression: str | None) -> str | None:
    if compression not in (None, LOSSLESS):
        raise ValueError(
            f"image_compression must be None or {LOSSLESS!r}, not {compression!r}"
        )
    return compression


def _frame_body(frame: np.ndarray, compression: str | None) -> memoryview:
    """A ``(C, Y, X)`` frame as stored: rows of interleaved channels, compressed
    as asked."""
    stored = np.ascontiguousarray(np.moveaxis(frame, 0, -1))
    raw = stored.view(np.uint8).reshape(-1).data
    if compression == LOSSLESS:
        return memoryview(zlib.compress(raw, IMAGE_ZLIB_LEVEL))
    return raw


def _refuse_own_input(target: Path, arrays: list[tuple[str, np.ndarray]]) -> None:
    """Raise ValueError if an input array is a memory map of ``target``.

    The file at ``target`` is replaced: data mapped from it must be copied first.
    Looks for ``numpy.memmap`` objects along each array's ``.base`` chain and, on
    Linux, for any file mapping (``mmap.mmap``, memmaps of other libraries) that
    holds the array's bytes (``/proc/self/maps``). Files are compared with
    ``os.path.samefile``.
    """
    if not target.exists():
        return
    mappings: list[tuple[int, int, str]] | None = None
    for what, arr in arrays:
        paths = _memmap_files(arr)
        if arr.size and _owner_is_foreign(arr):
            if mappings is None:
                mappings = _file_mappings()
            lo, hi = _byte_bounds(arr)
            paths += [p for start, stop, p in mappings if start < hi and lo < stop]
        for mapped in paths:
            if _same_file(mapped, target):
                raise ValueError(
                    f"{what} is a memory map of {str(target)!r}, the file being "
                    "written: write_nd2 replaces that file, so copy the array "
                    "first (numpy.array(...)) or write to another path"
                )


def _base_chain(arr: np.ndarray) -> Iterator[object]:
    obj: object = arr
    for _ in range(1000):  # base chains are short; never loop forever
        if obj is None:
            return
        yield obj
        obj = obj.obj if isinstance(obj, memoryview) else getattr(obj, "base", None)


def _memmap_files(arr: np.ndarray) -> list[str]:
    return [
        os.fspath(obj.filename)
        for obj in _base_chain(arr)
        if isinstance(obj, np.memmap) and obj.filename is not None
    ]


def _owner_is_foreign(arr: np.ndarray) -> bool:
    """Whether the array's memory comes from something other than NumPy."""
    *_, root = _base_chain(arr)
    return not (isinstance(root, np.ndarray) and root.flags.owndata)


def _byte_bounds(arr: np.ndarray) -> tuple[int, int]:
    try:
        from numpy.lib.array_utils import byte_bounds
    except ImportError:  # numpy < 2
        byte_bounds = getattr(np, "byte_bounds")  # noqa: B009 - gone in numpy 2
    lo, hi = byte_bounds(arr)
    return int(lo), int(hi)


def _file_mappings() -> list[tuple[int, int, str]]:
    """``(start, stop, path)`` of this process's file mappings (Linux only)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.rstrip("\n").split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            start, stop = (int(x, 16) for x in fields[0].split("-"))
            out.append((start, stop, fields[5]))
    return out


def _same_file(a: str, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # a mapping of a deleted or inaccessible file
        return False


# ---------------------------------------------------------------------------
# metadata


def _frame_times(loops: list[tuple[str, int]]) -> np.ndarray:
    """Acquisition time (ms) of every frame: the time-loop index times the period."""
    counts = [count for _, count in loops]
    times = np.zeros(counts, dtype=np.float64)
    for axis, (letter, count) in enumerate(loops):
        if letter == "T":
            shape = [1] * len(counts)
            shape[axis] = count
            times += np.arange(count).reshape(shape) * TIME_PERIOD_MS
    return times.ravel()


def _attributes(
    frame_shape: tuple[int, ...],
    dtype: np.dtype,
    n_frames: int,
    n_channels: int,
    compression: str | None,
) -> bytes:
    height, width = frame_shape
    bits = dtype.itemsize * 8
    attrs = {
        "uiWidth": UInt32(width),
        "uiWidthBytes": UInt32(row_bytes(width, n_channels, dtype)),
        "uiHeight": UInt32(height),
        "uiComp": UInt32(n_channels),
        "uiBpcInMemory": UInt32(bits),
        "uiBpcSignificant": UInt32(bits),
        "uiSequenceCount": UInt32(n_frames),
        "uiTileWidth": UInt32(width),
        "uiTileHeight": UInt32(height),
        "eCompression": COMPRESSION_CODES[compression],
        "dCompressionParam": 0.0,
        "uiVirtualComponents": UInt32(n_channels),
    }
    return encode_clx_lite({"SLxImageAttributes": attrs})


def _loop_record(letter: str, count: int) -> dict[str, Any]:
    pars: dict[str, Any]
    record: dict[str, Any] = {"eType": LOOP_TYPES[letter]}
    if letter == "T":
        pars = {
            "uiCount": UInt32(count),
            "dStart": 0.0,
            "dPeriod": TIME_PERIOD_MS,
            "dDuration": TIME_PERIOD_MS * (count - 1),
            "dMinPeriodDiff": 0.0,
            "dMaxPeriodDiff": 0.0,
            "dAvgPeriodDiff": 0.0,
        }
    elif letter == "P":
        points = [
            {
                "dPosX": XY_SPACING_UM * i,
                "dPosY": 0.0,
                "dPosZ": 0.0,
                "dPFSOffset": -1.0,
                "dPosName": f"P{i + 1}",
            }
            for i in range(count)
        ]
        pars = {
            "uiCount": UInt32(count),
            "bUseZ": False,
            "bRelativeXY": False,
            "dReferenceX": 0.0,
            "dReferenceY": 0.0,
            "Points": points,
        }
        record["pItemValid"] = bytes([1] * count)
    else:  # "Z"
        pars = {
            "uiCount": UInt32(count),
            "dZLow": 0.0,
            "dZHigh": Z_STEP_UM * (count - 1),
            "dZStep": Z_STEP_UM,
            "dZHome": Z_STEP_UM * ((count - 1) // 2),
            "bZInverted": False,
            "iType": 0,  # bottom to top, home in the middle
            "wsZDevice": "",
        }
    record["uLoopPars"] = pars
    return record


def _experiment(loops: list[tuple[str, int]]) -> bytes:
    """The loops as nested SLxExperiment levels, outermost first."""
    inner: dict[str, Any] | None = None
    for letter, count in reversed(loops):
        record = _loop_record(letter, count)
        record["uiNextLevelCount"] = UInt32(0 if inner is None else 1)
        if inner is not None:
            record["ppNextLevelEx"] = [inner]
        inner = record
    return encode_clx_lite({"SLxExperiment": inner})


def _picture_metadata(names: list[str]) -> bytes:
    planes = {
        f"a{i}": {
            "sDescription": name,
            "uiCompCount": UInt32(1),
            "uiSampleIndex": UInt32(i),
            "uiModalityMask": UInt64(0x101),  # fluorescence | camera
            "uiColor": UInt32(
                0xFFFFFF if len(names) == 1 else CHANNEL_COLORS[i % len(CHANNEL_COLORS)]
            ),
            "pFluorescentProbe": {
                "m_sName": "",
                "m_ExcitationSpectrum": {"uiCount": UInt32(0)},
                "m_EmissionSpectrum": {"uiCount": UInt32(0)},
            },
            "pFilterPath": {"m_pFilter": {}},
        }
        for i, name in enumerate(names)
    }
    meta = {
        "dTimeMSec": 0.0,
        "dTimeAbsolute": 0.0,
        "dXPos": 0.0,
        "dYPos": 0.0,
        "dZPos": 0.0,
        "bCalibrated": False,
        "dCalibration": 1.0,
        "dAspect": 1.0,
        "sPicturePlanes": {
            "uiCount": UInt32(len(names)),
            "uiCompCount": UInt32(len(names)),
            "sPlaneNew": planes,
        },
    }
    return encode_clx_lite({"SLxPictureMetadata": meta})


def _binary_metadata(names: list[str], comp_name: str) -> tuple[list[str], bytes]:
    """File tags and the ``BinaryMetadata_v1`` chunk for layers in this order.

    nd2 visits the items in ``sorted`` key order, so the keys are zero-padded
    indices of equal width.
    """
    width = max(4, len(str(len(names) - 1)))
    tags = [f"RleZipBinarySequence_{i + 1}_v1" for i in range(len(names))]
    items = {
        f"{i:0{width}d}": {
            "Name": name,
            "FileTag": tag,
            "CompName": comp_name,
            "CompOrder": 0,
            "Color": UInt32(LAYER_COLORS[i % len(LAYER_COLORS)]),
            "ColorMode": 0,  # direct colour
            "State": 0,
            "BinLayerID": i + 1,
        }
        for i, (name, tag) in enumerate(zip(names, tags, strict=True))
    }
    return tags, encode_clx_lite({"BinaryMetadata_v1": items})


# ---------------------------------------------------------------------------
# chunk container and atomic output


class _ChunkWriter:
    """Writes an ND2 chunk container the way NIS-Elements lays it out.

    The file-signature chunk is written on construction. Every chunk starts on a
    4096-byte boundary (zeros fill the gaps). A chunk's data is a ``head`` (all
    of it, for metadata; the 8-byte timestamp, for an image frame) and an
    optional ``body`` (the pixels). Unless ``name_bytes`` is given, the name is
    NUL-padded (by at least :data:`CHUNK_NAME_RESERVE` bytes) so that header,
    name and head end exactly on a 4096-byte boundary: the pixels of
    ``ImageDataSeq|i!`` then lie at the chunk's offset + 4096, where nd2 reads
    them, and chunks without a body follow each other with no gap.
    :meth:`finish` appends the chunk map, whose data ends with the file's
    40-byte tail.
    """

    def __init__(self, fh: BinaryIO, version: bytes = FILE_VERSION) -> None:
        self._fh = fh
        self._pos = 0
        self._map: list[tuple[bytes, int, int]] = []
        data = version.ljust(FILE_VERSION_BYTES, b"\x00")
        self._write(CHUNK_HEADER.pack(CHUNK_MAGIC, len(FILE_SIGNATURE), len(data)))
        self._write(FILE_SIGNATURE)
        self._write(data)

    def _write(self, data: bytes | memoryview) -> None:
        self._fh.write(data)
        self._pos += memoryview(data).nbytes

    def add(
        self,
        name: bytes,
        head: bytes,
        body: memoryview | None = None,
        *,
        name_bytes: int | None = None,
        listed: bool = True,
    ) -> int:
        """Append a chunk with data ``head + body``; return its header's offset.

        ``name_bytes`` fixes the length of the (NUL-padded) name field; by
        default it is chosen as described in the class docstring. ``listed``
        puts the chunk in the chunk map.
        """
        if not name.endswith(b"!") or name.count(b"!") != 1:
            raise ValueError(f"bad chunk name {name!r}: one '!', at the end")
        if name_bytes is None:
            name_bytes = len(name) + CHUNK_NAME_RESERVE
            name_bytes += (
                -(CHUNK_HEADER.size + name_bytes + len(head)) % CHUNK_ALIGNMENT
            )
        elif name_bytes < len(name):
            raise ValueError(f"name_bytes={name_bytes} cannot hold {name!r}")
        pad = -self._pos % CHUNK_ALIGNMENT
        if pad:
            self._write(bytes(pad))
        offset = self._pos
        size = len(head) + (0 if body is None else body.nbytes)
        self._write(CHUNK_HEADER.pack(CHUNK_MAGIC, name_bytes, size))
        self._write(name.ljust(name_bytes, b"\x00"))
        self._write(head)
        if body is not None:
            self._write(body)
        if listed:
            self._map.append((name, offset, size))
        return offset

    def finish(self) -> None:
        """Append the chunk map; the file then ends with its 40-byte tail."""
        map_offset = self._pos + (-self._pos % CHUNK_ALIGNMENT)
        entries = b"".join(
            name + CHUNKMAP_ENTRY.pack(offset, size) for name, offset, size in self._map
        )
        tail = CHUNKMAP_LOCATION.pack(CHUNKMAP_SIGNATURE, map_offset)
        self.add(FILEMAP_SIGNATURE, entries + tail, listed=False)
