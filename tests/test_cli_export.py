"""``nd2gpu export``: inputs are never outputs; OME-Zarr and OME-TIFF layouts."""

from __future__ import annotations

import os
import shutil

import nd2
import numpy as np
import pytest
import tifffile
import zarr
from cli_support import nd2_masks, run, sha256, tree_snapshot
from nd2_surgery import rewrite
from ome_zarr_models import open_ome_zarr
from ome_zarr_models.v05.bioformats2raw import BioFormats2Raw
from ome_zarr_models.v05.image import Image
from ome_zarr_models.v05.image_label import ImageLabel
from ome_zarr_models.v05.labels import Labels

import nd2gpu
from nd2gpu import _dask as dask_module
from nd2gpu import _layers as layers_module
from nd2gpu import export
from nd2gpu._write import ome_tiff
from nd2gpu._write.outputs import OutputRefusedError, check_output
from nd2gpu.cli import sample_path

#: The first bytes of a legacy (JPEG2000) ND2 file: the JP2 signature box.
LEGACY_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


@pytest.fixture
def mydata(tmp_path):
    """A copy of the sample as a user's file, and its hash."""
    with sample_path() as sample:
        path = tmp_path / "mydata.nd2"
        shutil.copyfile(sample, path)
    return path, sha256(path)


# ------------------------------------------------------------------ refusals


def test_reported_data_loss_sequence_refused(mydata, capsys, monkeypatch):
    """The sequence that once wrote the sample's masks over the user's file."""
    path, digest = mydata
    monkeypatch.chdir(path.parent)
    before = sorted(os.listdir(path.parent))
    code, out, err = run(capsys, "export", "mydata.nd2", "--format", "tiff")
    assert code == 2 and out == ""
    assert err.startswith("nd2gpu: error: ") and err.count("\n") == 1, err
    assert "FILE OUT" in err
    code, out, err = run(
        capsys, "export", "mydata.nd2", "--format", "tiff", "--overwrite"
    )
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert sha256(path) == digest
    assert sorted(os.listdir(path.parent)) == before


def _same_path(path, tmp_path):
    return path


def _symlink(path, tmp_path):
    link = tmp_path / "link.ome.tif"
    link.symlink_to(path)
    return link


def _hard_link(path, tmp_path):
    link = tmp_path / "hard.ome.tif"
    os.link(path, link)
    return link


def _nd2_copy(path, tmp_path):
    other = tmp_path / "other.ome.tif"  # an ND2 file under a TIFF name
    shutil.copyfile(path, other)
    return other


def _legacy_nd2(path, tmp_path):
    legacy = tmp_path / "legacy.tif"
    legacy.write_bytes(LEGACY_SIGNATURE + bytes(500))
    return legacy


def _nd2_suffix(path, tmp_path):
    return tmp_path / "new.ND2"  # does not exist; refused by its name


def _parent_dir(path, tmp_path):
    return path.parent  # replacing it would delete the input


def _plain_dir(path, tmp_path):
    d = tmp_path / "results.zarr"  # a directory that is not a Zarr store
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    return d


@pytest.mark.parametrize(
    ("make_out", "fmt", "message"),
    [
        (_same_path, "tiff", "name ending in .nd2"),
        (_symlink, "tiff", "over the input file"),
        (_hard_link, "tiff", "over the input file"),
        (_nd2_copy, "tiff", "over an ND2 file"),
        (_legacy_nd2, "tiff", "over an ND2 file"),
        (_nd2_suffix, "zarr", "name ending in .nd2"),
        (_parent_dir, "zarr", "holds the input"),
        (_plain_dir, "zarr", "not a Zarr store"),
    ],
    ids=[
        "same-path",
        "symlink",
        "hard-link",
        "nd2-under-tif-name",
        "legacy-nd2",
        "nd2-suffix",
        "parent-directory",
        "plain-directory",
    ],
)
@pytest.mark.parametrize("overwrite", [False, True], ids=["", "overwrite"])
def test_refused_outputs(mydata, tmp_path, capsys, make_out, fmt, message, overwrite):
    path, digest = mydata
    out = make_out(path, tmp_path)
    snapshot = tree_snapshot(tmp_path)
    argv = ["export", path, out, "--format", fmt, "-q"]
    code, stdout, err = run(capsys, *argv, *(["--overwrite"] if overwrite else []))
    assert code == 2, err
    assert err.startswith("nd2gpu: error: ") and err.count("\n") == 1, err
    assert message in err and stdout == ""
    assert sha256(path) == digest
    assert tree_snapshot(tmp_path) == snapshot  # nothing written, nothing left


def test_library_refuses_too(mydata, tmp_path):
    path, digest = mydata
    for out in (path, tmp_path / "x.nd2", _symlink(path, tmp_path)):
        with pytest.raises(OutputRefusedError):
            export(path, out, format="tiff", overwrite=True)
    with pytest.raises(OutputRefusedError, match="holds the input"):
        export(path, tmp_path, format="zarr", overwrite=True)
    assert sha256(path) == digest
    other = tmp_path / "y.tif"  # an ND2 file under another name
    shutil.copyfile(path, other)
    with pytest.raises(ValueError, match="over an ND2 file"):  # a ValueError
        check_output(tmp_path / "z.nd2", other, overwrite=True)


def test_existing_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "x.ome.tif"
    out.write_text("an earlier export")
    code, _, err = run(capsys, "export", "--sample", out, "-q")
    assert code == 2 and "already exists" in err and err.count("\n") == 1
    assert out.read_text() == "an earlier export"
    code, _, err = run(capsys, "export", "--sample", out, "-q", "--overwrite")
    assert code == 0, err
    assert tifffile.imread(out).shape == (2, 3, 2, 64, 64)
    assert [p.name for p in tmp_path.iterdir()] == ["x.ome.tif"]  # no leftovers


def test_failed_zarr_export_keeps_the_old_store(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out.zarr"
    assert run(capsys, "export", "--sample", out, "-q")[0] == 0
    before = tree_snapshot(out)

    def half_written(self, dest, **kwargs):
        (dest / "0").mkdir(parents=True)
        (dest / "zarr.json").write_text("{}")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nd2.ND2File, "write_ome_zarr", half_written)
    code, _, err = run(capsys, "export", "--sample", out, "-q", "--overwrite")
    assert code == 1 and "No space left on device" in err
    assert tree_snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]


# ------------------------------------------------------------------ OME-Zarr


def _labels_of(image_group):
    """``{multiscale name: (axis names, array)}`` of a validated image's labels."""
    labels = Labels.from_zarr(image_group["labels"])
    out = {}
    for name in labels.attributes.ome.labels:
        group = image_group["labels"][name]
        label = ImageLabel.from_zarr(group)
        (multiscale,) = label.attributes.ome.multiscales
        axes = [a.name for a in multiscale.axes]
        out[multiscale.name] = (axes, group[multiscale.datasets[0].path][...])
    return out


def _ngff_order(letters, masks):
    """nd2's masks as OME-Zarr stores them: loops of count 1 dropped, t before z."""
    out = {}
    for name, mask in masks.items():
        kept = [i for i, n in enumerate(mask.shape[: len(letters)]) if n != 1]
        mask = mask.reshape([mask.shape[i] for i in kept] + list(mask.shape[-2:]))
        kept_letters = [letters[i] for i in kept]
        order = [kept_letters.index(k) for k in "TZ" if k in kept_letters]
        mask = mask.transpose([*order, len(kept), len(kept) + 1])
        out[name] = ([k.lower() for k in "TZ" if k in kept_letters] + ["y", "x"], mask)
    return out


@pytest.mark.parametrize(
    "loops",
    [
        (("T", 3), ("Z", 2)),
        (("Z", 2), ("T", 3)),
        (("T", 1), ("Z", 3)),
        (("T", 4),),
        (),
    ],
    ids=["T,Z", "Z,T", "T=1,Z", "T", "no-loops"],
)
def test_zarr_is_an_image_with_labels(make_nd2, tmp_path, capsys, loops):
    path, _ = make_nd2(loops=loops, layers=("cells", "nu clei", "a/b"))
    out = tmp_path / "out.zarr"
    code, stdout, err = run(capsys, "export", path, out, "--batch-frames", 2)
    assert code == 0, err
    assert f"wrote {out}: OME-Zarr (NGFF 0.5) image" in stdout
    assert isinstance(open_ome_zarr(out), Image)
    root = zarr.open_group(out, mode="r")
    assert Image.from_zarr(root).attributes.ome.multiscales[0].name == "out"
    masks = nd2_masks(path)
    expected = _ngff_order([letter for letter, _ in loops], masks)
    got = _labels_of(root)
    assert set(got) == {"cells", "nu clei", "a_b"}
    for name, ref_name in zip(
        ["cells", "nu clei", "a_b"], ["cells", "nu clei", "a/b"], strict=True
    ):
        axes, array = got[name]
        ref_axes, ref = expected[ref_name]
        assert axes == ref_axes and array.dtype == np.uint16
        np.testing.assert_array_equal(array, ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.nd2", "out.zarr"]


def test_zarr_positions_in_bioformats2raw_layout(make_nd2, tmp_path, capsys):
    loops = (("P", 2), ("T", 2), ("Z", 2))
    path, _ = make_nd2(loops=loops, layers=("a", "b"))
    out = tmp_path / "out.zarr"
    code, stdout, err = run(capsys, "export", path, out, "-q")
    assert code == 0 and stdout == "", err
    root = zarr.open_group(out, mode="r")
    BioFormats2Raw.from_zarr(root)
    assert root["OME"].attrs["ome"]["series"] == ["0", "1"]
    assert (out / "OME" / "METADATA.ome.xml").read_text().startswith("<")
    masks = nd2_masks(path)
    for p in range(2):
        image = root[str(p)]
        Image.from_zarr(image)
        got = _labels_of(image)
        for name, mask in masks.items():
            axes, array = got[name]
            assert axes == ["t", "z", "y", "x"]
            np.testing.assert_array_equal(array, mask[p])


@pytest.mark.parametrize("loops", [(("P", 3), ("Z", 2)), (("T", 2), ("P", 3))])
def test_zarr_one_position(make_nd2, tmp_path, capsys, loops):
    path, _ = make_nd2(loops=loops, layers=("a",))
    out = tmp_path / "p1.zarr"
    code, _, err = run(capsys, "export", path, out, "--position", 1, "-q")
    assert code == 0, err
    assert isinstance(open_ome_zarr(out), Image)
    p_axis = [letter for letter, _ in loops].index("P")
    (axes, array) = _labels_of(zarr.open_group(out, mode="r"))["a"]
    assert axes == [letter.lower() for letter, _ in loops if letter != "P"] + ["y", "x"]
    np.testing.assert_array_equal(array, np.take(nd2_masks(path)["a"], 1, p_axis))
    code, _, err = run(capsys, "export", path, tmp_path / "p9.zarr", "--position", 9)
    assert code == 1 and "position 9 is out of range" in err
    assert not (tmp_path / "p9.zarr").exists()


def test_zarr_leaves_out_layers_without_masks(make_nd2, tmp_path, capsys):
    path, _ = make_nd2(loops=(("T", 2),), layers=("a", "b", "c"))
    edited = rewrite(
        path,
        tmp_path / "edited.nd2",
        lambda n, d: (
            None if n.startswith(b"CustomDataSeq|RleZipBinarySequence_2_v1|") else d
        ),
    )
    out = tmp_path / "out.zarr"
    code, _, err = run(capsys, "export", edited, out)
    assert code == 0, err
    assert "layer 'b' has no mask in any frame; not exported" in err
    got = _labels_of(zarr.open_group(out, mode="r"))
    masks = nd2_masks(edited)
    assert set(got) == set(masks) == {"a", "c"}
    for name, mask in masks.items():
        np.testing.assert_array_equal(got[name][1], mask)


def test_zarr_labels_only(make_nd2, tmp_path, capsys):
    loops = (("Z", 2), ("T", 3))
    path, _ = make_nd2(loops=loops, layers=("a", "b"))
    full, only = tmp_path / "full.zarr", tmp_path / "only.zarr"
    assert run(capsys, "export", path, full, "-q")[0] == 0
    code, _, err = run(capsys, "export", path, only, "--labels-only", "-q")
    assert code == 0, err
    assert isinstance(open_ome_zarr(only), Labels)
    assert not (only / "0").exists()  # no image
    root = zarr.open_group(only, mode="r")
    labels = Labels.from_zarr(root)
    full_labels = zarr.open_group(full, mode="r")["labels"]
    assert labels.attributes.ome.labels == list(full_labels.attrs["ome"]["labels"])
    for name in labels.attributes.ome.labels:
        # The same metadata and values as the labels nd2 writes with the image,
        # but for the link to an image, which there is not.
        alone = ImageLabel.from_zarr(root[name]).attributes.ome
        with_image = ImageLabel.from_zarr(full_labels[name]).attributes.ome
        assert alone.multiscales == with_image.multiscales
        assert alone.image_label.colors == with_image.image_label.colors
        assert alone.image_label.source is None
        assert with_image.image_label.source.image == "../../"
        np.testing.assert_array_equal(root[name]["0"][...], full_labels[name]["0"][...])


def test_zarr_labels_only_of_positions_needs_a_position(make_nd2, tmp_path, capsys):
    path, _ = make_nd2(loops=(("P", 2), ("T", 2)), layers=("a",))
    out = tmp_path / "only.zarr"
    code, _, err = run(capsys, "export", path, out, "--labels-only")
    assert code == 1 and "--position" in err
    code, _, err = run(capsys, "export", path, out, "--labels-only", "--position", 1)
    assert code == 0, err
    array = zarr.open_group(out, mode="r")["label_0_a"]["0"][...]
    np.testing.assert_array_equal(array, nd2_masks(path)["a"][1])


def test_zarr_chunks(make_nd2, tmp_path, capsys):
    path, _ = make_nd2(loops=(("T", 2), ("Z", 3)), layers=("a",), frame_shape=(20, 30))
    out = tmp_path / "out.zarr"
    code, _, err = run(capsys, "export", path, out, "--chunks", "8,16", "-q")
    assert code == 0, err
    root = zarr.open_group(out, mode="r")
    assert root["0"].chunks == (1, 1, 8, 16)
    assert root["labels/label_0_a/0"].chunks == (1, 1, 8, 16)
    code, _, err = run(capsys, "export", path, out, "--chunks", "8", "-q")
    assert code == 2 and "--chunks" in err


def test_zarr_streams_frames_in_batches(make_nd2, tmp_path, capsys, monkeypatch):
    path, _ = make_nd2(loops=(("T", 5), ("Z", 2)), layers=("a", "b"))
    batches = []
    decode = dask_module.decode_block

    def recording(plan, *args, **kwargs):
        batches.append(plan.n_jobs)
        return decode(plan, *args, **kwargs)

    monkeypatch.setattr(dask_module, "decode_block", recording)
    monkeypatch.setattr(
        nd2gpu.BinaryLayer, "asarray", lambda *a, **k: pytest.fail("decoded whole")
    )
    code, _, err = run(capsys, "export", path, tmp_path / "o.zarr", "--batch-frames", 3)
    assert code == 0, err
    assert sum(batches) == 20 and max(batches) <= 3


# ------------------------------------------------------------------ OME-TIFF


def test_tiff_imread_shows_every_layer(make_nd2, tmp_path, capsys):
    path, _ = make_nd2(loops=(("T", 2), ("Z", 3)), layers=("a", "b", "c"))
    out = tmp_path / "out.ome.tif"
    code, stdout, err = run(capsys, "export", path, out, "--batch-frames", 4, "-q")
    assert code == 0 and stdout == "", err
    masks = nd2_masks(path)
    np.testing.assert_array_equal(tifffile.imread(out), np.stack(list(masks.values())))
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome and not tif.is_bigtiff
        (series,) = tif.series
        assert series.axes == "CTZYX"
        names = [c.attrib["Name"] for c in _channels(tif.ome_metadata)]
        assert names == ["a", "b", "c"]


def _channels(xml):
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    return [e for e in root.iter() if e.tag.endswith("}Channel")]


def test_tiff_one_series_per_position(make_nd2, tmp_path, capsys):
    path, _ = make_nd2(loops=(("T", 2), ("P", 2), ("Z", 2)), layers=("a", "b"))
    out = tmp_path / "out.tiff"
    code, _, err = run(capsys, "export", path, out, "-q", "--batch-frames", 3)
    assert code == 0, err
    stacked = np.stack(list(nd2_masks(path).values()))  # (layer, T, P, Z, Y, X)
    np.testing.assert_array_equal(tifffile.imread(out), stacked[:, :, 0])
    with tifffile.TiffFile(out) as tif:
        assert [s.name for s in tif.series] == ["P0", "P1"]
        for p, series in enumerate(tif.series):
            assert series.axes == "CTZYX"
            np.testing.assert_array_equal(series.asarray(), stacked[:, :, p])
    one = tmp_path / "p1.ome.tif"
    assert run(capsys, "export", path, one, "--position", 1, "-q")[0] == 0
    np.testing.assert_array_equal(tifffile.imread(one), stacked[:, :, 1])


def test_tiff_split(make_nd2, tmp_path, capsys):
    path, _ = make_nd2(loops=(("T", 3),), layers=("cells", "nu/clei"))
    out = tmp_path / "out.ome.tif"
    code, stdout, err = run(capsys, "export", path, out, "--split")
    assert code == 0, err
    assert "2 files (out_cells.ome.tif, out_nu_clei.ome.tif)" in stdout
    masks = nd2_masks(path)
    for file, name in (
        ("out_cells.ome.tif", "cells"),
        ("out_nu_clei.ome.tif", "nu/clei"),
    ):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / file), masks[name])
    assert not out.exists()


def test_tiff_bigtiff_above_the_limit(make_nd2, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ome_tiff, "BIGTIFF_ABOVE", 100)
    path, _ = make_nd2(loops=(("T", 2),), layers=("a",))
    out = tmp_path / "big.ome.tif"
    assert run(capsys, "export", path, out, "-q")[0] == 0
    with tifffile.TiffFile(out) as tif:
        assert tif.is_bigtiff
    np.testing.assert_array_equal(tifffile.imread(out), nd2_masks(path)["a"])


def test_tiff_streams_frames_in_batches(make_nd2, tmp_path, capsys, monkeypatch):
    path, _ = make_nd2(loops=(("T", 7),), layers=("a", "b"))
    batches = []
    decode = layers_module.decode_block

    def recording(plan, *args, **kwargs):
        batches.append(plan.n_jobs)
        return decode(plan, *args, **kwargs)

    monkeypatch.setattr(layers_module, "decode_block", recording)
    code, _, err = run(capsys, "export", path, tmp_path / "o.tif", "--batch-frames", 3)
    assert code == 0, err
    assert batches == [3, 3, 1, 3, 3, 1]


# ------------------------------------------------------------------ options


@pytest.mark.parametrize("name", ["sample.zarr", "sample.ome.tiff"])
def test_export_sample(tmp_path, capsys, name):
    out = tmp_path / name
    code, stdout, err = run(capsys, "export", "--sample", out)
    assert code == 0, err
    assert stdout.startswith(f"wrote {out}: ")
    assert err == ""  # not a terminal: no progress bar


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export"], "two paths"),
        (["export", "a.nd2", "b.zarr", "c.zarr"], "two paths"),
        (["export", "--sample", "a.nd2", "b.zarr"], "one path"),
        (["export", "--sample", "out.png"], "cannot tell the format"),
        (["export", "--sample", "o.zarr", "--split"], "--split"),
        (["export", "--sample", "o.tif", "--labels-only"], "--labels-only"),
        (["export", "--sample", "o.tif", "--chunks", "8,8"], "--chunks"),
        (["export", "--sample", "o.zarr", "--position", "-1"], "--position"),
        (["export", "--sample", "o.zarr", "--batch-frames", "0"], "--batch-frames"),
    ],
)
def test_usage_errors(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2 and message in err and out == ""
    assert list(tmp_path.iterdir()) == []


def test_progress_bar_only_on_a_terminal(tmp_path, capsys, monkeypatch):
    from nd2gpu.cli import common

    code, _, err = run(capsys, "export", "--sample", tmp_path / "a.ome.tif")
    assert code == 0 and "\r" not in err and err == ""
    monkeypatch.setattr(common, "stderr_is_terminal", lambda: True)
    monkeypatch.setattr(common, "PROGRESS_DELAY", 0)
    code, _, err = run(capsys, "export", "--sample", tmp_path / "b.ome.tif")
    assert code == 0 and "nd2gpu export:" in err and "/12 " in err
    code, out, err = run(capsys, "export", "--sample", tmp_path / "c.zarr", "-q")
    assert code == 0 and out == "" and err == ""


def test_link_at_out_is_replaced_not_followed(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere.ome.tif"
    elsewhere.write_text("someone else's file")
    out = tmp_path / "out.ome.tif"
    out.symlink_to(elsewhere)
    code, _, err = run(capsys, "export", "--sample", out, "-q", "--overwrite")
    assert code == 0, err
    assert not out.is_symlink() and tifffile.imread(out).shape == (2, 3, 2, 64, 64)
    assert elsewhere.read_text() == "someone else's file"
