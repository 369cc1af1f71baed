"""The process-wide pool of decode threads (inflate and parse release the GIL)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from .._settings import num_threads

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def worker_count() -> int:
    """Threads used to decode (``ND2GPU_NUM_THREADS`` or the usable CPUs).

    The pool's size once it exists (read on every decode call: no look-up of
    the environment or the CPU affinity then).
    """
    return _pool_size if _pool is not None else num_threads()


def thread_pool() -> ThreadPoolExecutor:
    """The process-wide decode pool (created on first use)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None:
            _pool_size = num_threads()
            _pool = ThreadPoolExecutor(_pool_size, thread_name_prefix="nd2gpu")
        return _pool


def _forget_pool_in_child() -> None:
    # A forked child has none of the parent's threads: the inherited executor
    # would queue work that no thread ever runs, and a lock held by a parent
    # thread at the fork would never be released. Start afresh.
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)
