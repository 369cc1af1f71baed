"""The loader benchmark runs (tiny sizes: a smoke test, no timing asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_bench_loader_smoke(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_loader

    argv = ["--size", "64", "--frames", "4", "--batch", "3", "--batches", "2"]
    argv += ["--repeats", "1", "--out", str(tmp_path), "--tag", "smoke"]
    assert bench_loader.main(argv) == 0
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["batch"] == 3 and report["frame_shape"] == [64, 64]
    assert report["loader_ms_per_frame"] > 0 and report["floor_ms_per_frame"] > 0
    assert "loader / floor" in (tmp_path / "smoke.md").read_text()
    sys.modules.pop("bench_loader", None)
