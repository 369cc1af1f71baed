"""Run-table kernels: overlap removal (CPU) and CUDA expansion, device selection.

The CUDA tests run under numba's CUDA simulator, which numba picks when it is
first imported with NUMBA_ENABLE_CUDASIM=1. Run this file in its own process:

    NUMBA_ENABLE_CUDASIM=1 pytest tests/test_cuda_sim.py

If numba was imported without the simulator earlier in the same process, the
CUDA tests are skipped (the CPU tests still run), unless a real GPU is present:
then they run on it (``NUMBA_ENABLE_CUDASIM=0 pytest tests/test_cuda_sim.py``).
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import itertools
import subprocess
import sys
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nd2gpu.kernels._expand_cuda import expand_runs
from nd2gpu.kernels._overlap_kernels import (
    frame_has_overlap,
    make_non_overlapping,
    resolve_later_wins,
)
from nd2gpu.kernels._run_table import RunTable, as_frame_bounds
from numba import cuda

from nd2gpu import DeviceUnavailableError, _cuda_backend, _device

SIMULATOR = _device._is_simulator(cuda)
REAL_GPU = not SIMULATOR and cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not (SIMULATOR or REAL_GPU),
    reason="numba.cuda was imported without the simulator and there is no GPU: "
    "NUMBA_ENABLE_CUDASIM=1 must be set before numba is first imported; run "
    "`NUMBA_ENABLE_CUDASIM=1 pytest tests/test_cuda_sim.py` in its own process",
)
# The simulator runs every CUDA thread as a Python thread: keep launches small.
SMALL_LAUNCH = {"block": 16, "items": 2} if SIMULATOR else {}
FEW = settings(
    max_examples=25 if SIMULATOR else 100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
MANY = settings(max_examples=100, deadline=None)


@pytest.fixture(autouse=True, scope="module")
def _fast_thread_switching():
    # Simulated threads meet at barriers; a shorter GIL switch interval makes
    # those meetings several times faster.
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-3)
    yield
    sys.setswitchinterval(old)


# --- reference and generators ------------------------------------------------


def paint(starts, lengths, values, size: int) -> np.ndarray:
    """Sequential painting in table order: the definition of the result."""
    out = np.zeros(size, np.uint16)
    for s, n, v in zip(starts.tolist(), lengths.tolist(), values.tolist(), strict=True):
        out[s : s + n] = v
    return out


def coverage(table: RunTable, size: int) -> np.ndarray:
    cov = np.zeros(size, np.int64)
    for s, n in zip(table.starts.tolist(), table.lengths.tolist(), strict=True):
        cov[s : s + n] += 1
    return cov


@st.composite
def batches(
    draw, *, overlap: bool, max_frames: int = 4, max_pixels: int = 90, max_cols=30
):
    """A run table for a few frames, its frame bounds and frame pixel count.

    Runs lie inside one row (as the parser clips them). Without ``overlap``
    they are the maximal runs of a random label image, in a random order.
    """
    ncols = draw(st.integers(1, max_cols))
    nrows = draw(st.integers(1, max(1, max_pixels // ncols)))
    n_frames = draw(st.integers(1, max_frames))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    fp = nrows * ncols
    starts, lengths, bounds = [], [], []
    for f in range(n_frames):
        lo = len(starts)
        if overlap:
            for _ in range(int(rng.integers(0, 12))):
                row, col = int(rng.integers(nrows)), int(rng.integers(ncols))
                starts.append(f * fp + row * ncols + col)
                lengths.append(int(rng.integers(1, ncols - col + 1)))
        else:
            image = rng.integers(0, 4, (nrows, ncols)) * (rng.random() < 0.9)
            image = np.repeat(image, 1 + rng.integers(0, 6, ncols), axis=1)[:, :ncols]
            frame_runs = []
            for row in range(nrows):
                edges = np.flatnonzero(np.diff(image[row], prepend=-1, append=-1))
                for a, b in itertools.pairwise(edges):
                    if image[row, a]:
                        frame_runs.append((f * fp + row * ncols + a, b - a))
            if rng.random() < 0.5:
                rng.shuffle(frame_runs)
            starts += [s for s, _ in frame_runs]
            lengths += [n for _, n in frame_runs]
        bounds.append((lo, len(starts), f * fp))
    values = rng.choice(np.array([1, 2, 255, 256, 65534, 65535]), len(starts))
    table = RunTable.from_runs(
        np.array(starts, np.int64), np.array(lengths, np.int64), values
    )
    return table, np.array(bounds, np.int64).reshape(-1, 3), fp


def brute_force_overlap(table: RunTable, lo: int, hi: int, base: int, fp: int):
    cov = np.zeros(fp, np.int64)
    for i in range(lo, hi):
        a = int(table.starts[i]) - base
        cov[a : a + int(table.lengths[i])] += 1
    return bool(cov.max(initial=0) > 1)


# --- RunTable ------------------------------------------------------------------


def test_run_table_converts_and_checks():
    t = RunTable.from_runs([3, 0], [2, 1], [7, 65535])
    assert (t.starts.dtype, t.lengths.dtype, t.values.dtype, t.prefix.dtype) == (
        np.int64,
        np.int32,
        np.uint16,
        np.int64,
    )
    assert t.n_runs == 2 and t.n_pixels == 3
    assert t.prefix.tolist() == [0, 2, 3]
    t.check(5)
    with pytest.raises(ValueError, match="outside"):
        t.check(4)
    with pytest.raises(ValueError, match="fit"):
        RunTable.from_runs([0], [1], [65536])
    with pytest.raises(ValueError, match="prefix"):
        RunTable([0], [1], [1], [0])
    with pytest.raises(ValueError, match="prefix sum"):
        RunTable([0], [2], [1], [0, 1]).check(10)
    with pytest.raises(ValueError, match="positive"):
        RunTable([0], [0], [1], [0, 0]).check(10)
    assert RunTable.from_runs([], [], []).n_pixels == 0


def test_frame_bounds_are_validated():
    assert as_frame_bounds([(0, 2, 0), (2, 3, 10)], 3).dtype == np.int64
    for bad in ([(0, 4, 0)], [(1, 0, 0)], [(0, 2, 0), (1, 3, 5)], [(0, 1)]):
        with pytest.raises(ValueError):
            as_frame_bounds(bad, 3)


# --- overlap detection and removal (CPU) ---------------------------------------


@MANY
@given(batches(overlap=True, max_pixels=600, max_cols=200))
def test_frame_has_overlap_is_exact(batch):
    table, bounds, fp = batch
    bits = np.full(fp // 64 + 1, np.uint64(0xFFFF_FFFF_FFFF_FFFF))  # stale scratch
    for lo, hi, base in bounds.tolist():
        got = frame_has_overlap(table.starts, table.lengths, lo, hi, base, fp, bits)
        assert got == brute_force_overlap(table, lo, hi, base, fp)


@MANY
@given(batches(overlap=False))
def test_frame_has_overlap_false_for_disjoint_runs(batch):
    table, bounds, fp = batch
    bits = np.zeros(fp // 64 + 1, np.uint64)
    for lo, hi, base in bounds.tolist():
        assert not frame_has_overlap(
            table.starts, table.lengths, lo, hi, base, fp, bits
        )


EDGE_RUNS = [
    (a, n)
    for a in (0, 1, 63, 64, 65, 127, 128)
    for n in (1, 2, 63, 64, 65, 129, 200)
    if a + n <= 330
]


def test_run_pairs_at_word_edges():
    """Every pair of runs starting and ending near 64-pixel word boundaries."""
    fp, base = 330, 1000
    bits = np.zeros(6, np.uint64)
    out = np.empty(3, np.int64), np.empty(3, np.int32), np.empty(3, np.uint16)
    for (a1, n1), (a2, n2) in itertools.product(EDGE_RUNS, repeat=2):
        table = RunTable.from_runs([base + a1, base + a2], [n1, n2], [1, 2])
        expected = a1 < a2 + n2 and a2 < a1 + n1
        assert (
            frame_has_overlap(table.starts, table.lengths, 0, 2, base, fp, bits)
            == expected
        ), (a1, n1, a2, n2)
        k = resolve_later_wins(
            table.starts, table.lengths, table.values, 0, 2, base, fp, bits, *out
        )
        got = paint(out[0][:k] - base, out[1][:k], out[2][:k], fp)
        want = paint(table.starts - base, table.lengths, table.values, fp)
        assert np.array_equal(got, want), (a1, n1, a2, n2)


def test_frame_has_overlap_word_edges():
    bits = np.zeros(4, np.uint64)
    starts = np.array([64, 0, 127], np.int64)
    lengths = np.array([64, 64, 1], np.int32)
    assert not frame_has_overlap(starts, lengths, 0, 2, 0, 200, bits)
    assert frame_has_overlap(starts, lengths, 0, 3, 0, 200, bits)
    with pytest.raises(ValueError, match="outside"):
        frame_has_overlap(starts, lengths, 0, 2, 0, 100, bits)


@MANY
@given(batches(overlap=True, max_frames=1, max_pixels=600, max_cols=200))
def test_resolve_later_wins_paints_the_same(batch):
    table, bounds, fp = batch
    lo, hi, base = bounds[0].tolist()
    cap = max(1, 2 * (hi - lo))
    out = np.empty(cap, np.int64), np.empty(cap, np.int32), np.empty(cap, np.uint16)
    bits = np.zeros(fp // 64 + 1, np.uint64)
    k = resolve_later_wins(
        table.starts, table.lengths, table.values, lo, hi, base, fp, bits, *out
    )
    assert k <= max(0, 2 * (hi - lo) - 1)
    resolved = RunTable.from_runs(out[0][:k], out[1][:k], out[2][:k])
    assert coverage(resolved, fp).max(initial=0) <= 1
    np.testing.assert_array_equal(
        paint(resolved.starts, resolved.lengths, resolved.values, fp),
        paint(table.starts, table.lengths, table.values, fp),
    )


def test_resolve_later_wins_splits_and_checks_capacity():
    # A long run cut in three by later runs: 2 * 3 - 1 = 5 pieces.
    starts = np.array([0, 10, 30], np.int64)
    lengths = np.array([100, 5, 64], np.int32)
    values = np.array([1, 2, 3], np.uint16)
    bits = np.zeros(2, np.uint64)
    out = np.empty(5, np.int64), np.empty(5, np.int32), np.empty(5, np.uint16)
    k = resolve_later_wins(starts, lengths, values, 0, 3, 0, 100, bits, *out)
    pieces = sorted(zip(*(a[:k].tolist() for a in out), strict=True))
    assert pieces == [(0, 10, 1), (10, 5, 2), (15, 15, 1), (30, 64, 3), (94, 6, 1)]
    short = np.empty(4, np.int64), np.empty(4, np.int32), np.empty(4, np.uint16)
    with pytest.raises(ValueError, match="too short"):
        resolve_later_wins(starts, lengths, values, 0, 3, 0, 100, bits, *short)


@MANY
@given(batches(overlap=False))
def test_make_non_overlapping_keeps_clean_tables(batch):
    table, bounds, fp = batch
    assert make_non_overlapping(table, bounds, fp) is table


@MANY
@given(batches(overlap=True, max_pixels=400, max_cols=150))
def test_make_non_overlapping_rewrites_only_overlapping_frames(batch):
    table, bounds, fp = batch
    size = fp * len(bounds)
    new = make_non_overlapping(table, bounds, fp)
    assert coverage(new, size).max(initial=0) <= 1
    np.testing.assert_array_equal(
        paint(new.starts, new.lengths, new.values, size),
        paint(table.starts, table.lengths, table.values, size),
    )
    np.testing.assert_array_equal(new.prefix[1:], np.cumsum(new.lengths))
    # Frames without overlaps keep their runs, in order.
    clean = [
        table.starts[lo:hi].tolist()
        for lo, hi, base in bounds.tolist()
        if not brute_force_overlap(table, lo, hi, base, fp)
    ]
    kept = new.starts.tolist()
    for runs in clean:
        if runs:
            i = kept.index(runs[0])
            assert kept[i : i + len(runs)] == runs


def test_make_non_overlapping_keeps_runs_outside_frames():
    table = RunTable.from_runs([0, 2, 3, 5], [3, 2, 1, 1], [1, 2, 3, 4])
    new = make_non_overlapping(table, [(1, 3, 0)], 6)  # runs 1 and 2 overlap
    assert new is not table
    assert new.starts[0] == 0 and new.starts[-1] == 5
    np.testing.assert_array_equal(
        paint(new.starts, new.lengths, new.values, 6),
        paint(table.starts, table.lengths, table.values, 6),
    )


# --- CUDA expansion (simulator or GPU) -----------------------------------------


def expand_on_device(table: RunTable, size: int, **launch) -> np.ndarray:
    d_out = cuda.to_device(np.zeros(size, np.uint16))
    if table.n_runs:
        expand_runs(
            d_out,
            cuda.to_device(table.starts),
            cuda.to_device(table.values),
            cuda.to_device(table.prefix),
            table.n_runs,
            table.n_pixels,
            **launch,
        )
    return d_out.copy_to_host()


@needs_cuda
def test_expand_single_run():
    table = RunTable.from_runs([5], [37], [65535])
    expected = paint(table.starts, table.lengths, table.values, 50)
    np.testing.assert_array_equal(expand_on_device(table, 50, **SMALL_LAUNCH), expected)


@needs_cuda
@pytest.mark.parametrize(
    ("lengths", "launch"),
    [
        ([1] * 40, {"block": 8, "items": 2, "grid": 2}),  # tiles of 1-px runs
        ([1, 70, 1, 1, 33, 2], {"block": 8, "items": 3, "grid": 1}),  # long runs
        ([3] * 20, {"block": 4, "items": 2, "window": 2}),  # window overflows
        ([1] * 9 + [25], {"block": 4, "items": 4, "window": 1}),  # global search
    ],
)
def test_expand_tile_edges(lengths, launch):
    gaps = np.arange(len(lengths)) % 3
    starts = np.cumsum(np.array(lengths) + gaps) - lengths
    table = RunTable.from_runs(starts[::-1], lengths[::-1], np.arange(len(lengths)) + 1)
    size = int(starts[-1] + lengths[-1] + 4)
    expected = paint(table.starts, table.lengths, table.values, size)
    np.testing.assert_array_equal(expand_on_device(table, size, **launch), expected)


@needs_cuda
@FEW
@given(
    batches(overlap=False),
    st.sampled_from([(4, 1), (8, 3), (16, 2)]),
    st.sampled_from([None, 1, 5]),
    st.integers(1, 3),
)
def test_expand_matches_sequential_painting(batch, shape, window, grid):
    table, bounds, fp = batch
    block, items = shape
    launch = {"block": block, "items": items, "window": window, "grid": grid}
    size = fp * len(bounds)
    expected = paint(table.starts, table.lengths, table.values, size)
    np.testing.assert_array_equal(expand_on_device(table, size, **launch), expected)


@needs_cuda
@FEW
@given(batches(overlap=True))
def test_expand_overlaps_later_run_wins(batch):
    table, bounds, fp = batch
    size = fp * len(bounds)
    clean = make_non_overlapping(table, bounds, fp)
    expected = paint(table.starts, table.lengths, table.values, size)
    np.testing.assert_array_equal(
        expand_on_device(clean, size, **SMALL_LAUNCH), expected
    )


# --- backend: allocation and the batch expander ------------------------------

needs_backend = pytest.mark.skipif(
    not _device.cuda_status()[0], reason=f"CUDA unusable: {_device.cuda_status()[1]}"
)


@needs_backend
def test_allocate_output_is_zeroed():
    out = _cuda_backend.allocate_output((2, 3, 5))
    host = _cuda_backend.to_host(out)
    assert host.shape == (2, 3, 5) and host.dtype == np.uint16 and not host.any()


def test_allocate_output_reports_missing_memory(monkeypatch):
    fake = types.SimpleNamespace(
        cuda=types.SimpleNamespace(
            runtime=types.SimpleNamespace(memGetInfo=lambda: (1000, 8000))
        ),
        get_default_memory_pool=lambda: types.SimpleNamespace(free_bytes=lambda: 24),
    )
    monkeypatch.setattr(_cuda_backend, "_cupy", lambda: fake)
    with pytest.raises(MemoryError, match=r"needs 2000 bytes.*only 1024 bytes"):
        _cuda_backend.allocate_output((10, 100))


@needs_backend
@given(batches(overlap=True, max_frames=6), st.integers(1, 3), st.booleans())
@FEW
def test_expander_fills_one_output_from_several_batches(batch, n_batches, grow):
    table, bounds, fp = batch
    with pytest.MonkeyPatch.context() as mp:
        if grow:  # start tiny so later batches reallocate both buffer sets
            mp.setattr(_cuda_backend, "_MIN_CAPACITY", 1)
        out = expand_in_batches(table, bounds, fp, n_batches)
    expected = paint(table.starts, table.lengths, table.values, fp * len(bounds))
    np.testing.assert_array_equal(
        _cuda_backend.to_host(out), expected.reshape(len(bounds), fp)
    )


def expand_in_batches(table, bounds, fp, n_batches):
    """Expand the frames in ``n_batches`` tables into one (n_frames, fp) output."""
    expander = _cuda_backend.CudaExpander(**SMALL_LAUNCH)
    out = _cuda_backend.allocate_output((len(bounds), fp))
    for part in np.array_split(np.arange(len(bounds)), n_batches):
        if not len(part):
            continue
        lo, hi = bounds[part[0], 0], bounds[part[-1], 1]
        sub = RunTable.from_runs(
            table.starts[lo:hi], table.lengths[lo:hi], table.values[lo:hi]
        )
        sub_bounds = bounds[part] - np.array([lo, lo, 0])
        expander.expand(out, make_non_overlapping(sub, sub_bounds, fp))
    expander.synchronize()
    return out


@needs_backend
def test_expander_rejects_bad_outputs_and_tables():
    expander = _cuda_backend.CudaExpander(**SMALL_LAUNCH)
    table = RunTable.from_runs([0, 4], [2, 2], [1, 2])
    with pytest.raises(ValueError, match="uint16"):
        expander.expand(cuda.to_device(np.zeros(8, np.int32)), table)
    with pytest.raises(TypeError, match="device array"):
        expander.expand(np.zeros(8, np.uint16), table)
    with pytest.raises(ValueError, match="outside"):
        expander.expand(_cuda_backend.allocate_output(5), table)


@pytest.mark.skipif(not REAL_GPU, reason="needs a GPU and CuPy")
def test_expander_takes_cupy_arrays():
    cupy = pytest.importorskip("cupy")
    table = RunTable.from_runs([1, 7, 20], [5, 9, 1], [3, 65535, 9])
    out = _cuda_backend.allocate_output((3, 10))
    assert isinstance(out, cupy.ndarray)
    expander = _cuda_backend.CudaExpander()
    expander.expand(out, table)
    expander.synchronize()
    expected = paint(table.starts, table.lengths, table.values, 30).reshape(3, 10)
    np.testing.assert_array_equal(cupy.asnumpy(out), expected)


# --- device selection ----------------------------------------------------------


@pytest.fixture
def fresh_probe():
    _device._probe.cache_clear()
    yield
    _device._probe.cache_clear()


def _fake_cuda(available: bool) -> types.SimpleNamespace:
    def to_device(arr):  # a non-simulator API function
        return arr

    return types.SimpleNamespace(
        to_device=to_device,
        is_available=lambda: available,
        cuda_error=lambda: "CUDA driver library cannot be found",
    )


def _fake_cupy() -> types.SimpleNamespace:
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1, getDeviceProperties=lambda i: {"name": b"FakeGPU"}
    )
    device = types.SimpleNamespace(id=0)
    return types.SimpleNamespace(
        __version__="13.6.0",
        cuda=types.SimpleNamespace(runtime=runtime, Device=lambda: device),
    )


def _fail(exc: Exception):
    def raise_it():
        raise exc

    return raise_it


def test_resolve_device_names():
    assert _device.resolve_device("cpu") == "cpu"
    assert _device.resolve_device(None, default="cpu") == "cpu"
    with pytest.raises(ValueError, match="device"):
        _device.resolve_device("gpu")


@pytest.mark.skipif(not SIMULATOR, reason="needs the CUDA simulator")
def test_simulator_is_cuda_but_never_auto():
    assert _device.simulator_active()
    assert _device.resolve_device("cuda") == "cuda"
    assert _device.resolve_device(None) == "cpu"
    assert _device.cuda_status()[0]


def test_missing_numba_cuda_is_named(monkeypatch, fresh_probe):
    monkeypatch.setattr(_device, "_simulator_possible", lambda: True)
    monkeypatch.setattr(
        _device, "_import_numba_cuda", _fail(ImportError("no numba.cuda"))
    )
    with pytest.raises(DeviceUnavailableError, match="numba-cuda") as info:
        _device.resolve_device("cuda")
    assert 'nd2gpu[cuda12]"' in str(info.value)
    assert _device.resolve_device("auto") == "cpu"


def test_missing_cupy_is_named(monkeypatch, fresh_probe):
    monkeypatch.setattr(_device, "_simulator_possible", lambda: True)
    monkeypatch.setattr(_device, "_import_numba_cuda", lambda: _fake_cuda(True))
    monkeypatch.setattr(_device, "_import_cupy", _fail(ImportError("no cupy")))
    with pytest.raises(DeviceUnavailableError, match="CuPy is not installed") as info:
        _device.resolve_device("cuda")
    assert 'nd2gpu[cuda12]"' in str(info.value)
    assert 'nd2gpu[cuda13]"' in str(info.value)
    assert isinstance(info.value, RuntimeError)


def test_cpu_only_machine_answers_without_numba_cuda(monkeypatch, fresh_probe):
    monkeypatch.setattr(_device, "_simulator_possible", lambda: False)
    monkeypatch.setattr(_device, "_cupy_installed", lambda: False)
    monkeypatch.setattr(_device, "_import_numba_cuda", _fail(AssertionError))
    assert _device.resolve_device("auto") == "cpu"
    assert "CuPy is not installed" in _device.cuda_status()[1]


def test_missing_driver_is_named(monkeypatch, fresh_probe):
    monkeypatch.setattr(_device, "_simulator_possible", lambda: True)
    monkeypatch.setattr(_device, "_import_numba_cuda", lambda: _fake_cuda(False))
    monkeypatch.setattr(_device, "_import_cupy", _fake_cupy)
    with pytest.raises(DeviceUnavailableError, match="no usable CUDA driver or GPU"):
        _device.resolve_device("cuda")
    assert _device.resolve_device("auto") == "cpu"


def test_usable_gpu_is_picked_by_auto(monkeypatch, fresh_probe):
    monkeypatch.setattr(_device, "_simulator_possible", lambda: True)
    monkeypatch.setattr(_device, "_import_numba_cuda", lambda: _fake_cuda(True))
    monkeypatch.setattr(_device, "_import_cupy", _fake_cupy)
    assert _device.resolve_device("auto") == "cuda"
    assert _device.resolve_device("cuda") == "cuda"
    assert "FakeGPU" in _device.cuda_status()[1]


def test_auto_without_simulator_in_fresh_process():
    code = (
        "import sys, nd2gpu\n"
        "lazy = 'cupy' not in sys.modules and 'numba.cuda' not in sys.modules\n"
        "from nd2gpu._device import cuda_status, resolve_device\n"
        "print(lazy, resolve_device('auto'), cuda_status()[0])\n"
    )
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    lazy, auto, usable = res.stdout.split()
    assert lazy == "True"
    assert auto == ("cuda" if usable == "True" else "cpu")
    if not REAL_GPU:
        assert auto == "cpu"
