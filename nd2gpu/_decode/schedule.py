"""How a call's jobs are spread over the decode threads, and its failures.

One module for every consumer. A call's jobs are cut into groups of a few
consecutive frames; each decode thread that takes part claims the next group
from a shared counter until none is left (threads that finish early take more;
one C call per group), so a call hands the pool one task per thread, not one
per group. Small calls stay in the calling thread. The failure of the earliest
job is the one raised, with its file, layer and frame, and no group after it is
started.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import TypeVar

from .._errors import DecodeError
from ..kernels._parse_kernels import GROUP_FRAMES
from .plan import DecodePlan
from .pool import Tasks, thread_pool, worker_count

#: A call whose frames have fewer pixels than this in all decodes in the calling
#: thread: handing tiny frames to the pool costs more than decoding them.
INLINE_PIXELS = 1 << 20
#: Groups per thread a call is cut into at least (balance), within
#: ``GROUP_FRAMES`` frames a group.
GROUPS_PER_WORKER = 2

#: A job that failed and its error (without the job's context).
Failure = tuple[int, DecodeError]
T = TypeVar("T")


class Groups:
    """The groups of jobs ``lo:hi`` of a call, claimed by the threads in turn.

    Iterating gives the ``(lo, hi)`` ranges this thread claims, until none is
    left or a group before it failed (``failed``).
    """

    def __init__(self, lo: int, hi: int, size: int) -> None:
        self.lo, self.hi, self.size = lo, hi, size
        self._claim = itertools.count().__next__
        self._first_failed = hi

    def failed(self, job: int) -> None:
        """Job ``job`` failed: groups after it are not started."""
        self._first_failed = min(self._first_failed, job)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        claim, size = self._claim, self.size
        while True:
            lo = self.lo + claim() * size
            if lo >= self.hi or lo > self._first_failed:
                return
            yield lo, min(lo + size, self.hi)


def group_size(n_jobs: int, workers: int, most: int = GROUP_FRAMES) -> int:
    """Frames a group of a call of ``n_jobs`` frames holds."""
    return max(1, min(most, n_jobs // (GROUPS_PER_WORKER * workers)))


def threads_for(n_jobs: int, frame_pixels: int) -> int:
    """Threads a call takes: all of them, or only the caller's for tiny calls."""
    if n_jobs * frame_pixels < INLINE_PIXELS:
        return 1
    return max(1, min(n_jobs, worker_count()))


def start(
    task: Callable[[Groups], T], groups: Groups, n_threads: int
) -> Tasks[T] | list[T]:
    """``task(groups)`` in ``n_threads`` decode threads (1: here, done)."""
    if n_threads <= 1:
        return [task(groups)]
    return thread_pool().start(lambda _: task(groups), n_threads)


def run_parallel(
    task: Callable[[Groups], T],
    n_jobs: int,
    frame_pixels: int,
    most: int = GROUP_FRAMES,
) -> list[T]:
    """``task(groups)`` in as many decode threads as the call deserves, each
    claiming groups of jobs ``0:n_jobs`` of at most ``most`` frames; their
    results once all are done."""
    n_threads = threads_for(n_jobs, frame_pixels)
    groups = Groups(0, n_jobs, group_size(n_jobs, n_threads, most))
    started = start(task, groups, n_threads)
    return started if isinstance(started, list) else started.wait()


def raise_failure(plan: DecodePlan, failures: list[Failure | None]) -> None:
    """Raise the failure of the earliest job, naming its file, layer and frame."""
    found = [f for f in failures if f is not None]
    if found:
        job, error = min(found, key=lambda f: f[0])
        raise plan.with_context(error, job) from None
