"""Raw chunk access: a memory-mapped ND2 file and its chunk map, read in one pass."""

from __future__ import annotations

import mmap
import os
import threading
from pathlib import Path

from .._errors import DecodeError
from .container import (
    CHUNK_HEADER,
    CHUNK_MAGIC,
    CHUNKMAP_ENTRY,
    CHUNKMAP_LOCATION,
    CHUNKMAP_SIGNATURE,
    FILEMAP_SIGNATURE,
)

#: The largest chunk data length that is a valid size (``sys.maxsize`` on 64-bit
#: platforms; nd2 cannot read a longer chunk either).
MAX_CHUNK_BYTES = (1 << 63) - 1


class ChunkIndex:
    """Map of chunk name to header offset for one ND2 file, with bounded reads.

    The file is memory-mapped read-only; the chunk map at its end is parsed once,
    when the index is made.

    Parameters
    ----------
    path : str or os.PathLike
        The ND2 file.

    Raises
    ------
    DecodeError
        If the chunk map is missing or corrupt.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
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
        try:
            self.offsets = self._read_chunk_map()
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        """Whether the memory map has been released."""
        return self._mm is None

    def close(self) -> None:
        """Release the memory map (idempotent)."""
        with self._lock:
            if self._mm is not None:
                self._mm.close()
                self._mm = None

    def __enter__(self) -> ChunkIndex:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __del__(self) -> None:
        mm = getattr(self, "_mm", None)
        if mm is not None:
            mm.close()

    def __contains__(self, name: bytes) -> bool:
        return name in self.offsets

    def _error(self, reason: str, offset: int) -> DecodeError:
        return DecodeError(reason, path=self.path, offset=offset, where="file")

    def _bytes(self, start: int, stop: int) -> bytes:
        with self._lock:
            if self._mm is None:
                raise ValueError(f"ND2 file {str(self.path)!r} is closed")
            return self._mm[start:stop]

    def _read_chunk_map(self) -> dict[bytes, int]:
        tail = CHUNKMAP_LOCATION.size
        if self.size < tail:
            raise self._error("file too short for an ND2 chunk map", 0)
        signature, location = CHUNKMAP_LOCATION.unpack(
            self._bytes(self.size - tail, self.size)
        )
        if signature != CHUNKMAP_SIGNATURE:
            raise self._error("no chunk-map signature at the end", self.size - tail)
        data = self.chunk_data_at(location, expect_name=FILEMAP_SIGNATURE)
        offsets: dict[bytes, int] = {}
        pos = 0
        while True:
            end = data.find(b"!", pos)
            if end < 0:
                raise self._error(
                    "chunk map ends without its end marker", location + pos
                )
            name = data[pos : end + 1]
            if name == CHUNKMAP_SIGNATURE:
                return offsets
            entry_end = end + 1 + CHUNKMAP_ENTRY.size
            if entry_end > len(data):
                raise self._error("chunk map entry is truncated", location + pos)
            offset, _size = CHUNKMAP_ENTRY.unpack(data[end + 1 : entry_end])
            offsets[name] = offset
            pos = entry_end

    def chunk_data_at(self, offset: int, expect_name: bytes | None = None) -> bytes:
        """Data of the chunk whose header starts at ``offset``.

        Like the reference reader, data that the header claims past the end of the
        file is cut at the end of the file.

        Raises
        ------
        DecodeError
            If no chunk header lies at ``offset`` (or it lies past the file's end),
            the chunk's name is not ``expect_name``, or its data length is not a
            valid size (2**63 or more: the reference cannot read it either).
        """
        return self._bytes(*self._data_range(offset, expect_name))

    def _data_range(
        self, offset: int, expect_name: bytes | None = None
    ) -> tuple[int, int]:
        """``(start, stop)`` in the file of the data of the chunk at ``offset``."""
        header_end = offset + CHUNK_HEADER.size
        if offset < 0 or header_end > self.size:
            raise self._error(
                f"chunk offset {offset} is past the end of the file "
                f"({self.size} bytes)",
                offset,
            )
        magic, name_len, data_len = CHUNK_HEADER.unpack(self._bytes(offset, header_end))
        if magic != CHUNK_MAGIC:
            raise self._error(f"no chunk header at offset {offset}", offset)
        if data_len > MAX_CHUNK_BYTES:
            raise self._error(
                f"chunk at offset {offset} claims {data_len} bytes of data", offset
            )
        if expect_name is not None:
            name = self._bytes(header_end, header_end + name_len)
            if not name.startswith(expect_name):
                raise self._error(
                    f"expected chunk {expect_name!r} at offset {offset}", offset
                )
        start = header_end + name_len
        return min(start, self.size), min(start + data_len, self.size)

    def data_length(self, name: bytes) -> int | None:
        """Bytes of data of the chunk ``name`` (cut at the end of the file), or None
        if the map does not list it. Reads only the chunk's header."""
        offset = self.offsets.get(name)
        if offset is None:
            return None
        start, stop = self._data_range(offset)
        return stop - start

    def sequence_indices(self, prefix: bytes) -> list[int]:
        """Sorted ``seq`` of every listed chunk named ``prefix + str(seq) + "!"``.

        Costs one pass over the chunk names, whatever number of frames the
        experiment claims (a corrupt one may claim billions).
        """
        found = []
        for name in self.offsets:
            if name.startswith(prefix):
                digits = name[len(prefix) : -1]
                if digits.isdigit() and digits.decode() == str(int(digits)):
                    found.append(int(digits))
        return sorted(found)

    def read(self, name: bytes) -> bytes | None:
        """Data of the chunk called ``name``, or None if the map does not list it."""
        offset = self.offsets.get(name)
        return None if offset is None else self.chunk_data_at(offset)
