"""Outputs written beside their destination and moved into place when complete.

A reader never sees half an output, and a failed or interrupted write leaves the
destination as it was: everything is written under a temporary name in the
destination's directory, flushed to disk, then renamed onto the destination.
Creating the temporary output, removing it and the renames are never cut short
by Ctrl-C or SIGTERM (`interrupts`): a signal during them is acted on when they
are done, so an interrupted write leaves no temporary file behind.

`recorded_commits` lets a caller learn whether an output was put in place (for a
command that must tell an interrupted export from a complete one).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from .interrupts import deferred_interrupts, sigterm_unwinds

_TEMP_ATTEMPTS = 100
#: The lists of `recorded_commits` blocks in progress.
_commit_logs: list[list[Path]] = []


def _temp_name(target: Path) -> Path:
    return target.parent / f".{target.name[:200]}.{secrets.token_hex(4)}.tmp"


@contextmanager
def recorded_commits() -> Iterator[list[Path]]:
    """A list that receives every output put in place while the block runs.

    Outputs put in place together (the files of one export) are added together,
    in the same step that renames them.
    """
    log: list[Path] = []
    _commit_logs.append(log)
    try:
        yield log
    finally:
        _commit_logs.remove(log)


def _record(targets: Sequence[Path]) -> None:
    for log in _commit_logs:
        log.extend(targets)


@contextmanager
def atomic_file(target: Path) -> Iterator[BinaryIO]:
    """Yield a new binary file beside ``target``; it replaces ``target`` on success.

    On any exception, Ctrl-C and SIGTERM included, the temporary file is removed
    and ``target`` is left as it was. The file and the rename are flushed to disk.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    with sigterm_unwinds():
        tmp: Path | None = None
        fh: BinaryIO | None = None
        try:
            with deferred_interrupts():
                for _ in range(_TEMP_ATTEMPTS):
                    name = _temp_name(target)
                    try:
                        fd = os.open(name, flags, 0o666)  # the umask applies
                    except FileExistsError:
                        continue
                    tmp = name
                    break
                else:  # pragma: no cover
                    raise FileExistsError(
                        f"could not create a temporary file in {target.parent}"
                    )
                fh = os.fdopen(fd, "wb")
            with fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            with deferred_interrupts():
                os.replace(tmp, target)
                _record([target])
                fsync_directory(target.parent)
        except BaseException:
            with deferred_interrupts():
                if fh is not None:
                    with suppress(OSError):
                        fh.close()
                if tmp is not None:
                    with suppress(OSError):
                        tmp.unlink()
            raise


@contextmanager
def staged_path(target: Path, *, keep_name: bool = False) -> Iterator[Path]:
    """Yield a free path beside ``target`` to write a file or a directory tree to.

    When the block succeeds, what was written there is flushed to disk and
    replaces ``target``: an existing file, link or directory tree at ``target``
    is moved aside, the new output renamed into place, and only then the old one
    removed (a link is replaced, never what it points to). On any exception,
    Ctrl-C and SIGTERM included, the temporary output is removed and ``target``
    is left as it was.

    Parameters
    ----------
    target : pathlib.Path
        The final path.
    keep_name : bool
        Yield ``DIR/target.name`` inside a new private directory beside
        ``target`` instead of a temporary name, for writers that record the
        name of what they write (an OME-Zarr image is named after its store).
    """
    with staged_paths([target], keep_name=keep_name) as (tmp,):
        yield tmp


@contextmanager
def staged_paths(
    targets: Sequence[Path], *, keep_name: bool = False
) -> Iterator[list[Path]]:
    """`staged_path` for several outputs that are put in place together.

    All of them replace their targets in one step that Ctrl-C does not cut
    short; if one rename fails, those done are undone and the targets are left
    as they were.
    """
    with sigterm_unwinds():
        made: list[Path] = []  # what is ours to remove
        try:
            with deferred_interrupts():
                tmps = [_stage(target, keep_name, made) for target in targets]
            yield tmps
            for tmp in tmps:
                fsync_tree(tmp)
            with deferred_interrupts():
                _replace_all(list(zip(tmps, targets, strict=True)))
                _record(targets)
                for path in made:
                    remove(path)  # the private directories, empty by now
                for parent in dict.fromkeys(t.parent for t in targets):
                    fsync_directory(parent)
        except BaseException:
            with deferred_interrupts():
                for path in made:
                    remove(path)
            raise


def _stage(target: Path, keep_name: bool, made: list[Path]) -> Path:
    """A free path for the new ``target``, recorded in ``made``."""
    tmp = _free_temp_name(target)
    if not keep_name:
        made.append(tmp)
        return tmp
    tmp.mkdir()
    made.append(tmp)
    return tmp / target.name


def _free_temp_name(target: Path) -> Path:
    tmp = _temp_name(target)
    while tmp.exists() or tmp.is_symlink():  # pragma: no cover - token clash
        tmp = _temp_name(target)
    return tmp


def _replace_all(pairs: list[tuple[Path, Path]]) -> None:
    """Rename each ``new`` onto its ``target``; all or none (old ones removed last)."""
    done: list[tuple[Path, Path, Path | None]] = []
    try:
        for new, target in pairs:
            done.append((new, target, _replace(new, target)))
    except BaseException:
        for new, target, old in reversed(done):
            os.replace(target, new)
            if old is not None:
                os.replace(old, target)
        raise
    for _, _, old in done:
        if old is not None:
            remove(old)


def _replace(new: Path, target: Path) -> Path | None:
    """Rename ``new`` onto ``target``; the old ``target`` moved aside, if it must be.

    Returns
    -------
    pathlib.Path or None
        Where the old ``target`` now is (to remove, or to restore), or None
        when the rename replaced it or nothing was there.
    """
    exists = target.exists() or target.is_symlink()
    target_is_tree = target.is_dir() and not target.is_symlink()
    if not exists or (not new.is_dir() and not target_is_tree):
        os.replace(new, target)  # nothing there, or a file onto a file or link
        return None
    old = _free_temp_name(target)
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    return old


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
