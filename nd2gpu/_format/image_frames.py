"""Image frames: where a frame's pixels lie in its chunk, and how they are laid out.

The one home of these facts, for the reader (``nd2gpu.FrameDataset``) and the
writer (``write_nd2``); read off nd2's reader (``read_frame``), which defines
what a frame is. ``docs/format.md`` describes the bytes.

Frame ``seq`` is the chunk ``ImageDataSeq|{seq}!``. Its data starts with a
float64 acquisition time; the pixels follow, stored one of two ways, as the
image attributes' ``eCompression`` says:

- ``"lossless"``: the rest of the chunk's data is one zlib stream that inflates
  to the pixels;
- anything else: the pixels themselves, which nd2 reads at a fixed
  ``PIXELS_OFFSET`` bytes from the chunk's header, whatever the name's length
  (files align them there).

The pixels of a frame are rows of ``uiWidthBytes`` bytes; a row holds
``uiWidth`` pixels of ``uiComp`` interleaved components (the channels, or the
samples of an RGB channel), each ``uiBpcInMemory`` bits; bytes past them to the
row's end are padding.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

#: Bytes before the pixels (or the zlib stream) in an image chunk's data: the
#: frame's acquisition time, float64.
FRAME_TIMESTAMP: Final = struct.Struct("<d")
#: Uncompressed pixels start this many bytes after their chunk's header offset
#: (nd2 reads them there: 24 + 4072 bytes; a chunk's header, name and timestamp
#: fill exactly this much in files NIS-Elements writes).
PIXELS_OFFSET: Final = 4096
#: ``eCompression`` of the image attributes, as nd2 names the values (nd2 reads
#: 2, any other value and none as uncompressed).
COMPRESSION_CODES: Final = {"lossless": 0, "lossy": 1, None: 2}
#: The one compression a reader inflates (nd2 reads every other frame as raw
#: pixels).
LOSSLESS: Final = "lossless"


def image_frame_chunk_name(seq: int) -> bytes:
    """Name of the chunk that holds image frame ``seq`` (its sequence index)."""
    return f"ImageDataSeq|{seq}!".encode()


@dataclass(frozen=True)
class ImageLayout:
    """How a file's image frames are stored, from its image attributes.

    Attributes
    ----------
    height, width : int
        Rows and pixels per row (``uiHeight``, ``uiWidth``).
    row_bytes : int
        Bytes per stored row, padding included (``uiWidthBytes``).
    components : int
        Interleaved components per pixel (``uiComp``): channels times the
        samples of each (3 for RGB).
    channels : int
        Channels (the number of picture planes; 1 when absent).
    bits : int
        Bits per component in memory (``uiBpcInMemory``): 8, 16 or 32 (float).
    compression : {"lossless", "lossy", None}
        ``eCompression`` as nd2 names it.
    """

    height: int
    width: int
    row_bytes: int
    components: int
    channels: int
    bits: int
    compression: str | None = None

    @classmethod
    def from_attributes(cls, attributes: Any) -> ImageLayout:
        """The layout described by nd2's ``ND2File.attributes``."""
        return cls(
            height=int(attributes.heightPx),
            width=int(attributes.widthPx or 0),
            row_bytes=int(attributes.widthBytes or 0),
            components=int(attributes.componentCount),
            channels=int(attributes.channelCount or 1),
            bits=int(attributes.bitsPerComponentInMemory),
            compression=attributes.compressionType,
        )

    @property
    def compressed(self) -> bool:
        """Whether frames are stored as zlib streams."""
        return self.compression == LOSSLESS

    @property
    def dtype(self) -> np.dtype:
        """The pixels' dtype: float32 for 32 bits, else unsigned (as nd2)."""
        kind = "f" if self.bits == 32 else "u"
        return np.dtype(f"{kind}{self.bits // 8}")

    @property
    def samples(self) -> int:
        """Components per channel (3 for RGB, else 1)."""
        return self.components // self.channels

    @property
    def stored_shape(self) -> tuple[int, int, int, int]:
        """``(Y, X, C, S)``: the axes of the stored pixels, as nd2 views them."""
        return (self.height, self.width or 1, self.channels, self.samples)

    @property
    def strides(self) -> tuple[int, int, int, int] | None:
        """Byte strides of ``stored_shape`` for padded rows, None when rows are
        not padded (the pixels are then C-contiguous).

        With padding, nd2 steps channels and samples alike by one component.
        """
        item = self.bits // 8
        if not (self.width and self.row_bytes):
            return None
        if self.row_bytes == self.width * item * self.components:
            return None
        return (self.row_bytes, self.components * item, item, item)

    @property
    def frame_bytes(self) -> int:
        """Bytes of pixels a frame needs: the extent of its strided view."""
        shape = self.stored_shape
        item = self.dtype.itemsize
        if 0 in shape:
            return 0
        strides = self.strides
        if strides is None:
            return math.prod(shape) * item
        return sum((n - 1) * s for n, s in zip(shape, strides, strict=True)) + item

    @property
    def stored_bytes(self) -> int:
        """Bytes a frame's pixels occupy, the last row's padding included."""
        if self.strides is None:
            return self.frame_bytes
        return self.height * self.row_bytes

    def channel_first(self, pixels: Any) -> np.ndarray:
        """The ``(C, Y, X, S)`` view of a frame's pixels (bytes-like, at least
        ``frame_bytes`` long): nd2's ``read_frame`` before its ``squeeze``."""
        stored = np.ndarray(
            self.stored_shape, self.dtype, buffer=pixels, strides=self.strides
        )
        return stored.transpose(2, 0, 1, 3)

    def check(self) -> str | None:
        """Why frames of this layout cannot be read, or None if they can."""
        if self.bits not in (8, 16, 32):
            return f"{self.bits} bits per component (nd2 reads 8, 16 or 32)"
        if self.channels < 1 or self.components % self.channels:
            return (
                f"{self.components} components do not divide into "
                f"{self.channels} channels"
            )
        if self.height < 0 or self.width < 0:
            return f"a frame of {self.height}x{self.width} pixels"
        return None


def row_bytes(width: int, components: int, dtype: np.dtype) -> int:
    """``uiWidthBytes`` of unpadded rows (what nd2gpu writes)."""
    return width * components * np.dtype(dtype).itemsize
