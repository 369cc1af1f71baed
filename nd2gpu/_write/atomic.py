"""Outputs written beside their destination and moved into place when complete.

A reader never sees half an output, and a failed write leaves the destination as
it was: everything is written under a temporary name in the destination's
directory, flushed to disk, then renamed onto the destination.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

_TEMP_ATTEMPTS = 100


def _temp_name(target: Path) -> Path:
    return target.parent / f".{target.name[:200]}.{secrets.token_hex(4)}.tmp"


@contextmanager
def atomic_file(target: Path) -> Iterator[BinaryIO]:
    """Yield a new binary file beside ``target``; it replaces ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left as it
    was. The file and the rename are flushed to disk.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(_TEMP_ATTEMPTS):
        tmp = _temp_name(target)
        try:
            fd = os.open(tmp, flags, 0o666)  # the umask applies, as for open()
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover
        raise FileExistsError(f"could not create a temporary file in {target.parent}")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    fsync_directory(target.parent)


@contextmanager
def staged_path(target: Path, *, keep_name: bool = False) -> Iterator[Path]:
    """Yield a free path beside ``target`` to write a file or a directory tree to.

    When the block succeeds, what was written there is flushed to disk and
    replaces ``target``: an existing file, link or directory tree at ``target``
    is moved aside, the new output renamed into place, and only then the old one
    removed (a link is replaced, never what it points to). On any exception the
    temporary output is removed and ``target`` is left as it was.

    Parameters
    ----------
    target : pathlib.Path
        The final path.
    keep_name : bool
        Yield ``DIR/target.name`` inside a new private directory beside
        ``target`` instead of a temporary name, for writers that record the
        name of what they write (an OME-Zarr image is named after its store).
    """
    staging = None
    if keep_name:
        staging = _free_temp_name(target)
        staging.mkdir()
        tmp = staging / target.name
    else:
        tmp = _free_temp_name(target)
    try:
        yield tmp
        fsync_tree(tmp)
        _replace(tmp, target)
    except BaseException:
        remove(tmp)
        raise
    finally:
        if staging is not None:
            remove(staging)
    fsync_directory(target.parent)


def _free_temp_name(target: Path) -> Path:
    tmp = _temp_name(target)
    while tmp.exists() or tmp.is_symlink():  # pragma: no cover - token clash
        tmp = _temp_name(target)
    return tmp


def _replace(new: Path, target: Path) -> None:
    """Rename ``new`` onto ``target``, whatever kinds of entries the two are."""
    exists = target.exists() or target.is_symlink()
    target_is_tree = target.is_dir() and not target.is_symlink()
    if not exists or (not new.is_dir() and not target_is_tree):
        os.replace(new, target)  # nothing there, or a file onto a file or link
        return
    old = _free_temp_name(target)
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    remove(old)


def remove(path: Path) -> None:
    """Remove a file, link or directory tree (nothing if it is not there)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            path.unlink()


def fsync_tree(path: Path) -> None:
    """Flush a file, or every file and directory of a tree, to disk."""
    if path.is_dir() and not path.is_symlink():
        for root, _, files in os.walk(path):
            for name in files:
                _fsync_file(Path(root) / name)
            fsync_directory(Path(root))
    elif path.exists():
        _fsync_file(path)


def _fsync_file(path: Path) -> None:
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_directory(directory: Path) -> None:
    """Make renames in ``directory`` durable where the platform allows (best effort)."""
    if os.name != "posix":  # pragma: no cover
        return
    _fsync_file(directory)
