"""Mutations of payloads and of whole ND2 files, for the fuzz tests.

They are plain functions of their parameters, so hypothesis can draw the
parameters and atheris can feed them from its byte stream.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import nd2gpu
from nd2gpu._format.container import (
    CHUNK_HEADER,
    CHUNKMAP_LOCATION,
    FILEMAP_SIGNATURE,
)
from nd2gpu._format.mask_encode import encode_label_frame
from nd2gpu._format.mask_stream import MASK_PREFIX_BYTES

# payload builders and mutations -------------------------------------------------


def label_words(labels: np.ndarray) -> bytes:
    """The inflated stream of a label image, as write_nd2 encodes it."""
    return encode_label_frame(labels)


def flip_bits(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    """Flip bit ``bit % 8`` of byte ``pos % len(data)`` for each pair."""
    if not data:
        return data
    out = bytearray(data)
    for pos, bit in flips:
        out[pos % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


def insert_bytes(data: bytes, pos: int, blob: bytes) -> bytes:
    pos %= len(data) + 1
    return data[:pos] + blob + data[pos:]


def delete_bytes(data: bytes, pos: int, count: int) -> bytes:
    if not data:
        return data
    pos %= len(data)
    return data[:pos] + data[pos + count :]


def set_words(words: bytes, edits: list[tuple[int, int]]) -> bytes:
    """Set word ``index % n`` to ``value`` for each pair (n words in ``words``)."""
    n = len(words) // 4
    if n == 0:
        return words
    out = bytearray(words)
    for index, value in edits:
        i = index % n
        out[4 * i : 4 * i + 4] = struct.pack("<I", value & 0xFFFFFFFF)
    return bytes(out)


# ---------------------------------------------------------------------------
# whole files


@dataclass
class Layout:
    """Where things are in a file written by write_nd2 (before any mutation)."""

    size: int
    map_offset: int
    #: (name, header offset, name length, data length) of every listed chunk.
    chunks: list[tuple[bytes, int, int, int]] = field(default_factory=list)

    @property
    def map_data(self) -> tuple[int, int]:
        """``(start, stop)`` of the chunk map's data (entries and tail)."""
        for name, offset, name_len, data_len in self.chunks:
            if name == FILEMAP_SIGNATURE:
                start = offset + CHUNK_HEADER.size + name_len
                return start, start + data_len
        raise LookupError("no chunk map")  # pragma: no cover

    def mask_chunks(self) -> list[tuple[bytes, int, int, int]]:
        return [c for c in self.chunks if c[0].startswith(b"CustomDataSeq|")]

    def entry_positions(self, data: bytes) -> list[tuple[bytes, int]]:
        """``(name, byte position of its uint64 offset)`` of every map entry."""
        start, stop = self.map_data
        out, pos = [], start
        while True:
            end = data.index(b"!", pos, stop)
            name = data[pos : end + 1]
            if name.startswith(b"ND2 CHUNK MAP SIGNATURE"):
                return out
            out.append((name, end + 1))
            pos = end + 1 + 16


def layout(data: bytes) -> Layout:
    """Read the layout of an intact file (as write_nd2 writes it)."""
    _, map_offset = CHUNKMAP_LOCATION.unpack(data[-CHUNKMAP_LOCATION.size :])
    out = Layout(size=len(data), map_offset=map_offset)
    pos = 0
    while pos + CHUNK_HEADER.size <= len(data):
        magic, name_len, data_len = CHUNK_HEADER.unpack_from(data, pos)
        if magic != 0x0ABECEDA:
            pos += 4096 - pos % 4096 if pos % 4096 else 4096
            continue
        raw = data[pos + 16 : pos + 16 + name_len]
        name = raw[: raw.index(b"!") + 1]
        out.chunks.append((name, pos, name_len, data_len))
        pos += CHUNK_HEADER.size + name_len + data_len
        pos += -pos % 4096
    return out


# file mutations -----------------------------------------------------------------


def set_u64(data: bytearray, pos: int, value: int) -> None:
    data[pos : pos + 8] = (value % (1 << 64)).to_bytes(8, "little")


def _entry(data: bytes, lay: Layout, a: int) -> tuple[bytes, int]:
    entries = lay.entry_positions(data)
    return entries[a % len(entries)]


def _wild_offset(lay: Layout, a: int, b: int) -> int:
    offsets = [c[1] for c in lay.chunks]
    choices = (
        lay.size + b,  # past the end
        lay.size - 1 - b % 64,  # inside the tail
        lay.size - 40,  # the tail itself
        offsets[b % len(offsets)],  # another chunk (overlap)
        offsets[b % len(offsets)] + 1 + b % 4095,  # inside another chunk
        (1 << 63) + b,
        (1 << 64) - 1 - b % 16,
        b,
    )
    return choices[a % len(choices)]


def _wild_length(original: int, size: int, a: int, b: int) -> int:
    choices = (
        0,
        b % 8,
        max(0, original - 1 - b % 16),
        original + 1 + b % 64,
        original + 4096 * (1 + b % 4),
        size,
        size + b,
        1 << 32,
        (1 << 63) + b,
        (1 << 64) - 1,
        b,
    )
    return choices[a % len(choices)]


def m_flip_map(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Flip one bit in the chunk map (entries, names and the tail)."""
    start, stop = lay.map_data
    data[start + a % (stop - start)] ^= 1 << (b % 8)


def m_flip_mask_chunk(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Flip one bit in a mask chunk: header, name or payload."""
    masks = lay.mask_chunks()
    _, offset, name_len, data_len = masks[a % len(masks)]
    data[offset + b % (16 + name_len + data_len)] ^= 1 << (a // 7 % 8)


def m_flip_payload(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Flip one bit in the zlib stream of a mask chunk (after its prefix)."""
    masks = lay.mask_chunks()
    _, offset, name_len, data_len = masks[a % len(masks)]
    start = offset + 16 + name_len + MASK_PREFIX_BYTES
    data[start + b % max(1, data_len - MASK_PREFIX_BYTES)] ^= 1 << (a // 7 % 8)


def m_entry_offset(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Point a chunk-map entry somewhere wrong (outside, overlapping, inside)."""
    _, pos = _entry(bytes(data), lay, a)
    set_u64(data, pos, _wild_offset(lay, a // 11, b))


def m_mask_entry_offset(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Point a mask chunk's map entry at another chunk or at nonsense."""
    names = {c[0] for c in lay.mask_chunks()}
    entries = [e for e in lay.entry_positions(bytes(data)) if e[0] in names]
    _, pos = entries[a % len(entries)]
    set_u64(data, pos, _wild_offset(lay, a // 13, b))


def m_data_len(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Give a chunk a wrong data length (truncated, overlapping, huge)."""
    chunks = lay.mask_chunks() + [c for c in lay.chunks if c[0] == FILEMAP_SIGNATURE]
    _, offset, _, data_len = chunks[a % len(chunks)]
    set_u64(data, offset + 8, _wild_length(data_len, lay.size, a // 17, b))


def m_name_len(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Give a mask chunk a wrong name length."""
    masks = lay.mask_chunks()
    _, offset, name_len, _ = masks[a % len(masks)]
    value = _wild_length(name_len, lay.size, a // 19, b) % (1 << 32)
    data[offset + 4 : offset + 8] = value.to_bytes(4, "little")


def m_map_location(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Corrupt the chunk-map location in the file's last 8 bytes."""
    set_u64(data, len(data) - 8, _wild_offset(lay, a, b))


def m_signature(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Damage the chunk-map signature in the tail (or remove the tail)."""
    if a % 3 == 0:
        del data[len(data) - 40 :]
    else:
        data[len(data) - 40 + b % 32] ^= 1 << (a % 8)


def m_truncate(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Cut the file's tail off."""
    cut = (a * 4099 + b) % len(data)
    del data[len(data) - cut :]


def m_splice(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Insert or delete bytes in the map or a mask chunk, shifting what follows."""
    start, stop = lay.map_data
    masks = lay.mask_chunks()
    _, offset, name_len, data_len = masks[b % len(masks)]
    spots = (start + b % (stop - start), offset + b % (16 + name_len + data_len))
    pos = spots[a % 2]
    if a // 2 % 2:
        del data[pos : pos + 1 + a // 4 % 8]
    else:
        data[pos:pos] = bytes([a % 256]) * (1 + a // 4 % 8)


def m_flip_anywhere(data: bytearray, lay: Layout, a: int, b: int) -> None:
    """Flip one bit anywhere in the file (metadata chunks included)."""
    data[(a * 65537 + b) % len(data)] ^= 1 << (a % 8)


FILE_MUTATIONS: tuple[Callable[[bytearray, Layout, int, int], None], ...] = (
    m_flip_map,
    m_flip_mask_chunk,
    m_flip_payload,
    m_entry_offset,
    m_mask_entry_offset,
    m_data_len,
    m_name_len,
    m_map_location,
    m_signature,
    m_truncate,
    m_splice,
    m_flip_anywhere,
)


def mutate_file(base: bytes, steps: list[tuple[int, int, int]]) -> bytes:
    """Apply ``FILE_MUTATIONS[op % n](a, b)`` for each ``(op, a, b)``, in order.

    Positions are computed on the intact file's layout, so later steps after a
    splice or truncation hit shifted bytes: also a useful kind of damage.
    """
    lay = layout(base)
    data = bytearray(base)
    for op, a, b in steps:
        if not data:
            break
        try:
            FILE_MUTATIONS[op % len(FILE_MUTATIONS)](data, lay, a, b)
        except (IndexError, ValueError, ZeroDivisionError):  # nothing to hit
            continue
    return bytes(data)


def base_files(directory: Path) -> dict[str, bytes]:
    """Small files written by write_nd2 to mutate (written once per directory)."""
    rng = np.random.default_rng(7)
    frames = np.zeros((2, 2, 5, 6), np.uint16)
    frames[0, 0, 1:3, 2:5] = 7
    frames[0, 1, 4, :] = 65535
    frames[1, 0] = rng.integers(0, 3, (5, 6))
    nuclei = (frames > 0).astype(np.uint8) * 3
    specs = {
        "single": ({"cells": rng.integers(0, 4, (6, 7)).astype(np.uint16)}, []),
        "loops": ({"cells": frames, "nuclei": nuclei}, [("T", 2), ("Z", 2)]),
    }
    out = {}
    for name, (labels, loops) in specs.items():
        path = directory / f"{name}.nd2"
        if not path.exists():
            nd2gpu.write_nd2(path, labels, loops=loops)
        out[name] = path.read_bytes()
    return out
