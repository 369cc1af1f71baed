"""The process-wide decode threads (inflate and the compiled kernels release the
GIL), with a hand-off that costs a few C calls per task.

``concurrent.futures`` spends some thirty Python-level calls on each task
(futures, conditions, callbacks); here a call hands ``n`` tasks to the threads
through one queue and waits on one lock that the last task releases, so the
threads spend their GIL-held time on the frames, not on the hand-off.
"""

from __future__ import annotations

import _thread
import atexit
import itertools
import os
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Generic, TypeVar

from .._settings import num_threads

T = TypeVar("T")


class Tasks(Generic[T]):
    """``n`` calls ``fn(i)`` handed to the decode threads; ``wait()`` for them."""

    __slots__ = ("_done", "_finished", "errors", "fn", "n", "results")

    def __init__(self, fn: Callable[[int], T], n: int) -> None:
        self.fn = fn
        self.n = n
        self.results: list[Any] = [None] * n
        self.errors: list[BaseException | None] = [None] * n
        self._finished = itertools.count(1).__next__
        self._done = _thread.allocate_lock()
        self._done.acquire()

    def run(self, i: int) -> None:
        try:
            self.results[i] = self.fn(i)
        except BaseException as e:  # raised again by wait(), in the caller
            self.errors[i] = e
        if self._finished() == self.n:
            self._done.release()

    def wait(self) -> list[T]:
        """The results, in task order, once every task has finished; the first
        task's exception (in task order) is raised then."""
        with self._done:
            pass
        for error in self.errors:
            if error is not None:
                raise error
        return self.results


def _work(queue: SimpleQueue[Any]) -> None:
    while True:
        item = queue.get()
        if item is None:
            return
        item[0].run(item[1])


class DecodePool:
    """Daemon threads that run ``Tasks``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._threads = [
            threading.Thread(
                target=_work, args=(self._queue,), name=f"nd2gpu-{k}", daemon=True
            )
            for k in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def start(self, fn: Callable[[int], T], n: int) -> Tasks[T]:
        """Hand ``fn(0) .. fn(n - 1)`` to the threads; returns at once."""
        tasks = Tasks(fn, n)
        put = self._queue.put
        for i in range(n):
            put((tasks, i))
        return tasks

    def shutdown(self) -> None:
        """Let the threads finish what they have, then stop them."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()


_pool: DecodePool | None = None
_pool_lock = threading.Lock()


def worker_count() -> int:
    """Threads used to decode (``ND2GPU_NUM_THREADS`` or the usable CPUs).

    The pool's size once it exists (read on every decode call: no look-up of
    the environment or the CPU affinity then).
    """
    return _pool.size if _pool is not None else num_threads()


def thread_pool() -> DecodePool:
    """The process-wide decode pool (created on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = DecodePool(num_threads())
        return _pool


def shutdown_pool() -> None:
    """Stop the decode threads (the next decode starts new ones)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown()


atexit.register(shutdown_pool)


def _forget_pool_in_child() -> None:
    # A forked child has none of the parent's threads: the inherited pool would
    # queue work that no thread ever runs, and a lock held by a parent thread
    # at the fork would never be released. Start afresh.
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)
