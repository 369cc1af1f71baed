"""FrameDataset(device="cuda") gives device="cpu"'s values, as device arrays.

Runs on a real GPU with CuPy, or under numba's CUDA simulator (tests/conftest.py
turns it on when no GPU driver is present): images go through the pinned
staging buffers and stream copies of ``_backends/cuda/images.py`` either way.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_labels
from nd2_surgery import rewrite

import nd2gpu
from nd2gpu._backends.cuda import images as staging
from nd2gpu._device import cuda_status, to_numpy

ok, why = cuda_status()
pytestmark = pytest.mark.skipif(not ok, reason=f"CUDA path not usable: {why}")


def is_device_array(array) -> bool:
    return hasattr(array, "__cuda_array_interface__") and not isinstance(
        array, np.ndarray
    )


@pytest.fixture
def small_groups(monkeypatch):
    """One frame per staging group: both buffers take turns, many times."""
    monkeypatch.setattr(staging, "STAGING_BYTES", 1)


def write(tmp_path, rng, compression, channels=None):
    counts = (3, 2)
    shape = (*counts, *((channels,) if channels else ()), 7, 9)
    image = rng.integers(0, 65535, shape, endpoint=True).astype(np.uint16)
    labels = {name: random_labels(rng, (*counts, 7, 9)) for name in ("a", "b")}
    return nd2gpu.write_nd2(
        tmp_path / f"{compression}.nd2",
        labels,
        loops=[("T", 3), ("Z", 2)],
        image=image,
        image_compression=compression,
    )


@pytest.mark.parametrize("compression", [None, "lossless"])
@pytest.mark.parametrize("channels", [None, 2])
def test_cuda_equals_cpu(tmp_path, rng, small_groups, compression, channels):
    path = write(tmp_path, rng, compression, channels)
    cpu = nd2gpu.FrameDataset(path)
    gpu = nd2gpu.FrameDataset(path, device="cuda")
    assert gpu.device == "cuda"
    for key in ([5, 0, 3, 5], slice(None), 4):
        images, masks = gpu[key]
        assert is_device_array(images) and is_device_array(masks)
        expected_images, expected_masks = cpu[key]
        assert images.shape == expected_images.shape
        assert images.dtype == expected_images.dtype
        np.testing.assert_array_equal(to_numpy(images), expected_images)
        np.testing.assert_array_equal(to_numpy(masks), expected_masks)


def test_cuda_out_buffers(tmp_path, rng, small_groups):
    path = write(tmp_path, rng, "lossless")
    cpu = nd2gpu.FrameDataset(path, layers=["b"])
    gpu = nd2gpu.FrameDataset(path, layers=["b"], device="cuda")
    images = staging.empty((3, *gpu.image_shape), gpu.dtype)
    masks = staging.empty((3, *gpu.mask_shape), np.dtype(np.uint16))
    out = (images, masks)
    for frames in ([1, 4, 0], [2, 2, 5]):
        assert gpu.get(frames, out=out) is out
        expected_images, expected_masks = cpu[frames]
        np.testing.assert_array_equal(to_numpy(images), expected_images)
        np.testing.assert_array_equal(to_numpy(masks), expected_masks)
    host = (
        np.empty((3, *gpu.image_shape), gpu.dtype),
        np.empty((3, 1, 7, 9), np.uint16),
    )
    with pytest.raises(TypeError, match="out images must be a CUDA array"):
        gpu.get([0, 1, 2], out=host)
    wrong = staging.empty((3, *gpu.image_shape), np.dtype(np.uint8))
    with pytest.raises(TypeError, match="out images must be uint16"):
        gpu.get([0, 1, 2], out=(wrong, masks))
    with pytest.raises(ValueError, match="out masks have shape"):
        gpu.get([0, 1], out=(images[:2], masks))


def test_cuda_errors_name_the_frame_and_leave_the_stager_usable(
    tmp_path, rng, small_groups
):
    path = write(tmp_path, rng, "lossless")
    bad = rewrite(
        path,
        tmp_path / "bad.nd2",
        lambda n, d: d[:8] + b"\xff" * 16 if n == b"ImageDataSeq|3!" else d,
    )
    gpu = nd2gpu.FrameDataset(bad, device="cuda")
    with pytest.raises(nd2gpu.DecodeError, match="frame 3") as e:
        gpu[[0, 1, 2, 3, 4]]
    assert e.value.frame == 3 and e.value.path == str(bad)
    images, _ = gpu[[4, 0]]
    np.testing.assert_array_equal(to_numpy(images), nd2gpu.FrameDataset(bad)[[4, 0]][0])
