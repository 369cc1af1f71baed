"""write_nd2 never loses data: it refuses its own input, and a failed write changes
nothing (no partial file, no temporary file, an existing file untouched)."""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

import nd2
import numpy as np
import pytest

import nd2gpu
import nd2gpu._write.nd2_writer as writer_module
from nd2gpu._write.nd2_writer import write_nd2

LABELS = np.zeros((2, 6, 5), np.uint16)
LABELS[:, 1:3, 1:4] = 4
LABELS[1, 5, :] = 9
#: The target's single frame (its image pixels are the same values).
FRAME = LABELS[1]


def snapshot(path: Path) -> tuple[bytes, int, int]:
    st = path.stat()
    return path.read_bytes(), st.st_ino, st.st_mtime_ns


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """An existing one-frame ND2 file whose image pixels are FRAME (uint16)."""
    return write_nd2(tmp_path / "target.nd2", {"cells": FRAME}, image=FRAME)


def pixel_offset(path: Path) -> int:
    with nd2.ND2File(path) as f:
        return f._rdr._frame_offsets[0]


def assert_refused(path: Path, call) -> None:
    before = snapshot(path)
    with pytest.raises(ValueError, match=r"memory map of .*target\.nd2.*being written"):
        call()
    assert snapshot(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


# ---------------------------------------------------------------------------
# the target backing the input


def mapped_frame(path: Path) -> np.memmap:
    """The file's image pixels as a read-only memmap."""
    return np.memmap(path, np.uint16, "r", offset=pixel_offset(path), shape=(6, 5))


@pytest.mark.parametrize(
    "view",
    [
        lambda m: m,
        lambda m: m[1:, ::2],
        lambda m: m[::-1],
        lambda m: np.asarray(m),
        lambda m: m.view(np.int16).view(np.uint16),
        lambda m: m.reshape(-1).reshape(6, 5).T,
        lambda m: m.view(">u2"),  # the writer converts it: a copy, still refused
    ],
    ids=["memmap", "slice", "reversed", "asarray", "view", "transpose", "swapped"],
)
@pytest.mark.parametrize("argument", ["labels", "image"])
def test_refuses_memmap_of_the_target(target: Path, view, argument: str) -> None:
    mapped = mapped_frame(target)
    np.testing.assert_array_equal(mapped, FRAME)  # it really is the file's data
    arr = view(mapped)
    if argument == "labels":
        labels, image = {"cells": arr}, None
    else:
        labels, image = {"cells": np.zeros(arr.shape, np.uint16)}, arr
    assert_refused(target, lambda: write_nd2(target, labels, image=image))


def test_refuses_memmap_in_any_layer_through_another_path(target: Path) -> None:
    link = target.parent / "link.nd2"
    os.symlink(target, link)
    labels = {"fine": FRAME.copy(), "mapped": mapped_frame(link)}
    before = snapshot(target)
    with pytest.raises(ValueError, match=r"labels\['mapped'\] is a memory map"):
        write_nd2(target, labels)
    assert snapshot(target) == before
    with pytest.raises(ValueError, match="memory map"):
        write_nd2(link, labels)  # the same file under the link's name
    assert snapshot(target) == before


def test_refuses_mmap_backed_array(target: Path) -> None:
    # An mmap.mmap has no file name: the mapping is found in /proc/self/maps.
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("needs /proc/self/maps")
    with open(target, "rb") as fh:
        raw = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    frame = np.frombuffer(raw, np.uint16, count=30, offset=pixel_offset(target))
    frame = frame.reshape(6, 5)
    np.testing.assert_array_equal(frame, FRAME)
    before = snapshot(target)
    for labels, image in (({"c": frame[2:]}, None), ({"c": FRAME}, frame)):
        with pytest.raises(ValueError, match="memory map"):
            write_nd2(target, labels, image=image)
        assert snapshot(target) == before
    del frame, labels, image
    raw.close()


def test_accepts_copies_and_maps_of_other_files(target: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.nd2"
    write_nd2(other, {"c": mapped_frame(target)}, image=mapped_frame(target))
    write_nd2(target, {"c": np.array(mapped_frame(target)) + 1})  # a copy
    write_nd2(target, {"c": mapped_frame(other)}, image=mapped_frame(other))
    with nd2.ND2File(target) as f:
        np.testing.assert_array_equal(f.binary_data[0].asarray(), FRAME)
    new = tmp_path / "new.nd2"  # a target that does not exist yet
    write_nd2(new, {"c": mapped_frame(other)})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "new.nd2",
        "other.nd2",
        "target.nd2",
    ]


# ---------------------------------------------------------------------------
# interrupted writes


class FailingFile:
    """A file object whose write fails once ``budget`` bytes have been written."""

    def __init__(self, fh, budget: int, error: BaseException) -> None:
        self._fh = fh
        self._budget = budget
        self._error = error

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        if n > self._budget:
            self._fh.write(memoryview(data).cast("B")[: self._budget])
            raise self._error
        self._budget -= n
        return self._fh.write(data)

    def __getattr__(self, name: str):
        return getattr(self._fh, name)

    def __enter__(self) -> FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        KeyboardInterrupt(),
        MemoryError(),
    ],
    ids=["disk-full", "interrupt", "memory"],
)
@pytest.mark.parametrize("budget", [0, 100, 5000, 20000, 40000])
def test_interrupted_write_changes_nothing(
    tmp_path: Path, monkeypatch, existing: bool, error: BaseException, budget: int
) -> None:
    target = tmp_path / "out.nd2"
    if existing:
        write_nd2(target, {"old": LABELS}, loops=[("T", 2)])
        before = snapshot(target)
    real_fdopen = os.fdopen

    def failing_fdopen(fd: int, *args, **kwargs):
        return FailingFile(real_fdopen(fd, *args, **kwargs), budget, error)

    monkeypatch.setattr(writer_module.os, "fdopen", failing_fdopen)
    with pytest.raises(type(error)):
        write_nd2(target, {"new": LABELS + 1}, loops=[("T", 2)])
    monkeypatch.undo()
    if existing:
        assert snapshot(target) == before
        assert [p.name for p in tmp_path.iterdir()] == ["out.nd2"]
        with nd2.ND2File(target) as f:
            assert f.binary_data[0].name == "old"
    else:
        assert list(tmp_path.iterdir()) == []


def test_full_write_is_bigger_than_the_budgets_above(tmp_path: Path) -> None:
    # The interruptions above land before, inside and after the mask chunks.
    path = write_nd2(tmp_path / "out.nd2", {"new": LABELS + 1}, loops=[("T", 2)])
    assert path.stat().st_size > 40000


def test_failure_writing_the_chunk_map(tmp_path: Path, monkeypatch) -> None:
    target = write_nd2(tmp_path / "out.nd2", {"old": LABELS}, loops=[("T", 2)])
    before = snapshot(target)

    def finish(self) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(writer_module._ChunkWriter, "finish", finish)
    with pytest.raises(OSError, match="I/O error"):
        write_nd2(target, {"new": LABELS}, loops=[("T", 2)])
    assert snapshot(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.nd2"]


def test_readers_of_the_old_file_are_not_fooled(target: Path) -> None:
    # Replacing a file that an ND2File has open: the open file keeps reading the
    # old data (the rename leaves its inode alone); once closed, its layers
    # refuse to read the new file as if it were the old one.
    with nd2gpu.ND2File(target, device="cpu") as f:
        layers = f.binary_data
        layers[0].frame_shape  # noqa: B018 - maps the file
        write_nd2(target, {"cells": FRAME + 1})
        np.testing.assert_array_equal(layers[0].asarray(), FRAME)
    with pytest.raises(nd2gpu.DecodeError, match="changed on disk"):
        layers[0].asarray()
    with nd2gpu.ND2File(target, device="cpu") as f:
        np.testing.assert_array_equal(f.binary_data[0].asarray(), FRAME + 1)
