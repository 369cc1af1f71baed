"""A long-lived child for tests/test_interrupts.py: runs jobs, takes real signals.

Starting Python with nd2gpu, dask and zarr takes seconds; a signal sweep of
many points would spend its time there. This process starts once and runs one
job per line of stdin (JSON): ``{"cli": [ARGS]}`` runs ``nd2gpu.cli.main(ARGS)``
(which installs its own handlers for the job, as the ``nd2gpu`` program does),
``{"write_nd2": [OUT, SHAPE]}`` writes an ND2 file with ``nd2gpu.write_nd2``
under Python's own Ctrl-C handling. It prints ``started`` before each job (the
test then sends its signal after a delay) and one JSON line after it: the exit
status, the seconds the job ran, and what it wrote on stdout and stderr. Between
jobs SIGINT and SIGTERM are ignored (SIG_IGN): a signal that comes after a job
ended changes nothing, and the test can tell from the process's caught-signal
mask when a job's handlers are in place.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import signal
import sys
import time

import numpy as np

import nd2gpu
from nd2gpu.cli import main


def _write_nd2(out: str, shape: list[int]) -> int:
    labels = np.zeros(shape, np.uint16)
    labels[:, ::7, ::5] = 3
    labels[:, 3::11, :] = 9
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        nd2gpu.write_nd2(
            out, {"a": labels, "b": labels[..., ::-1]}, loops=[("T", shape[0])]
        )
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def run() -> None:
    protocol = sys.stdout
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    for line in sys.stdin:
        job = json.loads(line)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            print("started", file=protocol, flush=True)
            start = time.perf_counter()
            # write_nd2 runs under Python's own Ctrl-C handling, as in a script.
            status = main(job["cli"]) if "cli" in job else _write_nd2(*job["write_nd2"])
            seconds = time.perf_counter() - start
        result = {
            "status": status,
            "seconds": seconds,
            "stdout": out.getvalue(),
            "stderr": err.getvalue(),
        }
        print(json.dumps(result), file=protocol, flush=True)
    # What is left is collected now: asyncio reports tasks destroyed while
    # pending, Python coroutines never awaited, on this process's stderr.
    gc.collect()


if __name__ == "__main__":
    run()
