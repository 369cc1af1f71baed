"""Ctrl-C and SIGTERM during exports leave nothing behind (issue 15, item 7).

Every export (OME-Zarr, OME-TIFF, ``--split``, ``objects -o``, ``write_nd2``)
is stopped by real signals sent to a running process, at many points of its
run; after each: no output, no temporary file or directory, the input
unchanged, one line on stderr and exit status 130 (SIGINT) or 143 (SIGTERM); or,
where the signal came after the output was in place, a complete output and
status 0. The fast tests below check the pieces one at a time, in process.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cli_support import nd2_masks, sha256

import nd2gpu
from nd2gpu._write.atomic import recorded_commits, staged_path
from nd2gpu._write.interrupts import deferred_interrupts
from nd2gpu._write.zarr_writers import settled_zarr_writes
from nd2gpu.cli import main

HARNESS = Path(__file__).with_name("interrupt_harness.py")
MESSAGES = {
    signal.SIGINT: "nd2gpu: interrupted\n",
    signal.SIGTERM: "nd2gpu: terminated\n",
}
STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


def leftovers(directory: Path) -> list[str]:
    """Everything in ``directory`` (outputs, temporary files)."""
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Python's own SIGINT handler (KeyboardInterrupt), as at a terminal, even
    where the test run was started with SIGINT ignored (a background job): the
    children started here then get SIGINT's default too, as exec resets a
    caught signal (an ignored one stays ignored)."""
    if os.name != "posix":
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------- in process


@posix_only
def test_deferred_interrupts_deliver_after_the_block():
    seen = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # delivered once
            seen.append("block ran on")
        seen.append("not reached")
    assert seen == ["block ran on"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@posix_only
def test_interrupt_in_the_commit_completes_it(tmp_path, monkeypatch):
    # The signal lands while the output is renamed into place: the commit
    # finishes, then Python's handler raises; the output is whole, nothing left.
    import nd2gpu._write.atomic as atomic

    out = tmp_path / "out.zarr"
    replace_all = atomic._replace_all

    def signalled_rename(pairs):
        os.kill(os.getpid(), signal.SIGINT)
        replace_all(pairs)

    monkeypatch.setattr(atomic, "_replace_all", signalled_rename)
    with (
        recorded_commits() as commits,
        pytest.raises(KeyboardInterrupt),
        staged_path(out, keep_name=True) as tmp,
    ):
        tmp.mkdir()
        (tmp / "zarr.json").write_text("{}")
    assert commits == [out]
    assert leftovers(tmp_path) == ["out.zarr"]


@posix_only
def test_signal_after_the_commit_is_a_success(make_nd2, tmp_path, capsys, monkeypatch):
    # The export is in place when the signal comes: "wrote ...", status 0.
    import nd2gpu._write.atomic as atomic

    path, _ = make_nd2(loops=(("T", 2),))
    out = tmp_path / "out.ome.tif"
    record = atomic._record

    def record_then_signal(targets):
        record(targets)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(atomic, "_record", record_then_signal)
    assert main(["export", str(path), str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"wrote {out}: OME-TIFF")
    assert captured.err == ""


@posix_only
def test_interrupt_before_the_commit_leaves_nothing(
    make_nd2, tmp_path, capsys, monkeypatch
):
    import nd2gpu._write.atomic as atomic

    path, _ = make_nd2(loops=(("T", 2),))
    out = tmp_path / "out.zarr"

    def interrupted(tmp):
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(atomic, "fsync_tree", interrupted)
    assert main(["export", str(path), str(out)]) == 130
    assert capsys.readouterr() == ("", "nd2gpu: interrupted\n")
    assert leftovers(tmp_path) == [path.name]


def test_settled_zarr_writes_await_then_cancel_zarr_tasks(monkeypatch):
    from zarr.core.sync import _get_loop

    import nd2gpu._write.zarr_writers as zarr_writers

    monkeypatch.setattr(zarr_writers, "SETTLE_TIMEOUT_S", 0.2)
    loop = _get_loop()
    state = []

    async def write(seconds):
        state.append(f"{seconds} started")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            state.append(f"{seconds} cancelled")
            raise
        state.append(f"{seconds} done")

    with pytest.raises(KeyboardInterrupt), settled_zarr_writes():
        quick = asyncio.run_coroutine_threadsafe(write(0.05), loop)
        stuck = asyncio.run_coroutine_threadsafe(write(60), loop)
        while len(state) < 2:
            time.sleep(0.001)
        raise KeyboardInterrupt
    # Over when the exception leaves: the quick write finished, the stuck one
    # was cancelled once the time to settle had passed.
    assert sorted(state) == ["0.05 done", "0.05 started", "60 cancelled", "60 started"]
    assert quick.done() and stuck.cancelled()


# -------------------------------------------------------------- real processes


def _signal_caught(pid: int, signum: int) -> bool:
    """Whether the process has a handler for ``signum`` (Linux's /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except FileNotFoundError:
        return False
    return False


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads signal masks from /proc"
)


@pytest.fixture(scope="module")
def long_file(tmp_path_factory) -> Path:
    """An ND2 file whose export takes about a second: 2 layers, 40 frames, image."""
    rng = np.random.default_rng(7)
    n, side, r = 40, 512, 16
    disk = np.add.outer(np.arange(-r, r) ** 2, np.arange(-r, r) ** 2)
    cells = np.zeros((n, side, side), np.uint16)
    for frame in cells:
        for i, (y, x) in enumerate(rng.integers(0, side - 2 * r, (60, 2))):
            window = frame[y : y + 2 * r, x : x + 2 * r]
            window[disk < rng.integers(25, r * r)] = i + 1
    path = tmp_path_factory.mktemp("long") / "long.nd2"
    nd2gpu.write_nd2(
        path, {"cells": cells, "nuclei": cells // 2}, loops=[("T", n)], image=cells * 7
    )
    return path


class Harness:
    """tests/interrupt_harness.py, running; jobs in, results out."""

    def __init__(self, cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HARNESS)],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(HARNESS.parent)},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def run(self, job: dict, signum: int | None = None, delay: float = 0.0) -> dict:
        """Run ``job``; send ``signum`` ``delay`` seconds after its handlers are set."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        assert self.lines.get(timeout=120) == "started\n"
        while not _signal_caught(self.process.pid, signal.SIGINT):
            if not self.lines.empty():  # over before it could be seen
                break
            time.sleep(0.0005)
        if signum is not None:
            time.sleep(delay)
            self.process.send_signal(signum)
        return json.loads(self.lines.get(timeout=120))

    def close(self) -> str:
        """End the harness; what it wrote on stderr outside the jobs."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None and self.process.stderr is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self.reader.join(timeout=60)
        self.process.stdout.close()
        with self.process.stderr:
            return self.process.stderr.read()


def _sweep(harness, job, out, points, source, check_output, signals, message=True):
    """Run ``job`` once whole, then signalled at ``points`` spread over its run.

    ``out`` lies in a directory of its own: after an interrupted run it must be
    empty; after a completed one (a signal too late) hold a complete output.
    """
    directory = out.parent
    seconds = []
    for _ in range(3):  # the first runs also warm up (imports, compiled kernels)
        whole = harness.run(job)
        assert whole["status"] == 0, whole
        check_output(out)
        _empty(directory)
        seconds.append(whole["seconds"])
    source_hash = sha256(source)
    outcomes = []
    for i in range(points):
        signum = signals[i % len(signals)]
        # The run's length varies with the machine's load: the shortest so far.
        delay = min(seconds) * 1.05 * i / (points - 1)
        result = harness.run(job, signum, delay)
        assert sha256(source) == source_hash
        if result["status"] == 0:
            assert result["stderr"] == "", result
            check_output(out)
            outcomes.append("completed")
            seconds.append(result["seconds"])
        else:
            assert result["status"] == STATUS[signum], result
            assert result["stderr"] == (MESSAGES[signum] if message else ""), result
            assert result["stdout"] == ""
            assert leftovers(directory) == [], (i, result)
            outcomes.append("interrupted")
        _empty(directory)
    return outcomes


def _empty(directory: Path) -> None:
    import shutil

    for path in directory.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


@posix_only
@needs_proc
@pytest.mark.slow
def test_signals_at_many_points_of_each_export(long_file, tmp_path):
    expected = nd2_masks(long_file)
    zarr_out, tiff_out, split_out, table, written = (
        tmp_path / kind / name
        for kind, name in (
            ("zarr", "out.zarr"),
            ("tiff", "out.ome.tif"),
            ("split", "out.ome.tif"),
            ("objects", "objects.csv"),
            ("write_nd2", "written.nd2"),
        )
    )
    for path in (zarr_out, tiff_out, split_out, table, written):
        path.parent.mkdir()

    def zarr_complete(out):
        import zarr

        labels = zarr.open_group(str(out / "labels"), mode="r")
        for i, (name, masks) in enumerate(expected.items()):
            assert np.array_equal(labels[f"label_{i}_{name}/0"][:], masks)

    def tiff_complete(out):
        import tifffile

        assert np.array_equal(tifffile.imread(out), np.stack(list(expected.values())))

    def split_complete(out):
        import tifffile

        for name, masks in expected.items():
            part = out.with_name(f"out_{name}.ome.tif")
            assert np.array_equal(tifffile.imread(part), masks)

    def table_complete(out):
        assert out.read_text().startswith("layer,frame,T,label,area")

    def nd2_complete(out):
        with nd2gpu.ND2File(out) as f:
            assert f.sizes["T"] == 30

    harness = Harness(tmp_path)
    both = (signal.SIGINT, signal.SIGTERM)
    try:
        outcomes = {
            "zarr": _sweep(
                harness, {"cli": ["export", str(long_file), str(zarr_out)]},
                zarr_out, 26, long_file, zarr_complete, both,
            ),
            "tiff": _sweep(
                harness, {"cli": ["export", str(long_file), str(tiff_out)]},
                tiff_out, 4, long_file, tiff_complete, both,
            ),
            "split": _sweep(
                harness, {"cli": ["export", str(long_file), str(split_out), "--split"]},
                split_out, 4, long_file, split_complete, both,
            ),
            "objects": _sweep(
                harness, {"cli": ["objects", str(long_file), "-o", str(table)]},
                table, 4, long_file, table_complete, both,
            ),
            "write_nd2": _sweep(
                harness, {"write_nd2": [str(written), [30, 512, 512]]},
                written, 4, long_file, nd2_complete, (signal.SIGINT,), message=False,
            ),
        }  # fmt: skip
    finally:
        stray = harness.close()
    assert stray == ""  # no "Task was destroyed but it is pending!", nothing else
    # The points spread over the run: most land while it writes.
    assert outcomes["zarr"].count("interrupted") >= 20, outcomes
    for kind, seen in outcomes.items():
        assert "interrupted" in seen, (kind, seen)


def _start(argv, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _when(condition, process, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


@posix_only
@needs_proc
@pytest.mark.slow
def test_the_program_stops_cleanly(long_file, tmp_path):
    """The ``nd2gpu`` program itself, signalled while it writes and after."""
    source_hash = sha256(long_file)
    cli = [sys.executable, "-m", "nd2gpu"]
    split = [*cli, "export", str(long_file), "b.ome.tif", "--split", "--batch-frames=2"]
    make_nd2 = (
        "import numpy as np, nd2gpu; "
        "nd2gpu.write_nd2('c.nd2', {'a': np.full((30, 512, 512), 5, np.uint16)}, "
        "loops=[('T', 30)])"
    )
    done = tmp_path / "d.zarr"
    # What to run, the signal, when to send it; the status, stdout and stderr.
    runs = {
        # As soon as the store is staged: the image and the labels (about a
        # second) are still to be written, so a loaded machine's slow polling
        # cannot miss the window.
        "zarr, Ctrl-C": (
            [*cli, "export", str(long_file), "a.zarr"], signal.SIGINT,
            lambda: any(tmp_path.glob(".a.zarr.*/a.zarr")),
            130, "", MESSAGES[signal.SIGINT],
        ),
        "split tiff, SIGTERM": (
            split, signal.SIGTERM, lambda: any(tmp_path.glob(".b_*.tmp")),
            143, "", MESSAGES[signal.SIGTERM],
        ),
        "write_nd2, SIGTERM": (  # killed by SIGTERM, as Python is, once it is clean
            [sys.executable, "-c", make_nd2], signal.SIGTERM,
            lambda: any(p.stat().st_size > 2**20 for p in tmp_path.glob(".c.nd2.*")),
            -signal.SIGTERM, "", "",
        ),
        "zarr complete, Ctrl-C": (
            [*cli, "export", str(long_file), "d.zarr"], signal.SIGINT, done.exists,
            0, "wrote d.zarr: OME-Zarr (NGFF 0.5) image with labels label_0_cells, "
            "label_1_nuclei\n", "",
        ),
    }  # fmt: skip
    processes = {name: _start(run[0], tmp_path) for name, run in runs.items()}
    try:
        waiting = dict(runs)
        deadline = time.monotonic() + 180
        while waiting:  # each is signalled as soon as it is ready
            for name, (_, signum, ready, *_) in list(waiting.items()):
                if ready():
                    processes[name].send_signal(signum)
                    del waiting[name]
                else:
                    process = processes[name]
                    assert process.poll() is None, (name, process.communicate())
            assert time.monotonic() < deadline, f"never ready: {sorted(waiting)}"
            time.sleep(0.002)
        for name, (*_, status, stdout, stderr) in runs.items():
            out, err = processes[name].communicate(timeout=120)
            got = (processes[name].returncode, out, err)
            assert got == (status, stdout, stderr), name
    finally:  # a failure leaves no process running into the next test
        for process in processes.values():
            if process.poll() is None:
                process.kill()
            process.communicate()
    assert leftovers(tmp_path) == ["d.zarr"]
    assert sha256(long_file) == source_hash
