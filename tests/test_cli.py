"""The ``nd2gpu`` command: info, export (OME-Zarr, OME-TIFF), bench and errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import zarr
from nd2_surgery import rewrite

import nd2gpu
from nd2gpu.cli import main, sample_path


def host_layers(path):
    """``{name: asarray()}`` of the layers that have a mask."""
    with nd2gpu.ND2File(path, device="cpu") as f:
        return {
            layer.name: layer.asarray()
            for layer in f.binary_data
            if layer.frame_shape != (0, 0)
        }


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_without_file_describes_the_sample(capsys):
    code, out, err = run(capsys, "info")
    assert code == 0, err
    assert "sample.nd2" in out
    assert "T=3, Z=2" in out and "(3, 2) = 6 frames" in out
    assert "[0] cells" in out and "[1] nuclei" in out
    assert "64 x 64" in out and "6 of 6" in out
    assert "objects per frame: min 9, median 9, max 10" in out
    assert "#ff0000" in out  # the cells layer's colour


def test_sample_matches_make_sample(tmp_path):
    """The shipped sample is what make_sample.py writes, byte for byte."""
    import importlib.util

    with sample_path() as sample:
        script = sample.with_name("make_sample.py")
        spec = importlib.util.spec_from_file_location("make_sample", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.main([str(tmp_path / "again.nd2")])
        assert (tmp_path / "again.nd2").read_bytes() == sample.read_bytes()
        assert sample.stat().st_size < 200_000


def test_info_json_counts_frames_and_objects(make_nd2, tmp_path, capsys):
    path, labels = make_nd2(loops=(("T", 2), ("Z", 3)), layers=("a", "b"))
    edited = rewrite(
        path,
        tmp_path / "edited.nd2",
        lambda n, d: None if n == b"CustomDataSeq|RleZipBinarySequence_1_v1|4!" else d,
    )
    code, out, err = run(capsys, "info", edited, "--json", "--device", "cpu")
    assert code == 0, err
    info = json.loads(out)
    assert info["coordinate_shape"] == [2, 3] and info["frames"] == 6
    assert [lp["letter"] for lp in info["loops"]] == ["T", "Z"]
    assert info["device"] == "cpu"
    assert [lay["name"] for lay in info["layers"]] == ["a", "b"]
    for lay, (name, lab) in zip(info["layers"], labels.items(), strict=True):
        frames = lab.reshape(-1, 13, 17)
        present = [0, 1, 2, 3, 5] if name == "a" else range(6)
        counts = [len(np.unique(frames[i][frames[i] > 0])) for i in present]
        assert lay["frames_present"] == len(present)
        assert lay["frame_shape"] == [13, 17]
        assert lay["objects_per_frame"] == {
            "min": min(counts),
            "median": float(np.median(counts)),
            "max": max(counts),
        }


@pytest.mark.parametrize("batch", [1, 4, 100])
def test_export_zarr_round_trip(make_nd2, tmp_path, capsys, batch):
    path, _ = make_nd2(loops=(("T", 3), ("Z", 2)), layers=("cells", "nu clei"))
    out = tmp_path / "out.zarr"
    code, _, err = run(capsys, "export", path, out, "--batch-frames", batch, "-q")
    assert code == 0, err
    assert err == ""
    root = zarr.open_group(str(out), mode="r")
    assert root["labels"].attrs["labels"] == ["cells", "nu_clei"]
    for (name, ref), group_name in zip(
        host_layers(path).items(), ["cells", "nu_clei"], strict=True
    ):
        group = root["labels"][group_name]
        (multiscale,) = group.attrs["multiscales"]
        assert multiscale["version"] == "0.4" and multiscale["name"] == name
        assert [a["name"] for a in multiscale["axes"]] == ["t", "z", "y", "x"]
        assert group.attrs["image-label"]["version"] == "0.4"
        array = group["0"]
        assert array.dtype == np.uint16 and array.chunks == (1, 1, 13, 17)
        np.testing.assert_array_equal(array[...], ref)


def test_export_zarr_orders_axes_for_ngff(make_nd2, tmp_path, capsys):
    path, _ = make_nd2(loops=(("P", 2), ("T", 3), ("Z", 2)), layers=("a",))
    out = tmp_path / "out.zarr"
    code, _, err = run(capsys, "export", path, out, "--quiet", "--batch-frames", 5)
    assert code == 0, err
    group = zarr.open_group(str(out), mode="r")["labels/a"]
    axes = group.attrs["multiscales"][0]["axes"]
    assert [a["name"] for a in axes] == ["t", "p", "z", "y", "x"]
    assert "type" not in axes[1]  # positions: a custom axis
    np.testing.assert_array_equal(
        group["0"][...], np.moveaxis(host_layers(path)["a"], 0, 1)
    )


def test_export_tiff_round_trip(make_nd2, tmp_path, capsys):
    path, _ = make_nd2(loops=(("T", 2), ("Z", 3)), layers=("a", "b", "c"))
    out = tmp_path / "out.ome.tif"
    code, _, err = run(capsys, "export", path, out, "--batch-frames", 4, "-q")
    assert code == 0, err
    refs = host_layers(path)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome
        assert [s.name for s in tif.series] == list(refs)
        for series, ref in zip(tif.series, refs.values(), strict=True):
            assert series.axes == "TZYX"
            np.testing.assert_array_equal(series.asarray(), ref)
    for i, ref in enumerate(refs.values()):
        np.testing.assert_array_equal(tifffile.imread(out, series=i), ref)


def test_export_tiff_one_series_per_position(make_nd2, tmp_path, capsys):
    path, _ = make_nd2(loops=(("T", 2), ("P", 2), ("Z", 2)), layers=("a", "b"))
    out = tmp_path / "out.tiff"
    code, _, err = run(capsys, "export", path, out, "-q", "--batch-frames", 3)
    assert code == 0, err
    refs = host_layers(path)
    with tifffile.TiffFile(out) as tif:
        assert [s.name for s in tif.series] == ["a P0", "a P1", "b P0", "b P1"]
        for i, ref in enumerate(refs.values()):
            for p in range(2):
                series = tif.series[2 * i + p]
                assert series.axes == "TZYX"
                np.testing.assert_array_equal(series.asarray(), ref[:, p])


@pytest.mark.parametrize("name", ["sample.zarr", "sample.ome.tiff"])
def test_export_sample_with_only_out(tmp_path, capsys, name):
    out = tmp_path / name
    code, stdout, err = run(capsys, "export", out)
    assert code == 0, err
    assert f"wrote {out}" in stdout
    assert "12/12" in err  # progress, on stderr
    with sample_path() as sample:
        refs = host_layers(sample)
    if name.endswith(".zarr"):
        root = zarr.open_group(str(out), mode="r")
        got = [root["labels"][n]["0"][...] for n in ("cells", "nuclei")]
    else:
        got = [tifffile.imread(out, series=i) for i in range(2)]
    for array, ref in zip(got, refs.values(), strict=True):
        np.testing.assert_array_equal(array, ref)


def test_export_leaves_out_layers_without_masks(make_nd2, tmp_path, capsys):
    path, _ = make_nd2(loops=(("T", 2),), layers=("a", "b"))
    edited = rewrite(
        path,
        tmp_path / "edited.nd2",
        lambda n, d: (
            None if n.startswith(b"CustomDataSeq|RleZipBinarySequence_1_v1|") else d
        ),
    )
    out = tmp_path / "out.zarr"
    code, _, err = run(capsys, "export", edited, out)
    assert code == 0, err
    assert "layer 'a' has no mask in any frame" in err
    root = zarr.open_group(str(out), mode="r")
    assert root["labels"].attrs["labels"] == ["b"]
    np.testing.assert_array_equal(root["labels/b/0"][...], host_layers(edited)["b"])


def test_export_replaces_only_with_overwrite(tmp_path, capsys):
    out = tmp_path / "x.ome.tif"
    out.write_text("keep me")
    code, _, err = run(capsys, "export", out, "-q")
    assert code == 1 and "already exists" in err and err.count("\n") == 1
    assert out.read_text() == "keep me"
    code, _, err = run(capsys, "export", out, "-q", "--overwrite")
    assert code == 0, err
    assert tifffile.imread(out, series=1).shape == (3, 2, 64, 64)
    assert [p.name for p in tmp_path.iterdir()] == ["x.ome.tif"]  # no leftovers


def test_bench_runs(capsys):
    code, out, err = run(capsys, "bench", "--repeats", 1)
    assert code == 0, err
    assert "12 frames per run" in out
    rows = {tuple(line.split()[:2]) for line in out.splitlines()}
    assert any(row[0] == "nd2" for row in rows)
    assert ("nd2gpu", "cpu") in rows
    assert ("nd2gpu", "cuda") in rows  # timed, or why it was skipped


def test_bench_cpu_only_without_nd2(make_nd2, capsys):
    path, _ = make_nd2(loops=(("T", 2),))
    code, out, err = run(
        capsys, "bench", path, "--repeats", 2, "--device", "cpu", "--no-nd2"
    )
    assert code == 0, err
    assert "nd2gpu cpu" in out and "nd2 " not in out and "cuda" not in out


def _no_layers(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 2),))
    return rewrite(
        path,
        tmp_path / "plain.nd2",
        lambda name, data: None if name.startswith(b"CustomData") else data,
    )


def _text(make_nd2, tmp_path):
    path = tmp_path / "notes.nd2"
    path.write_text("not an ND2 file\n")
    return path


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda m, t: t / "missing.nd2", "No such file or directory"),
        (_text, "not recognized as ND2"),
        (lambda m, t: t, "is a directory"),
        (_no_layers, "has no binary layers"),
    ],
    ids=["missing", "text", "directory", "no-layers"],
)
@pytest.mark.parametrize(
    "command",
    [["info"], ["export", "{out}"], ["bench", "--repeats", "1"]],
    ids=["info", "export", "bench"],
)
def test_errors_are_one_line(make_nd2, tmp_path, capsys, make_input, message, command):
    path = make_input(make_nd2, tmp_path)
    argv = [command[0], str(path)] + [
        a.format(out=tmp_path / "out.zarr") for a in command[1:]
    ]
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert err.startswith("nd2gpu: error: ") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "out.zarr").exists()


def test_usage_errors(tmp_path, capsys):
    code, _, err = run(capsys, "export", tmp_path / "out.png")
    assert code == 1 and "cannot tell the format" in err
    assert run(capsys, "export", "a.nd2", "b.nd2", "c.zarr")[0] == 1
    assert run(capsys, "export")[0] == 2
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys, "--help")[0] == 0
    code, _, err = run(capsys, "info", "--batch-frames", "0")
    assert code == 2 and "--batch-frames" in err
    assert run(capsys, "bench", "--repeats", "-1")[0] == 2


@pytest.mark.slow
def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "nd2gpu", "info"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "[0] cells" in result.stdout and "[1] nuclei" in result.stdout


@pytest.mark.slow
def test_closed_pipe_ends_quietly(tmp_path):
    """``nd2gpu info | head -1``: no error line when the reader goes away."""
    import subprocess
    import sys

    proc = subprocess.run(
        f"{sys.executable} -m nd2gpu info | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.stdout.startswith("file:")
    assert "error" not in proc.stderr, proc.stderr
