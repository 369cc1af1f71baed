"""What a decode costs in Python: calls per frame and GIL-held time per frame.

On a many-core machine the decode threads scale only as far as the work they
do holding the GIL allows; on this project's 2-core machine that is measured by
its causes:

- ``count_calls``: Python-level calls (``call`` and ``c_call`` profile events)
  in every thread while a function runs. The decode pool is restarted first so
  that its threads run under the profiler too (Python 3.11 profiles only threads
  started after ``threading.setprofile``).
- ``gil_seconds``: time some thread held the GIL, sampled by py-spy
  (``py-spy record --gil``, which records a sample only while a thread holds
  the GIL) attached to a child process that runs a case in a loop; the child
  logs its frames, so the GIL time is divided by the frames decoded while
  py-spy sampled. Without py-spy (``pip install py-spy``) it returns None.
  The sampler over-counts: the floor's own run (the payloads inflated in a
  thread pool, GIL released; standalone, isal holds it ~4 µs per 2048x2048
  frame) samples at 50 µs and more per frame, so ``gil_profile`` samples the
  floor beside each case and reports what a case holds above it.

``python benchmarks/python_cost.py child ...`` is that child.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: py-spy's samples per second, and how long it samples.
SPY_RATE = 1000
SPY_SECONDS = 4.0


def restart_decode_pool() -> None:
    """Stop nd2gpu's decode threads; the next call starts new ones."""
    from nd2gpu._decode.pool import shutdown_pool

    shutdown_pool()


def count_calls(fn: Callable[[], Any]) -> int:
    """Python-level calls in every thread while ``fn()`` runs (the second of two
    runs under the profiler: the new threads' scratch is warm by then)."""
    counts: Counter[int] = Counter()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" or event == "c_call":
            counts[threading.get_ident()] += 1

    restart_decode_pool()
    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        fn()
        counts.clear()
        fn()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
        restart_decode_pool()  # its threads still run the profiler
    return sum(counts.values())


def py_spy() -> str | None:
    return shutil.which("py-spy")


def gil_seconds(case: list[str]) -> tuple[float, int] | None:
    """GIL-held seconds and frames decoded while py-spy sampled ``case``.

    ``case`` is the child's arguments (see ``child``). None without py-spy.
    """
    spy = py_spy()
    if spy is None:
        return None
    child = subprocess.Popen(
        [sys.executable, __file__, "child", *case, "--seconds", str(SPY_SECONDS + 3)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        ready = child.stdout.readline()
        if ready.strip() != "ready":
            raise RuntimeError(f"the child did not start: {ready!r}")
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "gil.txt"
            spy_run = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(child.pid),
                    "--gil",
                    "--nonblocking",
                    "--rate",
                    str(SPY_RATE),
                    "--duration",
                    str(int(SPY_SECONDS)),
                    "--format",
                    "raw",
                    "-o",
                    str(raw),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # py-spy attaches; the child waits (no GIL held)
            start = time.time()
            child.stdin.write("go\n")
            child.stdin.flush()
            spy_run.wait(timeout=SPY_SECONDS + 30)
            end = time.time()
            samples = 0
            if raw.exists():
                for line in raw.read_text().splitlines():
                    samples += int(line.rsplit(" ", 1)[1])
        log = json.loads(child.stdout.readline())
    finally:
        child.kill()
        child.wait()
    frames = sum(n for t, n in log if start <= t <= end)
    return samples / SPY_RATE, frames


def gil_us(case: str, path: Path) -> float | None:
    """GIL µs per frame of ``case`` on ``path`` (None without py-spy)."""
    measured = gil_seconds([case, str(path)])
    if measured is None or not measured[1]:
        return None
    return measured[0] / measured[1] * 1e6


@functools.cache
def floor_gil_us(path: Path) -> float | None:
    """``gil_us`` of the floor's run (case ``inflate``) on ``path``, sampled
    once per file however many cases compare with it."""
    return gil_us("inflate", path)


def gil_profile(case: str, path: Path) -> dict[str, float] | None:
    """GIL µs per frame of ``case`` on ``path``, of the floor's run on the same
    file, and the case's excess over the floor's."""
    us = gil_us(case, path)
    floor_us = floor_gil_us(path)
    if us is None or floor_us is None:
        return None
    return {
        "gil_us_per_frame": us,
        "floor_gil_us_per_frame": floor_us,
        "gil_us_above_floor": us - floor_us,
    }


def child(argv: list[str]) -> None:
    """Run a case in a loop once the parent says go; print the frames decoded
    with their times (JSON) at the end."""
    parser = argparse.ArgumentParser()
    parser.add_argument("case")
    parser.add_argument("path", type=Path)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from cases import make_case

    run, frames = make_case(args.case, args.path, args.batch)
    run()  # warm: compiled, mapped
    print("ready", flush=True)
    sys.stdin.readline()
    log = []
    stop = time.time() + args.seconds
    while time.time() < stop:
        run()
        log.append((time.time(), frames))
    print(json.dumps(log), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child(sys.argv[2:])
    else:
        raise SystemExit("usage: python_cost.py child CASE PATH [--batch N]")
