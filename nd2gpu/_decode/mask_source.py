"""Where a file's binary-layer payloads come from: its chunks, reopened on demand."""

from __future__ import annotations

import bisect
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .._errors import DecodeError
from .._format.chunk_index import ChunkIndex
from .._format.container import binary_frame_chunk_name
from .._format.layer_metadata import LayerMeta
from .._format.mask_stream import MASK_PREFIX_BYTES
from .frame import parse_header

_all_sources: weakref.WeakSet[MaskSource] = weakref.WeakSet()


def _reset_sources_in_child() -> None:
    for source in list(_all_sources):
        source._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_sources_in_child)


class MaskSource:
    """Reads mask payloads of one ND2 file.

    While the owning ``ND2File`` is open, reads go through its memory map. After it
    is closed, each decode call reopens the file for its own duration and closes it
    again, so arrays can still be built from layers handed out earlier, and no file
    handle outlives ``close()``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._index: ChunkIndex | None = None
        self._lock = threading.Lock()
        self._stat: tuple[int, ...] | None = None
        self._transient = False
        #: Decode calls in flight on each shared index. An index closed while in
        #: use is released by the last of them.
        self._users: dict[ChunkIndex, int] = {}
        _all_sources.add(self)

    def _after_fork_in_child(self) -> None:
        # A lock held by a parent thread at the fork would never be released in
        # the child (the inherited index has locks too), and the parent's calls
        # in flight are not the child's: the child maps the file afresh.
        self._lock = threading.Lock()
        self._users = {}
        self._index = None

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

    def __getstate__(self) -> dict[str, object]:
        # What identifies the file; maps and locks are made again where it lands.
        return {"path": self.path, "stat": self._stat}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["path"])  # type: ignore[misc, arg-type]
        self._stat = state["stat"]  # type: ignore[assignment]

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

    def token(self) -> tuple[str, tuple[int, ...] | None]:
        """What identifies the file's content (for dask's graph names)."""
        with self.reading():  # learns the file's identity on first use
            pass
        return str(self.path.absolute()), self._stat

    def frames(self, index: ChunkIndex, file_tag: str, n_frames: int) -> list[int]:
        """Sequence indices below ``n_frames`` that have a chunk, ascending.

        Only these can have a mask; the others are None (zeros when stacked).
        """
        prefix = binary_frame_chunk_name(file_tag, 0)[:-2]
        seqs = index.sequence_indices(prefix)
        return seqs[: bisect.bisect_left(seqs, n_frames)]

    def payload(self, index: ChunkIndex, file_tag: str, seq: int) -> bytes | None:
        """The zlib stream of one frame, or None when the frame has no mask.

        As in the reference reader, a frame has no mask when its chunk is missing
        or holds nothing after the 4-byte prefix.
        """
        data = index.read(binary_frame_chunk_name(file_tag, seq))
        if data is None or len(data) <= MASK_PREFIX_BYTES:
            return None
        return data[MASK_PREFIX_BYTES:]

    def has_mask(self, index: ChunkIndex, file_tag: str, seq: int) -> bool:
        """Whether frame ``seq`` has a mask (``payload`` would not be None).

        Reads only the chunk's header, not its data.
        """
        length = index.data_length(binary_frame_chunk_name(file_tag, seq))
        return length is not None and length > MASK_PREFIX_BYTES

    def frame_shape(self, layer: LayerMeta, n_frames: int) -> tuple[int, int]:
        """Shape of the layer's first frame that has a mask, ``(0, 0)`` if none.

        Reads only that frame's header.

        Raises
        ------
        DecodeError
            If that header is corrupt (naming the file, layer and frame).
        """
        with self.reading() as index:
            for seq in self.frames(index, layer.file_tag, n_frames):
                data = self.payload(index, layer.file_tag, seq)
                if data is None:
                    continue
                try:
                    return parse_header(data).shape
                except DecodeError as e:
                    raise e.with_context(
                        path=self.path, layer=layer.name, frame=seq
                    ) from None
        return (0, 0)
