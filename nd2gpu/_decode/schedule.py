"""How a call's jobs are spread over the decode threads, and its failures.

One module for every consumer: jobs are cut into contiguous ranges (a few per
thread, so that threads finishing early take more; small calls stay in the
calling thread), each range is one pool task, and the failure of the earliest
job is the one raised, with its file, layer and frame.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import wait
from typing import TypeVar

from .._errors import DecodeError
from .plan import DecodePlan
from .pool import thread_pool, worker_count

#: A call whose frames have fewer pixels than this in all decodes in the calling
#: thread: handing tiny frames to the pool costs more than decoding them.
INLINE_PIXELS = 1 << 20
#: Contiguous ranges of jobs per decode thread.
TASKS_PER_WORKER = 4

T = TypeVar("T")


def task_ranges(n_jobs: int, frame_pixels: int) -> list[tuple[int, int]]:
    """The job ranges of a call of ``n_jobs`` frames of ``frame_pixels`` each."""
    n_tasks = 1
    if n_jobs * frame_pixels >= INLINE_PIXELS:
        n_tasks = max(1, min(n_jobs, TASKS_PER_WORKER * worker_count()))
    bounds = [n_jobs * i // n_tasks for i in range(n_tasks + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(n_tasks)]


def run_tasks(
    task: Callable[[int, int], T], ranges: list[tuple[int, int]]
) -> list[T]:
    """``task(lo, hi)`` for every range, in the decode pool (one range: here).

    Returns the results in range order once every task is done; an exception of
    a task is raised (the earliest range's) only after all tasks finished, so
    that none still reads the file when the caller releases it.
    """
    if len(ranges) == 1:
        return [task(*ranges[0])]
    pool = thread_pool()
    futures = [pool.submit(task, lo, hi) for lo, hi in ranges]
    wait(futures)
    return [f.result() for f in futures]


def raise_failure(
    plan: DecodePlan, failures: list[tuple[int, DecodeError] | None]
) -> None:
    """Raise the failure of the earliest job, naming its file, layer and frame."""
    found = [f for f in failures if f is not None]
    if found:
        job, error = min(found, key=lambda f: f[0])
        raise plan.with_context(error, job) from None
