"""``nd2gpu objects``: CSV on stdout, CSV or Parquet files, refusals, progress."""

from __future__ import annotations

import importlib.util
import io

import numpy as np
import pandas
from test_objects import ALL, reference_table

import nd2gpu
from nd2gpu.cli import main, sample_path
from nd2gpu.cli import objects as objects_cli


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def expected_table(path, layers=(0, 1), properties=None, intensity=False):
    props = properties or ("label", "area", "bbox", "centroid")
    images = None
    if intensity:
        import nd2

        with nd2.ND2File(path) as f:
            data = f.asarray()
        images = data.reshape(-1, *data.shape[-2:])
    parts = [
        pandas.DataFrame(reference_table(path, i, props, images, layer_column=i))
        for i in layers
    ]
    return pandas.concat(parts, ignore_index=True)


def assert_frame_equal(got: pandas.DataFrame, expected: pandas.DataFrame) -> None:
    assert list(got.columns) == list(expected.columns)
    assert len(got) == len(expected)
    for name in expected.columns:
        if expected[name].dtype.kind == "f":
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, atol=0)
        else:
            np.testing.assert_array_equal(got[name], expected[name])


def test_csv_on_stdout_is_the_table(capsys):
    code, out, err = run(capsys, "objects", "--device", "cpu")
    assert code == 0, err
    assert err == ""  # no progress bar when stderr is not a terminal
    with sample_path() as sample:
        expected = expected_table(sample)
    got = pandas.read_csv(io.StringIO(out))
    assert_frame_equal(got, expected)
    assert out.splitlines()[0] == ",".join(expected.columns)


def test_csv_and_parquet_files(make_nd2, tmp_path, capsys):
    path, _ = make_nd2()
    code, out, err = run(capsys, "objects", path, "-o", tmp_path / "t.csv")
    assert (code, out, err) == (0, "", "")
    expected = expected_table(path)
    assert_frame_equal(pandas.read_csv(tmp_path / "t.csv"), expected)
    if importlib.util.find_spec("pyarrow") is not None:
        code, _, err = run(capsys, "objects", path, "-o", tmp_path / "t.parquet")
        assert code == 0, err
        got = pandas.read_parquet(tmp_path / "t.parquet")
        assert_frame_equal(got, expected)
        assert got["label"].dtype == np.int64 and got["area"].dtype == np.float64


def test_layer_and_intensity(make_nd2, tmp_path, capsys):
    path, _ = make_nd2(layers=("cells", "nuclei"))
    for which in ("nuclei", "1", "-1"):
        code, out, err = run(capsys, "objects", path, "--layer", which)
        assert code == 0, err
        assert_frame_equal(
            pandas.read_csv(io.StringIO(out)), expected_table(path, (1,))
        )
    code, out, err = run(capsys, "objects", path, "--intensity", "Mono")
    assert code == 0, err
    expected = expected_table(path, properties=ALL, intensity=True)
    assert_frame_equal(pandas.read_csv(io.StringIO(out)), expected)
    code, _, err = run(capsys, "objects", path, "--layer", "golgi")
    assert code == 1 and "no binary layer 'golgi'" in err and "'nuclei'" in err
    code, _, err = run(capsys, "objects", path, "--intensity", "GFP")
    assert code == 1 and "no channel 'GFP'" in err


def test_refuses_to_write_over_nd2_files(make_nd2, tmp_path, capsys):
    path, _ = make_nd2()
    before = path.read_bytes()
    for target in (path, tmp_path / "new.ND2", tmp_path / "." / path.name):
        for overwrite in ((), ("--overwrite",)):
            code, out, err = run(capsys, "objects", path, "-o", target, *overwrite)
            assert code == 2 and out == ""
            assert "refusing" in err
    link = tmp_path / "link.csv"
    link.symlink_to(path)
    code, _, err = run(capsys, "objects", path, "-o", link, "--overwrite")
    assert code == 2 and "over the input file" in err
    assert path.read_bytes() == before
    code, _, err = run(capsys, "objects", path, "-o", tmp_path / "t.xlsx")
    assert code == 2 and "use .csv or .parquet" in err


def test_existing_table_needs_overwrite(make_nd2, tmp_path, capsys):
    path, _ = make_nd2()
    target = tmp_path / "t.csv"
    target.write_text("old")
    code, _, err = run(capsys, "objects", path, "-o", target)
    assert code == 2 and "--overwrite" in err and target.read_text() == "old"
    code, _, _ = run(capsys, "objects", path, "-o", target, "--overwrite")
    assert code == 0 and target.read_text().startswith("layer,frame,T,Z,label")


def test_parquet_without_pyarrow(make_nd2, tmp_path, capsys, monkeypatch):
    path, _ = make_nd2()
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pyarrow" else real(name, *a),
    )
    code, _, err = run(capsys, "objects", path, "-o", tmp_path / "t.parquet")
    assert code == 1 and "pip install pyarrow" in err
    assert not (tmp_path / "t.parquet").exists()


def test_failed_write_leaves_nothing(make_nd2, tmp_path, capsys, monkeypatch):
    path, _ = make_nd2()
    target = tmp_path / "t.csv"
    target.write_text("old")

    def broken(*args, **kwargs):
        raise nd2gpu.DecodeError("corrupt, for the test", frame=3)

    monkeypatch.setattr(nd2gpu.BinaryLayer, "regionprops_table", broken)
    code, _, err = run(capsys, "objects", path, "-o", target, "--overwrite")
    assert code == 1 and "corrupt, for the test" in err
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, "t.csv"])


def test_progress_only_on_a_terminal(make_nd2, capsys, monkeypatch):
    import tqdm

    from nd2gpu.cli import common

    path, _ = make_nd2(loops=(("T", 40), ("Z", 2)))
    updates = []

    class Recorder:
        def __init__(self, total, **kwargs):
            updates.append(("start", total))

        def update(self, n):
            updates.append(("update", n))

        def close(self):
            updates.append(("close",))

    monkeypatch.setattr(tqdm, "tqdm", Recorder)
    monkeypatch.setattr(objects_cli, "BATCH_FRAMES", 32)
    code, _, _ = run(capsys, "objects", path)
    assert code == 0 and updates == []  # stderr is no terminal here
    monkeypatch.setattr(common, "stderr_is_terminal", lambda: True)
    code, _, _ = run(capsys, "objects", path)
    assert code == 0
    assert updates[0] == ("start", 160) and updates[-1] == ("close",)
    assert sum(u[1] for u in updates if u[0] == "update") == 160
    updates.clear()
    code, _, _ = run(capsys, "objects", path, "-q")
    assert code == 0 and updates == []


def test_help_lists_the_command(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "objects" in out
    code, out, _ = run(capsys, "objects", "--help")
    assert code == 0 and "--layer" in out and ".parquet" in out
