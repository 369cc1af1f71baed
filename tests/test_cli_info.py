"""``nd2gpu info``: metadata and chunk map only, unless --objects."""

from __future__ import annotations

import json

import numpy as np
from cli_support import run
from counting import CountingInflate
from nd2_surgery import rewrite

from nd2gpu._decode import frame as frame_module
from nd2gpu.cli.info import count_objects


def _no_layers(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 2),))
    return rewrite(
        path,
        tmp_path / "plain.nd2",
        lambda name, data: None if name.startswith(b"CustomData") else data,
    )


def test_sample_text(capsys):
    code, out, err = run(capsys, "info")
    assert code == 0, err
    assert "sample.nd2" in out and "T=3, Z=2, 6 frame(s)" in out
    assert "2 binary layers" in out
    assert "[0] cells" in out and "[1] nuclei" in out
    assert "64 x 64" in out and "frames with mask:  6 of 6" in out
    assert "#ff0000" in out  # the cells layer's colour
    assert "objects" not in out  # only with --objects


def test_objects(capsys):
    code, out, err = run(capsys, "info", "--sample", "--objects")
    assert code == 0, err
    assert "objects per frame: min 9, median 9, max 10" in out


def test_json_counts_frames_with_mask_and_objects(make_nd2, tmp_path, capsys):
    path, labels = make_nd2(loops=(("T", 2), ("Z", 3)), layers=("a", "b"))
    edited = rewrite(
        path,
        tmp_path / "edited.nd2",
        lambda n, d: None if n == b"CustomDataSeq|RleZipBinarySequence_1_v1|4!" else d,
    )
    code, out, err = run(capsys, "info", edited, "--json", "--objects")
    assert code == 0, err
    info = json.loads(out)
    assert info["coordinate_shape"] == [2, 3] and info["frames"] == 6
    assert [lp["letter"] for lp in info["loops"]] == ["T", "Z"]
    assert [lay["name"] for lay in info["layers"]] == ["a", "b"]
    for lay, (name, lab) in zip(info["layers"], labels.items(), strict=True):
        frames = lab.reshape(-1, 13, 17)
        present = [0, 1, 2, 3, 5] if name == "a" else range(6)
        counts = [len(np.unique(frames[i][frames[i] > 0])) for i in present]
        assert lay["frames_with_mask"] == len(present)
        assert lay["frame_shape"] == [13, 17]
        assert lay["objects_per_frame"] == {
            "min": min(counts),
            "median": float(np.median(counts)),
            "max": max(counts),
        }


def test_count_objects_in_batches(make_nd2):
    import nd2gpu

    path, labels = make_nd2(loops=(("T", 5),), layers=("a",))
    done = []
    with nd2gpu.ND2File(path) as f:
        counts = count_objects(
            f.binary_data[0], [4, 0, 2], batch_frames=2, done=done.append
        )
    frames = labels["a"]
    assert counts == [len(np.unique(frames[i][frames[i] > 0])) for i in (4, 0, 2)]
    assert done == [2, 1]


def test_info_decodes_nothing_without_objects(make_nd2, capsys, monkeypatch):
    path, _ = make_nd2(loops=(("T", 4), ("Z", 3)), layers=("a", "b", "c"))
    headers = []
    real = frame_module.read_header
    monkeypatch.setattr(
        frame_module, "read_header", lambda *a: headers.append(1) or real(*a)
    )
    inflates = CountingInflate(monkeypatch)
    code, out, err = run(capsys, "info", path, "--json")
    assert code == 0, err
    assert [lay["frames_with_mask"] for lay in json.loads(out)["layers"]] == [12] * 3
    assert (inflates.calls, len(headers)) == (0, 3)  # one header a layer
    code, out, err = run(capsys, "info", path, "--objects", "-q")
    assert code == 0, err
    assert inflates.calls == 36  # --objects decodes every frame


def test_file_without_layers(make_nd2, tmp_path, capsys):
    path = _no_layers(make_nd2, tmp_path)
    code, out, err = run(capsys, "info", path)
    assert code == 0, err
    assert "0 binary layers" in out
    code, out, err = run(capsys, "info", path, "--json", "--objects")
    assert code == 0, err
    assert json.loads(out)["layers"] == []


def test_several_files(make_nd2, tmp_path, capsys):
    a, _ = make_nd2(name="a.nd2", layers=("x",))
    b = _no_layers(make_nd2, tmp_path)
    code, out, err = run(capsys, "info", a, b, "--json")
    assert code == 0, err
    infos = json.loads(out)
    assert [len(i["layers"]) for i in infos] == [1, 0]
    broken = tmp_path / "broken.nd2"
    broken.write_text("not an ND2 file")
    code, out, err = run(capsys, "info", a, broken, b)
    assert code == 1
    assert err.count("\n") == 1 and "broken.nd2" in err and "not recognized" in err
    assert "1 binary layer\n" in out and "0 binary layers" in out
