"""Every registered CUDA kernel builds for every target GPU, without a GPU.

numba-cuda compiles each kernel of ``_cuda_registry.KERNELS`` to PTX with the
real NVVM (from the ``numba-cuda[cu13]`` wheels) for compute capability 7.5 to
12.0, and ``ptxas`` (from the ``nvidia-cuda-nvcc`` wheel) assembles it for that
architecture: it must compile, not spill, leave room for two blocks per SM at the
launch's block size, and fit its shared memory (static + the launch's dynamic)
in what a block gets without opt-in. That runs in subprocesses with numba's
simulator off (this process has it on: tests/conftest.py); nothing here is
skipped without a GPU. Only the checks against a real device's attributes need
one. The builds are tools/cuda_ptx.py's (repository tooling, not in the wheel);
the tests that need the CUDA toolchain (the ``ptx`` extra) are marked ``ptx``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cuda_ptx
import pytest
from cuda_architectures import ARCHITECTURES, architecture, occupancy
from cuda_ptx import check_build, launches, parse_ptxas, run_builds
from kernel_cases import REAL_GPU

from nd2gpu.kernels._cuda_registry import KERNELS

#: tools/, for the child processes that import the build tooling.
TOOLS = str(Path(cuda_ptx.__file__).resolve().parent)

NVIDIA_PTXAS = """\
ptxas info    : 16 bytes gmem
ptxas info    : Compiling entry function '_Z6kernel' for 'sm_90'
ptxas info    : Function properties for _Z6kernel
    8 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem, 608 bytes cmem[0]
ptxas info    : Function properties for _Z6helper
    4 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Compile time = 21.0 ms
"""


def test_parse_ptxas_reads_the_entry_function_and_every_spill():
    assert parse_ptxas(NVIDIA_PTXAS) == {
        "registers": 40,
        "static_shared": 2048,
        "stack_bytes": 12,
        "spill_stores": 16,
        "spill_loads": 20,
    }
    clean = "ptxas info    : Used 38 registers, used 1 barriers\n    0 bytes stack"
    assert parse_ptxas(clean)["static_shared"] == 0
    with pytest.raises(ValueError, match="Used N registers"):
        parse_ptxas("ptxas fatal   : Unsupported .version 9.5")


@pytest.mark.parametrize(
    ("cc", "registers", "block", "shared", "blocks", "limit"),
    [
        ((9, 0), 32, 256, 0, 8, "warps"),  # 2048 threads
        ((9, 0), 64, 256, 0, 4, "registers"),  # 65536 / (64 * 256)
        ((9, 0), 255, 256, 0, 1, "registers"),  # 8192 per warp: 8 warps
        ((9, 0), 40, 256, 100_000, 2, "shared"),  # 233472 / (100000 + 1024)
        ((7, 5), 50, 256, 16384, 4, "warps"),  # 1024 threads per SM
        ((7, 5), 32, 128, 48 << 10, 1, "shared"),  # 64 KiB per SM, none reserved
        ((8, 6), 32, 64, 0, 16, "blocks"),  # 16 blocks per SM
        ((8, 6), 256, 32, 0, 0, "registers"),  # more than 255 per thread
    ],
)
def test_occupancy_as_cudas_calculator(cc, registers, block, shared, blocks, limit):
    occ = occupancy(architecture(cc), registers, block, shared)
    assert occ.blocks_per_sm == blocks
    assert occ.limited_by == limit


def fake_report(**changes) -> dict:
    report = {
        "kernel": KERNELS[0].name,
        "cc": "8.6",
        "error": None,
        "registers": 40,
        "static_shared": 0,
        "stack_bytes": 0,
        "spill_stores": 0,
        "spill_loads": 0,
        "narrowed_integers": [],
    }
    return {**report, **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"error": "NVVM: unsupported arch"}, "unsupported arch"),
        ({"spill_stores": 8}, "spills 8 bytes stores"),
        ({"registers": 160}, "blocks per SM on sm_86, need 2"),
        ({"static_shared": 64}, "static shared memory"),
        ({"narrowed_integers": ["_expand line 9: int64 stored"]}, "narrowed integer"),
        ({"narrowed_integers": None}, "not checked"),
    ],
)
def test_check_build_reports_each_problem(changes, message):
    assert check_build(fake_report()) == []
    problems = check_build(fake_report(**changes))
    assert any(message in p for p in problems), problems


def test_check_build_catches_shared_memory_past_48_kib():
    entry = KERNELS[0]
    dynamic = min(c.dynamic_shared for c in launches(entry, ARCHITECTURES[0]))
    static = 48 * 1024 - dynamic
    problems = check_build(fake_report(static_shared=static + 8))
    assert any("without opt-in" in p for p in problems), problems


# --- the real builds (simulator off, in subprocesses) ---------------------------


@pytest.fixture(scope="module")
def reports(request) -> dict[tuple[str, str], dict]:
    start = time.perf_counter()
    built = run_builds()
    seconds = time.perf_counter() - start
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(
                f"\nkernel builds: {len(built)} (kernel, architecture) pairs in "
                f"{seconds:.1f} s with {built[0]['ptxas']} (CUDA "
                f"{built[0]['ptxas_release']})"
            )
    return {(r["kernel"], r["cc"]): r for r in built}


@pytest.mark.ptx
@pytest.mark.slow
def test_every_kernel_is_built_for_every_architecture(reports):
    assert set(reports) == {(k.name, a.label) for k in KERNELS for a in ARCHITECTURES}


@pytest.mark.ptx
@pytest.mark.slow
@pytest.mark.parametrize("cc", [a.label for a in ARCHITECTURES])
@pytest.mark.parametrize("kernel", [k.name for k in KERNELS])
def test_kernel_builds_for_architecture(reports, kernel, cc):
    report = reports[(kernel, cc)]
    assert check_build(report) == [], json.dumps(report, indent=1)
    assert report["registers"] > 0


CANARIES = textwrap.dedent(
    """
    import json, subprocess, sys
    sys.path.insert(0, sys.argv[1])  # tools/
    import numpy as np
    from numba import cuda, types
    import cuda_ptx
    from cuda_architectures import architecture
    from nd2gpu.kernels._cuda_registry import KERNELS

    @cuda.jit(device=True)
    def narrowing_helper(a):
        return np.int32(a)

    def narrowing(out, big):
        small = np.int32(big)
        window = cuda.local.array(2, types.int32)
        window[0] = big
        out[cuda.threadIdx.x] = small + window[0] + narrowing_helper(big)
        out[0] = cuda.syncthreads_count(big)

    found = cuda_ptx.narrowed_integers(narrowing, (types.int64[::1], types.int64))
    clean = cuda_ptx.narrowed_integers(
        KERNELS[0].python_function(), KERNELS[0].argument_types()
    )
    arch = architecture((9, 0))
    ptx = cuda_ptx.compile_ptx(KERNELS[0], arch.cc)
    ptxas = cuda_ptx.find_ptxas(cuda_ptx.tool_release(ptx))
    starved = cuda_ptx.assemble(ptxas, ptx, arch, "-maxrregcount=16")
    print(json.dumps({"found": found, "clean": clean, "starved": starved}))
    """
)


@pytest.mark.ptx
@pytest.mark.slow
def test_the_checks_catch_narrowing_and_spills():
    """The typed-IR and ptxas checks find what they look for: a kernel that
    narrows int64s, and the expansion kernel squeezed into too few registers."""
    done = subprocess.run(
        [sys.executable, "-c", CANARIES, TOOLS],
        env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    found = "\n".join(result["found"])
    assert "small = call" in found and "is int32" in found  # np.int32(big)
    assert "int64 stored into array(int32" in found  # window[0] = big
    assert "narrowing_helper" in found  # inside the device function
    assert "syncthreads_count" not in found  # a hardware count, not narrowing
    assert len(result["found"]) == 3, found
    assert result["clean"] == []
    starved = result["starved"]
    assert starved["registers"] <= 24 and starved["spill_stores"] > 0
    usage = {k: starved[k] for k in fake_report() if k in starved}
    report = fake_report(cc="9.0", **usage)
    assert any("spills" in p for p in check_build(report))


@pytest.mark.ptx
def test_ptxas_is_found():
    assert os.access(cuda_ptx.find_ptxas(), os.X_OK)


def test_a_ptxas_older_than_nvvm_is_not_used(monkeypatch):
    monkeypatch.setattr(cuda_ptx, "ptxas_candidates", lambda: ["/a/ptxas", "/b/ptxas"])
    releases = {"/a/ptxas": "13.0", "/b/ptxas": "13.5"}
    monkeypatch.setattr(cuda_ptx, "ptxas_release", releases.get)
    assert cuda_ptx.find_ptxas("12.8") == "/a/ptxas"
    assert cuda_ptx.find_ptxas("13.2") == "/b/ptxas"
    with pytest.raises(FileNotFoundError, match=r"no ptxas of CUDA 13\.9 or later"):
        cuda_ptx.find_ptxas("13.9")
    monkeypatch.setattr(cuda_ptx, "ptxas_candidates", lambda: [])
    with pytest.raises(FileNotFoundError, match="ptxas not found"):
        cuda_ptx.find_ptxas()


def test_ptx_headers_are_read():
    header = "// Cuda compilation tools, release 13.5, V13.5.37\n.version 9.5\n"
    assert cuda_ptx.tool_release(header) == "13.5"
    assert cuda_ptx.ptx_target(header + ".target sm_120\n") == "sm_120"
    assert cuda_ptx.ptx_target(header) is None


@pytest.mark.ptx
@pytest.mark.slow
def test_a_build_for_another_architecture_fails_loudly():
    """numba-cuda quietly compiles for the closest architecture its CUDA knows
    (here forced with NUMBA_FORCE_CUDA_CC): that must fail the build, not pass
    as a build for the one asked for."""
    done = subprocess.run(
        [
            *(sys.executable, cuda_ptx.__file__),
            *("--json", "--cc", "9.0", "--no-ir-check"),
        ],
        env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0", "NUMBA_FORCE_CUDA_CC": "8.0"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    reports = json.loads(done.stdout)
    assert len(reports) == len(KERNELS)
    for report in reports:
        assert "wrote PTX for sm_80, not sm_90" in report["error"]
        assert check_build(report) == [report["error"]]


# --- a real GPU: the tables above against the device ----------------------------


@pytest.mark.skipif(not REAL_GPU, reason="needs a GPU")
def test_architecture_table_matches_this_gpu():
    from numba import cuda

    device = cuda.get_current_device()
    arch = architecture(device.compute_capability)
    expected = {
        "MAX_THREADS_PER_MULTIPROCESSOR": arch.max_threads_per_sm,
        "MAX_BLOCKS_PER_MULTIPROCESSOR": arch.max_blocks_per_sm,
        "MAX_SHARED_MEMORY_PER_MULTIPROCESSOR": arch.max_shared_per_sm,
        "MAX_SHARED_MEMORY_PER_BLOCK_OPTIN": arch.max_shared_per_block_optin,
        "RESERVED_SHARED_MEMORY_PER_BLOCK": arch.reserved_shared_per_block,
        "MAX_SHARED_MEMORY_PER_BLOCK": arch.shared_per_block,
        "MAX_REGISTERS_PER_MULTIPROCESSOR": arch.regs_per_sm,
        "MAX_THREADS_PER_BLOCK": arch.max_threads_per_block,
        "MAX_GRID_DIM_X": arch.max_grid_x,
    }
    assert {name: getattr(device, name) for name in expected} == expected
    assert arch.sm_count >= device.MULTIPROCESSOR_COUNT


@pytest.mark.skipif(not REAL_GPU, reason="needs a GPU")
def test_the_loaded_expansion_kernel_fits_two_blocks_per_sm():
    """What the driver loaded (built by nvJitLink, not by the ptxas run above)
    also spills nothing and leaves room for two blocks per SM."""
    from numba import cuda

    from nd2gpu.kernels import _expand_cuda

    kernel = _expand_cuda.expand_kernel()
    registers = kernel.get_regs_per_thread()
    static = kernel.get_shared_mem_per_block()
    assert kernel.get_local_mem_per_thread() == 0
    device = cuda.get_current_device()
    arch = architecture(device.compute_capability)
    for config in launches(KERNELS[0], arch):
        occ = occupancy(arch, registers, config.block, static + config.dynamic_shared)
        assert occ.blocks_per_sm >= 2, (registers, config, occ)
