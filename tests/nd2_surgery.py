"""Rewrite ND2 files chunk by chunk, for tests of missing and corrupt data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nd2gpu._format.chunk_index import ChunkIndex
from nd2gpu._format.container import CHUNK_HEADER, FILEMAP_SIGNATURE
from nd2gpu._write.atomic import atomic_file as _atomic_output
from nd2gpu._write.nd2_writer import _ChunkWriter

#: An edit gets a chunk's name and data and returns new data, or None to drop it.
Edit = Callable[[bytes, bytes], bytes | None]


def chunks(path: Path) -> list[tuple[bytes, int, int, bytes]]:
    """``(name, header offset, name length, data)`` of every listed chunk."""
    with ChunkIndex(path) as index:
        out = []
        for name, offset in sorted(index.offsets.items(), key=lambda kv: kv[1]):
            _, name_len, _ = CHUNK_HEADER.unpack(index.read_range(offset, offset + 16))
            out.append((name, offset, name_len, index.chunk_data_at(offset)))
        return out


def rewrite(src: Path, dst: Path, edit: Edit) -> Path:
    """Copy ``src`` to ``dst`` chunk by chunk, passing each chunk through ``edit``."""
    items = chunks(src)
    with _atomic_output(Path(dst)) as fh:
        writer = _ChunkWriter(fh)
        for name, _, name_len, data in items:
            if name == FILEMAP_SIGNATURE:
                continue
            new = edit(name, data)
            if new is not None:
                writer.add(name, new, name_bytes=name_len)
        writer.finish()
    return Path(dst)


def chunk_offset(path: Path, name: bytes) -> int:
    """Header offset of chunk ``name`` in ``path``."""
    with ChunkIndex(path) as index:
        return index.offsets[name]
