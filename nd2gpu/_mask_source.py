"""Where a file's binary-layer payloads come from: its chunks, reopened on demand."""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ._chunk_format import MASK_PREFIX_BYTES, binary_frame_chunk_name
from ._chunk_index import ChunkIndex
from ._errors import DecodeError


@dataclass(frozen=True)
class LayerMeta:
    """One item of ``BinaryMetadata_v1``: a binary layer's descriptive fields."""

    name: str
    file_tag: str
    comp_name: str | None = None
    comp_order: int | None = None
    color: int | None = None
    color_mode: int | None = None
    state: int | None = None
    layer_id: int | None = None

    @classmethod
    def from_item(cls, item: dict) -> LayerMeta:
        """Build from a decoded metadata item (nd2's ``BinaryMetaDict``)."""
        return cls(
            name=item["Name"],
            file_tag=item["FileTag"],
            comp_name=item.get("CompName"),
            comp_order=item.get("CompOrder"),
            color=item.get("Color"),
            color_mode=item.get("ColorMode"),
            state=item.get("State"),
            layer_id=item.get("BinLayerID"),
        )


class MaskSource:
    """Reads mask payloads of one ND2 file.

    While the owning ``ND2File`` is open, reads go through its memory map. After it
    is closed, each decode call reopens the file for its own duration and closes it
    again, so arrays can still be built from layers handed out earlier, and no file
    handle outlives ``close()``.
    """

    def __init__(self, path: str | os.PathLike[str], n_frames: int) -> None:
        self.path = Path(path)
        self.n_frames = n_frames
        self._index: ChunkIndex | None = None
        self._lock = threading.Lock()
        self._stat: tuple[int, ...] | None = None
        self._transient = False
        #: Decode calls in flight on each shared index. An index closed while in
        #: use is released by the last of them.
        self._users: dict[ChunkIndex, int] = {}

    def open_index(self) -> ChunkIndex:
        """The live chunk index, opening the file if needed."""
        with self._lock:
            return self._shared_index()

    def _shared_index(self) -> ChunkIndex:
        if self._index is None or self._index.closed:
            self._index = self._open()
        return self._index

    def _open(self) -> ChunkIndex:
        index = ChunkIndex(self.path)
        st = index.stat
        # The inode too: a file replaced by a rename (as write_nd2 does) may have
        # the same size and, within the clock's granularity, the same mtime.
        stat = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if self._stat is None:
            self._stat = stat
        elif stat != self._stat:
            index.close()
            raise DecodeError(
                "file changed on disk since it was opened", path=self.path, where="file"
            )
        return index

    def close(self) -> None:
        """Release the memory map (the source reopens on demand).

        Decode calls still reading it keep it until the last one is done.
        """
        with self._lock:
            index, self._index = self._index, None
            if index is not None and index not in self._users:
                index.close()

    def detach(self) -> None:
        """The owning file closed: release the map; later reads reopen briefly."""
        with self._lock:
            self._transient = True
        self.close()

    def attach(self) -> None:
        """The owning file (re)opened: keep the map open between reads."""
        with self._lock:
            self._transient = False

    @contextmanager
    def reading(self) -> Iterator[ChunkIndex]:
        """Yield a chunk index for one decode call.

        While the owning file is open this is its shared index; after it closed,
        a private one opened for this call alone. A call that started before
        ``close()`` finishes on the index it got.
        """
        with self._lock:
            shared = not self._transient
            if shared:
                index = self._shared_index()
                self._users[index] = self._users.get(index, 0) + 1
        if not shared:
            index = self._open()
            try:
                yield index
            finally:
                index.close()
            return
        try:
            yield index
        finally:
            with self._lock:
                left = self._users.pop(index) - 1
                if left:
                    self._users[index] = left
                elif index is not self._index:  # closed while in use
                    index.close()

    def frames(self, index: ChunkIndex, file_tag: str) -> list[int]:
        """Sequence indices below ``n_frames`` that have a chunk, ascending.

        Only these can have a mask; the others are None (zeros when stacked).
        """
        prefix = binary_frame_chunk_name(file_tag, 0)[:-2]
        seqs = index.sequence_indices(prefix)
        return seqs[: bisect.bisect_left(seqs, self.n_frames)]

    def payload(self, index: ChunkIndex, file_tag: str, seq: int) -> bytes | None:
        """The zlib stream of one frame, or None when the frame has no mask.

        As in the reference reader, a frame has no mask when its chunk is missing
        or holds nothing after the 4-byte prefix.
        """
        data = index.read(binary_frame_chunk_name(file_tag, seq))
        if data is None or len(data) <= MASK_PREFIX_BYTES:
            return None
        return data[MASK_PREFIX_BYTES:]
