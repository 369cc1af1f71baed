"""Launches fit every target GPU, for tiny and huge inputs, without a GPU.

The host code computes each launch with a pure function (``expand_launch`` for
the expansion kernel); here every registered kernel's problems, from one tile to
2**40, are launched on paper on every architecture and checked against its
limits (threads per block, grid size, shared memory without opt-in), and the
values past 2**31 are followed from the staged batch to the kernel's arguments
to check that nothing on the way is 32-bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from cuda_architectures import ARCHITECTURES, architecture, launch_problems
from kernel_cases import SIMULATOR, SMALL_LAUNCH, needs_cuda
from numba import cuda
from numba.core import types

from nd2gpu._backends.cuda import arrays
from nd2gpu._backends.cuda import expander as expander_module
from nd2gpu._backends.cuda.batches import StagedBatch
from nd2gpu.kernels import _expand_cuda
from nd2gpu.kernels._batch_layout import (
    ENTRY_FIELDS,
    F_BASE,
    F_PIXELS,
    F_RUNS,
    FRAME_FIELDS,
)
from nd2gpu.kernels._cuda_registry import (
    INT32_MAX,
    KERNELS,
    MAX_GRID_X,
    SHARED_PER_BLOCK,
    DeviceShape,
    check_arguments,
    resident_blocks,
)
from nd2gpu.kernels._expand_cuda import (
    DEFAULT_BLOCK,
    DEFAULT_ITEMS,
    EXPAND_SIGNATURE,
    MAX_WINDOW,
    expand_launch,
    expand_runs,
)

CASES = [
    (entry, problem, arch)
    for entry in KERNELS
    for problem in entry.problems
    for arch in ARCHITECTURES
]


def case_id(case) -> str:
    entry, problem, arch = case
    sizes = ",".join(f"{k}={v}" for k, v in problem.items())
    return f"{entry.name}-{sizes}-{arch.sm}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_launch_fits_the_architecture(case):
    entry, problem, arch = case
    config = entry.launch_function()(arch, **problem)
    assert config is not None
    assert launch_problems(entry, config, arch, entry.declared_static_shared()) == []


@pytest.mark.parametrize("entry", KERNELS, ids=[k.name for k in KERNELS])
def test_problems_reach_past_32_bits_and_arrive_as_int64(entry):
    """Each kernel is checked with sizes past 2**31, and the parameters that
    receive them are 64-bit in the signature the launch code compiles with."""
    names = entry.parameter_names()
    argtypes = dict(zip(names, entry.argument_types(), strict=True))
    big = [(k, v) for p in entry.problems for k, v in p.items() if v > INT32_MAX]
    assert big, "no problem past 2**31"
    assert any(v >= 2**40 for _, v in big), "no problem of 2**40"
    for name, value in big:
        if name in argtypes:
            assert argtypes[name] == types.int64, (name, value, argtypes[name])


def test_the_registry_names_what_the_modules_define():
    for entry in KERNELS:
        module = entry.load()
        assert callable(getattr(module, entry.function))
        assert len(entry.argument_types()) == len(entry.parameter_names())
        assert callable(entry.launch_function())
        assert entry.problems


# --- the expansion kernel's launch -------------------------------------------


def test_default_launch_per_architecture():
    for arch in ARCHITECTURES:
        config = expand_launch(arch, 10**6)
        per_sm = min(arch.max_blocks_per_sm, arch.max_threads_per_sm // DEFAULT_BLOCK)
        assert config.grid == arch.sm_count * per_sm  # fills the device once
        assert config.block == DEFAULT_BLOCK and config.items == DEFAULT_ITEMS
        assert config.window == DEFAULT_BLOCK * DEFAULT_ITEMS
        assert config.dynamic_shared == 8 * config.window <= SHARED_PER_BLOCK


def test_small_inputs_get_one_block_per_tile():
    arch = architecture((9, 0))
    assert expand_launch(arch, 1).grid == 1
    assert expand_launch(arch, 5).grid == 5
    assert expand_launch(arch, 0) is None


@pytest.mark.parametrize("n_tiles", [2**20, 2**31 - 1, 2**31 + 7, 2**40])
def test_huge_inputs_loop_over_tiles_in_a_bounded_grid(n_tiles):
    for arch in ARCHITECTURES:
        config = expand_launch(arch, n_tiles)
        assert 1 <= config.grid == resident_blocks(arch, DEFAULT_BLOCK) <= MAX_GRID_X
        assert n_tiles > config.grid  # the kernel strides over the tiles (int64)
    tiny_tiles = expand_launch(architecture((8, 0)), 2**39, block=2, items=1)
    assert tiny_tiles.grid <= MAX_GRID_X and tiny_tiles.window == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"block": 1025}, "block must be in"),
        ({"block": 1}, "block must be in"),
        ({"items": 0}, "items must be"),
        ({"items": 2**31}, "items must be"),
        ({"window": MAX_WINDOW + 1}, "window must be in"),
        ({"window": 0}, "window must be in"),
        ({"grid": 0}, "grid must be in"),
        ({"grid": MAX_GRID_X + 1}, "grid must be in"),
    ],
)
def test_launches_outside_the_limits_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        expand_launch(architecture((9, 0)), 10, **override)


def test_the_largest_window_fits_without_opt_in():
    config = expand_launch(architecture((7, 5)), 10, window=MAX_WINDOW)
    assert config.dynamic_shared == SHARED_PER_BLOCK
    for arch in ARCHITECTURES:
        assert launch_problems(KERNELS[0], config, arch, 0) == []


def test_sizes_past_int64_are_refused():
    with pytest.raises(ValueError, match="int64"):
        expand_launch(architecture((9, 0)), 2**63)


def test_resident_blocks_follow_the_device():
    assert resident_blocks(DeviceShape(132, 2048, 32), 256) == 132 * 8
    assert resident_blocks(DeviceShape(84, 1536, 16), 256) == 84 * 6
    assert resident_blocks(DeviceShape(84, 1536, 16), 64) == 84 * 16  # block cap
    assert resident_blocks(DeviceShape(1, 2048, 2), 32) == 2  # the simulator's


# --- from the staged batch to the kernel's arguments, past 2**31 ---------------


class CapturedLaunch:
    """Stands in for the compiled kernel: records the launch, runs nothing."""

    def __init__(self) -> None:
        self.config: tuple = ()
        self.args: tuple = ()

    def __getitem__(self, config):
        self.config = config
        return self

    def __call__(self, *args):
        self.args = args


@pytest.fixture
def captured(monkeypatch) -> CapturedLaunch:
    launch = CapturedLaunch()
    monkeypatch.setattr(_expand_cuda, "expand_kernel", lambda: launch)
    return launch


def batch_arrays(n_frames: int = 2, n_runs: int = 3):
    frames = np.zeros((n_frames, FRAME_FIELDS), np.int64)
    entries = np.zeros((n_runs, ENTRY_FIELDS), np.uint32)
    return frames, entries


def test_expand_runs_passes_64_bit_sizes(captured):
    frames, entries = batch_arrays()
    out = np.zeros(4, np.uint16)
    expand_runs(out, frames, entries, 2, 2**33 + 9)
    grid, block, stream, shared = captured.config
    config = expand_launch(_expand_cuda.current_device_shape(), 2**33 + 9)
    assert (grid, block, stream, shared) == (
        config.grid,
        config.block,
        0,
        config.dynamic_shared,
    )
    args = captured.args
    assert args[3:] == (2, 2**33 + 9, config.items, config.window)
    assert all(type(a) is int for a in args[3:])
    check_arguments(EXPAND_SIGNATURE.args, args)


@needs_cuda
def test_the_pipeline_carries_offsets_past_32_bits_to_the_kernel(captured):
    """Frames whose slots start past 2**31 and 2**40 reach the kernel exactly:
    the frame table is int64 from the decode threads to the device (nothing
    is written: the kernel is a stand-in)."""
    device = expander_module.CudaDevice(**SMALL_LAUNCH)
    device.out = arrays.zeros((8,)).host if SIMULATOR else arrays.zeros((8,))
    batch = StagedBatch(device.pinned(StagedBatch.nbytes(4, 8)), 4, 8)
    batch.reset(3)
    bases = np.array([2**31 + 3, 2**40 - 10, 5], np.int64)
    batch.frames[:3, F_BASE] = bases
    batch.frames[:3, F_RUNS] = 1
    batch.frames[:3, F_PIXELS] = [2**31 - 1, 5, 1]
    batch.n_runs = 3
    device.submit(0, batch, 2**20 + 2)
    device.finish()
    args = captured.args
    table = args[1].copy_to_host()
    np.testing.assert_array_equal(table[:3, F_BASE], bases)
    np.testing.assert_array_equal(table[:3, F_PIXELS], [2**31 - 1, 5, 1])
    assert args[3:5] == (3, 2**20 + 2)
    check_arguments(EXPAND_SIGNATURE.args, args)


# --- a launch with other argument types fails (simulator or GPU) ----------------


def device(array: np.ndarray):
    return cuda.to_device(array)


def good_arrays() -> dict[str, np.ndarray]:
    frames = np.array([[0, 2, 2, 0, 0], [2, 1, 2, 6, 1]], np.int64)
    entries = np.array([[0, 0, 1], [4, 1, 2], [0, 0, 3]], np.uint32)
    return {"out": np.zeros(8, np.uint16), "frames": frames, "entries": entries}


@needs_cuda
@pytest.mark.parametrize(
    "bad",
    [
        {"frames": np.zeros((2, FRAME_FIELDS), np.int32)},  # 32-bit frame table
        {"entries": np.zeros((3, ENTRY_FIELDS), np.int64)},
        {"entries": np.zeros(9, np.uint32)},  # not 2-d
        {"out": np.zeros(8, np.int32)},
        {"out": np.zeros((2, 4), np.uint16)},  # not flat
    ],
    ids=["int32-frames", "int64-entries", "1d-entries", "int32-out", "2d-out"],
)
def test_a_launch_with_other_types_fails(bad):
    given = good_arrays()
    given.update(bad)
    d = {k: device(v) for k, v in given.items()}
    with pytest.raises(TypeError):
        expand_runs(d["out"], d["frames"], d["entries"], 2, 3, **SMALL_LAUNCH)


@needs_cuda
def test_a_launch_with_the_signatures_types_runs():
    given = good_arrays()
    d = {k: device(v) for k, v in given.items()}
    launch = dict(SMALL_LAUNCH or {"block": 16, "items": 2})
    expand_runs(d["out"], d["frames"], d["entries"], 2, 2, **launch)
    np.testing.assert_array_equal(d["out"].copy_to_host(), [1, 0, 0, 0, 2, 0, 3, 3])


def test_check_arguments_mirrors_the_dispatcher():
    sig = EXPAND_SIGNATURE.args
    given = good_arrays()
    good = [given["out"], given["frames"], given["entries"], 2, 4, np.int64(8), 16]
    check_arguments(sig, good)
    for i, bad in [
        (0, np.zeros(4, np.uint16)[::2]),  # not contiguous
        (1, np.zeros((2, FRAME_FIELDS), np.uint64)),
        (3, 2**63),  # does not fit int64
        (4, 4.0),  # a float
        (5, "8"),
    ]:
        args = list(good)
        args[i] = bad
        with pytest.raises(TypeError, match=f"argument {i}"):
            check_arguments(sig, args)
    with pytest.raises(TypeError, match="6 arguments"):
        check_arguments(sig, good[:6])
