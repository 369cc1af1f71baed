"""write_nd2's images: channels, dtypes and zlib compression, read back by nd2."""

from __future__ import annotations

import zlib

import nd2
import numpy as np
import pytest
from nd2_surgery import chunks

from nd2gpu import write_nd2
from nd2gpu._format.image_frames import FRAME_TIMESTAMP, PIXELS_OFFSET


def labels_for(counts: tuple[int, ...], frame: tuple[int, int]) -> dict:
    labels = np.zeros((*counts, *frame), np.uint16)
    labels[..., 1:3, 2:5] = 1
    return {"cells": labels}


@pytest.mark.parametrize("compression", [None, "lossless"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("channels", [None, 1, 4])
def test_nd2_reads_the_images_back(tmp_path, rng, compression, dtype, channels):
    counts, frame = (2, 3), (6, 5)
    shape = (*counts, *((channels,) if channels else ()), *frame)
    image = (rng.random(shape) * 250).astype(dtype)
    path = write_nd2(
        tmp_path / "img.nd2",
        labels_for(counts, frame),
        loops=[("T", 2), ("Z", 3)],
        image=image,
        image_compression=compression,
    )
    with nd2.ND2File(path) as f:
        assert f.attributes.compressionType == compression
        assert f.dtype == np.dtype(dtype)
        names = [c.channel.name for c in f.metadata.channels]
        expected = image[:, :, 0] if channels == 1 else image
        np.testing.assert_array_equal(f.asarray(), expected)
        assert f.attributes.channelCount == (channels or 1)
    assert names == (["Mono"] if (channels or 1) == 1 else ["Ch1", "Ch2", "Ch3", "Ch4"])


def test_channel_names_and_the_stored_bytes(tmp_path, rng):
    image = rng.integers(0, 65535, (2, 3, 4, 5), dtype=np.uint16)
    labels = labels_for((2,), (4, 5))
    plain = write_nd2(
        tmp_path / "plain.nd2",
        labels,
        loops=[("T", 2)],
        image=image,
        channel_names=["DAPI", "GFP", "RFP"],
    )
    packed = write_nd2(
        tmp_path / "packed.nd2",
        labels,
        loops=[("T", 2)],
        image=image,
        channel_names=("DAPI", "GFP", "RFP"),
        image_compression="lossless",
    )
    with nd2.ND2File(plain) as f:
        assert [c.channel.name for c in f.metadata.channels] == ["DAPI", "GFP", "RFP"]
        assert f.binary_data[0].comp_name == "DAPI"
    stored = {name: (offset, data) for name, offset, _, data in chunks(plain)}
    raw = plain.read_bytes()
    for seq in range(2):
        interleaved = np.moveaxis(image[seq], 0, -1).astype("<u2").tobytes()
        offset, data = stored[f"ImageDataSeq|{seq}!".encode()]
        at = offset + PIXELS_OFFSET
        assert raw[at : at + len(interleaved)] == interleaved
        assert data[FRAME_TIMESTAMP.size :] == interleaved
        _, compressed = {n: (o, d) for n, o, _, d in chunks(packed)}[
            f"ImageDataSeq|{seq}!".encode()
        ]
        assert compressed[: FRAME_TIMESTAMP.size] == data[: FRAME_TIMESTAMP.size]
        assert zlib.decompress(compressed[FRAME_TIMESTAMP.size :]) == interleaved


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"image": np.zeros((2, 2, 2, 4, 5), np.uint8)}, ValueError, "image has shape"),
        ({"image": np.zeros((2, 0, 4, 5), np.uint8)}, ValueError, "no channel"),
        ({"image": np.zeros((2, 4, 5), bool)}, TypeError, "image must be"),
        (
            {"image": np.zeros((2, 2, 4, 5), np.uint8), "channel_names": ["a"]},
            ValueError,
            "1 channel names for 2 image channel",
        ),
        ({"channel_names": "Mono"}, TypeError, "sequence of str"),
        ({"channel_names": [3]}, TypeError, "channel names must be str"),
        ({"channel_names": ["a\x00b"]}, ValueError, "NUL"),
        ({"image_compression": "jpeg"}, ValueError, "image_compression must be"),
    ],
)
def test_bad_image_arguments(tmp_path, kwargs, error, match):
    target = tmp_path / "x.nd2"
    with pytest.raises(error, match=match):
        write_nd2(target, labels_for((2,), (4, 5)), loops=[("T", 2)], **kwargs)
    assert not target.exists()
