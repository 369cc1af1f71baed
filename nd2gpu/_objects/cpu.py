"""CPU tables: frames recorded as runs by the shared front half, then reduced by id
(``kernels/_objects_kernels.py``), frames in parallel on the decode pool.

A decode thread takes its frames one at a time (so that one inflated stream is
alive per thread), records the frame's runs, releases the stream, rewrites the
runs only if some overlap, and reduces them into the entries of its table.
Memory per thread: a frame's stream, its runs, and the entries. The tables are
reused from call to call (taken from a free list, given back once their entries
are copied, in job order, into the call's one result).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, ClassVar

import numpy as np

from .._decode.front import Streams, run_groups
from .._decode.inflate import inflate_cap
from .._decode.payloads import CallPayloads
from .._decode.plan import DecodePlan
from .._decode.runs import RunList, new_results, thread_run_list
from .._decode.schedule import Groups, raise_failure, run_parallel
from ..kernels import _objects_kernels as ok
from ..kernels._parse_kernels import GROUP_FRAMES, R_STATUS
from .intensity import Images, image_for_kernel

#: Rows of an entry table at first (grown by half when full).
FIRST_ENTRIES = 1024
#: Most rows a table keeps for later calls (about 7.9 MB): a larger one is cut
#: back to this when given back, so that memory returns after a large call.
KEPT_ENTRIES = 1 << 16


def _readonly(image: np.ndarray) -> np.ndarray:
    """A C-contiguous, read-only view (or copy) of ``image``: one kernel type for
    every image of a call."""
    view = np.ascontiguousarray(image).view()
    view.flags.writeable = False
    return view


_NO_IMAGE = _readonly(np.zeros((1, 1), np.uint8))
_free_lock = threading.Lock()
_NO_SPACING = np.ones(2, np.float64)


class Entries:
    """A growable table of object entries (``ok.STAT_FIELDS`` integers and
    ``ok.FLOAT_FIELDS`` floats per object): a task's, reused by later tasks."""

    _free: ClassVar[list[Entries]] = []

    def __init__(self) -> None:
        self.stats = np.empty((FIRST_ENTRIES, ok.STAT_FIELDS), np.int64)
        self.fstats = np.empty((FIRST_ENTRIES, ok.FLOAT_FIELDS), np.float64)
        self.n = 0

    @classmethod
    def take(cls) -> Entries:
        """An empty table no other task holds (see ``give_back``)."""
        with _free_lock:
            entries = cls._free.pop() if cls._free else cls()
        entries.n = 0
        return entries

    def give_back(self) -> None:
        """Let a later task reuse this table (its entries are not read again),
        cut back to ``KEPT_ENTRIES`` rows."""
        if self.stats.shape[0] > KEPT_ENTRIES:
            self.stats = np.empty((KEPT_ENTRIES, ok.STAT_FIELDS), np.int64)
            self.fstats = np.empty((KEPT_ENTRIES, ok.FLOAT_FIELDS), np.float64)
        with _free_lock:
            self._free.append(self)

    def grow(self, need: int) -> None:
        capacity = max(need, self.stats.shape[0] * 3 // 2)
        for name in ("stats", "fstats"):
            old = getattr(self, name)
            new = np.empty((capacity, old.shape[1]), old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)


def in_job_order(tables: list[Entries], n_jobs: int) -> tuple[np.ndarray, np.ndarray]:
    """The entries of ``tables`` in one table, in job order (each job's entries
    are together and sorted by label in its task's table), copied straight
    into the result."""
    counts = np.zeros(n_jobs + 1, np.int64)
    for t in tables:
        counts[1:] += np.bincount(t.stats[: t.n, ok.S_FRAME], minlength=n_jobs)
    first_row = np.cumsum(counts)
    total = int(first_row[-1])
    # Field-major, so that each column of the table is read contiguously.
    stats = np.empty((ok.STAT_FIELDS, total), np.int64).T
    fstats = np.empty((ok.FLOAT_FIELDS, total), np.float64).T
    for t in tables:
        ok.place_entries(t.stats, t.fstats, t.n, first_row, stats, fstats)
    return stats, fstats


def measure_cpu(
    plan: DecodePlan,
    frame_shape: tuple[int, int],
    images: Images | None,
    image_index: np.ndarray,
    spacing: tuple[float, float] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The object entries of a plan's frames (one layer's), on the CPU.

    ``image_index[i]`` is job ``i``'s frame in ``images`` (see
    ``Images.reader``).

    Returns
    -------
    stats, fstats : numpy.ndarray
        Entries in job order, by label within a frame; ``stats[:, S_FRAME]`` is
        the job.

    Raises
    ------
    DecodeError
        For the first corrupt frame in job order (naming file, layer, frame).
    """
    nrows, ncols = frame_shape
    cap = inflate_cap(nrows, ncols)
    results = new_results(plan.n_jobs)
    has_image = images is not None
    int_sums = has_image and ok.integer_sums(images.dtype)  # type: ignore[union-attr]
    scale = _NO_SPACING if spacing is None else np.asarray(spacing, np.float64)

    def task(groups: Groups) -> tuple[Any, Entries]:
        runs = thread_run_list()
        spans = np.zeros((GROUP_FRAMES, 2), np.int64)
        entries = Entries.take()
        reader = images.reader() if images is not None else nullcontext(None)
        with reader as image_of:
            measure = _measurer(
                runs,
                entries,
                spans,
                results,
                image_of,
                image_index,
                frame_shape,
                int_sums,
                scale,
                spacing is not None,
            )

            def consume(g: int, streams: Streams, present: np.ndarray, n: int) -> int:
                rows = results[g : g + n]
                return runs.record(streams, present, n, frame_shape, spans, rows)

            failure = run_groups(
                payloads, groups, cap, frame_shape, results, consume, finish=measure
            )
        return failure, entries

    with plan.source.reading() as index:
        payloads = CallPayloads(plan, index)
        done = run_parallel(task, plan.n_jobs, nrows * ncols, most=1)
    tables = [entries for _, entries in done]
    try:
        raise_failure(plan, [failure for failure, _ in done])
        plan.warn_versions(results)
        return in_job_order(tables, plan.n_jobs)
    finally:
        for entries in tables:
            entries.give_back()


def _measurer(
    runs: RunList,
    entries: Entries,
    spans: np.ndarray,
    results: np.ndarray,
    image_of: Callable[[int], np.ndarray] | None,
    image_index: np.ndarray,
    frame_shape: tuple[int, int],
    int_sums: bool,
    scale: np.ndarray,
    has_spacing: bool,
) -> Callable[[int, int], None]:
    """The work of a group once its runs are recorded: resolve overlaps, then
    reduce the frames into ``entries``."""
    nrows, ncols = frame_shape
    padding: tuple[np.ndarray, ...] = (_NO_IMAGE,) * GROUP_FRAMES

    def finish(g: int, n: int) -> None:
        nonlocal padding
        rows = results[g : g + n]
        runs.resolve(n, nrows, spans, rows)
        images = padding
        if image_of is not None:
            frames = [
                _readonly(
                    image_for_kernel(image_of(int(image_index[g + i])), frame_shape)
                )
                for i in range(n)
            ]
            if frames and frames[0].dtype != padding[0].dtype:
                padding = (_readonly(np.zeros((1, 1), frames[0].dtype)),) * GROUP_FRAMES
            images = (*frames, *padding[n:])
        while True:
            end = ok.measure_group(
                runs.rows,
                runs.cols,
                runs.lengths,
                runs.values,
                spans,
                n,
                ncols,
                rows[:, R_STATUS],
                images,
                image_of is not None,
                int_sums,
                scale,
                has_spacing,
                g,
                entries.stats,
                entries.fstats,
                entries.n,
                runs.order,
            )
            if end >= 0:
                entries.n = int(end)
                return
            entries.grow(-int(end))

    return finish
