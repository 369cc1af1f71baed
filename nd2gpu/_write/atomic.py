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
def staged_path(target: Path) -> Iterator[Path]:
    """Yield a free path beside ``target`` to write a file or a directory tree to.

    When the block succeeds, what was written there is flushed to disk and
    replaces ``target`` (an existing file or directory tree at ``target`` is
    removed only after the new output is complete). On any exception the
    temporary output is removed and ``target`` is left as it was.
    """
    tmp = _temp_name(target)
    while tmp.exists() or tmp.is_symlink():  # pragma: no cover - token clash
        tmp = _temp_name(target)
    try:
        yield tmp
        fsync_tree(tmp)
        if target.is_dir() and not target.is_symlink():
            old = _temp_name(target)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        remove(tmp)
        raise
    fsync_directory(target.parent)


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
