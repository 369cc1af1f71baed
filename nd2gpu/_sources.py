"""Where a file's bytes come from: a local memory map, an open file object, or fsspec.

A ``SourceSpec`` says how to open a file's bytes and pickles as what identifies
them (a path, or a URL and its storage options); ``SourceSpec.open()`` gives a
``ByteSource`` that reads byte ranges:

- ``LocalFile``: a memory map of a local file (paths, ``file://`` URLs, open
  local file objects: they are reopened by name, as nd2 does);
- ``FileObjectSource``: ``seek``/``read`` on an open binary file object
  (``io.BytesIO``, ``gzip`` files, ...) under a lock; not picklable;
- ``FsspecSource``: range requests through fsspec (``http(s)://``, ``s3://``,
  ``memory://``, ...), many ranges coalesced and fetched concurrently. A server
  that ignores Range (``python -m http.server``, many static hosts) answers with
  the whole file: it is kept, once, and read from memory (with a warning), if
  this process's memory can hold it.

Reads never return fewer bytes than asked for: a short read is an ``OSError``
naming the file.
"""

from __future__ import annotations

import bisect
import io
import mmap
import os
import re
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from ._limits import physical_memory

#: Ranges closer than this are fetched as one request (the bytes between them are
#: read and dropped: cheaper than another round trip).
COALESCE_GAP = 64 << 10
#: A coalesced request covers at most this many bytes (unless one range is longer).
COALESCE_MAX_BLOCK = 32 << 20

REMOTE_HINT = 'install the "remote" extra: pip install "nd2gpu[remote]"'
#: The protocols whose servers may ignore Range (other fsspec file systems
#: always honour it).
RANGE_OPTIONAL_PROTOCOLS = ("http", "https")
NO_RANGE = "the server does not support range requests"
DOWNLOAD_HINT = (
    "download the file first (e.g. curl -O URL, or fsspec.get(URL, PATH)) and open "
    "the local copy"
)

Range = tuple[int, int]


def is_url(target: object) -> bool:
    """Whether ``target`` is a URL string (``scheme://...``), as nd2 decides it."""
    try:
        from nd2._util import is_fsspec_url
    except ImportError:  # pragma: no cover - nd2 moved its helper
        return isinstance(target, str) and bool(
            re.match(r"^[a-zA-Z][a-zA-Z0-9+\-.]+://", target)
        )
    return bool(is_fsspec_url(target))


def is_file_object(target: object) -> bool:
    """Whether ``target`` is an open binary file object (read, seek, close, closed)."""
    return all(hasattr(target, a) for a in ("read", "seek", "close", "closed"))


def file_url_path(url: str) -> str:
    """The local path of a ``file://`` URL."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"{url!r} names a file on another host ({parts.netloc!r})")
    return unquote(parts.path)


def coalesce(ranges: Sequence[Range], max_gap: int, max_block: int) -> list[Range]:
    """Sorted ranges covering ``ranges``, neighbours closer than ``max_gap`` merged."""
    merged: list[list[int]] = []
    for start, stop in sorted(ranges):
        if (
            merged
            and start - merged[-1][1] <= max_gap
            and max(stop, merged[-1][1]) - merged[-1][0] <= max_block
        ):
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return [(a, b) for a, b in merged]


def split_blocks(
    ranges: Sequence[Range], blocks: Sequence[Range], data: Sequence[bytes]
) -> list[bytes]:
    """The bytes of each of ``ranges``, cut out of the fetched ``blocks``."""
    starts = [b[0] for b in blocks]
    out = []
    for start, stop in ranges:
        i = bisect.bisect_right(starts, start) - 1
        while blocks[i][1] < stop:  # a range inside a later, longer block
            i += 1
        base = blocks[i][0]
        out.append(bytes(data[i][start - base : stop - base]))
    return out


class ByteSource(ABC):
    """Reads byte ranges of one file.

    Attributes
    ----------
    name : str
        What errors name: the path or URL (a description for unnamed objects).
    size : int
        The file's size in bytes.
    remote : bool
        Whether each read costs a request (then reads are batched).
    """

    name: str
    size: int
    remote: bool = False

    @abstractmethod
    def read(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` (``0 <= start <= stop <= size``)."""

    def read_many(
        self, ranges: Sequence[Range], *, max_gap: int = COALESCE_GAP
    ) -> list[bytes]:
        """The bytes of every range, in order (remote sources: one batch)."""
        return [self.read(a, b) for a, b in ranges]

    def buffer(self) -> np.ndarray | None:
        """The whole file as a read-only ``uint8`` array, without a copy, where
        the source is one (a memory map); None elsewhere."""
        return None

    def view(self, start: int, stop: int) -> memoryview:
        """Bytes ``[start, stop)`` as a read-only buffer: a view of the memory
        map without copying (``buffer``), else what ``read`` gives."""
        whole = self.buffer()
        if whole is None:
            return memoryview(self.read(start, stop))
        return memoryview(whole[start:stop])  # type: ignore[arg-type]

    @abstractmethod
    def identity(self) -> tuple[Any, ...]:
        """What changes when the file does (size, and inode/mtime or ETag)."""

    @property
    @abstractmethod
    def closed(self) -> bool:
        """Whether the source was closed."""

    @abstractmethod
    def close(self) -> None:
        """Release what the source holds (idempotent)."""

    def _short(self, start: int, stop: int, got: int) -> OSError:
        return OSError(
            f"{self.name}: read {got} of {stop - start} bytes at offset {start} "
            f"(the file is {self.size} bytes): it was cut short or changed since "
            "it was opened"
        )


class LocalFile(ByteSource):
    """A local file, memory-mapped read-only."""

    def __init__(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name if name is not None else str(path)
        self._lock = threading.Lock()
        with open(self.path, "rb") as fh:
            #: ``os.stat_result`` of the file that was mapped.
            self.stat = os.fstat(fh.fileno())
            self.size = self.stat.st_size
            self._mm: mmap.mmap | None = (
                mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                if self.size
                else None
            )
        self._array: np.ndarray | None = None
        self._closed = False

    def read(self, start: int, stop: int) -> bytes:
        with self._lock:
            if self._closed:
                raise ValueError(f"ND2 file {self.name!r} is closed")
            if self._mm is None or start >= stop:
                return b""
            return self._mm[start:stop]

    def buffer(self) -> np.ndarray:
        # A view keeps the map alive: close() leaves a map with views to be
        # unmapped when the last of them goes.
        with self._lock:
            if self._closed:
                raise ValueError(f"ND2 file {self.name!r} is closed")
            if self._array is None:
                self._array = (
                    np.frombuffer(self._mm, np.uint8)
                    if self._mm is not None
                    else np.empty(0, np.uint8)
                )
            return self._array

    def identity(self) -> tuple[Any, ...]:
        # The inode too: a file replaced by a rename (as write_nd2 does) may have
        # the same size and, within the clock's granularity, the same mtime.
        st = self.stat
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._array = None
            mm, self._mm = self._mm, None
            self._closed = True
        if mm is not None:
            _unmap(mm)

    def __del__(self) -> None:
        self._array = None
        mm = getattr(self, "_mm", None)
        if mm is not None:
            _unmap(mm)


def _unmap(mm: mmap.mmap) -> None:
    """Close a map, or leave it to be unmapped with its last view (``buffer``,
    ``view``: still alive in a traceback, say)."""
    with suppress(BufferError):
        mm.close()


class FileObjectSource(ByteSource):
    """An open binary file object, read with ``seek`` and ``read`` under a lock.

    The lock is shared with nd2's reader of the same object (its reads seek too).
    Closing the source leaves the object open: it is the caller's (nd2's
    ``ND2File.close()`` closes it).
    """

    def __init__(self, fh: Any, name: str, lock: AbstractContextManager[Any]) -> None:
        self._fh = fh
        self.name = name
        self._lock = lock
        self._closed = False
        with self._lock:
            self._check_open()
            self.size = int(fh.seek(0, io.SEEK_END))

    def _check_open(self) -> None:
        if self._closed or self._fh.closed:
            raise ValueError(
                f"the file object {self.name} is closed: binary layers of an ND2 "
                "file opened from an unnamed file object decode only while it is "
                "open (open the file by path or URL to decode after closing it)"
            )

    def read(self, start: int, stop: int) -> bytes:
        with self._lock:
            self._check_open()
            self._fh.seek(start)
            data = self._fh.read(stop - start)
        if len(data) != stop - start:
            raise self._short(start, stop, len(data))
        return bytes(data)

    def read_many(
        self, ranges: Sequence[Range], *, max_gap: int = COALESCE_GAP
    ) -> list[bytes]:
        blocks = coalesce(ranges, max_gap, COALESCE_MAX_BLOCK)
        return split_blocks(ranges, blocks, [self.read(a, b) for a, b in blocks])

    def identity(self) -> tuple[Any, ...]:
        return (self.size,)

    @property
    def closed(self) -> bool:
        return self._closed or bool(self._fh.closed)

    def close(self) -> None:
        self._closed = True


def _import_fsspec() -> Any:
    try:
        import fsspec
    except ImportError as e:
        raise ImportError(
            f"reading ND2 files from URLs needs fsspec: {REMOTE_HINT}"
        ) from e
    return fsspec


def remote_error(name: str, what: str, exc: BaseException) -> OSError:
    """One ``OSError`` naming the URL, for any failure of a remote read.

    The HTTP client's own exception chain is summed up in the message (its root
    cause: refused connection, HTTP status, payload cut off): one error, not a
    chain of tracebacks.
    """
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    status = getattr(root, "status", None)
    missing = status == 404 or (isinstance(exc, FileNotFoundError) and root is exc)
    kind = FileNotFoundError if missing else OSError
    detail = str(root) or type(root).__name__
    if root is exc and isinstance(exc, FileNotFoundError):
        detail = "not found"
    elif type(root).__name__ not in detail:
        detail = f"{type(root).__name__}: {detail}"
    return kind(f"cannot read {what} of {name}: {detail}")


#: Keys of fsspec's ``info()`` that change when a remote file does.
_VERSION_KEYS = ("ETag", "etag", "Last-Modified", "LastModified", "mtime", "created")


class FsspecSource(ByteSource):
    """A file on any fsspec file system, read in (coalesced, concurrent) ranges.

    A server that answers a range request with the whole file (it ignores
    Range) has that answer kept: every later read comes from memory, and one
    warning says so. A file larger than this process's memory is checked before
    its first read instead (one small range request): there such a server is an
    ``OSError`` saying to download the file first.
    """

    remote = True

    def __init__(self, url: str, storage_options: dict[str, Any]) -> None:
        self.name = url
        fsspec = _import_fsspec()
        try:
            self._fs, self._path = fsspec.core.url_to_fs(url, **storage_options)
            info = self._fs.info(self._path)
        except Exception as exc:
            raise remote_error(url, "the size", exc) from None
        size = info.get("size")
        if size is None:
            raise OSError(f"cannot read {url}: the server does not say how large it is")
        self.size = int(size)
        self._identity = (self.size, *(str(info.get(k)) for k in _VERSION_KEYS))
        self._closed = False
        self._lock = threading.Lock()
        #: The whole file, where the server sent it for a range request.
        self._whole: bytes | None = None
        protocol = self._fs.protocol
        protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
        memory = physical_memory()
        #: Whether the server's Range support is to be checked before the first
        #: read: a whole-file answer would not fit in memory.
        self._check_ranges = (
            any(p in RANGE_OPTIONAL_PROTOCOLS for p in protocols)
            and memory is not None
            and self.size > memory
        )

    def read(self, start: int, stop: int) -> bytes:
        return self.read_many([(start, stop)])[0]

    def read_many(
        self, ranges: Sequence[Range], *, max_gap: int = COALESCE_GAP
    ) -> list[bytes]:
        if self._closed:
            raise ValueError(f"ND2 file {self.name!r} is closed")
        if self._whole is not None:
            return self._cut(self._whole, ranges)
        wanted = [(a, b) for a, b in ranges if a < b]
        blocks = coalesce(wanted, max_gap, COALESCE_MAX_BLOCK)
        if not blocks:
            return [b""] * len(ranges)
        if self._check_ranges:
            self._require_ranges()
        what = (
            f"bytes {blocks[0][0]}-{blocks[0][1]}"
            if len(blocks) == 1
            else f"{len(blocks)} byte ranges"
        )
        try:
            if len(blocks) == 1:
                start, stop = blocks[0]
                data = [self._fs.cat_file(self._path, start=start, end=stop)]
            else:
                data = self._fs.cat_ranges(
                    [self._path] * len(blocks),
                    [a for a, _ in blocks],
                    [b for _, b in blocks],
                    on_error="return",
                )
        except Exception as exc:
            raise remote_error(self.name, what, exc) from None
        for (start, stop), got in zip(blocks, data, strict=True):
            if isinstance(got, BaseException):
                raise remote_error(self.name, f"bytes {start}-{stop}", got) from None
            if len(got) > stop - start:
                return self._cut(self._keep_whole(got, start, stop), ranges)
            if len(got) != stop - start:
                raise self._short(start, stop, len(got))
        pieces = iter(split_blocks(wanted, blocks, data))
        return [next(pieces) if a < b else b"" for a, b in ranges]

    def _cut(self, data: bytes, ranges: Sequence[Range]) -> list[bytes]:
        """The bytes of each of ``ranges`` of the whole file ``data``."""
        for start, stop in ranges:
            if stop > len(data):
                raise self._short(start, stop, max(0, len(data) - start))
        return [data[a:b] for a, b in ranges]

    def _keep_whole(self, body: bytes, start: int, stop: int) -> bytes:
        """Keep ``body``, the answer to a request for ``[start, stop)`` that
        holds more: the whole file, where the server ignores Range."""
        if len(body) != self.size:
            raise OSError(
                f"{self.name}: {NO_RANGE} (asked for {stop - start} bytes at offset "
                f"{start}, it sent {len(body)} of the file's {self.size}): "
                f"{DOWNLOAD_HINT}"
            )
        with self._lock:
            if self._whole is None:
                self._whole = bytes(body)
                warnings.warn(
                    f"{self.name}: {NO_RANGE} (it sent all {self.size} bytes of the "
                    f"file for {stop - start} of them): nd2gpu keeps the file in "
                    "memory and reads it from there",
                    stacklevel=2,
                )
            return self._whole

    def _require_ranges(self) -> None:
        """Check, with one small range request, that the server honours Range
        (fsspec's ranged file refuses an answer that is not the range, before
        reading its body)."""
        try:
            with self._fs.open(
                self._path, "rb", cache_type="none", size=self.size
            ) as fh:
                fh.seek(self.size - 1)
                fh.read(1)
        except ValueError as exc:
            if "range" not in str(exc).lower():
                raise remote_error(self.name, "a range", exc) from None
            raise OSError(
                f"{self.name}: {NO_RANGE}, and the file ({self.size} bytes) is "
                f"larger than the {physical_memory()} bytes of memory this "
                f"process may use: {DOWNLOAD_HINT}"
            ) from None
        except Exception as exc:
            raise remote_error(self.name, "a range", exc) from None
        self._check_ranges = False

    def identity(self) -> tuple[Any, ...]:
        return self._identity

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._whole = None


@dataclass(frozen=True)
class SourceSpec:
    """How to open one file's bytes; pickles as (path or URL, storage options).

    Attributes
    ----------
    kind : {"local", "fsspec", "fileobj"}
    target : str or file object
        The local path, the URL, or the open file object.
    name : str
        What errors and ``BinaryLayer.path`` name: the path or URL as given.
    storage_options : dict
        fsspec's options (for "fsspec").
    """

    kind: str
    target: Any
    name: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    lock: Any = field(default=None, compare=False, repr=False)

    @property
    def releasable(self) -> bool:
        """Whether an open source holds an OS resource (a map) worth releasing."""
        return self.kind == "local"

    def open(self) -> ByteSource:
        """A new ``ByteSource`` on the file."""
        if self.kind == "local":
            return LocalFile(self.target, self.name)
        if self.kind == "fsspec":
            return FsspecSource(self.target, self.storage_options)
        return FileObjectSource(self.target, self.name, self.lock or nullcontext())

    def token(self) -> tuple[Any, ...]:
        """What identifies the file (for dask's graph names)."""
        if self.kind == "fileobj":
            return ("fileobj", id(self.target))
        return (self.kind, str(self.target), repr(sorted(self.storage_options.items())))

    def __reduce__(self) -> Any:
        if self.kind == "fileobj":
            raise TypeError(
                f"cannot pickle an ND2 file (or its binary layers) opened from the "
                f"unnamed file object {self.name}: open it by path or URL to send it "
                "to another process (nd2.ND2File refuses such a file too)"
            )
        return (SourceSpec, (self.kind, self.target, self.name, self.storage_options))


def source_spec(
    target: Any,
    storage_options: dict[str, Any] | None = None,
    *,
    lock: Any = None,
) -> SourceSpec:
    """How to read ``target``: anything ``nd2.ND2File`` accepts.

    Parameters
    ----------
    target : str, os.PathLike or binary file object
        A local path, a URL (``file://`` is read as a local file; any other
        scheme through fsspec), or an open binary file object (local files among
        them are reopened by name; fsspec file objects by their URL).
    storage_options : dict, optional
        fsspec's options for URLs (defaults to an fsspec file object's own).
    lock : context manager, optional
        Held around ``seek``/``read`` of a file object (nd2's reader lock).
    """
    options = dict(storage_options or {})
    if isinstance(target, str) and is_url(target):
        if urlsplit(target).scheme.lower() == "file":
            path = os.path.abspath(os.path.expanduser(file_url_path(target)))
            return SourceSpec("local", path, target)
        return SourceSpec("fsspec", target, target, options)
    if isinstance(target, (str, os.PathLike)):
        path = os.path.abspath(os.path.expanduser(os.fspath(target)))
        return SourceSpec("local", path, path)
    if not is_file_object(target):
        raise TypeError(
            "nd2gpu.ND2File reads a path, a URL or an open binary file object, not "
            f"{type(target).__name__}"
        )
    fs = getattr(target, "fs", None)
    fs_path = getattr(target, "path", None)
    if fs is not None and isinstance(fs_path, str):
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if protocol in ("file", "local"):
            path = os.path.abspath(fs_path)
            return SourceSpec("local", path, path)
        url = fs.unstrip_protocol(fs_path)
        if storage_options is None:
            options = dict(getattr(fs, "storage_options", {}) or {})
        return SourceSpec("fsspec", url, url, options)
    name = getattr(target, "name", None)
    if (
        isinstance(target, (io.BufferedReader, io.FileIO))
        and isinstance(name, str)
        and os.path.isfile(name)
    ):
        path = os.path.abspath(name)
        return SourceSpec("local", path, path)
    return SourceSpec("fileobj", target, f"<{type(target).__name__}>", lock=lock)
