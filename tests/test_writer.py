"""write_nd2 and its encoders, checked against the reference reader nd2."""

from __future__ import annotations

import doctest
import os
import struct
from pathlib import Path

import nd2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from nd2._binary import decode_binary_mask
from nd2._parse._clx_lite import json_from_clx_lite_variant

import nd2gpu._format.clx_lite as clx_module
import nd2gpu._format.mask_encode as rle_module
import nd2gpu._write.nd2_writer as writer_module
from nd2gpu._format.clx_lite import Int64, UInt32, UInt64, encode_clx_lite
from nd2gpu._format.container import (
    CHUNK_ALIGNMENT,
    CHUNK_HEADER,
    CHUNK_MAGIC,
    CHUNKMAP_LOCATION,
    CHUNKMAP_SIGNATURE,
)
from nd2gpu._format.mask_encode import encode_label_frame, encode_mask_chunk
from nd2gpu._write.nd2_writer import write_nd2

# nd2 must read every file we write without a single warning.
pytestmark = pytest.mark.filterwarnings("error")

FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def roundtrip(labels: np.ndarray) -> np.ndarray:
    chunk = encode_mask_chunk(labels)
    assert chunk[:4] == b"\x00\x00\x00\x00"
    return decode_binary_mask(chunk[4:])


def assert_same(decoded: np.ndarray, labels: np.ndarray) -> None:
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, np.asarray(labels).astype(np.uint16))


def parse_stream(raw: bytes) -> tuple[list[int], list[dict]]:
    """A slow, independent reading of every word of a frame stream."""
    words = struct.unpack(f"<{len(raw) // 4}I", raw)
    header, pos, masks = list(words[:7]), 7, []
    for _ in range(header[3]):
        head = words[pos : pos + 9]
        start, pos = pos, pos + 9
        rows = []
        for _ in range(head[6]):
            row, nruns = words[pos : pos + 2]
            runs = [
                tuple(words[pos + 2 + 2 * k : pos + 4 + 2 * k]) for k in range(nruns)
            ]
            rows.append((row, runs))
            pos += 2 + 2 * nruns
        masks.append({"head": head, "rows": rows, "words": pos - start})
    assert pos == len(words), "trailing words after the last mask"
    return header, masks


def check_stream_fields(labels: np.ndarray) -> None:
    """The fields nd2 ignores: ordering, bounding boxes, byte counts, maximal runs."""
    labels = np.asarray(labels).astype(np.int64)
    raw = encode_label_frame(labels)
    header, masks = parse_stream(raw)
    ids = np.unique(labels[labels != 0])
    nrows, ncols = labels.shape
    assert header == [3, ncols, nrows, ids.size, len(raw) - 28, 0, 0]
    assert [m["head"][0] for m in masks] == ids.tolist()
    for mask in masks:
        roi_id, c0, r0, c1, r1, roi_bytes, nrows_in_mask, w7, w8 = mask["head"]
        rr, cc = np.nonzero(labels == roi_id)
        assert (c0, r0, c1, r1) == (cc.min(), rr.min(), cc.max(), rr.max())
        assert roi_bytes == 4 * mask["words"] and w7 == roi_bytes - 16 and w8 == 0
        assert nrows_in_mask == np.unique(rr).size
        assert [r for r, _ in mask["rows"]] == np.unique(rr).tolist()
        for row, runs in mask["rows"]:
            line = np.flatnonzero(labels[row] == roi_id)
            # maximal runs, ascending: exactly the connected pieces of the row
            pieces = np.split(line, np.flatnonzero(np.diff(line) > 1) + 1)
            assert runs == [(int(p[0]), p.size) for p in pieces]


# ---------------------------------------------------------------------------
# RLE encoder


label_images = hnp.arrays(
    dtype=st.sampled_from([np.uint16, np.uint32, np.int32, np.int64, ">u2"]),
    shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24),
    elements=st.integers(0, 255),
)


@FAST
@given(label_images, st.sampled_from([1, 7, 257, 65535]))
def test_encoder_matches_nd2_decoder(labels: np.ndarray, scale: int) -> None:
    wide = np.minimum(labels.astype(np.int64) * scale, 65535)
    wide[wide % 3 == 1] = 0  # plenty of background
    labels = wide.astype(labels.dtype)
    assert_same(roundtrip(labels), labels)
    check_stream_fields(labels)


@pytest.mark.parametrize(
    "labels",
    [
        np.zeros((5, 7), np.uint16),
        np.zeros((1, 1), np.uint8),
        np.pad([[9]], ((3, 4), (2, 5))),
        np.full((1, 1), 65535),
        np.full((4, 6), 65535, np.uint16),
        np.array([[0, 3, 3, 0, 3, 1, 1, 65535]]),  # 1xN
        np.array([[0], [2], [2], [0], [5]]),  # Nx1
        np.arange(40 * 50).reshape(40, 50) + 1,  # every pixel its own id
        np.arange(40 * 50).reshape(40, 50) % 2,  # one id, one-pixel runs
        np.random.default_rng(0).integers(0, 65536, (64, 96)),
        np.eye(9, dtype=bool),
        np.ones((3, 4), dtype=np.int8),
        np.array([[1, 2, 1, 2], [2, 1, 2, 1]], dtype=">i4"),
    ],
    ids=lambda a: f"{a.dtype}{a.shape}",
)
def test_encoder_cases(labels: np.ndarray) -> None:
    assert_same(roundtrip(labels), labels)
    check_stream_fields(labels)


def test_empty_frame_is_a_valid_stream() -> None:
    words = np.frombuffer(encode_label_frame(np.zeros((4, 5), int)), "<u4")
    assert words.tolist() == [3, 5, 4, 0, 0, 0, 0]


@pytest.mark.parametrize(
    ("labels", "error"),
    [
        (np.zeros((3, 3), np.float32), TypeError),
        (np.array([[0, -1]]), ValueError),
        (np.array([[0, 65536]]), ValueError),
        (np.zeros((2, 3, 3), np.uint16), ValueError),
        (np.zeros(3, np.uint16), ValueError),
    ],
)
def test_encoder_rejects(labels: np.ndarray, error: type[Exception]) -> None:
    with pytest.raises(error):
        encode_mask_chunk(labels)


def test_encoder_speed_cells() -> None:
    """2048x2048, ~600 elliptic objects: well under a second (usually ~50 ms)."""
    rng = np.random.default_rng(1)
    size = 2048
    yy, xx = np.ogrid[:size, :size]
    labels = np.zeros((size, size), np.uint16)
    for i in range(600):
        cy, cx = rng.integers(0, size, 2)
        r = int(rng.integers(6, 31))
        y0, x0 = max(cy - r, 0), max(cx - r, 0)
        sub = labels[y0 : cy + r + 1, x0 : cx + r + 1]
        disk = (yy[y0 : cy + r + 1] - cy) ** 2 + (xx[:, x0 : cx + r + 1] - cx) ** 2
        sub[(disk <= r * r) & (sub == 0)] = i + 1
    chunk = encode_mask_chunk(labels)
    assert_same(decode_binary_mask(chunk[4:]), labels)


# ---------------------------------------------------------------------------
# CLX-lite encoder

names = st.text(
    st.characters(
        blacklist_categories=("Cs",), blacklist_characters="\x00\ufeff\ufffe"
    ),
    min_size=1,
    max_size=12,
)
scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 2**32 - 1).map(UInt32),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.integers(0, 2**64 - 1).map(UInt64),
    st.floats(allow_nan=False),
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        max_size=20,
    ).filter(lambda s: s[:1] not in ("\ufeff", "\ufffe")),
    # a byte array nd2 cannot mistake for nested CLX: (0, ...) is no CLX type
    st.binary(max_size=16).map(lambda b: b"\x00" + b),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.dictionaries(names, inner, max_size=4),
        st.lists(st.dictionaries(names, inner, min_size=1, max_size=3), min_size=1),
    ),
    max_leaves=20,
)


def expected_clx(value: object) -> object:
    if isinstance(value, bytes):
        return list(value)
    if isinstance(value, dict):
        return {k: expected_clx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [expected_clx(v) for v in value]
    return value


@FAST
@given(values)
def test_clx_lite_round_trip(value: object) -> None:
    raw = encode_clx_lite({"root": value})
    decoded = json_from_clx_lite_variant(
        raw, strip_prefix=False, lists_to_indexed_dicts=False
    )
    assert decoded == {"root": expected_clx(value)}


def test_clx_lite_types_and_lists() -> None:
    raw = encode_clx_lite(
        {"SLx": {"uiW": UInt32(7), "b": True, "lst": [{"a": 1}, {"a": 2}]}}
    )
    assert raw[0] == 11  # LEVEL
    decoded = json_from_clx_lite_variant(raw, strip_prefix=False)
    # NIS-style lists come back keyed i0000000000, i0000000001, ...
    assert decoded == {
        "SLx": {
            "uiW": 7,
            "b": True,
            "lst": {"i0000000000": {"a": 1}, "i0000000001": {"a": 2}},
        }
    }


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"a\x00b": 1}, ValueError),
        ({"a": "x\x00"}, ValueError),
        ({"a": "\ufeffbom"}, ValueError),
        ({"x" * 255: 1}, ValueError),
        ({"a": 2**31}, ValueError),
        ({"a": UInt32(-1)}, ValueError),
        ({"a": None}, TypeError),
        ({"a": {1: 2}}, TypeError),
    ],
)
def test_clx_lite_rejects(data: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        encode_clx_lite(data)


@pytest.mark.parametrize("module", [clx_module, rle_module, writer_module])
def test_docstring_examples(module: object) -> None:
    failed, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failed == 0


# ---------------------------------------------------------------------------
# full files through nd2.ND2File


def blobs(rng: np.random.Generator, shape: tuple[int, ...], max_id: int = 40):
    """Random rectangles of random ids on zeros; some frames stay empty."""
    out = np.zeros(shape, np.uint16)
    for frame in out.reshape(-1, *shape[-2:]):
        for _ in range(int(rng.integers(0, 5))):
            y, x = rng.integers(0, shape[-2]), rng.integers(0, shape[-1])
            h, w = rng.integers(1, 6), rng.integers(1, 9)
            frame[y : y + h, x : x + w] = rng.integers(1, max_id + 1)
    return out


def check_file(
    path: Path,
    labels: dict[str, np.ndarray],
    loops: list[tuple[str, int]],
    image: np.ndarray | None = None,
) -> None:
    counts = tuple(c for _, c in loops)
    shape = next(iter(labels.values())).shape
    with nd2.ND2File(path) as f:
        assert f.version == (3, 0)
        # nd2 leaves out every axis of size 1
        expected_sizes = {**dict(loops), "Y": shape[-2], "X": shape[-1]}
        assert dict(f.sizes) == {k: n for k, n in expected_sizes.items() if n != 1}
        types = {"T": "TimeLoop", "P": "XYPosLoop", "Z": "ZStackLoop"}
        assert [(x.type, x.count) for x in f.experiment] == [
            (types[k], n) for k, n in loops
        ]
        meta = f.custom_data["BinaryMetadata_v1"]["BinaryMetadata_v1"]
        assert [item["Name"] for _, item in sorted(meta.items())] == list(labels)

        layers = f.binary_data
        assert layers is not None
        assert [layer.name for layer in layers] == list(labels)
        for layer, (name, expected) in zip(layers, labels.items(), strict=True):
            assert layer.coordinate_shape == counts
            assert len(layer) == int(np.prod(counts))
            assert all(frame is not None for frame in layer.data), name
            assert_same(layer.asarray(), expected)
        assert np.asarray(layers).shape == (len(labels), *shape)

        pixels = f.asarray().reshape(shape)
        if image is None:
            assert pixels.dtype == np.uint16 and not pixels.any()
        else:
            assert pixels.dtype == image.dtype
            np.testing.assert_array_equal(pixels, image)
        # the rest of nd2's metadata API works and stays silent
        f.metadata, f.text_info, f.events(), f.voxel_size(), f.rois
        f.frame_metadata(f._frame_count - 1)
        f.unstructured_metadata()


@pytest.mark.parametrize(
    "loops",
    [
        [],
        [("T", 3)],
        [("Z", 4)],
        [("P", 2)],
        [("T", 2), ("P", 3), ("Z", 4)],
        [("Z", 2), ("T", 3), ("P", 2)],
        [("P", 3), ("Z", 1), ("T", 2)],
        [("T", 1)],
    ],
    ids=lambda loops: "".join(f"{k}{n}" for k, n in loops) or "none",
)
def test_file_round_trip(tmp_path: Path, loops: list[tuple[str, int]]) -> None:
    rng = np.random.default_rng(len(loops))
    shape = (*(n for _, n in loops), 11, 17)
    labels = {"cells": blobs(rng, shape), "nuclei": blobs(rng, shape, 65535)}
    path = write_nd2(tmp_path / "f.nd2", labels, loops=loops)
    assert path == tmp_path / "f.nd2"
    check_file(path, labels, loops)


def test_no_loops_sizes(tmp_path: Path) -> None:
    labels = {"only": np.eye(6, 9, dtype=np.uint16)}
    with nd2.ND2File(write_nd2(tmp_path / "a.nd2", labels)) as f:
        assert dict(f.sizes) == {"Y": 6, "X": 9}
        assert f.experiment == []
        assert_same(f.binary_data[0].asarray(), labels["only"])


def test_layer_order_and_metadata(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    order = ["zeta", "alpha", "Mid", "", "élan ☃"]
    labels = {name: blobs(rng, (2, 8, 8)) for name in order}
    path = write_nd2(tmp_path / "o.nd2", labels, loops=[("T", 2)])
    check_file(path, labels, [("T", 2)])
    with nd2.ND2File(path) as f:
        layers = f.binary_data
        assert [x.file_tag for x in layers] == [
            f"RleZipBinarySequence_{i}_v1" for i in range(1, 6)
        ]
        assert [x.layer_id for x in layers] == [1, 2, 3, 4, 5]
        for layer in layers:
            assert isinstance(layer.color, int) and layer.color_mode == 0
            assert layer.comp_name == "Mono" and layer.comp_order == 0
            assert layer.state == 0


def test_many_layers_keep_order(tmp_path: Path) -> None:
    labels = {f"L{11 - i}": np.full((2, 3), i, np.uint16) for i in range(12)}
    with nd2.ND2File(write_nd2(tmp_path / "m.nd2", labels)) as f:
        assert [x.name for x in f.binary_data] == list(labels)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8, ">u2"])
def test_image_round_trip(tmp_path: Path, dtype: str) -> None:
    rng = np.random.default_rng(5)
    loops = [("T", 2), ("Z", 3)]
    info = np.iinfo(np.dtype(dtype))
    image = rng.integers(0, int(info.max) + 1, (2, 3, 5, 7)).astype(dtype)
    labels = {"a": image > info.max // 2}
    path = write_nd2(tmp_path / "img.nd2", labels, loops=loops, image=image)
    check_file(path, labels, loops, image.astype(np.dtype(dtype).newbyteorder("=")))


def test_frame_times_and_positions(tmp_path: Path) -> None:
    loops = [("T", 3), ("P", 2)]
    path = write_nd2(
        tmp_path / "t.nd2", {"a": np.zeros((3, 2, 4, 4), int)}, loops=loops
    )
    with nd2.ND2File(path) as f:
        events = f.events(orient="list")
        assert events["Time [s]"] == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
        assert events["Position Name"] == ["P1", "P2"] * 3
        assert f.experiment[1].parameters.points[1].name == "P2"


def test_chunk_layout(tmp_path: Path) -> None:
    """Chunks start on 4096-byte boundaries; the file ends with the map's tail."""
    path = write_nd2(
        tmp_path / "c.nd2", {"a": np.ones((2, 3, 3), int)}, loops=[("Z", 2)]
    )
    raw = path.read_bytes()
    signature, offset = CHUNKMAP_LOCATION.unpack(raw[-40:])
    assert signature == CHUNKMAP_SIGNATURE
    with nd2.ND2File(path) as f:
        chunkmap = f._rdr.chunkmap
    assert len(chunkmap) == 3 + 2 + 1 + 1 + 2  # meta, images, times, layer, masks
    for name, (start, size) in chunkmap.items():
        assert start % CHUNK_ALIGNMENT == 0, name
        magic, name_len, data_len = CHUNK_HEADER.unpack_from(raw, start)
        assert magic == CHUNK_MAGIC and data_len == size
        assert raw[start + 16 : start + 16 + name_len].rstrip(b"\x00") == name
    assert offset % CHUNK_ALIGNMENT == 0 and len(raw) % CHUNK_ALIGNMENT == 0


@settings(max_examples=12, deadline=None)
@given(
    loops=st.lists(
        st.tuples(st.sampled_from("TPZ"), st.integers(1, 3)),
        max_size=3,
        unique_by=lambda loop: loop[0],
    ),
    frame=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    n_layers=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_file_round_trip_random(
    tmp_path_factory: pytest.TempPathFactory,
    loops: list[tuple[str, int]],
    frame: tuple[int, int],
    n_layers: int,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    shape = (*(n for _, n in loops), *frame)
    labels = {f"layer{i}": blobs(rng, shape, 65535) for i in range(n_layers)}
    image = rng.integers(0, 65536, shape, dtype=np.uint16)
    path = tmp_path_factory.mktemp("rand") / "r.nd2"
    write_nd2(path, labels, loops=loops, image=image)
    check_file(path, labels, loops, image)


# ---------------------------------------------------------------------------
# errors and atomicity


GOOD = {"a": np.zeros((2, 4, 4), np.uint16)}


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "match"),
    [
        (GOOD, {"loops": [("T", 3)]}, ValueError, r"shape \(2, 4, 4\).*\(3, Y, X\)"),
        (GOOD, {}, ValueError, "need shape"),
        (GOOD, {"loops": [("T", 2), ("Z", 1)]}, ValueError, "need shape"),
        ({"a": np.zeros((2, 4, 4))}, {"loops": [("T", 2)]}, TypeError, "float64"),
        (
            {"a": -np.ones((2, 4, 4), int)},
            {"loops": [("T", 2)]},
            ValueError,
            "negative",
        ),
        (
            {"a": np.full((2, 4, 4), 65536)},
            {"loops": [("T", 2)]},
            ValueError,
            "65536",
        ),
        ({}, {}, ValueError, "empty"),
        (GOOD, {"loops": [("T", 2), ("T", 2)]}, ValueError, "more than once"),
        (GOOD, {"loops": [("C", 2)]}, ValueError, "unknown loop"),
        (
            {"a": np.zeros((0, 4, 4), int)},
            {"loops": [("T", 0)]},
            ValueError,
            ">= 1",
        ),
        (GOOD, {"loops": [("T", 2.0)]}, TypeError, "int"),
        (GOOD, {"loops": ["T"]}, TypeError, "pair"),
        (
            {"a": GOOD["a"], "b": np.zeros((2, 4, 5), int)},
            {"loops": [("T", 2)]},
            ValueError,
            "same shape",
        ),
        ({"a": np.zeros((2, 0, 4), int)}, {"loops": [("T", 2)]}, ValueError, "empty"),
        ({1: GOOD["a"]}, {"loops": [("T", 2)]}, TypeError, "str"),
        ({"a\x00": GOOD["a"]}, {"loops": [("T", 2)]}, ValueError, "NUL"),
        (
            GOOD,
            {"loops": [("T", 2)], "image": np.zeros((2, 4, 4), np.int16)},
            TypeError,
            "uint8, uint16 or float32",
        ),
        (
            GOOD,
            {"loops": [("T", 2)], "image": np.zeros((2, 4, 5), np.uint16)},
            ValueError,
            "image has shape",
        ),
        ([np.zeros((4, 4))], {}, TypeError, "mapping"),
    ],
)
def test_bad_arguments(
    tmp_path: Path, labels: dict, kwargs: dict, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        write_nd2(tmp_path / "bad.nd2", labels, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_refuses_directory(tmp_path: Path) -> None:
    (tmp_path / "d.nd2").mkdir()
    with pytest.raises(IsADirectoryError):
        write_nd2(tmp_path / "d.nd2", GOOD, loops=[("T", 2)])
    assert [p.name for p in tmp_path.iterdir()] == ["d.nd2"]


def _fail_on_call(n: int, real):
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.parametrize("where", ["mask", "fsync", "replace"])
def test_atomic_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool, where: str
) -> None:
    target = tmp_path / "out.nd2"
    before = b"precious bytes"
    if existing:
        target.write_bytes(before)
    if where == "mask":  # fail in the middle of the mask chunks
        monkeypatch.setattr(
            writer_module,
            "encode_mask_chunk",
            _fail_on_call(3, writer_module.encode_mask_chunk),
        )
    else:
        monkeypatch.setattr(os, where, _fail_on_call(1, getattr(os, where)))
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_nd2(target, {"a": np.ones((4, 3, 3), int)}, loops=[("Z", 4)])
    monkeypatch.undo()
    if existing:
        assert target.read_bytes() == before
        assert [p.name for p in tmp_path.iterdir()] == ["out.nd2"]
    else:
        assert list(tmp_path.iterdir()) == []


def test_overwrites_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out.nd2"
    target.write_bytes(b"old")
    labels = {"a": np.eye(5, dtype=np.uint16)}
    assert write_nd2(str(target), labels) == target
    assert [p.name for p in tmp_path.iterdir()] == ["out.nd2"]
    check_file(target, labels, [])
