"""``nd2gpu bench``: fresh opens for every run, values checked, JSON."""

from __future__ import annotations

import json
import statistics
import time

import nd2
import numpy as np
import pytest
from cli_support import run

import nd2gpu

#: The CLI's nd2 time and a fresh-open measurement taken beside it may differ by
#: this factor (a noisy 2-core machine); timing a cached ``binary_data`` reads
#: thousands of times lower on the file below.
TOLERANCE = 3.0


def test_json_on_the_sample(capsys):
    code, out, err = run(capsys, "bench", "--repeats", 1, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["frames"] == 12 and result["frame_shape"] == [64, 64]
    assert result["layers"] == 2 and result["values_agree"] is True
    ms = result["ms_per_frame"]
    assert set(ms) == {"nd2", "cpu", "cuda"}
    assert ms["nd2"] > 0 and ms["cpu"] > 0
    assert result["speedup_vs_nd2"]["cpu"] == pytest.approx(ms["nd2"] / ms["cpu"])
    if ms["cuda"] is None:  # no GPU here: said why, never the simulator timed
        assert result["speedup_vs_nd2"]["cuda"] is None
        assert (
            "CUDA" in result["skipped"]["cuda"]
            or "simulator" in (result["skipped"]["cuda"])
        )
    assert "cores" in result["machine"]
    # 64x64 frames: the note of the text output comes with the numbers.
    assert "frames this small" in result["note"]


def test_text_cpu_only_without_nd2(make_nd2, capsys):
    path, _ = make_nd2(loops=(("T", 2),))
    code, out, err = run(
        capsys, "bench", path, "--repeats", 2, "--device", "cpu", "--no-nd2"
    )
    assert code == 0, err
    assert "nd2gpu cpu" in out and "\nnd2 " not in out and "cuda" not in out
    assert "each opening the file afresh" in out


def test_wrong_values_are_an_error(make_nd2, capsys, monkeypatch):
    path, _ = make_nd2(loops=(("T", 2),), layers=("a",))
    real = nd2gpu.BinaryLayers.asarray
    monkeypatch.setattr(
        nd2gpu.BinaryLayers, "asarray", lambda self, *a, **k: real(self, *a, **k) + 1
    )
    code, out, err = run(capsys, "bench", path, "--repeats", 1, "--device", "cpu")
    assert code == 1 and "does not give nd2's values" in err and out == ""


def test_cuda_asked_for_where_not_usable(capsys):
    from nd2gpu._device import cuda_status, simulator_active

    ok, _ = cuda_status()
    if ok and not simulator_active():
        pytest.skip("a GPU is usable here")
    code, _, err = run(capsys, "bench", "--repeats", 1, "--device", "cuda")
    assert code == 1 and err.startswith("nd2gpu: error: ")


def _busy_file(path):
    """Frames of many short runs: nd2 spends milliseconds decoding each."""
    rng = np.random.default_rng(0)
    n, side = 8, 256
    ids = rng.integers(1, 5000, size=(n, side, side // 4)).astype(np.uint16)
    labels = np.repeat(ids, 4, axis=2)
    labels[rng.random(labels.shape) < 0.3] = 0
    return nd2gpu.write_nd2(path, {"a": labels}, loops=[("T", n)]), n


def _median_ms(run_once, repeats):
    run_once()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


@pytest.mark.slow
def test_nd2_time_is_a_fresh_open(tmp_path, capsys):
    path, n = _busy_file(tmp_path / "busy.nd2")

    def fresh():
        with nd2.ND2File(path) as f:
            np.asarray(f.binary_data)

    f = nd2.ND2File(path)
    try:
        f.binary_data  # noqa: B018 - nd2 decodes and keeps the layers here
        cached = _median_ms(lambda: np.asarray(f.binary_data), 3) / n
    finally:
        f.close()
    measured = _median_ms(fresh, 3) / n
    assert cached * 10 * TOLERANCE < measured  # the file tells the two apart
    code, out, err = run(
        capsys, "bench", path, "--json", "--repeats", 3, "--device", "cpu"
    )
    assert code == 0, err
    reported = json.loads(out)["ms_per_frame"]["nd2"]
    assert measured / TOLERANCE < reported < measured * TOLERANCE
