"""``nd2gpu.export``: OME-Zarr labels as NIS shows them, and the Python API.

Each label image's ``image-label`` (validated with ome-zarr-models) gives every
label value that nd2 reads in the layer the layer's colour, links to the image,
and with ``properties=True`` carries skimage's object table of nd2's frames.
"""

from __future__ import annotations

import io
import os
import warnings

import nd2
import numpy as np
import pytest
import tifffile
import zarr
from cli_support import nd2_masks, run
from http_server import Files, serving
from nd2_surgery import rewrite
from ome_zarr_models import open_ome_zarr
from ome_zarr_models.v05.image import Image
from ome_zarr_models.v05.image_label import ImageLabel
from skimage.measure import regionprops_table

import nd2gpu


def layer_rgba(path) -> dict[str, tuple[int, int, int, int]]:
    """Each layer's colour as nd2 reads it (a COLORREF, 0x00BBGGRR), opaque."""
    with nd2.ND2File(path) as f:
        out = {}
        for layer in f.binary_data:
            c = int(layer.color)
            out[layer.name] = (c & 0xFF, c >> 8 & 0xFF, c >> 16 & 0xFF, 255)
    return out


def image_labels(group: zarr.Group) -> dict[str, tuple[object, np.ndarray]]:
    """``{layer name: (validated image-label, label array)}`` under ``labels``."""
    out = {}
    for name in group["labels"].attrs["ome"]["labels"]:
        label = ImageLabel.from_zarr(group["labels"][name])
        (multiscale,) = label.attributes.ome.multiscales
        out[multiscale.name] = (
            label.attributes.ome.image_label,
            group["labels"][name]["0"][...],
        )
    return out


def reference_objects(masks: np.ndarray, letters: str, position: int | None = None):
    """skimage's rows of nd2's frames by label value: frame, loops, area, centroid."""
    coordinate_shape = masks.shape[:-2]
    frames = masks.reshape(-1, *masks.shape[-2:])
    out: dict[int, dict[str, list]] = {}
    for seq, frame in enumerate(frames):
        coordinates = dict(
            zip(letters, np.unravel_index(seq, coordinate_shape), strict=True)
        )
        if position is not None and coordinates["P"] != position:
            continue
        table = regionprops_table(frame, properties=("label", "area", "centroid"))
        for i, value in enumerate(table["label"]):
            row = out.setdefault(int(value), {})
            row.setdefault("frame", []).append(seq)
            for letter, count in zip(letters, coordinate_shape, strict=True):
                if count > 1:
                    row.setdefault(letter, []).append(int(coordinates[letter]))
            for column in ("area", "centroid-0", "centroid-1"):
                row.setdefault(column, []).append(float(table[column][i]))
    return out


def assert_properties(image_label, expected) -> None:
    got = {}
    for prop in image_label.properties:
        row = prop.model_dump(by_alias=True)
        got[row.pop("label-value")] = row
    assert sorted(got) == sorted(expected)
    for value, row in expected.items():
        assert sorted(got[value]) == sorted(row), value
        for column, values in row.items():
            np.testing.assert_allclose(got[value][column], values, rtol=1e-12, atol=0)


# -------------------------------------------------------------------- colours


@pytest.mark.parametrize("loops", [(("T", 2), ("Z", 3)), ()], ids=["T,Z", "none"])
def test_every_label_value_in_the_layer_colour(make_nd2, tmp_path, loops):
    path, _ = make_nd2(loops=loops, layers=("cells", "nuclei", "third"))
    out = tmp_path / "out.zarr"
    assert nd2gpu.export(path, out).startswith("OME-Zarr (NGFF 0.5) image")
    assert isinstance(open_ome_zarr(out), Image)
    root = zarr.open_group(out, mode="r")
    masks, colours = nd2_masks(path), layer_rgba(path)
    assert len(set(colours.values())) == 3  # the layers differ
    got = image_labels(root)
    for name, (image_label, array) in got.items():
        values = np.unique(masks[name])
        values = values[values != 0].tolist()
        assert values == np.unique(array[array != 0]).tolist()
        assert [c.label_value for c in image_label.colors] == values
        assert {c.rgba for c in image_label.colors} == {colours[name]}
        assert image_label.properties is None
        # The source link leads to the image.
        assert image_label.source.image == "../../"
        linked = (out / "labels" / name / image_label.source.image).resolve()
        assert linked == out.resolve()


def test_a_layer_without_objects_has_no_colours(make_nd2, tmp_path):
    _, labels = make_nd2(loops=(("T", 2),), layers=("a",))
    empty = nd2gpu.write_nd2(
        tmp_path / "empty.nd2",
        {"a": labels["a"], "zero": np.zeros_like(labels["a"])},
        loops=[("T", 2)],
    )
    out = tmp_path / "out.zarr"
    nd2gpu.export(empty, out)
    got = image_labels(zarr.open_group(out, mode="r"))
    assert got["zero"][0].colors is None
    assert got["zero"][0].source.image == "../../"
    assert len(got["a"][0].colors) > 0


# ------------------------------------------------------------------ properties


@pytest.mark.parametrize(
    "loops", [(("T", 3), ("Z", 2)), (("T", 1), ("Z", 3))], ids=["T,Z", "T=1,Z"]
)
def test_properties_are_skimage_rows_of_each_label_value(make_nd2, tmp_path, loops):
    path, _ = make_nd2(loops=loops, layers=("cells", "nuclei"), max_id=5)
    out = tmp_path / "out.zarr"
    nd2gpu.export(path, out, properties=True, batch_frames=2)
    letters = "".join(letter for letter, _ in loops)
    masks = nd2_masks(path)
    for name, (image_label, _) in image_labels(zarr.open_group(out, mode="r")).items():
        expected = reference_objects(masks[name], letters)
        assert_properties(image_label, expected)
        # colors and properties name the same label values (ome-zarr-models
        # checks it too).
        assert [c.label_value for c in image_label.colors] == sorted(expected)


def test_properties_of_each_position(make_nd2, tmp_path, capsys):
    path, _ = make_nd2(loops=(("P", 2), ("T", 2)), layers=("a",), max_id=4)
    out = tmp_path / "out.zarr"
    code, _, err = run(capsys, "export", path, out, "--properties", "-q")
    assert code == 0, err
    root = zarr.open_group(out, mode="r")
    mask = nd2_masks(path)["a"]
    for p in range(2):
        ((image_label, _),) = image_labels(root[str(p)]).values()
        # The rows of this position's frames only (their P coordinate is p).
        assert_properties(image_label, reference_objects(mask, "PT", position=p))


def test_labels_only_with_properties(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("P", 2), ("Z", 3)), layers=("a", "b"), max_id=4)
    out = tmp_path / "only.zarr"
    nd2gpu.export(path, out, labels_only=True, properties=True, position=1)
    root = zarr.open_group(out, mode="r")
    masks = nd2_masks(path)
    for i, name in enumerate(("a", "b")):
        label = ImageLabel.from_zarr(root[f"label_{i}_{name}"]).attributes.ome
        assert label.image_label.source is None  # no image to link to
        expected = reference_objects(masks[name], "PZ", position=1)
        assert_properties(label.image_label, expected)


def test_properties_are_measured_in_batches(make_nd2, tmp_path, monkeypatch):
    path, _ = make_nd2(loops=(("T", 5), ("Z", 2)), layers=("a", "b"))
    calls = []
    measure = nd2gpu.BinaryLayer.regionprops_table

    def recording(self, frames=None, **kwargs):
        calls.append(len(frames))
        return measure(self, frames, **kwargs)

    monkeypatch.setattr(nd2gpu.BinaryLayer, "regionprops_table", recording)
    monkeypatch.setattr(
        nd2gpu.BinaryLayer, "asarray", lambda *a, **k: pytest.fail("decoded whole")
    )
    nd2gpu.export(path, tmp_path / "o.zarr", properties=True, batch_frames=3)
    assert sum(calls) == 20 and max(calls) <= 3


# ------------------------------------------------------------------ the API


def test_progress_counts_every_plane(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 3), ("Z", 2)), layers=("a", "b"))
    calls = []
    nd2gpu.export(path, tmp_path / "o.zarr", progress=lambda *a: calls.append(a))
    total = calls[0][1]
    # image planes (6) + label planes written (12) + label planes measured (12)
    assert total == 30
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    done = [d for d, t in calls]
    assert done == sorted(done) and {t for d, t in calls} == {total}
    calls.clear()
    nd2gpu.export(path, tmp_path / "o.ome.tif", progress=lambda *a: calls.append(a))
    assert calls[0] == (0, 12) and calls[-1] == (12, 12)


def test_the_command_calls_the_function(make_nd2, tmp_path, capsys, monkeypatch):
    path, _ = make_nd2(loops=(("T", 2),), layers=("a",))
    seen = {}

    def export(source, out, **kwargs):
        seen.update(kwargs, source=source, out=out)
        return "what was written"

    monkeypatch.setattr("nd2gpu.cli.export.export", export)
    code, stdout, _ = run(
        capsys, "export", path, tmp_path / "x.zarr", "--properties", "--batch-frames", 7
    )
    assert code == 0 and stdout == f"wrote {tmp_path / 'x.zarr'}: what was written\n"
    assert os.fspath(seen["source"]) == str(path) and seen["properties"] is True
    assert seen["batch_frames"] == 7 and seen["format"] == "zarr"


def test_zarr_options_refused_for_tiff(make_nd2, tmp_path, capsys):
    path, _ = make_nd2(loops=(("T", 2),), layers=("a",))
    code, _, err = run(capsys, "export", path, tmp_path / "x.ome.tif", "--properties")
    assert code == 2 and "--properties" in err
    with pytest.raises(ValueError, match="OME-Zarr exports only"):
        nd2gpu.export(path, tmp_path / "x.ome.tif", properties=True)


def test_layers_without_masks_warn(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 2),), layers=("a", "b"))
    edited = rewrite(
        path,
        tmp_path / "edited.nd2",
        lambda n, d: (
            None if n.startswith(b"CustomDataSeq|RleZipBinarySequence_2_v1|") else d
        ),
    )
    with pytest.warns(UserWarning, match="layer 'b' has no mask in any frame"):
        what = nd2gpu.export(edited, tmp_path / "o.ome.tif")
    assert what.endswith("channels a")


def test_urls_and_file_objects_are_read_as_the_library_reads_them(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 2), ("Z", 2)), layers=("a", "b"))
    masks = nd2_masks(path)
    expected = np.stack(list(masks.values()))
    with serving(Files({"/f.nd2": path.read_bytes()})) as (base, _):
        url = f"{base}/f.nd2"
        nd2gpu.export(url, tmp_path / "url.ome.tif")
        nd2gpu.export(url, tmp_path / "url.zarr")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "url.ome.tif"), expected)
    got = image_labels(zarr.open_group(tmp_path / "url.zarr", mode="r"))
    for name, mask in masks.items():
        np.testing.assert_array_equal(got[name][1], mask)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nd2gpu.export(io.BytesIO(path.read_bytes()), tmp_path / "bytes.ome.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "bytes.ome.tif"), expected)
