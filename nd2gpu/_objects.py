"""Object tables (regionprops) of binary layers, computed from the mask runs.

``BinaryLayer.regionprops_table`` and ``BinaryLayers.regionprops_table`` land
here. The table has the columns of ``skimage.measure.regionprops_table`` (and
cuCIM's) for the dense label images nd2 would give, without building them:

- CPU: each frame's stream is inflated in bounded pieces and scanned by
  ``kernels/_objects_kernels.py`` (numba, ``nogil``), frames in parallel on the
  decode pool; memory is O(runs of a frame) per thread, plus the table.
- CUDA: frames are parsed into run tables on the CPU as for decoding, and
  reduced by (frame, id) on the GPU (``nd2gpu/_backends/cuda/objects.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import operator
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._backends.cpu import INLINE_PIXELS
from ._decode import inflate as _inflate
from ._decode.frame import FrameHeader, _status_reason, parse_header
from ._decode.plan import FrameJob, warn_versions, with_context
from ._decode.pool import thread_pool, worker_count
from ._device import DeviceRequest, resolve_device, to_numpy
from ._errors import DecodeError
from ._format.chunk_index import ChunkIndex
from ._format.container import binary_frame_chunk_name
from ._format.mask_stream import MASK_PREFIX_BYTES, MASK_WORDS, MAX_LABEL
from ._limits import check_allocation
from .kernels import _objects_kernels as ok
from .kernels._parse_kernels import OK

if TYPE_CHECKING:
    from ._layers import BinaryLayer

__all__ = [
    "DEFAULT_PROPERTIES",
    "PROPERTIES",
    "check_properties",
    "regionprops_table",
    "table_columns",
]

#: What ``regionprops_table`` can measure (skimage's names).
PROPERTIES: tuple[str, ...] = (
    "label",
    "area",
    "bbox",
    "centroid",
    "intensity_mean",
    "intensity_min",
    "intensity_max",
)
DEFAULT_PROPERTIES: tuple[str, ...] = ("label", "area", "bbox", "centroid")
INTENSITY_PROPERTIES: tuple[str, ...] = (
    "intensity_mean",
    "intensity_min",
    "intensity_max",
)
#: The columns of each property, as skimage names them.
PROPERTY_COLUMNS: dict[str, tuple[str, ...]] = {
    "label": ("label",),
    "area": ("area",),
    "bbox": ("bbox-0", "bbox-1", "bbox-2", "bbox-3"),
    "centroid": ("centroid-0", "centroid-1"),
    "intensity_mean": ("intensity_mean",),
    "intensity_min": ("intensity_min",),
    "intensity_max": ("intensity_max",),
}
#: Where each column sits in the kernels' column tuples, and its dtype (skimage's).
INT_COLUMN_INDEX: dict[str, int] = {
    "layer": ok.I_LAYER,
    "frame": ok.I_FRAME,
    "label": ok.I_LABEL,
    "bbox-0": ok.I_BBOX0,
    "bbox-1": ok.I_BBOX0 + 1,
    "bbox-2": ok.I_BBOX0 + 2,
    "bbox-3": ok.I_BBOX0 + 3,
}
FLOAT_COLUMN_INDEX: dict[str, int] = {
    "area": ok.F_AREA,
    "centroid-0": ok.F_CENTROID0,
    "centroid-1": ok.F_CENTROID0 + 1,
    "intensity_mean": ok.F_MEAN,
    "intensity_min": ok.F_MIN,
    "intensity_max": ok.F_MAX,
}

#: Inflated bytes scanned at a time, and compressed bytes fed to zlib at a time.
PIECE_BYTES = 1 << 15
INPUT_BYTES = 1 << 13
#: Contiguous groups of frames per decode thread (each group measures its
#: frames' sizes, then its frames; fewer groups, less hand-off).
TASKS_PER_WORKER = 2
#: The most bytes deflate can inflate one compressed byte to.
MAX_DEFLATE_RATIO = 1032
#: Compressed bytes read first for a frame's header.
HEAD_BYTES = 1 << 12
#: Room a thread's scratch starts with (grown in place, by GROWTH at a time).
FIRST_RUNS = 4096
FIRST_MASKS = 256
GROWTH = 1.125
#: Frames with more rows than this many per run group their runs through a
#: sort of the rows that occur, not a per-row table.
ROWS_PER_RUN = 4
ROWS_ALWAYS = 1 << 16
#: Steps per run and mask the check of overlaps by masks may take before the
#: check by rows (sorting the runs by row) takes over: O(runs) either way.
OVERLAP_BUDGET = 4


def check_properties(properties: str | Sequence[str]) -> tuple[str, ...]:
    """The requested property names, checked, in order, without repeats.

    Raises
    ------
    ValueError
        If a name is not one of ``PROPERTIES`` (the message lists them).
    TypeError
        If ``properties`` is not a string or a sequence of strings.
    """
    if isinstance(properties, str):
        properties = (properties,)
    try:
        names = list(properties)
    except TypeError:
        raise TypeError(
            "properties must be a sequence of property names, not "
            f"{type(properties).__name__}"
        ) from None
    out: list[str] = []
    for name in names:
        if not isinstance(name, str) or name not in PROPERTIES:
            raise ValueError(
                f"unknown property {name!r}; supported properties: "
                + ", ".join(PROPERTIES)
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def table_columns(properties: Sequence[str], layer_column: bool) -> list[str]:
    """The table's column names: ``[layer,] frame``, then each property's."""
    names = ["layer"] if layer_column else []
    names.append("frame")
    for prop in properties:
        names += PROPERTY_COLUMNS[prop]
    return names


def column_dtype(name: str) -> np.dtype:
    """dtype of a column (as ``skimage.measure.regionprops_table`` gives it)."""
    return np.dtype(np.int64 if name in INT_COLUMN_INDEX else np.float64)


# --------------------------------------------------------------------- intensity


_UINT16 = np.dtype(np.uint16)


@dataclass(frozen=True)
class Images:
    """Where intensity frames come from: an array, or a channel of the file.

    ``index`` of a frame is its position in ``frames`` (``by_position``) or its
    sequence index.
    """

    array: Any = None
    by_position: bool = True
    path: str | None = None
    channel: int = 0
    n_channels: int = 1
    frame_shape: tuple[int, int] = (0, 0)
    dtype: np.dtype = _UINT16

    @property
    def on_device(self) -> bool:
        """Whether the array lives on a GPU (``__cuda_array_interface__``)."""
        return self.array is not None and _is_device_array(self.array)

    def index(self, position: int, seq: int) -> int:
        return position if (self.array is not None and self.by_position) else seq

    @contextlib.contextmanager
    def reader(self) -> Iterator[Callable[[int], np.ndarray]]:
        """A function of ``index`` giving the frame's image as a 2-D NumPy array."""
        if self.array is None:
            import nd2

            assert self.path is not None  # a channel of a file
            with nd2.ND2File(self.path) as f:
                shape = (self.n_channels, *self.frame_shape)
                yield lambda seq: np.reshape(f.read_frame(seq), shape)[self.channel]
            return
        array = self.array
        lead = array.shape[:-2]

        def frame(index: int) -> np.ndarray:
            key = np.unravel_index(index, lead) if lead else ()
            return to_numpy(array[key])

        yield frame


def _is_device_array(array: Any) -> bool:
    return not isinstance(array, np.ndarray) and hasattr(
        array, "__cuda_array_interface__"
    )


def check_images(
    intensity: Any,
    layers: Sequence[BinaryLayer],
    n_asked: int,
    single: bool,
) -> Images:
    """Check ``intensity`` against the layers and the frames asked for.

    Raises
    ------
    ValueError
        If its shape fits neither ``(len(frames), Y, X)`` nor the layer's
        ``(*coordinate_shape, Y, X)``, or a channel does not exist.
    TypeError
        If it is neither an array nor a channel index or name.
    """
    shapes: set[tuple[int, int]] = {
        (int(layer.frame_shape[0]), int(layer.frame_shape[1])) for layer in layers
    } - {(0, 0)}
    if len(shapes) > 1:
        raise ValueError(
            "the layers have frames of different shapes "
            f"({', '.join(map(str, sorted(shapes)))}): measure them one by one "
            "to give each its intensity image"
        )
    frame_shape = next(iter(shapes)) if shapes else None
    coords = tuple(layers[0].coordinate_shape) if layers else ()
    if isinstance(intensity, (str, int, np.integer)) and not isinstance(
        intensity, bool
    ):
        channel = intensity if isinstance(intensity, str) else int(intensity)
        return _check_channel(channel, layers[0].path if layers else "", frame_shape)
    if not hasattr(intensity, "shape") or not hasattr(intensity, "dtype"):
        raise TypeError(
            "intensity must be an array (NumPy, CuPy, ...) of the frames' images, "
            "or a channel of the file (its index or name), not "
            f"{type(intensity).__name__}"
        )
    dtype = np.dtype(intensity.dtype)
    if dtype.kind not in "biuf":
        raise TypeError(f"intensity must hold numbers, not {dtype}")
    shape = tuple(int(n) for n in intensity.shape)
    if frame_shape is None:  # no masks: nothing will be measured
        yx = (shape[-2], shape[-1]) if len(shape) >= 2 else (0, 0)
        return Images(array=intensity, frame_shape=yx, dtype=dtype)
    if shape == (n_asked, *frame_shape):
        return Images(array=intensity, frame_shape=frame_shape, dtype=dtype)
    if single and shape == frame_shape:
        return Images(array=intensity[None], frame_shape=frame_shape, dtype=dtype)
    if shape == (*coords, *frame_shape):
        return Images(
            array=intensity, by_position=False, frame_shape=frame_shape, dtype=dtype
        )
    raise ValueError(
        f"intensity has shape {shape}, but the masks need "
        f"{(n_asked, *frame_shape)} (one image per frame asked for, in that order) "
        f"or {(*coords, *frame_shape)} (the layer's whole shape)"
    )


def _check_channel(
    channel: int | str, path: str, frame_shape: tuple[int, int] | None
) -> Images:
    import nd2

    with nd2.ND2File(path) as f:
        attributes = f.attributes
        n_channels = int(attributes.channelCount or 1)
        if f.components_per_channel != 1:
            raise ValueError(
                f"{path}: the image is RGB ({f.components_per_channel} components "
                "per channel); pass intensity= as an array of the component to "
                "measure"
            )
        names = [c.channel.name for c in (f.metadata.channels or [])]
        if isinstance(channel, str):
            if channel not in names:
                raise ValueError(
                    f"{path} has no channel {channel!r}; its channels: "
                    + ", ".join(repr(n) for n in names)
                )
            index = names.index(channel)
        else:
            index = operator.index(channel)
            if not 0 <= index < n_channels:
                raise ValueError(
                    f"channel {index} out of range: {path} has {n_channels} "
                    f"channel(s) ({', '.join(repr(n) for n in names)})"
                )
        image_shape = (int(attributes.heightPx), int(attributes.widthPx or 0))
        dtype = np.dtype(f.dtype)
    if frame_shape is not None and image_shape != frame_shape:
        raise ValueError(
            f"{path}: the images are {image_shape[0]}x{image_shape[1]} but the "
            f"masks are {frame_shape[0]}x{frame_shape[1]}"
        )
    return Images(
        path=path,
        channel=index,
        n_channels=n_channels,
        frame_shape=image_shape,
        dtype=dtype,
    )


# -------------------------------------------------------------------------- API


@dataclass(frozen=True)
class ObjectJob:
    """Measure frame ``seq`` of ``layer`` (the file's layer ``layer_index``)."""

    layer_index: int
    layer: BinaryLayer
    seq: int
    image: int  # the frame's index in the intensity source (-1: none)


def regionprops_table(
    layers: Sequence[tuple[int, BinaryLayer]],
    seqs: Sequence[int],
    *,
    single: bool = False,
    properties: str | Sequence[str] = DEFAULT_PROPERTIES,
    intensity: Any = None,
    device: DeviceRequest | None = None,
    layer_column: bool = False,
) -> dict[str, Any]:
    """The object table of frames ``seqs`` of ``layers`` (see the layer methods).

    Parameters
    ----------
    layers : sequence of (int, BinaryLayer)
        The layers to measure and their indices in the file (one file).
    seqs : sequence of int
        Sequence indices, in range, without repeats.
    single : bool
        ``frames`` was one integer (then a ``(Y, X)`` intensity image is taken).
    properties, intensity, device
        As in ``BinaryLayer.regionprops_table``.
    layer_column : bool
        Whether the table has a ``layer`` column.

    Returns
    -------
    dict of str to numpy.ndarray or cupy.ndarray
    """
    props = check_properties(properties)
    names = table_columns(props, layer_column)
    seqs = [int(s) for s in seqs]
    if len(set(seqs)) != len(seqs):
        raise ValueError("frames must not repeat a frame (rows are keyed by frame)")
    want_values = any(p in INTENSITY_PROPERTIES for p in props)
    if want_values and intensity is None:
        raise ValueError(
            "intensity_mean, intensity_min and intensity_max need intensity=: the "
            "frames' images (an array) or a channel of the file (index or name)"
        )
    images = (
        None
        if intensity is None or not layers
        else check_images(intensity, [layer for _, layer in layers], len(seqs), single)
    )
    dev = resolve_device(device)
    if not layers:
        return _empty_table(names, dev)
    order = sorted(range(len(seqs)), key=seqs.__getitem__)
    jobs = [
        ObjectJob(
            index,
            layer,
            seqs[pos],
            -1 if images is None else images.index(pos, seqs[pos]),
        )
        for index, layer in layers
        for pos in order
    ]
    use = images if want_values else None
    if dev == "cuda":
        return _table_cuda(jobs, names, use)
    return _table_cpu(jobs, names, use)


# -------------------------------------------------------------------------- CPU


class _Scratch:
    """One thread's working arrays, reused from frame to frame, grown in place."""

    def __init__(self, value_dtype: np.dtype | None) -> None:
        self.state = ok.new_state()
        # Room for a piece and the incomplete record before it, in whole words.
        self.buffer = np.empty(4 * ((PIECE_BYTES + 3) // 4 + 16), np.uint8)
        self.words = self.buffer.view(np.uint32)
        self.run_dtype = np.dtype(np.uint16)
        self.run_col = np.empty(0, self.run_dtype)
        self.run_len = np.empty(0, self.run_dtype)
        self.run_row = np.empty(0, self.run_dtype)
        self.run_label = np.empty(0, np.uint16)
        self.no_labels = np.empty(0, np.uint16)
        self.mask_label = np.empty(0, np.int64)
        self.mask_geo = np.empty((0, ok.GEO_FIELDS), np.int64)
        self.keep_values = value_dtype is not None
        self.mask_val = np.empty(
            (0, ok.VAL_FIELDS), value_dtype if value_dtype is not None else np.int64
        )
        self.bounds = np.empty(0, np.int32)
        self.fill = np.empty(0, np.int32)
        self.bits = np.empty(0, np.uint64)
        self.order = np.empty(0, np.int32)
        self.no_rows = np.empty(0, np.int32)

    def prepare(self, header: FrameHeader, keep_labels: bool) -> None:
        dtype = ok.store_dtype(header.nrows, header.ncols)
        if dtype != self.run_dtype:
            capacity = self.run_col.shape[0]
            self.run_dtype = dtype
            self.run_col = np.empty(capacity, dtype)
            self.run_len = np.empty(capacity, dtype)
            self.run_row = np.empty(capacity, dtype)
        if keep_labels and self.run_label.shape[0] < self.run_col.shape[0]:
            _grow(self.run_label, self.run_col.shape[0])

    def grow_runs(self, keep_labels: bool) -> None:
        capacity = max(FIRST_RUNS, int(self.run_col.shape[0] * GROWTH))
        for array in (self.run_col, self.run_len, self.run_row):
            _grow(array, capacity)
        if keep_labels:
            _grow(self.run_label, capacity)

    def grow_masks(self) -> None:
        capacity = max(FIRST_MASKS, int(self.mask_label.shape[0] * GROWTH))
        _grow(self.mask_label, capacity)
        _grow(self.mask_geo, capacity)
        if self.keep_values:
            _grow(self.mask_val, capacity)

    def row_table(self, n_row_ids: int) -> np.ndarray:
        """``n_row_ids + 1`` entries of scratch, one per row id."""
        if self.bounds.shape[0] < n_row_ids + 1:
            _grow(self.bounds, n_row_ids + 1)
        return self.bounds

    def row_tables(self, n_row_ids: int) -> tuple[np.ndarray, np.ndarray]:
        """Two such tables (grouping runs by row in place)."""
        if self.fill.shape[0] < n_row_ids + 1:
            _grow(self.fill, n_row_ids + 1)
        return self.row_table(n_row_ids), self.fill

    def row_bits(self, ncols: int) -> np.ndarray:
        words = (ncols + 63) >> 6
        if self.bits.shape[0] < words:
            check_allocation(8 * words, None, f"a bitmap of a {ncols}-pixel row")
            _grow(self.bits, words)
        return self.bits


def _grow(array: np.ndarray, capacity: int) -> None:
    """Enlarge ``array`` along its first axis in place (``realloc``: no copy of
    the old contents beside the new when the allocator can extend or remap)."""
    array.resize((capacity, *array.shape[1:]), refcheck=False)


class Payload:
    """A frame's zlib stream, read piece by piece straight from the file's map.

    ``ChunkIndex.read`` copies a whole chunk; measuring needs the stream only a
    few KiB at a time, so a frame in flight costs no copy of its payload.
    ``ChunkIndex`` has no public ranged read: this uses its checked chunk
    header lookup (``_data_range``) and its locked map access (``_bytes``), as
    ``read`` does (tests/test_objects_stream.py checks the bytes are equal).
    """

    def __init__(self, index: ChunkIndex, start: int, stop: int) -> None:
        self._index, self._start, self._stop = index, start, stop

    def __len__(self) -> int:
        return self._stop - self._start

    def piece(self, pos: int, n: int) -> bytes:
        """Bytes ``pos:pos + n`` of the stream (fewer at its end)."""
        start = self._start + pos
        return self._index._bytes(start, min(start + n, self._stop))


def _payload(index: ChunkIndex, job: ObjectJob) -> Payload | None:
    """The frame's zlib stream, or None when it has no mask (as
    ``MaskSource.payload``: no chunk, or nothing after its prefix)."""
    offset = index.offsets.get(binary_frame_chunk_name(job.layer.file_tag, job.seq))
    if offset is None:
        return None
    start, stop = index._data_range(offset)
    if stop - start <= MASK_PREFIX_BYTES:
        return None
    return Payload(index, start + MASK_PREFIX_BYTES, stop)


def _pieces(payload: bytes | memoryview | Payload) -> Callable[[int, int], Any]:
    if isinstance(payload, Payload):
        return payload.piece
    view = memoryview(payload)
    return lambda pos, n: view[pos : pos + n]


def frame_header(payload: bytes | memoryview | Payload) -> FrameHeader:
    """``parse_header`` of a payload, reading only its first KiBs when they hold
    the header (the whole payload when they do not: same result and errors)."""
    if not isinstance(payload, Payload):
        return parse_header(payload)
    try:
        return parse_header(payload.piece(0, HEAD_BYTES))
    except DecodeError:
        if len(payload) <= HEAD_BYTES:
            raise
    return parse_header(payload.piece(0, len(payload)))


def _over_cap(cap: int, shape: tuple[int, int]) -> DecodeError:
    limit = (
        f"more than a {shape[0]}x{shape[1]} frame can need"
        if cap < _inflate.MEMORY_INFLATE_CAP
        else f"1/{_inflate.MEMORY_SHARE} of this machine's memory"
    )
    return DecodeError(
        f"stream inflates past {cap} bytes, {limit} (zip bomb?)", offset=cap
    )


def scan_stream(
    payload: bytes | memoryview | Payload,
    header: FrameHeader,
    scratch: _Scratch,
    image: np.ndarray,
    *,
    accumulate: bool,
    keep_labels: bool,
    parse: bool = True,
) -> None:
    """Inflate ``payload`` piece by piece and scan every piece (``scan_words``).

    Validates exactly what ``inflate_payload`` and ``parse_runs`` validate and
    raises the same ``DecodeError`` (reason and offset) for the same payload:
    zlib errors, the inflate cap and a missing end of stream first, then the
    first error of the word stream. With ``parse`` False the stream is only
    inflated (and checked).
    """
    cap = _inflate.inflate_cap(*header.shape)
    scanning = parse
    st = scratch.state
    ok.reset_state(st, header.nmasks)
    scratch.prepare(header, keep_labels)
    zlib = _inflate._zlib
    d = zlib.decompressobj()
    piece = _pieces(payload)
    size = len(payload)
    pos = 0
    total = 0
    carry = 0
    buffer = scratch.buffer
    words = scratch.words
    while True:
        data = d.unconsumed_tail
        if not data and pos < size:
            data = piece(pos, INPUT_BYTES)
            pos += len(data)
        try:
            out = d.decompress(data, min(PIECE_BYTES, cap + 1 - total))
        except zlib.error as e:
            raise DecodeError(f"corrupt zlib stream: {e}", offset=0) from None
        total += len(out)
        if total > cap:
            raise _over_cap(cap, header.shape)
        if parse and out:
            have = carry + len(out)
            buffer[carry:have] = np.frombuffer(out, np.uint8)
            while True:
                code, have = ok.scan_buffer(
                    buffer,
                    words,
                    have,
                    st,
                    header.nrows,
                    header.ncols,
                    scratch.run_col,
                    scratch.run_len,
                    scratch.run_row,
                    scratch.run_label if keep_labels else scratch.no_labels,
                    scratch.mask_label,
                    scratch.mask_geo,
                    scratch.mask_val,
                    image,
                    accumulate,
                )
                if code == ok.NEED_WORDS:
                    carry = have
                    break
                if code == ok.FINISHED:
                    parse = False
                    break
                if code == ok.GROW_RUNS:
                    scratch.grow_runs(keep_labels)
                else:
                    scratch.grow_masks()
        if d.eof or (not out and not data):
            break
    if not d.eof:
        raise DecodeError(
            "zlib stream is truncated (no end-of-stream marker)", offset=total
        )
    status, word, value = ok.finish_scan(st, total // 4)
    if scanning and status != OK:
        if word < 0:
            raise DecodeError("stream ends inside the frame header", offset=0)
        reason = _status_reason(status, np.array([value], np.int64), 0, header)
        raise DecodeError(reason, offset=word * 4)


def _group_rows(
    scratch: _Scratch, header: FrameHeader, n_runs: int
) -> tuple[int, np.ndarray]:
    """Row ids of the kept runs: the rows, or dense ids for very sparse rows.

    Returns the number of ids and the row of each id (empty: ids are rows).
    """
    if header.nrows <= ROWS_PER_RUN * n_runs + ROWS_ALWAYS:
        return header.nrows, np.empty(0, np.int64)
    rows = ok.compact_row_ids(scratch.run_row, n_runs)
    return rows.shape[0], rows


def measure_frame(
    payload: bytes | memoryview | Payload,
    expected_shape: tuple[int, int],
    scratch: _Scratch,
    image: np.ndarray,
    layer_index: int,
    seq: int,
    ints: tuple[np.ndarray, ...],
    floats: tuple[np.ndarray, ...],
    row0: int,
    row_end: int,
    header: FrameHeader | None = None,
) -> tuple[FrameHeader, int]:
    """Measure one frame into rows ``row0:row_end`` of the columns; return its
    header and the rows written. ``header``: the payload's, when already read.

    Raises
    ------
    DecodeError
        As ``parse_payload`` would for this payload and expected shape.
    """
    header = frame_header(payload) if header is None else header
    mismatch = header.shape != expected_shape
    scan_stream(
        payload,
        header,
        scratch,
        image,
        accumulate=True,
        keep_labels=False,
        parse=not mismatch,
    )
    if mismatch:
        raise DecodeError(
            f"frame is {header.nrows}x{header.ncols} but the layer's frames are "
            f"{expected_shape[0]}x{expected_shape[1]}",
            offset=4,
        )
    st = scratch.state
    n_runs = int(st[ok.S_N_RUNS])
    n_masks = int(st[ok.S_MASK]) + 1
    if n_runs > 1 and _runs_overlap(scratch, header, n_runs, n_masks):
        return header, _measure_resolved(
            payload,
            header,
            scratch,
            image,
            n_masks,
            layer_index,
            seq,
            ints,
            floats,
            row0,
            row_end,
        )
    rows = ok.write_rows(
        scratch.mask_label,
        scratch.mask_geo,
        scratch.mask_val,
        n_masks,
        layer_index,
        seq,
        ints,
        floats,
        row0,
        row_end,
    )
    return header, _rows_written(rows)


def _runs_overlap(
    scratch: _Scratch, header: FrameHeader, n_runs: int, n_masks: int
) -> bool:
    """Whether two runs of the frame overlap: by masks, else by rows."""
    if scratch.order.shape[0] < 2 * n_masks:
        _grow(scratch.order, 2 * scratch.mask_label.shape[0])
    dense_rows = header.nrows <= ROWS_PER_RUN * n_runs + ROWS_ALWAYS
    counts = scratch.row_table(header.nrows) if dense_rows else scratch.no_rows
    outcome = ok.masks_overlap(
        scratch.run_col,
        scratch.run_len,
        scratch.run_row,
        n_runs,
        scratch.mask_geo,
        n_masks,
        header.nrows,
        scratch.order,
        counts,
        OVERLAP_BUDGET * (n_runs + n_masks) + 4096,
    )
    if outcome != ok.UNDECIDED:
        return bool(outcome == ok.OVERLAP)
    n_ids, _ = _group_rows(scratch, header, n_runs)
    bounds, fill = scratch.row_tables(n_ids)
    ok.sort_rows_in_place(
        scratch.run_col, scratch.run_len, scratch.run_row, n_runs, n_ids, bounds, fill
    )
    return bool(
        ok.rows_overlap(
            scratch.run_col,
            scratch.run_len,
            bounds,
            n_ids,
            header.ncols,
            scratch.row_bits(header.ncols),
        )
    )


def _measure_resolved(
    payload: bytes | memoryview | Payload,
    header: FrameHeader,
    scratch: _Scratch,
    image: np.ndarray,
    n_masks: int,
    layer_index: int,
    seq: int,
    ints: tuple[np.ndarray, ...],
    floats: tuple[np.ndarray, ...],
    row0: int,
    row_end: int,
) -> int:
    """Measure a frame whose runs overlap: scan it again keeping ids, and let
    the later run win, row by row."""
    labels = ok.distinct_labels(scratch.mask_label, n_masks)
    scan_stream(payload, header, scratch, image, accumulate=False, keep_labels=True)
    n_runs = int(scratch.state[ok.S_N_RUNS])
    n_ids, row_of_id = _group_rows(scratch, header, n_runs)
    bounds = scratch.row_table(n_ids)
    order = np.empty(n_runs, np.int64)
    ok.order_rows_stable(scratch.run_row, n_runs, n_ids, bounds, order)
    widest = int(np.diff(bounds[: n_ids + 1]).max(initial=0))
    geo = np.empty((labels.shape[0], ok.GEO_FIELDS), np.int64)
    ok.init_entries(labels, geo)
    val = np.zeros(
        (labels.shape[0] if scratch.keep_values else 0, ok.VAL_FIELDS),
        scratch.mask_val.dtype,
    )
    ok.accumulate_resolved(
        scratch.run_col,
        scratch.run_len,
        scratch.run_label,
        order,
        bounds,
        row_of_id,
        n_ids,
        header.ncols,
        labels,
        geo,
        val,
        image,
        scratch.row_bits(header.ncols),
        np.empty(widest, np.int64),
        np.empty(widest, np.int32),
        np.empty(widest, np.uint16),
        np.empty(2 * widest, np.int64),
        np.empty(2 * widest, np.int32),
        np.empty(2 * widest, np.uint16),
    )
    return _rows_written(
        ok.write_rows(
            labels,
            geo,
            val,
            labels.shape[0],
            layer_index,
            seq,
            ints,
            floats,
            row0,
            row_end,
        )
    )


def _rows_written(rows: int) -> int:
    if rows < 0:  # the frame's header bounds its objects: corrupt, or a bug
        raise DecodeError("the frame has more objects than its header allows")
    return int(rows)


_NO_IMAGE = np.zeros((0, 0), np.uint8)


def _image_for_kernel(frame: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if frame.shape != shape:
        raise ValueError(
            f"an intensity image is {frame.shape[0]}x{frame.shape[1]}, the masks "
            f"are {shape[0]}x{shape[1]}"
        )
    if frame.dtype == np.bool_:
        return frame.view(np.uint8)
    if frame.dtype == np.float16:
        return frame.astype(np.float32)
    return frame


def _frame_capacity(
    index: ChunkIndex, job: ObjectJob
) -> tuple[int, FrameHeader | None]:
    """Most rows a frame can give (one per id, per mask its header claims, per
    mask record its compressed size can inflate to), and its header."""
    try:
        data = _payload(index, job)
        if data is None:
            return 0, None
        header = frame_header(data)
    except DecodeError:
        return 0, None  # raised again, in job order, when the frame is measured
    records = len(data) * MAX_DEFLATE_RATIO // (4 * MASK_WORDS) + 1
    return min(header.nmasks, MAX_LABEL, records), header


def _run_parallel(
    jobs: Sequence[ObjectJob], work: Callable[[Sequence[ObjectJob], int], list[Any]]
) -> list[Any]:
    """``work(group, first)`` over contiguous groups of ``jobs``, in the decode
    pool (small calls in this thread); results in job order. The first error in
    job order is raised."""
    pixels = sum(math.prod(job.layer.frame_shape) for job in jobs)
    n_tasks = 1
    if pixels >= INLINE_PIXELS:
        n_tasks = min(len(jobs), TASKS_PER_WORKER * worker_count())
    if n_tasks <= 1:
        return work(jobs, 0)
    bounds = [len(jobs) * i // n_tasks for i in range(n_tasks + 1)]
    futures = [
        thread_pool().submit(work, jobs[lo:hi], lo)
        for lo, hi in itertools.pairwise(bounds)
    ]
    wait(futures)
    return [item for f in futures for item in f.result()]


def _empty_table(names: Sequence[str], device: str) -> dict[str, Any]:
    if device == "cuda":
        from ._backends.cuda import objects as cuda_objects

        return cuda_objects.table_columns([], names)
    return {name: np.empty(0, column_dtype(name)) for name in names}


def _table_cpu(
    jobs: Sequence[ObjectJob], names: Sequence[str], images: Images | None
) -> dict[str, np.ndarray]:
    if not jobs:
        return _empty_table(names, "cpu")
    source = jobs[0].layer.source
    value_dtype = None if images is None else ok.value_dtype(images.dtype)
    with source.reading() as index:

        def capacities(
            group: Sequence[ObjectJob], _: int
        ) -> list[tuple[int, FrameHeader | None]]:
            return [_frame_capacity(index, job) for job in group]

        sized = _run_parallel(jobs, capacities)
        known = [header for _, header in sized]
        caps = [cap for cap, _ in sized]
        offsets = np.concatenate([[0], np.cumsum(caps, dtype=np.int64)])
        total = int(offsets[-1])
        check_allocation(8 * total * len(names), None, f"a table of {total} rows")
        columns = {name: np.empty(total, column_dtype(name)) for name in names}
        empty_i = np.empty(0, np.int64)
        empty_f = np.empty(0, np.float64)
        ints = [empty_i] * ok.INT_COLUMNS
        floats = [empty_f] * ok.FLOAT_COLUMNS
        for name, column in columns.items():
            if name in INT_COLUMN_INDEX:
                ints[INT_COLUMN_INDEX[name]] = column
            else:
                floats[FLOAT_COLUMN_INDEX[name]] = column
        int_cols, float_cols = tuple(ints), tuple(floats)

        scratches: dict[int, _Scratch] = {}

        def measure(
            group: Sequence[ObjectJob], first: int
        ) -> list[tuple[FrameHeader | None, int]]:
            # One scratch per thread for the call: it grows once, not per group.
            scratch = scratches.get(threading.get_ident())
            if scratch is None:
                scratch = scratches[threading.get_ident()] = _Scratch(value_dtype)
            out: list[tuple[FrameHeader | None, int]] = []
            reader = images.reader() if images is not None else _no_reader()
            with reader as image_of:
                for k, job in enumerate(group):
                    try:
                        data = _payload(index, job)
                        if data is None:
                            out.append((None, 0))
                            continue
                        shape = tuple(job.layer.frame_shape)
                        image = (
                            _NO_IMAGE
                            if images is None
                            else _image_for_kernel(image_of(job.image), shape)  # type: ignore[arg-type]
                        )
                        out.append(
                            measure_frame(
                                data,
                                shape,  # type: ignore[arg-type]
                                scratch,
                                image,
                                job.layer_index,
                                job.seq,
                                int_cols,
                                float_cols,
                                int(offsets[first + k]),
                                int(offsets[first + k + 1]),
                                known[first + k],
                            )
                        )
                    except DecodeError as e:
                        frame_job = FrameJob(job.layer.meta, job.seq, 0)
                        raise with_context(e, job.layer.source, frame_job) from None
            return out

        results = _run_parallel(jobs, measure)
    warn_versions(
        [FrameJob(job.layer.meta, job.seq, 0) for job in jobs],
        [header for header, _ in results],
    )
    rows = [n for _, n in results]
    if sum(rows) != total:
        _compact(columns, offsets, rows)
    return columns


@contextlib.contextmanager
def _no_reader() -> Iterator[Callable[[int], np.ndarray]]:
    yield lambda index: _NO_IMAGE


def _compact(
    columns: dict[str, np.ndarray], offsets: np.ndarray, rows: Sequence[int]
) -> None:
    """Close the gaps left by frames with fewer rows than room, in place."""
    out = 0
    for start, n in zip(offsets[:-1].tolist(), rows, strict=True):
        if n and start != out:
            for column in columns.values():
                column[out : out + n] = column[start : start + n]
        out += n
    for column in columns.values():
        column.resize(out, refcheck=False)


# ------------------------------------------------------------------------- CUDA


def _table_cuda(
    jobs: Sequence[ObjectJob], names: Sequence[str], images: Images | None
) -> dict[str, Any]:
    from ._backends.cuda import objects as cuda_objects

    parts = []
    for (layer_index, layer), grouped in itertools.groupby(
        jobs, key=lambda job: (job.layer_index, job.layer)
    ):
        group = list(grouped)
        frame_shape = (int(layer.frame_shape[0]), int(layer.frame_shape[1]))
        if frame_shape == (0, 0):
            continue  # no frame of the layer has a mask
        source = None
        if images is not None:
            source = cuda_objects.ImageSource(
                device_array=images.array if images.on_device else None,
                host_frames=None if images.on_device else _host_frames(images),
            )
        raw = cuda_objects.regionprops_cuda(
            layer.source,
            layer.meta,
            [job.seq for job in group],
            frame_shape,
            [job.image for job in group],
            source,
        )
        parts.append((layer_index, raw))
    return cuda_objects.table_columns(parts, names)


def _host_frames(images: Images) -> Callable[[Sequence[int]], np.ndarray]:
    def fetch(indices: Sequence[int]) -> np.ndarray:
        # Stacked while the reader is open: nd2 gives views of its memory map.
        with images.reader() as image_of:
            return np.stack(
                [_image_for_kernel(image_of(i), images.frame_shape) for i in indices]
            )

    return fetch
