"""The napari plugin ``nd2gpu``: headless in napari's ViewerModel, and in a window.

Layers are compared with nd2's arrays; colours with the layers' COLORREFs; the
window test (Qt under Xvfb) reads the colours back from a screenshot.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import nd2
import numpy as np
import pytest
from cli_support import nd2_masks
from http_server import Files, serving
from nd2._util import VoxelSize
from nd2_surgery import rewrite

import nd2gpu
from nd2gpu._format.container import binary_frame_chunk_name

with warnings.catch_warnings():  # napari's and npe2's deprecations, on import
    warnings.simplefilter("ignore", DeprecationWarning)
    napari = pytest.importorskip("napari")
    import npe2
    from napari.components import ViewerModel
    from napari.utils.notifications import notification_manager

from nd2gpu.napari import layer_data, napari_get_reader

WINDOW = Path(__file__).with_name("napari_window.py")
#: Where the window test also saves its screenshot, when set (docs/images/).
SCREENSHOT_VARIABLE = "ND2GPU_NAPARI_SCREENSHOT"


@pytest.fixture(scope="module", autouse=True)
def plugins():
    """napari finds its plugins (npe2 manifests) as its application does."""
    npe2.PluginManager.instance().discover()


def rgba(color: int) -> np.ndarray:
    """A COLORREF (0x00BBGGRR) as napari's RGBA floats."""
    return np.array([color & 0xFF, color >> 8 & 0xFF, color >> 16 & 0xFF, 255]) / 255


def open_in_viewer(path) -> list:
    viewer = ViewerModel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return viewer.open(str(path), plugin="nd2gpu")


# --------------------------------------------------------------------- reader


def test_only_nd2_files_get_the_reader(make_nd2, tmp_path):
    path, _ = make_nd2()
    assert callable(napari_get_reader(str(path)))
    assert callable(napari_get_reader([str(path)]))
    assert callable(napari_get_reader(path.as_uri()))
    assert callable(napari_get_reader("https://example.org/data/cells.nd2"))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.nd2").write_bytes(b"not an nd2 file" * 10)
    (tmp_path / "dir.nd2").mkdir()
    for other in ("notes.txt", "fake.nd2", "dir.nd2", "missing.nd2"):
        assert napari_get_reader(str(tmp_path / other)) is None, other
    assert napari_get_reader([str(path), str(path)]) is None


def test_napari_finds_the_plugin(make_nd2):
    path, _ = make_nd2()
    manifest = npe2.PluginManager.instance().get_manifest("nd2gpu")
    assert manifest.display_name == "nd2gpu"
    readers = npe2.PluginManager.instance().iter_compatible_readers([str(path)])
    assert "nd2gpu" in [r.plugin_name for r in readers]


# -------------------------------------------------------------------- layers


@pytest.mark.parametrize(
    "loops", [(("T", 2), ("Z", 3)), (("P", 2), ("T", 1), ("Z", 2)), ()], ids=str
)
def test_viewer_opens_the_image_and_every_binary_layer(make_nd2, tmp_path, loops):
    counts = tuple(n for _, n in loops)
    image = np.arange(np.prod(counts, dtype=int) * 13 * 17, dtype=np.uint16)
    _, labels = make_nd2(loops=loops, layers=("cells", "nuclei"))
    path = nd2gpu.write_nd2(
        tmp_path / "with_image.nd2",
        labels,
        loops=list(loops),
        image=image.reshape(*counts, 13, 17),
    )
    layers = open_in_viewer(path)
    with nd2.ND2File(path) as f:
        sizes = dict(f.sizes)
        expected_image = f.asarray()
        channel = f.metadata.channels[0].channel
        colors = {layer.name: layer.color for layer in f.binary_data}
    masks = nd2_masks(path)
    axes = tuple(k for k in sizes if k not in "CS")
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels", "Labels"]
    first, *label_layers = layers
    assert first.name == channel.name
    np.testing.assert_array_equal(np.asarray(first.data), expected_image)
    np.testing.assert_allclose(
        first.colormap.colors[-1], rgba(channel.color.as_abgr_u4())
    )
    assert tuple(first.axis_labels) == axes
    for layer in label_layers:
        mask = masks[layer.name]
        expected = mask.reshape(tuple(sizes[k] for k in axes))
        assert layer.data.shape == expected.shape == first.data.shape
        np.testing.assert_array_equal(np.asarray(layer.data), expected)
        assert tuple(layer.axis_labels) == axes
        np.testing.assert_array_equal(layer.scale, first.scale)
        # Every label value in the layer's colour; 0 transparent.
        values = np.unique(expected)
        mapped = layer.colormap.map(values)
        for value, color in zip(values, mapped, strict=True):
            if value == 0:
                assert color[3] == 0
            else:
                np.testing.assert_allclose(color, rgba(colors[layer.name]), atol=1e-6)
    assert rgba(colors["cells"]).tolist() != rgba(colors["nuclei"]).tolist()


def test_scale_is_the_voxel_size(make_nd2, monkeypatch):
    path, _ = make_nd2(loops=(("T", 2), ("Z", 3)))
    voxel = VoxelSize(x=0.25, y=0.5, z=2.0)
    monkeypatch.setattr(nd2gpu.ND2File, "voxel_size", lambda self, **kw: voxel)
    for layer in open_in_viewer(path):
        np.testing.assert_array_equal(layer.scale, [1.0, 2.0, 0.5, 0.25])


def test_labels_decode_only_the_frames_shown(make_nd2, monkeypatch):
    path, _ = make_nd2(loops=(("T", 4), ("Z", 5)), layers=("a", "b"))
    decoded = []
    decode = nd2gpu.BinaryLayer.decode

    def recording(self, frames, *args, **kwargs):
        decoded.append((self.name, list(frames)))
        return decode(self, frames, *args, **kwargs)

    monkeypatch.setattr(nd2gpu.BinaryLayer, "decode", recording)
    monkeypatch.setattr(
        nd2gpu.BinaryLayer, "asarray", lambda *a, **k: pytest.fail("decoded whole")
    )
    viewer = ViewerModel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        layers = viewer.open(str(path), plugin="nd2gpu")
    # napari shows one plane (the first as a layer is added, then the one the
    # sliders are moved to): each layer decodes those frames alone, one a call.
    t, z = viewer.dims.current_step[:2]
    assert decoded and all(len(frames) == 1 for _, frames in decoded)
    for name in ("a", "b"):
        frames = {f[0] for layer, f in decoded if layer == name}
        assert t * 5 + z in frames and frames <= {0, t * 5 + z}
    decoded.clear()
    viewer.dims.set_current_step(0, 3)
    viewer.dims.set_current_step(1, 2)
    for layer in layers[1:]:
        layer.refresh()
    assert {frames[0] for _, frames in decoded} == {3 * 5 + 2}


def test_a_corrupt_frame_is_reported_and_the_others_show(make_nd2, tmp_path):
    path, _ = make_nd2(loops=(("T", 3),), layers=("a", "b"))
    bad = binary_frame_chunk_name("RleZipBinarySequence_2_v1", 1)
    corrupt = rewrite(
        path,
        tmp_path / "corrupt.nd2",
        lambda n, d: d[:4] + b"\x78\x9c junk" if n == bad else d,
    )
    masks = nd2_masks(path)
    notification_manager.records.clear()
    layers = open_in_viewer(corrupt)  # shows frame 1, the middle one
    b = next(layer for layer in layers if layer.name == "b")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        shown = [np.asarray(b.data[t]) for t in range(3)]
    np.testing.assert_array_equal(shown[0], masks["b"][0])
    np.testing.assert_array_equal(shown[2], masks["b"][2])
    assert not shown[1].any()  # shown empty
    # Reported once, as an error, in one line: nd2gpu's DecodeError.
    records = notification_manager.records
    assert [record.severity for record in records] == ["error"]
    messages = [str(record.message) for record in records]
    assert "\n" not in messages[0]
    with nd2gpu.ND2File(corrupt) as f, pytest.raises(nd2gpu.DecodeError) as error:
        f.binary_data[1][1]
    assert messages[0] == str(error.value)


def test_urls_and_file_objects(make_nd2):
    path, _ = make_nd2(loops=(("T", 2),), layers=("a",))
    masks = nd2_masks(path)
    with serving(Files({"/f.nd2": path.read_bytes()})) as (base, _):
        layers = open_in_viewer(f"{base}/f.nd2")
        np.testing.assert_array_equal(np.asarray(layers[1].data), masks["a"])
    data = layer_data(io.BytesIO(path.read_bytes()), notify=pytest.fail)
    assert [d[1]["name"] for d in data] == ["Mono", "a"]
    np.testing.assert_array_equal(np.asarray(data[1][0]), masks["a"])


# -------------------------------------------------------------------- window


def _display(tmp_path):
    """An X display for the window test: a private Xvfb, else $DISPLAY."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        if os.environ.get("DISPLAY"):
            yield os.environ["DISPLAY"]
            return
        pytest.skip("no X display: install xvfb (.ci/run does) or set DISPLAY")
    read, write = os.pipe()
    server = subprocess.Popen(
        [
            xvfb,
            "-displayfd",
            str(write),
            "-screen",
            "0",
            "1280x1024x24",
            "-nolisten",
            "tcp",
        ],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as fh:
        number = fh.readline().strip()
    try:
        if not number:
            pytest.skip("Xvfb could not start a display")
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def display(tmp_path):
    yield from _display(tmp_path)


def window_file(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    """Round cells, each with a nucleus; ids as NIS numbers its objects."""
    yy, xx = np.mgrid[:120, :160]
    cells = np.zeros((120, 160), np.uint16)
    nuclei = np.zeros_like(cells)
    for i, (y, x, r) in enumerate(
        ((30, 35, 22), (40, 100, 26), (88, 60, 24), (90, 128, 18))
    ):
        cells[(yy - y) ** 2 + (xx - x) ** 2 < r * r] = i + 1
        nuclei[(yy - y - 2) ** 2 + (xx - x + 3) ** 2 < (r // 2) ** 2] = 300 + i
    labels = {"cells": cells, "nuclei": nuclei}
    return nd2gpu.write_nd2(tmp_path / "cells.nd2", labels), labels


@pytest.mark.slow
def test_a_napari_window_shows_each_layer_in_its_colour(tmp_path, display):
    path, labels = window_file(tmp_path)
    out = tmp_path / "shots"
    out.mkdir()
    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
    env.pop("WAYLAND_DISPLAY", None)
    done = subprocess.run(
        [sys.executable, str(WINDOW), str(path), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    canvas = np.load(out / "canvas.npy")[..., :3].astype(float)
    view = json.loads((out / "view.json").read_text())
    assert view["layers"] == ["Image", "Labels", "Labels"]
    with nd2.ND2File(path) as f:
        colors = {layer.name: rgba(layer.color)[:3] * 255 for layer in f.binary_data}
    # What each pixel must show: the image (zeros: black), the cells over it,
    # the nuclei over both, each blended with its opacity (napari's translucent).
    expected = np.zeros((*labels["cells"].shape, 3))
    for name in ("cells", "nuclei"):
        alpha = view["opacity"][name]
        inside = labels[name] > 0
        expected[inside] = alpha * colors[name] + (1 - alpha) * expected[inside]
    height, width = canvas.shape[:2]
    _, cy, cx = view["center"]
    zoom = view["zoom"]
    assert zoom > 2  # a data pixel covers several screen pixels
    # Sample at the centre of every data pixel whose neighbours are alike (no edge).
    same = np.ones(labels["cells"].shape, bool)
    for name in ("cells", "nuclei"):
        mask = labels[name] > 0
        padded = np.pad(mask, 1, mode="edge")
        for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
            same &= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]] == mask
    ys, xs = np.nonzero(same)
    rows = np.round((ys - cy) * zoom + height / 2).astype(int)
    cols = np.round((xs - cx) * zoom + width / 2).astype(int)
    seen = canvas[rows, cols]
    np.testing.assert_allclose(seen, expected[ys, xs], atol=3)
    # Every kind of pixel was checked: background, cells, nuclei over cells.
    kinds = {tuple(np.round(c).astype(int)) for c in expected[ys, xs]}
    assert len(kinds) == 3
    shot = os.environ.get(SCREENSHOT_VARIABLE)
    if shot:
        shutil.copyfile(out / "window.png", shot)
