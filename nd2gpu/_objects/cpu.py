"""CPU tables: each frame's stream inflated in pieces and scanned (numba), frames in
parallel on the decode pool; memory is O(runs of a frame) per thread, plus the table."""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import wait
from typing import TYPE_CHECKING, Any

import numpy as np

from .._backends.cpu import INLINE_PIXELS
from .._decode import inflate as _inflate
from .._decode.frame import FrameHeader, parse_header, status_reason
from .._decode.plan import FrameJob, warn_versions, with_context
from .._decode.pool import thread_pool, worker_count
from .._errors import DecodeError
from .._format.chunk_index import ChunkIndex
from .._format.container import binary_frame_chunk_name
from .._format.mask_stream import MASK_PREFIX_BYTES, MASK_WORDS, MAX_LABEL
from .._limits import check_allocation
from ..kernels import _objects_kernels as ok
from ..kernels._parse_kernels import OK
from .columns import FLOAT_COLUMN_INDEX, INT_COLUMN_INDEX, column_dtype
from .intensity import NO_IMAGE, Images, image_for_kernel
from .jobs import ObjectJob, empty_table

if TYPE_CHECKING:
    pass


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
    It reads through ``ChunkIndex.data_range`` and ``read_range``, as ``read``
    does (tests/test_objects_stream.py checks the bytes are equal).
    """

    def __init__(self, index: ChunkIndex, start: int, stop: int) -> None:
        self._index, self._start, self._stop = index, start, stop

    def __len__(self) -> int:
        return self._stop - self._start

    def piece(self, pos: int, n: int) -> bytes:
        """Bytes ``pos:pos + n`` of the stream (fewer at its end)."""
        start = self._start + pos
        return self._index.read_range(start, min(start + n, self._stop))


def _payload(index: ChunkIndex, job: ObjectJob) -> Payload | None:
    """The frame's zlib stream, or None when it has no mask (as
    ``MaskSource.payload``: no chunk, or nothing after its prefix)."""
    found = index.data_range(binary_frame_chunk_name(job.layer.file_tag, job.seq))
    if found is None:
        return None
    start, stop = found
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
    zlib = _inflate.INFLATER
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
            raise _inflate.corrupt_stream(e) from None
        total += len(out)
        if total > cap:
            raise _inflate.over_cap(cap, header.shape)
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
        raise _inflate.truncated_stream(total)
    status, word, value = ok.finish_scan(st, total // 4)
    if scanning and status != OK:
        if word < 0:
            raise DecodeError("stream ends inside the frame header", offset=0)
        reason = status_reason(status, np.array([value], np.int64), 0, header)
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


def table_cpu(
    jobs: Sequence[ObjectJob], names: Sequence[str], images: Images | None
) -> dict[str, np.ndarray]:
    if not jobs:
        return empty_table(names, "cpu")
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
                            NO_IMAGE
                            if images is None
                            else image_for_kernel(image_of(job.image), shape)  # type: ignore[arg-type]
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
    yield lambda index: NO_IMAGE


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
