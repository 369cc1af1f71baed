"""regionprops_table from the runs equals skimage's on nd2's dense label images.

The reference for every table is ``skimage.measure.regionprops_table`` run on
each frame of ``nd2.ND2File(path).binary_data`` (and on the frame's image for
the intensity columns): integer columns exactly, float columns to 1e-12
relative. Files are written with ``nd2gpu.write_nd2``, or built from hand-made
mask streams (overlaps, clipping, runs past the edge, empty frames, ids 1 and
65535, masks sharing an id) by rewriting a written file's mask chunks.
"""

from __future__ import annotations

import math
import tracemalloc
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nd2
import numpy as np
import pandas
import pytest
from conftest import random_labels
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from nd2 import AXIS
from nd2_surgery import rewrite
from skimage.measure import regionprops_table as skimage_table
from streams import payload, stream_words

import nd2gpu
from nd2gpu._decode import runs as runs_module
from nd2gpu._format.container import binary_frame_chunk_name
from nd2gpu._objects import (
    DEFAULT_PROPERTIES,
    INTENSITY_PROPERTIES,
    PROPERTIES,
    PROPERTY_COLUMNS,
)
from nd2gpu._objects import cpu as objects_cpu
from nd2gpu.kernels import _objects_kernels as ok
from nd2gpu.kernels._record_kernels import R_RESOLVED

ALL = DEFAULT_PROPERTIES + INTENSITY_PROPERTIES
PREFIX = b"\x00\x00\x00\x00"


# --------------------------------------------------------------------- reference


def reference_table(
    path: Path,
    layer: int = 0,
    properties: Sequence[str] = DEFAULT_PROPERTIES,
    images: np.ndarray | None = None,
    frames: Sequence[int] | None = None,
    layer_column: int | None = None,
    spacing: tuple[float, float] | None = None,
) -> dict[str, np.ndarray]:
    """skimage's table of each frame of nd2's dense masks, with ``frame`` and the
    frame's loop coordinates (``numpy.unravel_index``, named as nd2's ``sizes``).

    ``images[seq]`` is the intensity image of frame ``seq``.
    """
    with nd2.ND2File(path) as f:
        masks = f.binary_data[layer].data
        loops = [(AXIS._MAP[loop.type], loop.count) for loop in f.experiment]
        sizes = dict(f.sizes)
    shape = tuple(count for _, count in loops)
    axes = [axis for axis, count in loops if count != 1 and axis in sizes]
    seqs = range(len(masks)) if frames is None else sorted(frames)
    names = ["frame", *axes] + [c for p in properties for c in PROPERTY_COLUMNS[p]]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for seq in seqs:
        mask = masks[seq]
        if mask is None:
            continue
        table = skimage_table(
            mask,
            intensity_image=None if images is None else images[seq],
            properties=("label", *properties),
            spacing=spacing,
        )
        n = len(table["label"])
        parts["frame"].append(np.full(n, seq, np.int64))
        coords = np.unravel_index(seq, shape) if shape else ()
        for axis in axes:
            parts[axis].append(np.full(n, coords[[a for a, _ in loops].index(axis)]))
        for name in names[1 + len(axes) :]:
            parts[name].append(table[name])
    zeros = np.zeros((2, 2), np.uint16)
    empty = skimage_table(zeros, intensity_image=zeros, properties=("label", *ALL))
    out = {}
    if layer_column is not None:
        n = sum(len(c) for c in parts["frame"])
        out["layer"] = np.full(n, layer_column, np.int64)
    for name, pieces in parts.items():
        dtype = np.int64 if name == "frame" or name in axes else empty[name].dtype
        out[name] = np.concatenate(pieces) if pieces else np.empty(0, dtype)
    return out


def assert_tables_equal(got: dict, expected: dict) -> None:
    """Same columns in the same order, same dtypes; ints exact, floats 1e-12."""
    got = {name: nd2gpu._device.to_numpy(column) for name, column in got.items()}
    assert list(got) == list(expected)
    for name, column in expected.items():
        assert got[name].dtype == column.dtype, name
        assert got[name].shape == column.shape, name
        if column.dtype.kind == "f":
            np.testing.assert_allclose(
                got[name], column, rtol=1e-12, atol=0, equal_nan=True, err_msg=name
            )
        else:
            np.testing.assert_array_equal(got[name], column, err_msg=name)


def write_streams(
    tmp_path: Path,
    frames: Sequence[tuple[int, int, list] | bytes | None],
    name: str = "streams.nd2",
    image: np.ndarray | None = None,
) -> Path:
    """An ND2 file whose frames' mask chunks hold the given streams.

    Each frame is ``(nrows, ncols, masks)`` (tests/streams.py), raw chunk data
    (bytes, prefix included), or None (no chunk). The first frame given as a
    stream sets the file's frame shape.
    """
    shape = next(f[:2] for f in frames if isinstance(f, tuple))
    n = len(frames)
    labels = np.ones((n, *shape), np.uint16)
    base = write_nd2(tmp_path / f"base-{name}", labels, image)
    with nd2.ND2File(base) as f:
        tag = f.binary_data[0].file_tag
    chunks = {}
    for seq, frame in enumerate(frames):
        if isinstance(frame, tuple):
            chunks[seq] = PREFIX + payload(stream_words(*frame))
        else:
            chunks[seq] = frame

    def edit(chunk_name: bytes, data: bytes) -> bytes | None:
        for seq, new in chunks.items():
            if chunk_name == binary_frame_chunk_name(tag, seq):
                return new
        return data

    return rewrite(base, tmp_path / name, edit)


def write_nd2(path: Path, labels: np.ndarray, image: np.ndarray | None = None) -> Path:
    return nd2gpu.write_nd2(
        path, {"objects": labels}, loops=[("T", labels.shape[0])], image=image
    )


def measure(path: Path, **kwargs) -> dict:
    with nd2gpu.ND2File(path) as f:
        return f.binary_data[0].regionprops_table(**kwargs)


# ---------------------------------------------------------------- written files


def test_written_files_match_skimage(make_nd2):
    path, _ = make_nd2(loops=(("T", 3), ("Z", 2)), frame_shape=(29, 31))
    for layer in range(2):
        with nd2gpu.ND2File(path) as f:
            got = f.binary_data[layer].regionprops_table()
        assert_tables_equal(got, reference_table(path, layer))


def test_every_layer_with_a_layer_column(make_nd2):
    path, _ = make_nd2(layers=("a", "b", "c"))
    with nd2gpu.ND2File(path) as f:
        got = f.binary_data.regionprops_table(properties=ALL, intensity=0)
    with nd2.ND2File(path) as f:
        images = f.asarray().reshape(-1, *f.asarray().shape[-2:])
    expected = {}
    parts = [reference_table(path, i, ALL, images, layer_column=i) for i in range(3)]
    for name in parts[0]:
        expected[name] = np.concatenate([p[name] for p in parts])
    assert_tables_equal(got, expected)
    assert list(got)[:2] == ["layer", "frame"]


def test_pandas_dataframe_just_works(make_nd2):
    path, _ = make_nd2()
    table = measure(path)
    df = pandas.DataFrame(table)
    assert list(df.columns) == list(table)
    assert len(df) == len(table["label"]) > 0
    assert df["label"].dtype == np.int64 and df["area"].dtype == np.float64
    assert df["bbox-2"].dtype == np.int64 and df["centroid-0"].dtype == np.float64
    keys = list(zip(df["frame"], df["label"], strict=True))
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_column_dtypes_are_skimages(make_nd2):
    path, _ = make_nd2()
    got = measure(path, properties=ALL, intensity=0)
    reference = skimage_table(
        np.array([[0, 3], [3, 0]], np.uint16),
        intensity_image=np.ones((2, 2), np.uint16),
        properties=ALL,
    )
    for name, column in reference.items():
        assert got[name].dtype == column.dtype, name
    assert got["frame"].dtype == np.int64


def test_labels_one_and_65535_and_big_objects(tmp_path):
    labels = np.zeros((2, 300, 200), np.uint16)
    labels[0, 10:290, 5:195] = 65535
    labels[0, 100:120, 50:70] = 1
    labels[1, :, :] = 1
    labels[1, 299, 199] = 65535
    path = write_nd2(tmp_path / "big.nd2", labels)
    assert_tables_equal(measure(path), reference_table(path))


@pytest.mark.fuzz
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hnp.arrays(
        np.uint16,
        st.tuples(st.integers(1, 3), st.integers(1, 24), st.integers(1, 24)),
        elements=st.sampled_from([0, 0, 0, 1, 2, 3, 7, 255, 256, 65534, 65535]),
    )
)
def test_hypothesis_label_images_match_skimage(tmp_path_factory, labels):
    path = write_nd2(tmp_path_factory.mktemp("fuzz") / "f.nd2", labels)
    rng = np.random.default_rng(labels.size)
    image = rng.integers(0, 1 << 16, labels.shape).astype(np.uint16)
    got = measure(path, properties=ALL, intensity=image)
    assert_tables_equal(got, reference_table(path, 0, ALL, image))


# ---------------------------------------------------------- hand-built streams

HAND_FRAMES = [
    # overlapping runs of two ids, and of one id with itself (later run wins)
    (6, 9, [(1, [(0, [(0, 5)]), (1, [(2, 4), (3, 4)])]), (2, [(0, [(3, 4)])])]),
    # runs clipped at the right edge, starting past it, of length 0
    (
        5,
        7,
        [(3, [(0, [(5, 100)]), (1, [(7, 2), (9, 1), (2, 0)])]), (4, [(4, [(0, 7)])])],
    ),
    # ids 1 and 65535, an id-0 mask erasing part of another
    (
        4,
        8,
        [
            (65535, [(0, [(0, 8)]), (1, [(0, 8)])]),
            (0, [(0, [(2, 3)])]),
            (1, [(3, [(1, 1)])]),
        ],
    ),
    # several masks with the same id, apart and overlapping
    (6, 6, [(5, [(0, [(0, 2)])]), (5, [(5, [(4, 2)])]), (5, [(0, [(1, 3)])])]),
    # a mask erased entirely by a later one: no row for it
    (3, 3, [(8, [(1, [(1, 1)])]), (9, [(1, [(0, 3)])])]),
    # rows out of order inside a mask (the row-by-row overlap check)
    (5, 5, [(2, [(4, [(0, 2)]), (0, [(3, 2)]), (2, [(1, 1)])]), (3, [(2, [(0, 5)])])]),
    # no masks at all
    (4, 4, []),
    # masks without rows, rows without runs
    (4, 4, [(6, []), (7, [(1, [])]), (1, [(2, [(1, 2)])])]),
]


@pytest.mark.parametrize("index", range(len(HAND_FRAMES)))
def test_hand_streams_match_skimage(tmp_path, index):
    nrows, ncols, masks = HAND_FRAMES[index]
    path = write_streams(tmp_path, [(nrows, ncols, masks)])
    image = np.random.default_rng(index).normal(size=(1, nrows, ncols))
    got = measure(path, properties=ALL, intensity=image)
    assert_tables_equal(got, reference_table(path, 0, ALL, image))


def test_frames_without_masks_give_no_rows(tmp_path):
    shape = (5, 6)
    frames = [
        (*shape, [(1, [(0, [(0, 3)])])]),
        None,  # no chunk
        PREFIX,  # nothing after the prefix
        (*shape, []),  # a stream without masks
        (*shape, [(2, [(4, [(1, 5)])])]),
    ]
    path = write_streams(tmp_path, frames)
    got = measure(path)
    assert got["frame"].tolist() == [0, 4]
    assert_tables_equal(got, reference_table(path))


def test_many_overlapping_boxes_take_the_row_check(tmp_path):
    """Tall masks side by side: every pair of boxes meets, the budget of the
    check by masks runs out and the check by rows decides."""
    nrows, ncols = 2, 300
    masks = [(k + 1, [(r, [(k, 1)]) for r in range(nrows)]) for k in range(ncols)]
    masks.append((400, [(1, [(0, 300)])]))  # overlaps every stripe on the last row
    path = write_streams(tmp_path, [(nrows, ncols, masks)])
    assert_tables_equal(measure(path), reference_table(path))
    no_overlap = masks[:-1]
    path = write_streams(tmp_path, [(nrows, ncols, no_overlap)], name="b.nd2")
    assert_tables_equal(measure(path), reference_table(path))


def test_masks_with_meeting_boxes_but_no_overlap(tmp_path):
    # Two L shapes whose boxes overlap and whose pixels do not.
    a = (1, [(0, [(0, 5)]), (1, [(0, 1)]), (2, [(0, 1)])])
    b = (2, [(1, [(2, 3)]), (2, [(2, 3)]), (3, [(0, 5)])])
    path = write_streams(tmp_path, [(4, 5, [a, b])])
    assert_tables_equal(measure(path), reference_table(path))
    c = (3, [(2, [(1, 2)])])  # touches a at (2, 1)? no: a has col 0 only; b at col 2
    path = write_streams(tmp_path, [(4, 5, [a, b, c])], name="c.nd2")
    assert_tables_equal(measure(path), reference_table(path))


@st.composite
def hand_files(draw, max_side: int = 10, max_frames: int = 3):
    """Frames of one shape with any masks: overlaps, clipping, runs past the
    edge, zero lengths, repeated ids, ids 0 and 65535."""
    nrows = draw(st.integers(1, max_side))
    ncols = draw(st.integers(1, max_side))
    ids = st.sampled_from([0, 1, 2, 3, 65535])
    runs = st.lists(
        st.tuples(st.integers(0, ncols + 2), st.integers(0, ncols + 2)), max_size=3
    )
    rows = st.lists(st.tuples(st.integers(0, nrows - 1), runs), max_size=5)
    masks = st.lists(st.tuples(ids, rows), max_size=6)
    frames = draw(st.lists(masks, min_size=1, max_size=max_frames))
    return [(nrows, ncols, m) for m in frames]


@pytest.mark.fuzz
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hand_files(), st.data())
def test_hypothesis_hand_streams_match_skimage(tmp_path_factory, frames, data):
    shape = frames[0][:2]
    path = write_streams(tmp_path_factory.mktemp("hand"), frames)
    image = data.draw(
        hnp.arrays(np.float64, (len(frames), *shape), elements=st.floats(-1e6, 1e6))
    )
    got = measure(path, properties=ALL, intensity=image)
    assert_tables_equal(got, reference_table(path, 0, ALL, image))


# -------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("frames", "seqs"),
    [
        (None, [0, 1, 2, 3, 4, 5]),
        (3, [3]),
        (-1, [5]),
        (slice(1, 5, 2), [1, 3]),
        (range(4, 1, -1), [2, 3, 4]),
        ([5, 0], [0, 5]),
        (np.array([True, False, True, False, False, True]), [0, 2, 5]),
        (np.array([2, 1], np.uint8), [1, 2]),
        ([], []),
    ],
)
def test_frames_as_decode_takes_them(make_nd2, frames, seqs):
    path, _ = make_nd2()
    got = measure(path, frames=frames)
    expected = reference_table(path, frames=seqs)
    assert_tables_equal(got, expected)


def test_bad_frames(make_nd2):
    path, _ = make_nd2()
    with pytest.raises(ValueError, match="repeat"):
        measure(path, frames=[1, 1])
    with pytest.raises(IndexError):
        measure(path, frames=[6])
    with pytest.raises(TypeError):
        measure(path, frames="0")


def test_properties(make_nd2):
    path, _ = make_nd2()
    got = measure(path, properties=["centroid", "label", "centroid"])
    assert list(got) == ["frame", "T", "Z", "centroid-0", "centroid-1", "label"]
    assert list(measure(path, properties="area")) == ["frame", "T", "Z", "area"]
    only_frames = measure(path, properties=())
    assert list(only_frames) == ["frame", "T", "Z"]
    np.testing.assert_array_equal(only_frames["frame"], measure(path)["frame"])
    with pytest.raises(
        ValueError, match="supported properties: " + ", ".join(PROPERTIES)
    ):
        measure(path, properties=("area", "perimeter"))
    with pytest.raises(TypeError, match="properties"):
        measure(path, properties=3)


def test_empty_layer_gives_an_empty_table(tmp_path):
    labels = np.zeros((3, 8, 9), np.uint16)
    path = write_nd2(tmp_path / "empty.nd2", labels)
    got = measure(path, properties=ALL, intensity=np.zeros((3, 8, 9)))
    assert_tables_equal(got, reference_table(path, 0, ALL, np.zeros((3, 8, 9))))
    assert all(len(c) == 0 for c in got.values())


# -------------------------------------------------------------------- intensity


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.float32]
)
def test_intensity_dtypes(make_nd2, dtype):
    path, labels = make_nd2(loops=(("T", 2),))
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is None:
        image = rng.normal(size=labels["cells"].shape).astype(dtype)
    else:
        image = rng.integers(info.min, info.max, labels["cells"].shape, endpoint=True)
        image = image.astype(dtype)
    props = INTENSITY_PROPERTIES
    got = measure(path, properties=props, intensity=image)
    expected = reference_table(path, 0, props, image.astype(np.float64))
    # skimage's mean of float32 pixels is float32 arithmetic; ours is float64.
    if dtype is np.float32:
        np.testing.assert_allclose(
            got["intensity_mean"], expected["intensity_mean"], rtol=1e-5
        )
        got.pop("intensity_mean")
        expected.pop("intensity_mean")
    assert_tables_equal(got, expected)


def test_intensity_bool_float16_and_nan(make_nd2):
    path, labels = make_nd2(loops=(("T", 2),))
    shape = labels["cells"].shape
    rng = np.random.default_rng(4)
    mask_image = rng.random(shape) < 0.5
    got = measure(path, properties=INTENSITY_PROPERTIES, intensity=mask_image)
    assert_tables_equal(
        got, reference_table(path, 0, INTENSITY_PROPERTIES, mask_image.astype(float))
    )
    half = rng.normal(size=shape).astype(np.float16)
    got = measure(path, properties=("intensity_min", "intensity_max"), intensity=half)
    expected = reference_table(path, 0, ("intensity_min", "intensity_max"), half)
    assert_tables_equal(got, expected)
    nan = rng.normal(size=shape)
    nan[0, 5, 5] = np.nan
    got = measure(path, properties=INTENSITY_PROPERTIES, intensity=nan)
    assert_tables_equal(got, reference_table(path, 0, INTENSITY_PROPERTIES, nan))


def test_intensity_shapes_and_channels(make_nd2, tmp_path):
    labels = np.zeros((2, 3, 12, 10), np.uint16)
    labels[..., 2:7, 3:9] = 4
    labels[1, 2, 0, 0] = 9
    rng = np.random.default_rng(5)
    image = rng.integers(0, 4000, labels.shape).astype(np.uint16)
    path = nd2gpu.write_nd2(
        tmp_path / "img.nd2", {"m": labels}, loops=[("T", 2), ("Z", 3)], image=image
    )
    flat = image.reshape(-1, 12, 10)
    expected = reference_table(path, 0, ALL, flat)
    assert_tables_equal(measure(path, properties=ALL, intensity=image), expected)
    assert_tables_equal(measure(path, properties=ALL, intensity=flat), expected)
    assert_tables_equal(measure(path, properties=ALL, intensity=0), expected)
    assert_tables_equal(measure(path, properties=ALL, intensity="Mono"), expected)
    subset = reference_table(path, 0, ALL, flat, frames=[1, 5])
    got = measure(path, frames=[5, 1], properties=ALL, intensity=flat[[5, 1]])
    assert_tables_equal(got, subset)
    got = measure(path, frames=5, properties=ALL, intensity=flat[5])
    assert_tables_equal(got, reference_table(path, 0, ALL, flat, frames=[5]))
    with pytest.raises(ValueError, match=r"intensity has shape \(5, 12, 10\)"):
        measure(path, properties=ALL, intensity=flat[:5])
    with pytest.raises(ValueError, match="no channel 'GFP'"):
        measure(path, properties=ALL, intensity="GFP")
    with pytest.raises(ValueError, match="channel 1 out of range"):
        measure(path, properties=ALL, intensity=1)
    with pytest.raises(ValueError, match="need intensity="):
        measure(path, properties=ALL)
    with pytest.raises(TypeError, match="intensity must be an array"):
        measure(path, properties=ALL, intensity=[1, 2])
    with pytest.raises(TypeError, match="must hold numbers"):
        measure(path, properties=ALL, intensity=flat.astype(np.complex64))


# -------------------------------------------------------------------- errors


def test_corrupt_payload_names_file_layer_frame_offset(tmp_path):
    shape = (5, 6)
    good = (*shape, [(1, [(0, [(0, 3)])])])
    bad_row = (*shape, [(1, [(9, [(0, 3)])])])  # row 9 of a 5-row frame
    path = write_streams(tmp_path, [good, bad_row, good])
    with pytest.raises(nd2gpu.DecodeError) as info:
        measure(path)
    error = info.value
    assert error.path == str(path) and error.layer == "objects" and error.frame == 1
    assert error.offset == 4 * (7 + 9) and "row 9 of a 5-row frame" in str(error)
    corrupt = PREFIX + payload(stream_words(*good))[:-6]  # no end of stream
    path = write_streams(tmp_path, [good, good, corrupt], name="trunc.nd2")
    with pytest.raises(nd2gpu.DecodeError, match="zlib stream is truncated") as info:
        measure(path)
    assert info.value.frame == 2 and info.value.offset is not None
    with nd2gpu.ND2File(path) as f, pytest.raises(nd2gpu.DecodeError) as decoded:
        f.binary_data[0].decode(2)
    assert str(decoded.value) == str(info.value)


def test_first_error_in_frame_order(tmp_path):
    shape = (4, 4)
    good = (*shape, [(1, [(0, [(0, 3)])])])
    big_id = (*shape, [(70000, [(0, [(0, 3)])])])
    bad_zlib = PREFIX + b"\x78\x9c\xff\xff\xff"
    path = write_streams(tmp_path, [good] * 5 + [bad_zlib, big_id, good])
    with pytest.raises(nd2gpu.DecodeError, match="corrupt zlib") as info:
        measure(path)
    assert info.value.frame == 5
    with pytest.raises(nd2gpu.DecodeError, match="does not fit in uint16") as info:
        measure(path, frames=[7, 6])
    assert info.value.frame == 6


def test_frame_of_another_shape(tmp_path):
    path = write_streams(tmp_path, [(4, 4, [(1, [(0, [(0, 1)])])]), (5, 4, [])])
    with pytest.raises(nd2gpu.DecodeError, match="frame is 5x4 but the layer's"):
        measure(path)
    assert_tables_equal(measure(path, frames=0), reference_table(path, frames=[0]))


def test_version_warning_as_decode(tmp_path):
    words = stream_words(4, 4, [(1, [(0, [(0, 2)])])], version=4)
    path = write_streams(
        tmp_path, [(4, 4, []), PREFIX + zlib.compress(words.tobytes())]
    )
    with pytest.warns(UserWarning, match="version 3 but got 4 in frame 1"):
        got = measure(path)
    assert got["label"].tolist() == [1]


def test_frames_of_many_labels(tmp_path, rng):
    """Past ``SORTED_LABELS`` distinct labels a frame finds its entries in a
    table indexed by label: the same table as skimage's, with intensities."""
    labels = np.zeros((2, 96, 128), np.uint16)
    ids = rng.choice(np.arange(1, 65536), 48 * 60, replace=False).astype(np.uint16)
    for k, value in enumerate(ids):  # objects of 1-2 pixels on a grid
        r, c = divmod(k, 60)
        labels[0, 2 * r, 2 * c : 2 * c + 1 + k % 2] = value
    labels[1, :, :] = labels[0, ::-1, :]
    labels[1, 0, 0] = 65535
    path = write_nd2(tmp_path / "many.nd2", labels)
    images = rng.integers(0, 1000, labels.shape).astype(np.uint16)
    props = [*DEFAULT_PROPERTIES, "intensity_mean", "intensity_max"]
    got = measure(path, properties=props, intensity=images)
    assert len(np.unique(labels[0])) - 1 > ok.SORTED_LABELS
    assert_tables_equal(got, reference_table(path, properties=props, images=images))


def test_entry_tables_kept_for_later_calls_are_cut_back(make_nd2, monkeypatch):
    path, _ = make_nd2(loops=(("T", 6),), frame_shape=(40, 50))
    expected = measure(path)
    monkeypatch.setattr(objects_cpu, "KEPT_ENTRIES", 8)
    monkeypatch.setattr(objects_cpu, "FIRST_ENTRIES", 4)
    monkeypatch.setattr(objects_cpu.Entries, "_free", [])
    for _ in range(2):  # the second call regrows the tables cut back
        assert_tables_equal(measure(path), expected)
        assert objects_cpu.Entries._free
        assert all(t.stats.shape[0] <= 8 for t in objects_cpu.Entries._free)
    assert len(expected["label"]) > 8


def test_concurrent_calls_keep_their_own_entries(make_nd2):
    """Calls from several threads share the decode pool and its reused entry
    tables; each gets its own file's table."""
    paths = [
        make_nd2(loops=(("T", 8),), frame_shape=(64, 80), name=f"{i}.nd2")[0]
        for i in range(2)
    ]
    expected = [measure(p) for p in paths]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(measure, paths * 12))
    for i, table in enumerate(got):
        assert_tables_equal(table, expected[i % 2])


# -------------------------------------------------------------------- memory


@pytest.mark.slow
def test_no_dense_array_is_allocated(tmp_path):
    """A 2048x2048 frame costs far less than a dense frame (tracemalloc)."""
    labels = np.zeros((2, 2048, 2048), np.uint16)
    yy, xx = np.mgrid[:2048, :2048]
    for k in range(40):
        cy, cx = 100 + 45 * k, 60 + 48 * k
        labels[:, (yy - cy) ** 2 + (xx - cx) ** 2 < 400] = k + 1
    path = write_nd2(tmp_path / "big.nd2", labels)
    with nd2gpu.ND2File(path) as f:
        layer = f.binary_data[0]
        expected = layer.regionprops_table()  # warm: compiled, files mapped
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            got = layer.regionprops_table()
            peak = tracemalloc.get_traced_memory()[1] - start
        finally:
            tracemalloc.stop()
    assert_tables_equal(got, expected)
    dense = math.prod(labels.shape[1:]) * 2
    assert peak < dense / 16


@pytest.mark.parametrize(
    ("frame", "resolved"),
    [
        (HAND_FRAMES[0], True),  # a mask overlaps itself
        (HAND_FRAMES[3], True),  # two masks of one id overlap
        (HAND_FRAMES[2], True),  # id 0 over id 65535
        (HAND_FRAMES[5], True),  # rows out of order in a mask
        ((4, 5, [(1, [(0, [(0, 2)])]), (2, [(0, [(2, 3)])])]), False),
    ],
)
def test_only_frames_with_overlaps_are_rewritten(
    tmp_path, monkeypatch, frame, resolved
):
    """Guards that the tests above reach the rewriting of overlapping runs."""
    seen = []

    def spy(*args):
        done = real(*args)
        seen.extend(args[-1][:, R_RESOLVED].tolist())
        return done

    real = runs_module.resolve_group
    monkeypatch.setattr(runs_module, "resolve_group", spy)
    path = write_streams(tmp_path, [frame])
    assert_tables_equal(measure(path), reference_table(path))
    assert seen == [int(resolved)]


def test_a_row_of_many_runs(tmp_path):
    nrows, ncols = 2, 300
    masks = [(k + 1, [(r, [(k, 1)]) for r in range(nrows)]) for k in range(ncols)]
    path = write_streams(tmp_path, [(nrows, ncols, masks)])
    assert_tables_equal(measure(path), reference_table(path))


@pytest.mark.parametrize(
    "loops",
    [(("T", 3), ("P", 2), ("Z", 2)), (("P", 1), ("T", 4)), ()],
    ids=["TPZ", "P1-T", "no-loops"],
)
def test_loop_coordinates_are_columns_named_as_in_sizes(tmp_path, rng, loops):
    counts = tuple(c for _, c in loops)
    labels = random_labels(rng, (*counts, 12, 9))
    path = nd2gpu.write_nd2(tmp_path / "loops.nd2", {"x": labels}, loops=list(loops))
    table = measure(path)
    assert_tables_equal(table, reference_table(path))
    with nd2.ND2File(path) as f:
        axes = [a for a in f.sizes if a not in ("C", "Y", "X", "S")]
    assert [c for c in table if c.isupper()] == axes
    if counts:
        frame = table["frame"]
        coords = np.unravel_index(frame, counts)
        named = [i for i, (_, c) in enumerate(loops) if c != 1]
        for axis, i in zip(axes, named, strict=True):
            np.testing.assert_array_equal(table[axis], coords[i])


@pytest.mark.parametrize("spacing", [(0.3, 0.7), (2, 3), (0.108, 0.108)])
def test_spacing_gives_skimage_s_physical_units_exactly(make_nd2, spacing):
    path, _ = make_nd2(frame_shape=(60, 70), max_id=40)
    props = ("label", "area", "bbox", "centroid")
    got = measure(path, properties=props, spacing=spacing)
    expected = reference_table(path, 0, props, spacing=spacing)
    assert list(got) == list(expected)
    for name, column in expected.items():
        np.testing.assert_array_equal(got[name], column, err_msg=name)  # bit for bit


def test_spacing_from_the_file_and_refused_values(make_nd2):
    path, _ = make_nd2()
    with nd2gpu.ND2File(path) as f:
        layer = f.binary_data[0]
        assert layer.pixel_size is not None
        dy, dx = layer.pixel_size
        got = layer.regionprops_table(spacing="file")
        np.testing.assert_array_equal(
            got["area"], layer.regionprops_table(spacing=(dy, dx))["area"]
        )
        for bad in ["pixels", (1, 0), (1, -2), (1, 2, 3), (np.nan, 1), "0.5"]:
            with pytest.raises(ValueError, match="spacing"):
                layer.regionprops_table(spacing=bad)
