"""Constants of the ND2 chunk container (docs/format.md), for reader and writer."""

from __future__ import annotations

import struct
from typing import Final

CHUNK_MAGIC: Final = 0x0ABECEDA
#: ``uint32 magic, uint32 name_len, uint64 data_len`` at the start of every chunk.
CHUNK_HEADER: Final = struct.Struct("<IIQ")
FILE_SIGNATURE: Final = b"ND2 FILE SIGNATURE CHUNK NAME01!"
FILEMAP_SIGNATURE: Final = b"ND2 FILEMAP SIGNATURE NAME 0001!"
CHUNKMAP_SIGNATURE: Final = b"ND2 CHUNK MAP SIGNATURE 0000001!"
#: The last 40 bytes of a file: chunk-map signature and the chunk map's offset.
CHUNKMAP_LOCATION: Final = struct.Struct("<32sQ")
#: ``uint64 offset, uint64 size`` after each name in the chunk map.
CHUNKMAP_ENTRY: Final = struct.Struct("<QQ")
CHUNK_ALIGNMENT: Final = 4096

BINARY_METADATA_CHUNK: Final = b"CustomDataVar|BinaryMetadata_v1!"


def binary_frame_chunk_name(file_tag: str, seq_index: int) -> bytes:
    """Name of the chunk that holds frame ``seq_index`` of the layer ``file_tag``."""
    return f"CustomDataSeq|{file_tag}|{seq_index}!".encode()
