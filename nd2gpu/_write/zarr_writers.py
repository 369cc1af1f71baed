"""The threads that write a Zarr store, owned by the export so it can stop them.

nd2's writer stores dask arrays with zarr 3: dask's threads compute blocks and
hand them to zarr, whose event loop (a thread of its own) runs the writes, the
file I/O in the loop's thread pool. When the export stops early (Ctrl-C, an
error), all of that would go on writing chunk files into the staged output
after it is removed, recreating its directories; and tasks left pending on
zarr's loop are reported as "Task was destroyed but it is pending!" at exit.

`settled_zarr_writes` gives the block its own dask pool and its own I/O pool on
zarr's loop. On any exception it cancels the dask tasks not yet started, waits
for those running (each finishes the chunk it writes), waits for the zarr tasks
started in the block (cancelling any still running after `SETTLE_TIMEOUT_S`)
and for the I/O threads, and only then lets the exception go on, to the code
that removes the staged output. (A zarr task is not cancelled before it has
run: it would leave zarr's write coroutine never awaited, and Python warns.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .interrupts import deferred_interrupts

#: Seconds to let zarr's tasks finish before cancelling them.
SETTLE_TIMEOUT_S = 30.0
#: The most seconds to wait for zarr's loop to answer.
LOOP_TIMEOUT_S = 120.0


def _zarr_loop() -> asyncio.AbstractEventLoop:
    from zarr.core.sync import _get_loop  # zarr 3's loop; it has no public handle

    return _get_loop()


def _on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(LOOP_TIMEOUT_S)


async def _tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks()


async def _settle(keep: set[asyncio.Task[Any]]) -> None:
    """Await every task of the running loop but ``keep`` and this one.

    Those still running after `SETTLE_TIMEOUT_S` are cancelled, then awaited.
    """
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current and t not in keep]
    if not tasks:
        return
    _, running = await asyncio.wait(tasks, timeout=SETTLE_TIMEOUT_S)
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


def _dask_pool() -> ThreadPoolExecutor:
    import dask.threaded
    from dask.system import CPU_COUNT

    # dask's own kind where it has one: tasks see the caller's context variables
    pool: type[ThreadPoolExecutor] = getattr(
        dask.threaded, "ContextAwareThreadPoolExecutor", ThreadPoolExecutor
    )
    return pool(CPU_COUNT, thread_name_prefix="nd2gpu-export")


@contextlib.contextmanager
def settled_zarr_writes() -> Iterator[None]:
    """Run the block's dask computations and zarr writes on threads it can stop.

    On any exception in the block (KeyboardInterrupt included) no thread writes
    to the store any more when the exception leaves: dask's tasks not started
    are cancelled, those running finished, zarr's tasks started in the block
    awaited, the file I/O in flight completed.
    """
    import dask

    loop: asyncio.AbstractEventLoop | None = None
    before: set[asyncio.Task[Any]] = set()
    io: ThreadPoolExecutor | None = None
    pool: ThreadPoolExecutor | None = None
    previous: Any = None
    config: Any = None
    try:
        with deferred_interrupts():
            loop = _zarr_loop()
            before = _on_loop(loop, _tasks())
            io = ThreadPoolExecutor(thread_name_prefix="nd2gpu-zarr-io")
            previous = getattr(loop, "_default_executor", None)
            loop.set_default_executor(io)
            pool = _dask_pool()
            config = dask.config.set(scheduler="threads", pool=pool)
        yield
    except BaseException:
        with deferred_interrupts():
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if loop is not None:
                _on_loop(loop, _settle(before))
            if io is not None:
                io.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        with deferred_interrupts():
            if config is not None:
                config.__exit__(None, None, None)
            if pool is not None:
                pool.shutdown(wait=True)
            if loop is not None and io is not None:
                if not isinstance(previous, ThreadPoolExecutor):
                    previous = ThreadPoolExecutor(thread_name_prefix="asyncio")
                loop.set_default_executor(previous)
                io.shutdown(wait=True)


__all__ = ["settled_zarr_writes"]
