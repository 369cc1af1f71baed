"""Image frames read by nd2gpu: their bytes from the chunk index, into a batch.

An uncompressed frame is copied from the memory map straight into its place in
the batch (one copy); a compressed one is inflated in the calling decode thread
(GIL released), then copied. Remote files fetch the pixels of a window of
frames in one coalesced, concurrent request, made by the first thread that needs
one of them. ``docs/format.md`` describes the bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._decode.inflate import INFLATER, corrupt_stream, truncated_stream
from .._errors import DecodeError
from .._format.chunk_index import ChunkIndex
from .._format.image_frames import (
    FRAME_TIMESTAMP,
    PIXELS_OFFSET,
    ImageLayout,
    image_frame_chunk_name,
)

#: Remote files: frames whose pixels are fetched in one request.
REMOTE_WINDOW = 16


@dataclass(frozen=True)
class ImageSelection:
    """The channels taken from each frame, and the shape of one frame's image.

    Attributes
    ----------
    layout : ImageLayout
        How the file stores its frames.
    channels : tuple of int
        Indices of the channels taken, in order.
    shape : tuple of int
        One frame's image: nd2's ``read_frame`` shape for all channels, and for
        a selection the same with its channel axis dropped (one channel asked
        for by itself) or kept (a list of channels).
    """

    layout: ImageLayout
    channels: tuple[int, ...]
    shape: tuple[int, ...]

    @classmethod
    def of(
        cls, layout: ImageLayout, channels: int | Sequence[int] | None
    ) -> ImageSelection:
        """The selection of ``channels`` (None: all, as ``read_frame`` gives them;
        one index: that channel's axis dropped; a sequence: kept)."""
        c, y, x, s = layout.channels, layout.height, layout.width or 1, layout.samples
        if channels is None:
            taken, keep = tuple(range(c)), c != 1
        elif isinstance(channels, int):
            taken, keep = (channels,), False
        else:
            taken, keep = tuple(channels), True
        rest = tuple(n for n in (y, x, s) if n != 1)
        return cls(layout, taken, ((len(taken),) if keep else ()) + rest)

    @property
    def dtype(self) -> np.dtype:
        return self.layout.dtype

    def copy_into(self, pixels: object, dest: np.ndarray) -> None:
        """Copy the selected channels of one frame's pixels into ``dest`` (a
        C-contiguous array of ``shape``)."""
        layout = self.layout
        frame = layout.channel_first(pixels)
        out = dest.reshape(len(self.channels), *frame.shape[1:])
        if self.channels == tuple(range(layout.channels)):
            np.copyto(out, frame)
        else:
            for j, c in enumerate(self.channels):
                np.copyto(out[j], frame[c])


def inflate_pixels(data: object, layout: ImageLayout) -> bytes:
    """Inflate a compressed frame's zlib stream into its pixels.

    The stream may hold no more than a frame's stored bytes, and must end.

    Raises
    ------
    DecodeError
        If the stream is corrupt, truncated, or inflates to fewer bytes than a
        frame needs or more than it holds (offsets in the inflated stream).
    """
    need, cap = layout.frame_bytes, max(layout.stored_bytes, 1)
    d = INFLATER.decompressobj()
    try:
        pixels = d.decompress(data, cap)
        more = not d.eof and bool(d.decompress(d.unconsumed_tail, 1))
    except INFLATER.error as e:
        raise corrupt_stream(e) from None
    if more:
        raise DecodeError(
            f"image stream inflates past {cap} bytes, more than a frame holds",
            offset=cap,
        )
    if not d.eof:
        raise truncated_stream(len(pixels))
    if len(pixels) < need:
        raise DecodeError(
            f"image stream inflates to {len(pixels)} bytes, a frame needs {need}",
            offset=len(pixels),
        )
    return pixels


class ImageFrames:
    """The image frames of one call: frame ``seqs[i]`` into a destination.

    Thread-safe: decode threads call ``fill`` for different ``i``.

    Parameters
    ----------
    index : ChunkIndex
        The file's chunk index, open for the call.
    selection : ImageSelection
        The layout and the channels taken.
    seqs : sequence of int
        The frames' sequence indices, in batch order.
    path : str
        What errors name.
    """

    def __init__(
        self,
        index: ChunkIndex,
        selection: ImageSelection,
        seqs: Sequence[int] | np.ndarray,
        path: str,
    ) -> None:
        self._index = index
        self._selection = selection
        self._layout = selection.layout
        self._seqs = list(seqs)
        self._path = path
        self._remote = index.source.remote
        n = len(self._seqs)
        self._windows = [
            range(lo, min(lo + REMOTE_WINDOW, n)) for lo in range(0, n, REMOTE_WINDOW)
        ]
        self._locks = [threading.Lock() for _ in self._windows]
        self._failed: list[BaseException | None] = [None] * len(self._windows)
        self._fetched: dict[int, _Data | None] = {}

    def fill(self, i: int, dest: np.ndarray) -> None:
        """Write the image of frame ``seqs[i]`` into ``dest`` (C-contiguous, of
        the selection's shape and dtype); zeros where the frame has no chunk.

        Raises
        ------
        DecodeError
            Naming the file and frame, if its data are missing or corrupt.
        """
        try:
            found = self._remote_data(i) if self._remote else self._local_data(i)
            if found is None:
                dest.fill(0)
                return
            data, start = found
            layout = self._layout
            if layout.compressed:
                pixels: bytes | memoryview = inflate_pixels(
                    _stream(data, start), layout
                )
            else:
                pixels = _pixels(data, start, layout.frame_bytes, self._index.size)
            self._selection.copy_into(pixels, dest)
        except DecodeError as e:
            raise e.with_context(path=self._path, frame=self._seqs[i]) from None

    def _range(self, i: int) -> tuple[int, int] | None:
        """The file range holding frame ``seqs[i]``'s data: its chunk's data
        (compressed), or its pixels where nd2 reads them; None: no chunk."""
        name = image_frame_chunk_name(self._seqs[i])
        offset = self._index.offsets.get(name)
        if offset is None:
            return None
        if self._layout.compressed:
            return self._index.data_range(name)
        size = self._index.size
        start = min(offset + PIXELS_OFFSET, size)
        return start, min(start + self._layout.frame_bytes, size)

    def _local_data(self, i: int) -> _Data | None:
        found = self._range(i)
        if found is None:
            return None
        start, stop = found
        return self._index.source.view(start, stop), start

    def _remote_data(self, i: int) -> _Data | None:
        w = i // REMOTE_WINDOW
        with self._locks[w]:
            failed = self._failed[w]
            if failed is not None:
                raise failed
            if i not in self._fetched:
                try:
                    self._fetch(self._windows[w])
                except BaseException as e:
                    self._failed[w] = e
                    raise
            return self._fetched.pop(i)  # each is read once: hold no more

    def _fetch(self, window: range) -> None:
        """Fetch the data of a window of frames in one request."""
        index = self._index
        if self._layout.compressed:
            names = [image_frame_chunk_name(self._seqs[i]) for i in window]
            chunks = index.read_many(names)
            for i, name, chunk in zip(window, names, chunks, strict=True):
                self._fetched[i] = (
                    None if chunk is None else (chunk, index.offsets[name])
                )
            return
        found = [self._range(i) for i in window]
        got = iter(index.source.read_many([r for r in found if r is not None]))
        for i, where in zip(window, found, strict=True):
            self._fetched[i] = None if where is None else (next(got), where[0])


#: A frame's data and the file offset where it starts.
_Data = tuple[bytes | memoryview, int]


def _stream(data: bytes | memoryview, start: int) -> bytes | memoryview:
    """The zlib stream of a compressed frame's chunk data (at ``start``)."""
    if len(data) < FRAME_TIMESTAMP.size:
        raise DecodeError(
            f"image chunk holds {len(data)} bytes, less than its "
            f"{FRAME_TIMESTAMP.size}-byte timestamp",
            offset=start,
            where="file",
        )
    return data[FRAME_TIMESTAMP.size :]


def _pixels(
    data: bytes | memoryview, start: int, need: int, file_size: int
) -> bytes | memoryview:
    """An uncompressed frame's pixels, read at ``start``: ``need`` bytes."""
    if len(data) < need:
        raise DecodeError(
            f"the frame's {need} bytes of pixels at offset {start} run past the "
            f"end of the file ({file_size} bytes)",
            offset=start,
            where="file",
        )
    return data
