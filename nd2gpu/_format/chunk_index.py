"""Raw chunk access: an ND2 file's chunk map, read once, and bounded chunk reads.

The bytes come from a ``ByteSource`` (``nd2gpu._sources``): a memory map
of a local file, an open file object, or range requests through fsspec. For
remote sources the chunk map costs one or two requests, and ``read_many`` fetches
the chunks of a whole batch of frames in one coalesced, concurrent request.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import DecodeError
from .._sources import ByteSource, LocalFile
from .container import (
    CHUNK_HEADER,
    CHUNK_MAGIC,
    CHUNKMAP_ENTRY,
    CHUNKMAP_LOCATION,
    CHUNKMAP_SIGNATURE,
    FILEMAP_SIGNATURE,
    binary_frame_chunk_name,
)

#: The largest chunk data length that is a valid size (``sys.maxsize`` on 64-bit
#: platforms; nd2 cannot read a longer chunk either).
MAX_CHUNK_BYTES = (1 << 63) - 1
#: Remote sources: bytes read from the end of the file at once when it is opened
#: (the chunk map usually lies there: one request instead of three).
TAIL_PROBE_BYTES = 64 << 10
#: Remote sources: the bytes read from the end are kept for later reads up to this.
TAIL_KEEP_BYTES = 1 << 20
#: Remote sources: the most bytes fetched for one chunk before its header is read
#: (a chunk is fetched up to the next chunk's offset, its header, name and data at
#: once; a longer one costs a second request).
SPECULATIVE_CHUNK_BYTES = 64 << 20
#: Remote sources: the data of this many chunks read last is kept (a frame's
#: header is read for its shape, then the frame decoded: one request, not two).
RECENT_CHUNKS = 16


@dataclass(frozen=True)
class LayerFrames:
    """The frame chunks of one layer: ``seqs`` (sorted) and where their data lie
    (``ranges[i]`` as ``ChunkIndex.data_ranges`` gives them)."""

    seqs: np.ndarray
    ranges: np.ndarray

    def lookup(self, seqs: np.ndarray) -> np.ndarray:
        """``int64[len(seqs), 2]`` data ranges of frames ``seqs``, ``(-1, -1)``
        where a frame has no chunk."""
        out = np.full((seqs.shape[0], 2), -1, np.int64)
        if not self.seqs.shape[0]:
            return out
        pos = np.minimum(np.searchsorted(self.seqs, seqs), self.seqs.shape[0] - 1)
        found = self.seqs[pos] == seqs
        out[found] = self.ranges[pos[found]]
        return out


class ChunkIndex:
    """Map of chunk name to header offset for one ND2 file, with bounded reads.

    The chunk map at the file's end is parsed once, when the index is made.

    Parameters
    ----------
    source : ByteSource, str or os.PathLike
        Where the bytes come from; a path is memory-mapped read-only. The index
        owns the source and closes it.

    Raises
    ------
    DecodeError
        If the chunk map is missing or corrupt.
    """

    def __init__(self, source: ByteSource | str | os.PathLike[str]) -> None:
        if isinstance(source, (str, os.PathLike)):
            source = LocalFile(source)
        self.source = source
        #: What errors name (the local path, or the URL).
        self.name = source.name
        #: The local file's path (its name for other sources).
        self.path: Path | str = getattr(source, "path", source.name)
        #: ``os.stat_result`` of a local file when it was mapped (None elsewhere).
        self.stat: os.stat_result | None = getattr(source, "stat", None)
        self.size = source.size
        self._tail: tuple[int, bytes] | None = None
        self._seqs: dict[bytes, list[int]] = {}
        self._layer_frames: dict[str, LayerFrames] = {}
        self._recent: OrderedDict[int, bytes] = OrderedDict()
        self._recent_lock = threading.Lock()
        self._map_offset = self.size
        try:
            self.offsets, self._listed_sizes = self._read_chunk_map()
        except BaseException:
            self.close()
            raise
        if self._tail is not None and len(self._tail[1]) > TAIL_KEEP_BYTES:
            self._tail = None
        # Where each chunk ends at the latest: the next chunk's start.
        self._starts = sorted({*self.offsets.values(), self._map_offset})

    @property
    def identity(self) -> tuple[Any, ...]:
        """What changes when the file does (see ``ByteSource.identity``)."""
        return self.source.identity()

    @property
    def closed(self) -> bool:
        """Whether the source (e.g. the memory map) has been released."""
        return self.source.closed

    def close(self) -> None:
        """Release the source (idempotent)."""
        self.source.close()

    def __enter__(self) -> ChunkIndex:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __contains__(self, name: bytes) -> bool:
        return name in self.offsets

    def _error(self, reason: str, offset: int) -> DecodeError:
        return DecodeError(reason, path=self.name, offset=offset, where="file")

    def _bytes(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of the file, cut at its end."""
        stop = min(stop, self.size)
        start = min(start, stop)
        if self._tail is not None and start >= self._tail[0]:
            base, data = self._tail
            return data[start - base : stop - base]
        return self.source.read(start, stop)

    def _read_chunk_map(self) -> tuple[dict[bytes, int], dict[bytes, int]]:
        tail = CHUNKMAP_LOCATION.size
        if self.size < tail:
            raise self._error("file too short for an ND2 chunk map", 0)
        if self.source.remote:
            first = max(0, self.size - TAIL_PROBE_BYTES)
            self._tail = (first, self.source.read(first, self.size))
        signature, location = CHUNKMAP_LOCATION.unpack(
            self._bytes(self.size - tail, self.size)
        )
        if signature != CHUNKMAP_SIGNATURE:
            raise self._error("no chunk-map signature at the end", self.size - tail)
        if self._tail is not None and 0 <= location < self._tail[0]:
            base, data = self._tail
            self._tail = (location, self.source.read(location, base) + data)
        self._map_offset = location
        data = self.chunk_data_at(location, expect_name=FILEMAP_SIGNATURE)
        offsets: dict[bytes, int] = {}
        sizes: dict[bytes, int] = {}
        pos = 0
        while True:
            end = data.find(b"!", pos)
            if end < 0:
                raise self._error(
                    "chunk map ends without its end marker", location + pos
                )
            name = data[pos : end + 1]
            if name == CHUNKMAP_SIGNATURE:
                return offsets, sizes
            entry_end = end + 1 + CHUNKMAP_ENTRY.size
            if entry_end > len(data):
                raise self._error("chunk map entry is truncated", location + pos)
            offset, size = CHUNKMAP_ENTRY.unpack(data[end + 1 : entry_end])
            offsets[name] = offset
            sizes[name] = size
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

    def _check_offset(self, offset: int) -> None:
        if offset < 0 or offset + CHUNK_HEADER.size > self.size:
            raise self._error(
                f"chunk offset {offset} is past the end of the file "
                f"({self.size} bytes)",
                offset,
            )

    def _parse_header(self, offset: int, header: bytes) -> tuple[int, int, int]:
        """``(name_len, data start, data stop)`` of the chunk at ``offset``."""
        magic, name_len, data_len = CHUNK_HEADER.unpack(header[: CHUNK_HEADER.size])
        if magic != CHUNK_MAGIC:
            raise self._error(f"no chunk header at offset {offset}", offset)
        if data_len > MAX_CHUNK_BYTES:
            raise self._error(
                f"chunk at offset {offset} claims {data_len} bytes of data", offset
            )
        start = offset + CHUNK_HEADER.size + name_len
        return name_len, min(start, self.size), min(start + data_len, self.size)

    def _data_range(
        self, offset: int, expect_name: bytes | None = None
    ) -> tuple[int, int]:
        """``(start, stop)`` in the file of the data of the chunk at ``offset``."""
        self._check_offset(offset)
        header_end = offset + CHUNK_HEADER.size
        name_len, start, stop = self._parse_header(
            offset, self._bytes(offset, header_end)
        )
        if expect_name is not None:
            name = self._bytes(header_end, header_end + name_len)
            if not name.startswith(expect_name):
                raise self._error(
                    f"expected chunk {expect_name!r} at offset {offset}", offset
                )
        return start, stop

    def data_range(self, name: bytes) -> tuple[int, int] | None:
        """``(start, stop)`` in the file of the data of the chunk ``name`` (cut at
        the end of the file), or None if the map does not list it. Reads only
        the chunk's header."""
        offset = self.offsets.get(name)
        return None if offset is None else self._data_range(offset)

    def data_ranges(self, names: Sequence[bytes]) -> np.ndarray:
        """``(start, stop)`` of the data of every chunk of ``names``, at once.

        Returns
        -------
        numpy.ndarray
            ``int64[len(names), 2]``: ``(-1, -1)`` for a name the map does not
            list, ``(-2, -2)`` for a chunk without a valid header (``data_range``
            of its name raises the error). Local files are read straight from
            their map, in one pass; other sources read the chunk headers in one
            coalesced request.
        """
        last = self.size - CHUNK_HEADER.size  # the last offset a header fits at
        found = (self.offsets.get(name) for name in names)
        offsets = np.fromiter(
            (-1 if o is None else o if o <= last else -2 for o in found),
            np.int64,
            len(names),
        )
        out = np.full((len(names), 2), -1, np.int64)
        out[offsets == -2] = -2
        listed = np.flatnonzero(offsets >= 0)
        if not listed.size:
            return out
        where = offsets[listed]
        buffer = self.source.buffer()
        if buffer is not None:
            heads = buffer[where[:, None] + np.arange(CHUNK_HEADER.size)]
        else:
            ranges = [(o, o + CHUNK_HEADER.size) for o in where.tolist()]
            data = self.source.read_many(ranges, max_gap=0)
            heads = np.frombuffer(b"".join(data), np.uint8).reshape(-1, 16)
        magic = heads[:, :4].copy().view("<u4")[:, 0]
        name_len = heads[:, 4:8].copy().view("<u4")[:, 0].astype(np.int64)
        data_len = heads[:, 8:].copy().view("<u8")[:, 0]
        valid = (magic == CHUNK_MAGIC) & (data_len <= MAX_CHUNK_BYTES)
        start = np.minimum(where + CHUNK_HEADER.size + name_len, self.size)
        stop = start + np.minimum(data_len, self.size - start).astype(np.int64)
        out[listed, 0] = np.where(valid, start, -2)
        out[listed, 1] = np.where(valid, stop, -2)
        return out

    def layer_frames(self, file_tag: str) -> LayerFrames:
        """Where the data of every listed frame chunk of a layer lies (cached).

        Costs one pass over the chunk names and one over the frames' chunk
        headers the first time a layer is asked for.
        """
        frames = self._layer_frames.get(file_tag)
        if frames is None:
            prefix = binary_frame_chunk_name(file_tag, 0)[:-2]
            seqs = np.array(self.sequence_indices(prefix), np.int64)
            names = [binary_frame_chunk_name(file_tag, s) for s in seqs.tolist()]
            frames = LayerFrames(seqs, self.data_ranges(names))
            self._layer_frames[file_tag] = frames
        return frames

    def read_range(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of the file (cut at its end): a piece of a
        chunk whose range ``data_range`` gave."""
        return self._bytes(start, stop)

    def data_length(self, name: bytes) -> int | None:
        """Bytes of data of the chunk ``name`` (cut at the end of the file), or None
        if the map does not list it. Reads only the chunk's header."""
        offset = self.offsets.get(name)
        if offset is None:
            return None
        start, stop = self._data_range(offset)
        return stop - start

    def data_lengths(self, names: Sequence[bytes]) -> list[int | None]:
        """``data_length`` of every name; remote sources read the headers at once."""
        if not self.source.remote:
            return [self.data_length(name) for name in names]
        offsets = sorted({o for n in names if (o := self.offsets.get(n)) is not None})
        for offset in offsets:
            self._check_offset(offset)
        heads = self.source.read_many(
            [(o, o + CHUNK_HEADER.size) for o in offsets], max_gap=0
        )
        lengths = {}
        for offset, head in zip(offsets, heads, strict=True):
            _, start, stop = self._parse_header(offset, head)
            lengths[offset] = stop - start
        return [
            None if (o := self.offsets.get(name)) is None else lengths[o]
            for name in names
        ]

    def sequence_indices(self, prefix: bytes) -> list[int]:
        """Sorted ``seq`` of every listed chunk named ``prefix + str(seq) + "!"``.

        Costs one pass over the chunk names the first time a prefix is asked
        for, whatever number of frames the experiment claims (a corrupt one may
        claim billions); later calls reuse the answer (do not modify it).
        """
        found = self._seqs.get(prefix)
        if found is None:
            found = []
            for name in self.offsets:
                if name.startswith(prefix):
                    digits = name[len(prefix) : -1]
                    if digits.isdigit() and digits.decode() == str(int(digits)):
                        found.append(int(digits))
            found.sort()
            self._seqs[prefix] = found
        return found

    def read(self, name: bytes) -> bytes | None:
        """Data of the chunk called ``name``, or None if the map does not list it."""
        if self.source.remote:
            return self.read_many([name])[0]
        offset = self.offsets.get(name)
        return None if offset is None else self.chunk_data_at(offset)

    def read_many(self, names: Sequence[bytes]) -> list[bytes | None]:
        """``read`` of every name.

        Remote sources fetch every chunk at once, from its header to the next
        chunk's offset (one coalesced, concurrent request), and the rest of any
        chunk longer than that in a second one.
        """
        if not self.source.remote:
            return [self.read(name) for name in names]
        chunks: dict[int, bytes] = {}
        with self._recent_lock:
            for n in names:
                o = self.offsets.get(n)
                if o is not None and o in self._recent:
                    chunks[o] = self._recent[o]
        offsets = sorted(
            {o for n in names if (o := self.offsets.get(n)) is not None} - set(chunks)
        )
        spans = []
        for offset in offsets:
            self._check_offset(offset)
            i = bisect.bisect_right(self._starts, offset)
            end = self._starts[i] if i < len(self._starts) else self.size
            end = min(end, offset + SPECULATIVE_CHUNK_BYTES, self.size)
            spans.append((offset, max(end, offset + CHUNK_HEADER.size)))
        first = self.source.read_many(spans)
        ranges = {}
        rest = []
        for (offset, end), data in zip(spans, first, strict=True):
            _, start, stop = self._parse_header(offset, data)
            ranges[offset] = (start, stop, data)
            if stop > end:
                rest.append((max(start, end), stop))
        more = dict(zip(rest, self.source.read_many(rest), strict=True))
        for offset, (start, stop, data) in ranges.items():
            end = offset + len(data)
            piece = data[start - offset : stop - offset]
            if stop > end:
                piece += more[(max(start, end), stop)]
            chunks[offset] = piece
        with self._recent_lock:
            for offset in offsets[-RECENT_CHUNKS:]:
                self._recent[offset] = chunks[offset]
                self._recent.move_to_end(offset)
            while len(self._recent) > RECENT_CHUNKS:
                self._recent.popitem(last=False)
        return [
            None if (o := self.offsets.get(name)) is None else chunks[o]
            for name in names
        ]
