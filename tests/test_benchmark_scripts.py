"""The benchmark scripts still run (tiny sizes, the CPU, numba's simulator), so
that they do not rot between the runs that measure with them.

Each runs as a subprocess with this process's environment (PYTHONPATH included:
the GPU machine installs dependencies there).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from cuda_architectures import ARCHITECTURES

from nd2gpu.kernels._cuda_registry import KERNELS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))


def run_script(
    name: str, *args: str, simulator: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if simulator is not None:
        env["NUMBA_ENABLE_CUDASIM"] = simulator
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_cpu_benchmark_runs(tmp_path):
    done = run_script(
        "bench.py",
        *("--frames", "2", "--repeats", "1", "--shape", "32x32"),
        *("--workloads", "cells,dense", "--out", str(tmp_path)),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "cpu.json").read_text())
    assert set(report["workloads"]) == {"cells", "dense"}
    assert report["frame_shape"] == [32, 32]
    for row in report["workloads"].values():
        assert row["nd2_ms"] > 0 and row["cpu_ms"] > 0 and row["floor_ms"] > 0
    table = (tmp_path / "cpu.md").read_text()
    assert "| cells |" in table and "| dense |" in table


@pytest.mark.slow
def test_front_benchmark_runs(tmp_path):
    done = run_script(
        "bench_front.py",
        *("--size", "64", "--frames", "4", "--repeats", "1", "--no-gil"),
        *("--out", str(tmp_path), "--tag", "smoke"),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert set(report["cases"]) == {"asarray", "loader", "objects", "gpu-host"}
    for row in report["cases"].values():
        assert row["ms_per_frame"] > 0 and row["floor_ms_per_frame"] > 0
        assert row["python_calls_per_frame"] > 0
        assert row["gil_us_per_frame"] is None  # --no-gil
    assert "| objects |" in (tmp_path / "smoke.md").read_text()


@pytest.mark.slow
def test_gpu_host_benchmark_runs(tmp_path):
    done = run_script(
        "bench_gpu_host.py",
        *("--size", "64", "--frames", "8", "--repeats", "1", "--no-gil", "--json"),
        *("--workloads", "cells,dense", "--out", str(tmp_path), "--tag", "smoke"),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == json.loads((tmp_path / "smoke.json").read_text())
    assert set(report["workloads"]) == {"cells", "dense"}
    for row in report["workloads"].values():
        assert row["exact"] is True
        assert row["host_ms_per_frame"] > 0 and row["inflate_ms_per_frame"] > 0
        assert row["h2d_bytes_per_frame"] > 0 and row["python_calls_per_frame"] > 0
        assert set(row["per_batch"]) >= {"copies", "launches", "events", "syncs"}


@pytest.mark.slow
def test_objects_benchmark_runs(tmp_path):
    done = run_script(
        "bench_objects.py",
        *("--size", "64", "--frames", "2", "--repeats", "1", "--warmup", "1"),
        *("--dense-repeats", "1", "--workloads", "cells", "--out", str(tmp_path)),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "objects-cpu.json").read_text())
    assert report["frame_shape"] == [64, 64]
    assert set(report["workloads"]) == {"cells"}


@pytest.mark.slow
def test_dataset_benchmark_quick(tmp_path):
    done = run_script("bench_dataset.py", "--quick", "--json", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == json.loads((tmp_path / "dataset-cpu.json").read_text())
    assert report["quick"] is True and report["frame_shape"] == [64, 64]
    assert set(report["forms"]) == {"uncompressed", "lossless"}
    for row in report["forms"].values():
        for key in ("first_nd2_ms", "first_nd2gpu_ms", "steady_floor_ms_per_frame"):
            assert row[key] > 0
        assert row["nd2gpu_first_peak_bytes"] > 0 and row["batch_bytes"] > 0
    assert "| lossless |" in (tmp_path / "dataset-cpu.md").read_text()


@pytest.mark.slow
def test_gpu_benchmark_dry_run(tmp_path):
    """Every step of the GPU benchmark, under numba's simulator: the workload
    files, the first call in fresh processes, file -> device at every size with
    the calling thread's time split, nd2, the loader, the kernel's batches
    replayed between events, the objects, the spin kernel built for the GPU, and
    the report (one workload: no step depends on which)."""
    done = run_script(
        "gpu_bench.py",
        *("--dry-run", "--workloads", "cells", "--out", str(tmp_path)),
        simulator="1",
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["dry_run"] is True and report["frame_shape"] == [32, 32]
    assert report["sizes"] == [2, 8] and report["skipped"] == []
    assert "errors" not in report and "errors" not in report["launch"]
    assert report["generate"] == {"cells": 2}
    # Built (the ptx extra's toolchain) or not, but never rejected.
    assert set(report["spin-build"]) & {"spill_stores", "skipped"}
    assert report["launch"]["empty-kernel"]["launches"] == 2
    first = report["first-call"]
    assert first["workload"] == "cells" and first["frames"] == 2
    assert first["second_process"]["import_s"] > 0

    assert set(report["workloads"]) == {"cells"}
    row = report["workloads"]["cells"]
    assert "errors" not in row, row.get("errors")
    assert set(row["files"]) == {"2", "8"}
    sizes = row["file-to-cupy"]["sizes"]
    assert set(sizes) == {"2", "8"} and row["file-to-cupy"]["fit"] is not None
    # 8 frames: a first batch of 4, then the other 4.
    split = sizes["8"]["split"]
    assert split["batches"] == 2 and split["run_ms"] >= split["waiting_ms"] >= 0
    assert split["call_ms"] >= split["run_ms"]
    assert set(row["nd2"]["sizes"]) == {"2", "8"}
    assert set(row["speedups"]) == {"2", "8"}
    assert not any(s["extrapolated"] for s in row["speedups"].values())
    assert row["loader"]["calls"] == 2 and row["loader"]["split"]["batches"] == 1

    kernel = row["kernel"]
    assert kernel["frames"] == 8 and kernel["batches"] == kernel["launches"] == 2
    # The staged runs and pixels are the frames' (2 distinct ones, tiled).
    assert kernel["runs"] == 8 * row["runs_per_frame"]
    assert kernel["painted_pixels"] == 8 * row["painted_pixels_per_frame"]
    assert kernel["bytes_moved"] == (
        12 * kernel["runs"] + 40 * 8 + 2 * kernel["painted_pixels"]
    )
    assert kernel["kernel_us_per_launch"] is None  # the simulator has no timings
    assert row["objects"]["frames"] == 2 and row["objects"]["objects"] > 0
    assert row["objects"]["cucim"].startswith("not importable")

    table = (tmp_path / "gpu.md").read_text()
    assert "**Dry run**" in table and "numba CUDA simulator" in table
    assert "| cells | 8 |" in table and "Failed" not in table


@pytest.mark.ptx
def test_gpu_benchmark_spin_kernel_builds_for_the_gpu():
    """The spin kernel is CUDA C that only CuPy compiles, on the GPU: NVRTC and
    ptxas build it here for the GPU runs' architecture (9.0)."""
    import gpu_timing

    report = gpu_timing.check_spin_source()
    assert report["spill_stores"] == 0 and report["registers"] > 0


def test_gpu_benchmark_branches_only_a_gpu_runs():
    """The lines of gpu_timing.Gpu that only run with CuPy, NumPy standing in
    for it: the device's description, the tiled-frames check, and a spin kernel
    that does not build (recorded, not raised: the timings go on without it)."""
    import gpu_timing

    props = {
        "name": b"Fake GPU",
        "major": 9,
        "minor": 0,
        "multiProcessorCount": 132,
        "totalGlobalMem": 141 * 2**30,
    }
    device = types.SimpleNamespace(id=0, synchronize=lambda: None)
    runtime = types.SimpleNamespace(
        getDeviceProperties=lambda i: props,
        runtimeGetVersion=lambda: 13000,
        driverGetVersion=lambda: 13000,
    )
    fake_cupy = types.SimpleNamespace(
        __version__="14",
        asarray=np.asarray,
        cuda=types.SimpleNamespace(Device=lambda: device, runtime=runtime),
    )
    gpu = gpu_timing.Gpu.__new__(gpu_timing.Gpu)
    gpu.cupy, gpu._spin, gpu.spin_error = fake_cupy, None, ""
    described = gpu.describe()
    assert described["device"] == "Fake GPU" and described["sm_count"] == 132
    assert described["compute_capability"] == "9.0" and described["cupy"] == "14"

    distinct = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    block = np.broadcast_to(distinct, (3, 2, 3, 4)).reshape(1, 6, 3, 4).copy()
    assert gpu.tiles_equal(block, distinct)
    block[0, 5, 2, 3] += 1
    assert not gpu.tiles_equal(block, distinct)
    gpu.synchronize()
    gpu.spin(1.0)
    assert gpu.spin_error.startswith("AttributeError")


def test_gpu_report_renders_a_run_killed_half_way():
    """gpu.md is written after every section, from whatever the report holds."""
    from gpu_report import markdown

    report = {
        "machine": "m",
        "nd2_version": "0.12.0",
        "inflater": "isal",
        "gpu": {"device": "d", "numba_cuda": "0"},
        "dry_run": False,
        "threads": 16,
        "batch_frames": [4, 32],
        "ring": 3,
        "frame_shape": [2048, 2048],
        "passes": 20,
        "launch": {},
        "skipped": ["tiny: loader (past --budget-s)"],
        "workloads": {
            "cells": {
                "file-to-cupy": {
                    "sizes": {
                        "16": {
                            "ms": 8.0,
                            "ms_per_frame": 0.5,
                            "split": {"error": "0 pipeline runs for 3 calls"},
                        }
                    },
                    "fit": None,
                },
                "errors": {"nd2": "Traceback ..."},
            },
            "tiny": {},
        },
    }
    table = markdown(report)
    assert "| cells | 16 | 8.00 | 0.500 |  |  |" in table
    assert "**Failed** (tracebacks in the JSON): cells: nd2." in table
    assert "Skipped: tiny: loader (past --budget-s)." in table


def test_gpu_benchmark_refuses_the_simulator_without_dry_run(tmp_path):
    done = run_script("gpu_bench.py", "--out", str(tmp_path), simulator="1")
    assert done.returncode != 0
    assert "needs a GPU" in done.stderr
    assert not (tmp_path / "gpu.json").exists()


@pytest.mark.slow
@pytest.mark.ptx
def test_kernel_table_runs(tmp_path):
    done = run_script("kernel_table.py", "--cc", "8.6", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads((tmp_path / "kernels.json").read_text())["rows"]
    assert {r["kernel"] for r in rows} == {k.name for k in KERNELS}
    assert all(r["sm"] == "sm_86" and r["problems"] == [] for r in rows)
    assert "| expand | sm_86" in (tmp_path / "kernels.md").read_text()


def test_committed_kernel_table_covers_every_kernel_and_architecture():
    table = (BENCHMARKS / "results" / "kernels.md").read_text()
    for kernel in KERNELS:
        for arch in ARCHITECTURES:
            assert f"| {kernel.name} | {arch.sm} (" in table, (kernel.name, arch.sm)


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_cpu_and_gpu_benchmarks_do_not_import_each_other():
    assert "gpu_bench" not in imports(BENCHMARKS / "bench.py")
    assert "bench" not in imports(BENCHMARKS / "gpu_bench.py")


def test_shell_scripts_parse():
    for script in ("gpu_run.sh", "fetch_gpu_wheels.sh"):
        done = subprocess.run(
            ["bash", "-n", str(BENCHMARKS / script)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_run.sh"), "--no-such-option"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "usage:" in done.stderr
