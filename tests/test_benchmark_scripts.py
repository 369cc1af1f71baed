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
from pathlib import Path

import pytest
from cuda_architectures import ARCHITECTURES

from nd2gpu.kernels._cuda_registry import KERNELS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


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
    files, the checks against nd2, the pipeline's run table, the kernel and copy
    loops between events, the report."""
    done = run_script(
        "gpu_bench.py",
        *("--dry-run", "--frames", "1", "--launches", "1", "--out", str(tmp_path)),
        simulator="1",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["dry_run"] is True
    assert report["frame_shape"] == [32, 32]
    assert set(report["workloads"]) == {"cells", "tiny", "dense"}
    for row in report["workloads"].values():
        assert row["runs"] > 0 and row["covered_pixels"] >= row["runs"]
        assert (
            row["kernel_bytes_moved"]
            == 2 * row["covered_pixels"] + 18 * row["runs"] + 8
        )
        assert row["copy_bytes"] == 2 * report["frames_per_workload"] * 32 * 32
    table = (tmp_path / "gpu.md").read_text()
    assert "numba CUDA simulator (dry run)" in table
    assert table.count("| tiny |") == 2


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
