"""The host half of the CUDA pipelines: frames staged batch by batch, continuously.

The decode threads inflate each frame, record its runs (the shared front half,
``nd2gpu._decode``), resolve the rare overlaps, and write the runs straight into
a ring of staged batches (``kernels/_batch_layout.py``: a frame table and 12
bytes a run, in one pinned buffer): a group reserves its rows and entries under
the batch's lock, then copies without it. The calling thread only closes
batches (numbers their tiles) and hands each to a ``DeviceSide``, which copies
it to the GPU in one piece and launches its consumer there (the expansion of
decoding, or the reductions of the object tables). Batch k+1 .. k+R-1 are
parsed while batch k is copied and consumed; there is no barrier between
batches, and a batch's buffer is reused only once its copy has finished.

The first batch is small, so that the GPU starts early; a batch's buffer is
sized from the runs seen so far, with headroom, and a group that does not fit
stages its runs privately: the batch is then grown once, when it is closed.

Nothing here imports a GPU library: the device side is given, so the same code
runs with a host stand-in in the benchmarks and tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..._decode.front import Streams, run_groups
from ..._decode.inflate import inflate_cap
from ..._decode.payloads import CallPayloads
from ..._decode.plan import DecodePlan
from ..._decode.pool import Tasks
from ..._decode.runs import new_results, thread_run_list
from ..._decode.schedule import (
    Failure,
    Groups,
    group_size,
    raise_failure,
    start,
    threads_for,
)
from ...kernels._batch_layout import (
    ENTRY_BYTES,
    ENTRY_FIELDS,
    F_PIXELS,
    F_RUNS,
    F_TILE_LO,
    FRAME_BYTES,
    FRAME_FIELDS,
)
from ...kernels._parse_kernels import GROUP_FRAMES, R_STATUS
from ...kernels._stage_kernels import stage_entries

#: Frames of the first batch (the GPU starts on it while the rest is parsed).
FIRST_BATCH_FRAMES = 4
#: Frames of every later batch.
BATCH_FRAMES = 32
#: Batches in flight: being staged, copied or consumed.
RING = 3
#: Entries a batch has room for at first, per frame, before runs were seen.
FIRST_RUNS_PER_FRAME = 1 << 15
#: Room a batch is given over the most runs per frame seen so far.
HEADROOM = 1.25


class DeviceSide(Protocol):
    """What the pipeline asks of the device (``expander.CudaDevice``, or a host
    stand-in)."""

    #: Pixels of one tile of the consumer's kernel (the frame table numbers
    #: tiles of this size).
    tile_pixels: int

    def pinned(self, nbytes: int) -> np.ndarray:
        """A new ``uint8`` host buffer the device copies from fast."""

    def submit(self, slot: int, batch: StagedBatch, n_tiles: int) -> None:
        """Queue the copy of ``batch`` (ring slot ``slot``) to the device and
        its consumer's kernels; return before they are done."""

    def wait_copied(self, slot: int) -> None:
        """Wait until the last copy from ring slot ``slot`` has finished."""

    def finish(self) -> None:
        """Wait until everything submitted is done."""


@dataclass(eq=False)
class StagedBatch:
    """One ring slot's host buffer: a batch's frame table and entries.

    ``frames`` and ``entries`` are views of ``host`` (one pinned buffer, so the
    batch is copied in one piece: the frame table and the entries in use).
    """

    host: np.ndarray
    max_frames: int
    capacity: int
    frames: np.ndarray = field(init=False)
    entries: np.ndarray = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    n_frames: int = field(default=0, init=False)
    n_runs: int = field(default=0, init=False)
    #: Groups that did not fit: ``(first entry, their entries)``.
    spilled: list[tuple[int, np.ndarray]] = field(default_factory=list, init=False)
    #: What a ``group_hook`` keeps with the batch, by group.
    extras: list[Any] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        table = self.max_frames * FRAME_BYTES
        self.frames = self.host[:table].view(np.int64).reshape(-1, FRAME_FIELDS)
        entries = self.host[table : table + self.capacity * ENTRY_BYTES]
        self.entries = entries.view(np.uint32).reshape(-1, ENTRY_FIELDS)

    @staticmethod
    def nbytes(max_frames: int, capacity: int) -> int:
        return max_frames * FRAME_BYTES + capacity * ENTRY_BYTES

    @property
    def used_bytes(self) -> int:
        """Bytes to copy: the frame table and the entries in use."""
        return self.max_frames * FRAME_BYTES + self.n_runs * ENTRY_BYTES

    def reset(self, n_frames: int) -> None:
        self.n_frames = n_frames
        self.n_runs = 0
        self.spilled = []
        self.extras = []

    def reserve(self, n_runs: int) -> tuple[int, bool]:
        """Entries for a group: the first, and whether they fit in the buffer.
        (A frame's row in the table is its position in the batch.)"""
        with self.lock:
            r0 = self.n_runs
            self.n_runs += n_runs
        return r0, r0 + n_runs <= self.capacity


@dataclass
class PipelineStats:
    """What a call cost the calling thread and the device (for the benchmarks)."""

    batches: int = 0
    runs: int = 0
    bytes_copied: int = 0
    grown: int = 0
    #: The calling thread's seconds (``time.perf_counter``, a few reads per
    #: batch) in ``run``: in all; waiting for the decode threads; getting ring
    #: slots (waiting for their last copy, allocating); closing batches; in the
    #: device side's ``submit``; in its ``finish`` (waiting for the device).
    run_s: float = 0.0
    waiting_s: float = 0.0
    slot_s: float = 0.0
    closing_s: float = 0.0
    submit_s: float = 0.0
    finish_s: float = 0.0


#: See ``BatchPipeline``'s ``group_hook``.
GroupHook = Callable[[StagedBatch, int, Any, np.ndarray, int, np.ndarray], None]


def batch_bounds(n_jobs: int) -> list[tuple[int, int]]:
    """The job ranges of the batches: a small first one, then ``BATCH_FRAMES``."""
    bounds = []
    lo = 0
    size = FIRST_BATCH_FRAMES
    while lo < n_jobs:
        hi = min(n_jobs, lo + size)
        bounds.append((lo, hi))
        lo = hi
        size = BATCH_FRAMES
    return bounds


class BatchPipeline:
    """Stages a plan's frames in batches and hands them to a ``DeviceSide``.

    Parameters
    ----------
    device : DeviceSide
        Where batches go.
    frame_shape : (int, int)
        The frames' shape (every frame must have it).
    ring : list of StagedBatch, optional
        Buffers kept from an earlier call (reused when large enough).
    group_hook : callable, optional
        ``group_hook(batch, row, runs, spans, n, statuses)`` in the decode
        thread, after a group's first ``n`` frames are recorded and resolved
        (their frame rows from ``row`` on): the consumer's own work on the runs.
    """

    def __init__(
        self,
        device: DeviceSide,
        frame_shape: tuple[int, int],
        ring: list[StagedBatch | None] | None = None,
        *,
        group_hook: GroupHook | None = None,
    ) -> None:
        self.device = device
        self.shape = frame_shape
        self.group_hook = group_hook
        self.ring: list[StagedBatch | None] = (
            ring if ring is not None else [None] * RING
        )
        self.runs_per_frame = 0
        self.stats = PipelineStats()

    # ------------------------------------------------------------ buffers

    def _slot(self, k: int, n_frames: int) -> StagedBatch:
        """Ring slot ``k``, free and large enough for a batch of ``n_frames``."""
        self.device.wait_copied(k)
        per_frame = self.runs_per_frame or FIRST_RUNS_PER_FRAME
        want = max(1, int(per_frame * n_frames * HEADROOM))
        batch = self.ring[k]
        if batch is None or batch.max_frames < n_frames or batch.capacity < want:
            max_frames = max(n_frames, BATCH_FRAMES)
            capacity = max(want, 0 if batch is None else batch.capacity)
            host = self.device.pinned(StagedBatch.nbytes(max_frames, capacity))
            batch = self.ring[k] = StagedBatch(host, max_frames, capacity)
        batch.reset(n_frames)
        return batch

    def _close(self, k: int, batch: StagedBatch) -> tuple[StagedBatch, int]:
        """Fold spilled groups in (growing the buffer) and number the tiles;
        return the batch (grown or not) and its tiles."""
        if batch.spilled:
            grown = self.device.pinned(
                StagedBatch.nbytes(batch.max_frames, int(batch.n_runs * HEADROOM))
            )
            new = StagedBatch(grown, batch.max_frames, int(batch.n_runs * HEADROOM))
            fitted = batch.max_frames * FRAME_BYTES + batch.capacity * ENTRY_BYTES
            new.host[:fitted] = batch.host[:fitted]
            for r0, entries in batch.spilled:
                new.entries[r0 : r0 + entries.shape[0]] = entries
            new.n_frames, new.n_runs = batch.n_frames, batch.n_runs
            new.extras = batch.extras
            batch = self.ring[k] = new
            self.stats.grown += 1
        frames = batch.frames[: batch.n_frames]
        tile = self.device.tile_pixels
        tiles = (frames[:, F_PIXELS] + tile - 1) // tile
        np.cumsum(tiles, out=frames[:, F_TILE_LO])
        frames[:, F_TILE_LO] -= tiles
        if batch.n_frames:
            busiest = int(frames[:, F_RUNS].max())
            self.runs_per_frame = max(self.runs_per_frame, busiest)
        return batch, int(tiles.sum())

    # ------------------------------------------------------------- running

    def run(self, plan: DecodePlan, bases: np.ndarray) -> None:
        """Stage every job of ``plan`` (job ``i`` into the output at flat offset
        ``bases[i]``) and submit the batches; wait for the device at the end.

        Raises
        ------
        DecodeError
            For the first corrupt frame in job order (naming file, layer,
            frame), once no thread reads the file any more and the device is
            idle.
        """
        started = time.perf_counter()
        stats = self.stats
        nrows, ncols = self.shape
        cap = inflate_cap(nrows, ncols)
        results = new_results(plan.n_jobs)
        bounds = batch_bounds(plan.n_jobs)
        failures: list[Failure | None] = []
        in_flight: dict[int, Tasks[Failure | None] | list[Failure | None]] = {}

        def finished(b: int) -> list[Failure | None]:
            tasks = in_flight.pop(b, [])
            return tasks if isinstance(tasks, list) else tasks.wait()

        with plan.source.reading() as index:
            payloads = CallPayloads(plan, index)

            def submit(b: int) -> None:
                lo, hi = bounds[b]
                t = time.perf_counter()
                batch = self._slot(b % len(self.ring), hi - lo)
                stats.slot_s += time.perf_counter() - t
                n_threads = threads_for(hi - lo, nrows * ncols)
                groups = Groups(lo, hi, group_size(hi - lo, n_threads))

                def stage(groups: Groups) -> Failure | None:
                    return self._stage_groups(
                        payloads, batch, lo, groups, cap, bases, results
                    )

                in_flight[b] = start(stage, groups, n_threads)

            try:
                for b in range(min(len(self.ring) - 1, len(bounds))):
                    submit(b)
                for b in range(len(bounds)):
                    ahead = b + len(self.ring) - 1
                    if ahead < len(bounds) and not any(failures):
                        submit(ahead)
                    t0 = time.perf_counter()
                    failures += finished(b)
                    t1 = time.perf_counter()
                    stats.waiting_s += t1 - t0
                    if any(failures):
                        continue
                    k = b % len(self.ring)
                    staged = self.ring[k]
                    assert staged is not None
                    batch, n_tiles = self._close(k, staged)
                    t2 = time.perf_counter()
                    self.device.submit(k, batch, n_tiles)
                    stats.closing_s += t2 - t1
                    stats.submit_s += time.perf_counter() - t2
                    stats.batches += 1
                    stats.runs += batch.n_runs
                    stats.bytes_copied += batch.used_bytes
            finally:
                # No task may read the file after it is released (on an error:
                # the first one is the one raised).
                for b in list(in_flight):
                    with suppress(Exception):
                        finished(b)
                t = time.perf_counter()
                self.device.finish()
                stats.finish_s += time.perf_counter() - t
                stats.run_s += time.perf_counter() - started
        raise_failure(plan, failures)
        plan.warn_versions(results)

    def _stage_groups(
        self,
        payloads: CallPayloads,
        batch: StagedBatch,
        first: int,
        groups: Groups,
        cap: int,
        bases: np.ndarray,
        results: np.ndarray,
    ) -> Failure | None:
        """A decode thread's part of a batch (whose first job is ``first``):
        the groups it claims."""
        nrows, ncols = self.shape
        runs = thread_run_list()
        spans = np.zeros((GROUP_FRAMES, 2), np.int64)

        def record(g: int, streams: Streams, present: np.ndarray, n: int) -> int:
            rows = results[g : g + n]
            return runs.record(streams, present, n, self.shape, spans, rows)

        def put(g: int, n: int) -> None:
            rows = results[g : g + n]
            runs.resolve(n, nrows, spans, rows)
            statuses = rows[:, R_STATUS]
            if self.group_hook is not None:
                self.group_hook(batch, g - first, runs, spans, n, statuses)
            total = int((spans[:n, 1] - spans[:n, 0]).sum())
            r0, fits = batch.reserve(total)
            if fits:
                entries, e0 = batch.entries, r0
            else:
                entries, e0 = np.empty((total, ENTRY_FIELDS), np.uint32), 0
            stage_entries(
                runs.rows,
                runs.cols,
                runs.lengths,
                runs.values,
                spans,
                n,
                statuses,
                ncols,
                bases[g : g + n],
                batch.frames,
                g - first,
                entries,
                e0,
                r0,
            )
            if not fits:
                with batch.lock:
                    batch.spilled.append((r0, entries))

        return run_groups(
            payloads, groups, cap, self.shape, results, record, finish=put
        )
