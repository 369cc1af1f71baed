"""nd2gpu.FrameDataset against nd2: images equal ``read_frame``, masks equal
``binary_data``, on files written by write_nd2 (images uncompressed and
zlib-compressed, several channels and layers, frames without masks, loops)."""

from __future__ import annotations

import io
import multiprocessing
import os
import pickle
import zlib
from pathlib import Path

import nd2
import numpy as np
import pytest
from conftest import random_labels
from http_server import serving
from nd2._parse._clx_lite import json_from_clx_lite_variant
from nd2_surgery import rewrite

import nd2gpu
from nd2gpu._dataset import dataset as dataset_module
from nd2gpu._format.clx_lite import encode_clx_lite
from nd2gpu._format.image_frames import FRAME_TIMESTAMP
from nd2gpu._write.nd2_writer import _binary_metadata

pytestmark = pytest.mark.filterwarnings(
    # Python 3.12+ warns on every fork of a process with threads.
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)

COMPRESSIONS = [None, "lossless"]
#: How long a child process may take (a deadlock fails instead of hanging).
CHILD_TIMEOUT = 120


def write(
    tmp_path: Path,
    rng: np.random.Generator,
    *,
    loops=(("T", 2), ("Z", 3)),
    layers=("cells", "nuclei"),
    frame_shape=(13, 17),
    channels: int | None = None,
    dtype="uint16",
    compression=None,
    name="f.nd2",
    channel_names=None,
) -> tuple[Path, np.ndarray]:
    """A file of random labels and a random image; its path and image."""
    counts = tuple(c for _, c in loops)
    shape = counts + ((channels,) if channels else ()) + tuple(frame_shape)
    if dtype == "float32":
        image = rng.standard_normal(shape).astype(np.float32)
    else:
        image = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    labels = {
        layer: random_labels(rng, counts + tuple(frame_shape)) for layer in layers
    }
    path = nd2gpu.write_nd2(
        tmp_path / name,
        labels,
        loops=list(loops),
        image=image,
        channel_names=channel_names,
        image_compression=compression,
    )
    return path, image


def reference(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """nd2's ``read_frame(i)`` for every frame, and its masks as
    ``(frames, n_layers, Y, X)`` (zeros where a frame has none)."""
    with nd2.ND2File(path) as f:
        n = f._frame_count
        frames = [np.array(f.read_frame(i)) for i in range(n)]
        layers = f.binary_data or []
        shape = (f.attributes.heightPx, f.attributes.widthPx)
        masks = np.zeros((n, len(layers), *shape), np.uint16)
        for j, layer in enumerate(layers):
            for i in range(n):
                if layer[i] is not None:
                    masks[i, j] = layer[i]
    return frames, masks


def assert_matches_nd2(ds: nd2gpu.FrameDataset, path: Path) -> None:
    frames, masks = reference(path)
    assert len(ds) == len(frames)
    for i, expected in enumerate(frames):
        image, mask = ds[i]
        assert image.dtype == expected.dtype and image.shape == expected.shape
        np.testing.assert_array_equal(image, expected)
        np.testing.assert_array_equal(mask, masks[i])
        assert mask.dtype == np.uint16
    order = np.random.default_rng(1).permutation(len(frames))
    images, got = ds[order]
    np.testing.assert_array_equal(images, np.stack([frames[i] for i in order]))
    np.testing.assert_array_equal(got, masks[order])


# --- equality with nd2 ----------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize(
    "loops",
    [
        (),
        (("T", 3),),
        (("P", 2),),
        (("T", 2), ("P", 2), ("Z", 3)),
        (("Z", 1), ("T", 2)),
    ],
)
def test_loops_match_nd2(tmp_path, rng, loops, compression):
    path, _ = write(tmp_path, rng, loops=loops, compression=compression)
    ds = nd2gpu.FrameDataset(path)
    assert_matches_nd2(ds, path)
    with nd2.ND2File(path) as f:
        expected = f.loop_indices
    assert [ds.coords(i) for i in range(len(ds))] == list(expected)
    assert ds.coords(-1) == expected[-1]


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("channels", [None, 1, 3])
def test_images_match_nd2(tmp_path, rng, dtype, channels, compression):
    path, image = write(
        tmp_path,
        rng,
        loops=(("T", 2),),
        channels=channels,
        dtype=dtype,
        compression=compression,
        frame_shape=(7, 9),
    )
    ds = nd2gpu.FrameDataset(path)
    assert ds.dtype == np.dtype(dtype)
    assert_matches_nd2(ds, path)
    images, _ = ds[:]
    expected = image if channels != 1 else image[:, 0]
    np.testing.assert_array_equal(images, expected)


def test_frames_without_masks_are_zeros(tmp_path, rng):
    path, _ = write(tmp_path, rng, loops=(("T", 4),), layers=("a", "b", "c"))
    dropped = {
        b"CustomDataSeq|RleZipBinarySequence_1_v1|1!",
        b"CustomDataSeq|RleZipBinarySequence_2_v1|1!",
        b"CustomDataSeq|RleZipBinarySequence_2_v1|3!",
    }
    edited = rewrite(
        path, tmp_path / "holes.nd2", lambda n, d: None if n in dropped else d
    )
    # A layer with no mask in any frame at all, too.
    empty = rewrite(
        edited,
        tmp_path / "empty.nd2",
        lambda n, d: (
            None if n.startswith(b"CustomDataSeq|RleZipBinarySequence_3") else d
        ),
    )
    ds = nd2gpu.FrameDataset(empty)
    assert_matches_nd2(ds, empty)
    _, masks = ds[:]
    assert not masks[1, :2].any() and not masks[3, 1].any() and not masks[:, 2].any()
    assert masks[0, 0].any()


def test_frames_without_image_data_are_zeros(tmp_path, rng):
    path, _ = write(tmp_path, rng, loops=(("T", 3),))
    edited = rewrite(
        path, tmp_path / "gap.nd2", lambda n, d: None if n == b"ImageDataSeq|1!" else d
    )
    ds = nd2gpu.FrameDataset(edited)
    assert_matches_nd2(ds, edited)
    assert not ds[1][0].any() and ds[0][0].any()


def pad_rows(src: Path, dst: Path, pad: int) -> Path:
    """``src`` with every image row padded by ``pad`` bytes (``uiWidthBytes``
    grown to match), as files with aligned rows store them."""
    with nd2.ND2File(src) as f:
        a = f.attributes
        row = a.widthPx * a.componentCount * a.bitsPerComponentInMemory // 8
        height = a.heightPx
        compressed = a.compressionType == "lossless"

    def edit(name: bytes, data: bytes) -> bytes:
        if name == b"ImageAttributesLV!":
            attrs = json_from_clx_lite_variant(data, strip_prefix=False)
            attrs["SLxImageAttributes"]["uiWidthBytes"] += pad
            return encode_clx_lite(attrs)
        if not name.startswith(b"ImageDataSeq|"):
            return data
        head, body = data[: FRAME_TIMESTAMP.size], data[FRAME_TIMESTAMP.size :]
        pixels = zlib.decompress(body) if compressed else body
        rows = np.frombuffer(pixels, np.uint8).reshape(height, row)
        noise = np.full((height, pad), 0xA5, np.uint8)  # never read
        padded = np.hstack([rows, noise]).tobytes()
        return head + (zlib.compress(padded) if compressed else padded)

    return rewrite(src, dst, edit)


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize(("dtype", "channels"), [("uint8", None), ("uint16", 3)])
def test_padded_rows_match_nd2(tmp_path, rng, compression, dtype, channels):
    path, image = write(
        tmp_path,
        rng,
        loops=(("T", 2),),
        channels=channels,
        dtype=dtype,
        compression=compression,
        frame_shape=(5, 7),
    )
    padded = pad_rows(path, tmp_path / "padded.nd2", 6)
    with nd2.ND2File(padded) as f:
        assert (
            f.attributes.widthBytes > f.attributes.widthPx * f.attributes.componentCount
        )
    ds = nd2gpu.FrameDataset(padded)
    assert_matches_nd2(ds, padded)
    np.testing.assert_array_equal(ds[:][0], image)


def as_rgb(src: Path, dst: Path) -> Path:
    """``src`` (3 channels) with one picture plane of 3 components: an RGB file."""

    def edit(name: bytes, data: bytes) -> bytes:
        if name != b"ImageMetadataSeqLV|0!":
            return data
        meta = json_from_clx_lite_variant(data, strip_prefix=False)
        planes = meta["SLxPictureMetadata"]["sPicturePlanes"]
        planes["uiCount"] = 1
        planes["sPlaneNew"] = {"a0": {**planes["sPlaneNew"]["a0"], "uiCompCount": 3}}
        return encode_clx_lite(meta)

    return rewrite(src, dst, edit)


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("pad", [0, 2])
def test_rgb_frames_match_nd2(tmp_path, rng, compression, pad):
    path, image = write(
        tmp_path,
        rng,
        loops=(("T", 2),),
        channels=3,
        dtype="uint8",
        compression=compression,
        frame_shape=(5, 7),
    )
    rgb = as_rgb(path, tmp_path / "rgb.nd2")
    if pad:
        rgb = pad_rows(rgb, tmp_path / "rgb-padded.nd2", pad)
    with nd2.ND2File(rgb) as f:
        assert f.is_rgb and f.read_frame(0).shape == (5, 7, 3)
    ds = nd2gpu.FrameDataset(rgb)
    assert ds.image_shape == (5, 7, 3)
    assert_matches_nd2(ds, rgb)
    np.testing.assert_array_equal(ds[:][0], np.moveaxis(image, 1, -1))


# --- selections ------------------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_channels_by_index_and_name(tmp_path, rng, compression):
    path, image = write(
        tmp_path,
        rng,
        loops=(("T", 2),),
        channels=3,
        compression=compression,
        channel_names=["DAPI", "GFP", "RFP"],
    )
    all_channels = nd2gpu.FrameDataset(path)
    assert all_channels.image_shape == (3, 13, 17)
    assert all_channels.channel_names == ("DAPI", "GFP", "RFP")
    one = nd2gpu.FrameDataset(path, channels="GFP")
    assert one.image_shape == (13, 17) and one.channel_names == ("GFP",)
    np.testing.assert_array_equal(one[1][0], image[1, 1])
    np.testing.assert_array_equal(one[:][0], image[:, 1])
    picked = nd2gpu.FrameDataset(path, channels=[2, "DAPI"])
    assert picked.image_shape == (2, 13, 17)
    np.testing.assert_array_equal(picked[[1, 0]][0], image[[1, 0]][:, [2, 0]])
    single = nd2gpu.FrameDataset(path, channels=[1])
    assert single.image_shape == (1, 13, 17)
    np.testing.assert_array_equal(single[0][0], image[0, [1]])
    with nd2.ND2File(path) as f:
        np.testing.assert_array_equal(one[0][0], f.read_frame(0)[1])


def test_channel_axis_kept_for_a_list_on_one_channel_files(tmp_path, rng):
    path, image = write(tmp_path, rng, loops=(("T", 2),))
    ds = nd2gpu.FrameDataset(path, channels=[0])
    assert ds.image_shape == (1, 13, 17)
    np.testing.assert_array_equal(ds[:][0], image[:, None])
    assert nd2gpu.FrameDataset(path, channels=0).image_shape == (13, 17)


def test_layers_by_index_and_name(tmp_path, rng):
    path, _ = write(tmp_path, rng, layers=("cells", "nuclei", "spots"))
    _, masks = reference(path)
    ds = nd2gpu.FrameDataset(path, layers=["spots", 0])
    assert ds.layer_names == ("spots", "cells") and ds.mask_shape == (2, 13, 17)
    np.testing.assert_array_equal(ds[:][1], masks[:, [2, 0]])
    one = nd2gpu.FrameDataset(path, layers="nuclei")
    assert one[3][1].shape == (1, 13, 17)
    np.testing.assert_array_equal(one[3][1], masks[3, [1]])
    none = nd2gpu.FrameDataset(path, layers=[])
    images, nothing = none[[0, 1]]
    assert nothing.shape == (2, 0, 13, 17) and images.shape == (2, 13, 17)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"channels": 1}, ValueError, "channel 1 out of range"),
        ({"channels": "GFP"}, ValueError, "no channel named 'GFP'"),
        ({"channels": 1.5}, TypeError, "index or a name"),
        ({"layers": 2}, ValueError, "binary layer 2 out of range"),
        ({"layers": ["cells", "dots"]}, ValueError, "no binary layer named 'dots'"),
        ({"layers": True}, TypeError, "index or a name"),
        ({"device": "gpu"}, ValueError, "device must be one of"),
    ],
)
def test_bad_selections(tmp_path, rng, kwargs, error, match):
    path, _ = write(tmp_path, rng)
    with pytest.raises(error, match=match):
        nd2gpu.FrameDataset(path, **kwargs)


def test_repeated_layer_names_need_an_index(tmp_path, rng):
    path, _ = write(tmp_path, rng, layers=("a", "b"))
    _, metadata = _binary_metadata(["x", "x"], "Mono")  # the same file tags
    same = rewrite(
        path,
        tmp_path / "same.nd2",
        lambda n, d: metadata if n == b"CustomDataVar|BinaryMetadata_v1!" else d,
    )
    assert nd2gpu.FrameDataset(same).layer_names == ("x", "x")
    with pytest.raises(ValueError, match="more than one binary layer named 'x'"):
        nd2gpu.FrameDataset(same, layers="x")
    assert nd2gpu.FrameDataset(same, layers=[1]).layer_names == ("x",)


# --- indexing, batches and buffers ----------------------------------------------


def test_indexing_as_nd2_users_index(tmp_path, rng):
    path, _ = write(tmp_path, rng)
    frames, masks = reference(path)
    ds = nd2gpu.FrameDataset(path)
    images = np.stack(frames)
    for key in ([5, 0, 5], np.array([1, -1]), slice(1, None, 2), range(3), [-6]):
        got_images, got_masks = ds[key]
        expected = np.arange(6)[key]
        np.testing.assert_array_equal(got_images, images[expected])
        np.testing.assert_array_equal(got_masks, masks[expected])
    chosen = np.array([True, False, False, True, False, True])
    np.testing.assert_array_equal(ds[chosen][0], images[chosen])
    empty_images, empty_masks = ds[[]]
    assert empty_images.shape == (0, 13, 17) and empty_masks.shape == (0, 2, 13, 17)
    np.testing.assert_array_equal(ds[-1][0], frames[-1])
    for bad in (6, -7, [0, 6]):
        with pytest.raises(IndexError, match="out of range"):
            ds[bad]
    with pytest.raises(IndexError):
        ds.coords(6)
    assert sum(1 for _ in ds) == 6  # iteration stops at the IndexError
    with pytest.raises(TypeError):
        ds["0"]


def test_out_buffers_are_filled_in_place(tmp_path, rng):
    path, _ = write(tmp_path, rng, channels=2, dtype="uint8")
    frames, masks = reference(path)
    ds = nd2gpu.FrameDataset(path)
    images = np.full((3, *ds.image_shape), 7, ds.dtype)
    labels = np.full((3, *ds.mask_shape), 7, np.uint16)
    out = (images, labels)
    assert ds.get([4, 2, 4], out=out) is out
    np.testing.assert_array_equal(images, np.stack([frames[i] for i in (4, 2, 4)]))
    np.testing.assert_array_equal(labels, masks[[4, 2, 4]])
    one = (np.empty(ds.image_shape, ds.dtype), np.empty(ds.mask_shape, np.uint16))
    ds.get(1, out=one)
    np.testing.assert_array_equal(one[0], frames[1])
    np.testing.assert_array_equal(one[1], masks[1])


@pytest.mark.parametrize(
    ("images", "masks", "error", "match"),
    [
        ((2, 2, 13, 17), (2, 2, 13, 17), TypeError, "images must be uint8"),
        ((2, 2, 13, 16), (2, 2, 13, 17), ValueError, "images have shape"),
        ((2, 2, 13, 17), (2, 1, 13, 17), ValueError, "masks have shape"),
    ],
)
def test_bad_out_buffers(tmp_path, rng, images, masks, error, match):
    path, _ = write(tmp_path, rng, channels=2, dtype="uint8")
    ds = nd2gpu.FrameDataset(path)
    dtype = np.uint16 if error is TypeError else np.uint8
    out = (np.zeros(images, dtype), np.zeros(masks, np.uint16))
    with pytest.raises(error, match=match):
        ds.get([0, 1], out=out)


def test_out_buffers_must_be_contiguous_writeable_pairs(tmp_path, rng):
    path, _ = write(tmp_path, rng)
    ds = nd2gpu.FrameDataset(path)
    masks = np.zeros((2, 2, 13, 17), np.uint16)
    strided = np.zeros((2, 13, 34), np.uint16)[..., ::2]
    with pytest.raises(ValueError, match="images must be C-contiguous"):
        ds.get([0, 1], out=(strided, masks))
    frozen = np.zeros((2, 13, 17), np.uint16)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        ds.get([0, 1], out=(frozen, masks))
    with pytest.raises(TypeError, match="pair"):
        ds.get([0, 1], out=masks)
    with pytest.raises(ValueError, match="masks must be C-contiguous"):
        ds.get(
            [0, 1], out=(frozen.copy(), np.zeros((2, 2, 13, 34), np.uint16)[..., ::2])
        )


def test_large_batches_use_the_thread_pool(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(dataset_module, "INLINE_BYTES", 0)
    for compression in COMPRESSIONS:
        path, _ = write(
            tmp_path,
            rng,
            loops=(("T", 5),),
            compression=compression,
            name=f"{compression}.nd2",
        )
        assert_matches_nd2(nd2gpu.FrameDataset(path), path)


def test_threads_share_a_dataset(tmp_path, rng, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(dataset_module, "INLINE_BYTES", 0)
    path, _ = write(tmp_path, rng, loops=(("T", 8),), compression="lossless")
    frames, masks = reference(path)
    ds = nd2gpu.FrameDataset(path)
    batches = [np.random.default_rng(i).choice(8, 5) for i in range(24)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ds.__getitem__, batches))
    for batch, (images, got) in zip(batches, results, strict=True):
        np.testing.assert_array_equal(images, np.stack([frames[i] for i in batch]))
        np.testing.assert_array_equal(got, masks[batch])


def test_views_of_the_map_outlive_close(tmp_path, rng):
    from nd2gpu._sources import LocalFile

    path, _ = write(tmp_path, rng)
    source = LocalFile(path)
    view = source.view(0, 32)
    head = bytes(view)
    source.close()  # the map stays until the view goes
    assert bytes(view) == head == path.read_bytes()[:32]
    with pytest.raises(ValueError, match="closed"):
        source.view(0, 32)
    del view


# --- sources ---------------------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_remote_files_read_a_batch_at_once(tmp_path, rng, compression):
    path, _ = write(tmp_path, rng, loops=(("T", 20),), compression=compression)
    with serving() as (base, files):
        files.content["/f.nd2"] = path.read_bytes()
        ds = nd2gpu.FrameDataset(base + "/f.nd2")
        files.reset()
        images, masks = ds[list(range(20))]
        # Two windows of image frames (16 + 4), one request each, then one
        # for the masks of both layers.
        assert len(files.gets()) == 3
        expected_images, expected_masks = nd2gpu.FrameDataset(path)[:]
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(masks, expected_masks)


def test_file_objects_and_open_files(tmp_path, rng):
    path, _ = write(tmp_path, rng)
    expected = nd2gpu.FrameDataset(path)[:]
    buffer = io.BytesIO(path.read_bytes())
    ds = nd2gpu.FrameDataset(buffer)
    for got, want in zip(ds[:], expected, strict=True):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(TypeError, match="unnamed file object"):
        pickle.dumps(ds)
    ds.close()
    assert buffer.closed
    with nd2gpu.ND2File(path) as f:
        from_file = nd2gpu.FrameDataset(f, layers="nuclei")
    np.testing.assert_array_equal(from_file[:][1], expected[1][:, [1]])


def test_masks_of_another_shape_are_refused(tmp_path, rng):
    path, _ = write(tmp_path, rng, frame_shape=(8, 8))
    other, _ = write(tmp_path, rng, frame_shape=(8, 9), name="other.nd2")
    masks = {
        name: data
        for name, data in ((n, d) for n, d in _chunks(other))
        if name.startswith(b"CustomDataSeq|")
    }
    mixed = rewrite(path, tmp_path / "mixed.nd2", lambda n, d: masks.get(n, d))
    with pytest.raises(nd2gpu.DecodeError, match="8x9 masks but the images are 8x8"):
        nd2gpu.FrameDataset(mixed)


def _chunks(path: Path) -> list[tuple[bytes, bytes]]:
    from nd2_surgery import chunks

    return [(name, data) for name, _, _, data in chunks(path)]


# --- corrupt data ----------------------------------------------------------------


def point_chunk_at(path: Path, dst: Path, name: bytes, offset: int) -> Path:
    """``path`` with the chunk map's entry of ``name`` pointing at ``offset``."""
    data = bytearray(path.read_bytes())
    at = data.rindex(name) + len(name)  # the chunk map lies at the end
    data[at : at + 8] = offset.to_bytes(8, "little")
    dst.write_bytes(bytes(data))
    return dst


def test_pixels_past_the_end_of_the_file(tmp_path, rng):
    path, _ = write(tmp_path, rng, loops=(("T", 3),), frame_shape=(64, 64))
    size = path.stat().st_size
    cut = point_chunk_at(path, tmp_path / "cut.nd2", b"ImageDataSeq|2!", size - 4200)
    with nd2.ND2File(cut) as f:
        assert not f.read_frame(2).any()  # nd2 gives zeros
    ds = nd2gpu.FrameDataset(cut)
    np.testing.assert_array_equal(ds[1][0], reference(cut)[0][1])
    with pytest.raises(nd2gpu.DecodeError, match="past the end of the file") as e:
        ds[[0, 2]]
    assert (e.value.path, e.value.frame) == (str(cut), 2)


def test_corrupt_compressed_frame(tmp_path, rng):
    path, _ = write(tmp_path, rng, loops=(("T", 3),), compression="lossless")

    def corrupt(name: bytes, data: bytes) -> bytes:
        if name == b"ImageDataSeq|1!":
            return data[:8] + data[8:12] + b"\xff" * 8 + data[20:]
        if name == b"ImageDataSeq|2!":
            return data[: len(data) // 2]  # truncated stream
        return data

    bad = rewrite(path, tmp_path / "bad.nd2", corrupt)
    ds = nd2gpu.FrameDataset(bad)
    with nd2.ND2File(bad) as f:
        np.testing.assert_array_equal(ds[0][0], f.read_frame(0))
        for i in (1, 2):
            with pytest.raises(zlib.error):
                f.read_frame(i)
    with pytest.raises(nd2gpu.DecodeError, match=r"corrupt zlib stream.*frame 1") as e:
        ds[[0, 1]]
    assert e.value.path == str(bad) and e.value.frame == 1
    with pytest.raises(nd2gpu.DecodeError, match=r"truncated.*frame 2"):
        ds[2]


def test_compressed_frames_of_the_wrong_size(tmp_path, rng):
    path, _ = write(tmp_path, rng, loops=(("T", 2),), compression="lossless")

    def resize(name: bytes, data: bytes) -> bytes:
        if name == b"ImageDataSeq|0!":
            return data[:8] + zlib.compress(zlib.decompress(data[8:])[:-2])
        if name == b"ImageDataSeq|1!":
            return data[:8] + zlib.compress(zlib.decompress(data[8:]) + b"\0" * 2)
        return data

    bad = rewrite(path, tmp_path / "sizes.nd2", resize)
    ds = nd2gpu.FrameDataset(bad)
    with pytest.raises(nd2gpu.DecodeError, match=r"a frame needs 442.*frame 0"):
        ds[0]
    with pytest.raises(nd2gpu.DecodeError, match=r"more than a frame holds.*frame 1"):
        ds[1]


def test_corrupt_mask_names_layer_and_frame(tmp_path, rng):
    path, _ = write(tmp_path, rng, loops=(("T", 3),))
    name = b"CustomDataSeq|RleZipBinarySequence_2_v1|2!"
    bad = rewrite(
        path, tmp_path / "mask.nd2", lambda n, d: d[:4] + b"garbage" if n == name else d
    )
    ds = nd2gpu.FrameDataset(bad)
    with pytest.raises(nd2gpu.DecodeError) as e:
        ds[[0, 2]]
    assert (e.value.path, e.value.layer, e.value.frame) == (str(bad), "nuclei", 2)


# --- processes -------------------------------------------------------------------


def read_in_child(ds: nd2gpu.FrameDataset, frames: list[int]) -> tuple:
    """What a DataLoader worker does: index the pickled dataset."""
    return ds[frames]


@pytest.mark.parametrize(
    "method", ["fork", pytest.param("spawn", marks=pytest.mark.slow)]
)
def test_workers_read_in_parallel(tmp_path, rng, method):
    path, _ = write(tmp_path, rng, loops=(("T", 4),), compression="lossless")
    ds = nd2gpu.FrameDataset(path, channels=[0], layers=["nuclei"])
    expected = ds[[3, 1]]  # the parent has read (map open, pool running)
    clone = pickle.loads(pickle.dumps(ds))
    assert (clone.image_shape, clone.layer_names) == ((1, 13, 17), ("nuclei",))
    ctx = multiprocessing.get_context(method)
    with ctx.Pool(2) as pool:
        results = [pool.apply_async(read_in_child, (ds, [3, 1])) for _ in range(2)]
        for result in results:
            for got, want in zip(
                result.get(timeout=CHILD_TIMEOUT), expected, strict=True
            ):
                np.testing.assert_array_equal(got, want)


def test_pickle_holds_source_selection_and_device(tmp_path, rng):
    path, _ = write(tmp_path, rng)
    ds = nd2gpu.FrameDataset(path, channels=0, layers=[1], device="cpu")
    state = ds.__getstate__()
    assert set(state) == {"info", "selection", "layers", "source", "device"}
    assert state["device"] == "cpu" and state["source"].spec.target == str(path)
    clone = pickle.loads(pickle.dumps(ds))
    assert repr(clone) == repr(ds)
    changed = tmp_path / "changed.nd2"
    changed.write_bytes(path.read_bytes() + b"\0")
    os.replace(changed, path)  # the file changed since
    with pytest.raises(nd2gpu.DecodeError, match="changed"):
        clone[0]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_torch_dataloader_workers(tmp_path, rng, method):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    path, _ = write(tmp_path, rng, loops=(("T", 6),), compression="lossless")
    frames, masks = reference(path)
    ds = nd2gpu.FrameDataset(path)
    loader = DataLoader(
        ds,
        batch_size=4,
        num_workers=2,
        multiprocessing_context=method,
        timeout=CHILD_TIMEOUT,
    )
    images, labels = zip(*loader, strict=True)
    np.testing.assert_array_equal(torch.cat(images).numpy(), np.stack(frames))
    np.testing.assert_array_equal(torch.cat(labels).numpy(), masks)
