"""Run lists: a decode thread's frames as runs without overlaps, for the consumers
that need runs rather than pixels (the CUDA staging and the object tables).

The one run-table type of nd2gpu: frame-local ``rows``, ``cols``, ``lengths``
(``int32``) and ``values`` (``uint16``), frame ``i``'s runs at
``spans[i, 0]:spans[i, 1]``. A ``RunList`` is a thread's, reused from group to
group and grown (by a quarter at least) when a frame needs more room.
"""

from __future__ import annotations

import threading

import numpy as np

from ..kernels._overlap_kernels import row_table
from ..kernels._parse_kernels import NEED_RUNS, R_RUNS, R_STATUS
from ..kernels._record_kernels import RECORD_FIELDS, record_group, resolve_group
from .front import Streams

#: Runs a thread's list first has room for, and its least growth.
FIRST_RUNS = 4096
GROWTH = 1.25


class RunList:
    """A growable run list (see the module docstring), with its scratch."""

    def __init__(self) -> None:
        self.rows = np.empty(0, np.int32)
        self.cols = np.empty(0, np.int32)
        self.lengths = np.empty(0, np.int32)
        self.values = np.empty(0, np.uint16)
        self._set_scratch(0)
        self.counts = np.empty(0, np.int32)
        self.tail = np.zeros(2, np.int64)

    @property
    def capacity(self) -> int:
        return int(self.rows.shape[0])

    def grow(self, need: int, keep: int) -> None:
        """Room for at least ``need`` runs (up to a quarter more), keeping the
        first ``keep``."""
        capacity = max(int(need), FIRST_RUNS, int(self.capacity * GROWTH))
        for name in ("rows", "cols", "lengths", "values"):
            old = getattr(self, name)
            new = np.empty(capacity, old.dtype)
            new[:keep] = old[:keep]
            setattr(self, name, new)
        self._set_scratch(capacity)

    def _set_scratch(self, capacity: int) -> None:
        # One buffer for two uses that never overlap in time: the int64 keys of
        # ``overlaps_by_row``, then (a frame that overlaps) the int32 order of
        # ``find_overlap``; the objects kernels' order after that.
        self.keys = np.empty(capacity, np.int64)
        self.order = self.keys.view(np.int32)

    def rows_for(self, nrows: int) -> np.ndarray:
        """The row table of ``find_overlap`` for frames of ``nrows`` rows."""
        if self.counts.shape[0] != nrows + 1:
            self.counts = row_table(nrows)
        return self.counts

    def record(
        self,
        streams: Streams,
        present: np.ndarray,
        n: int,
        shape: tuple[int, int],
        spans: np.ndarray,
        results: np.ndarray,
    ) -> int:
        """Record a group's first ``n`` frames (``record_group``), growing the list
        as needed; return the first frame that failed, or ``n``."""
        nrows, ncols = shape
        done = 0
        while True:
            done = int(
                record_group(
                    streams,
                    present,
                    done,
                    n,
                    nrows,
                    ncols,
                    self.rows,
                    self.cols,
                    self.lengths,
                    self.values,
                    spans,
                    results,
                )
            )
            if done == n or results[done, R_STATUS] != NEED_RUNS:
                return done
            keep = int(spans[done - 1, 1]) if done else 0
            bound = int(results[done, R_RUNS])
            self.grow(
                min(bound, max(keep + FIRST_RUNS, int(self.capacity * GROWTH))), keep
            )

    def resolve(
        self, n: int, nrows: int, spans: np.ndarray, results: np.ndarray
    ) -> None:
        """Rewrite the recorded frames of the first ``n`` whose runs overlap
        (``resolve_group``), growing the list as needed."""
        counts = self.rows_for(nrows)
        self.tail[0] = spans[n - 1, 1] if n else 0
        done = 0
        while done < n:
            done = int(
                resolve_group(
                    self.rows,
                    self.cols,
                    self.lengths,
                    self.values,
                    spans,
                    done,
                    n,
                    nrows,
                    counts,
                    self.order,
                    self.keys,
                    self.tail,
                    results,
                )
            )
            if done < n:
                self.grow(int(self.tail[1]), int(self.tail[0]))


_local = threading.local()


def thread_run_list() -> RunList:
    """This thread's run list."""
    try:
        return _local.runs
    except AttributeError:
        runs = _local.runs = RunList()
        return runs


def new_results(n: int) -> np.ndarray:
    """Result rows for ``n`` jobs of a run-recording consumer."""
    return np.zeros((n, RECORD_FIELDS), np.int64)
