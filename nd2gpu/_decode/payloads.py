"""The payloads of one decode call: each frame's zlib stream as a buffer.

A local file's payloads are views of its memory map, located for the whole call
at once (``ChunkIndex.layer_frames``): no copy and no Python work per frame.
Other sources (URLs, file objects) are read in windows of ``PREFETCH_FRAMES``
frames, each in one coalesced request, made by the first decode thread that
needs one of its frames while the others wait for it.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .._errors import DecodeError
from .._format.chunk_index import ChunkIndex
from .._format.container import binary_frame_chunk_name
from .._format.mask_stream import MASK_PREFIX_BYTES
from .plan import DecodePlan

#: Frames of a remote call fetched together, in one coalesced, concurrent request.
PREFETCH_FRAMES = 64
#: A zlib stream (RFC 1950): a 2-byte header, raw DEFLATE, a big-endian Adler-32.
ZLIB_HEADER_BYTES = 2
ADLER_BYTES = 4

#: A buffer holding one frame's zlib stream (a view of the file where possible).
Payload = Any


class CallPayloads:
    """Where the payloads of a plan's jobs are, and the bytes themselves.

    Thread-safe. ``views(lo, hi)`` gives jobs ``lo:hi``'s payloads (None for a
    frame without a mask: no chunk, or nothing after the chunk's prefix).
    """

    def __init__(self, plan: DecodePlan, index: ChunkIndex) -> None:
        self._plan = plan
        self._index = index
        buffer = index.source.buffer()
        self._views: list[Payload | None] | None = None
        #: The errors of chunks without a valid header, by job.
        self._errors: dict[int, DecodeError] = {}
        if buffer is not None:
            self._views = self._local_views(buffer)
            return
        n = plan.n_jobs
        self._windows = [
            (lo, min(lo + PREFETCH_FRAMES, n)) for lo in range(0, n, PREFETCH_FRAMES)
        ]
        self._locks = [threading.Lock() for _ in self._windows]
        self._fetched: list[list[Payload | None] | None] = [None] * len(self._windows)
        self._failed: list[BaseException | None] = [None] * len(self._windows)

    def _local_views(self, buffer: np.ndarray) -> list[Payload | None]:
        plan = self._plan
        ranges = np.full((plan.n_jobs, 2), -1, np.int64)
        for k, ref in enumerate(plan.layers):
            jobs = np.flatnonzero(plan.layer == k)
            if jobs.size:
                frames = self._index.layer_frames(ref.meta.file_tag)
                ranges[jobs] = frames.lookup(plan.seqs[jobs])
        starts = (ranges[:, 0] + MASK_PREFIX_BYTES).tolist()
        stops = ranges[:, 1].tolist()
        for job in np.flatnonzero(ranges[:, 0] == -2).tolist():
            self._errors[job] = self._chunk_error(job)
        return [
            buffer[a:b] if b > a else None for a, b in zip(starts, stops, strict=True)
        ]

    def _chunk_error(self, job: int) -> DecodeError:
        """The error of job ``job``'s chunk, which has no valid header."""
        ref = self._plan.layers[int(self._plan.layer[job])]
        name = binary_frame_chunk_name(ref.meta.file_tag, int(self._plan.seqs[job]))
        try:
            self._index.data_range(name)
        except DecodeError as e:
            return e
        raise AssertionError(f"chunk {name!r} has a valid header")  # pragma: no cover

    def views(
        self, lo: int, hi: int
    ) -> tuple[list[Payload | None], dict[int, DecodeError] | None]:
        """The payloads of jobs ``lo:hi``: a buffer, or None (no mask); and the
        ``DecodeError`` of each chunk without a valid header, by position
        (naming the file and offset; the caller adds the job's layer and frame).

        Raises
        ------
        OSError
            If a remote read fails.
        """
        if self._views is not None:
            return self._views[lo:hi], self._errors_in(lo, hi) if self._errors else None
        out: list[Payload | None] = []
        for w in range(lo // PREFETCH_FRAMES, (hi - 1) // PREFETCH_FRAMES + 1):
            a, b = self._windows[w]
            out += self._window(w)[max(lo, a) - a : min(hi, b) - a]
        return out, self._errors_in(lo, hi)

    def raw_deflate(self, lo: int, hi: int) -> list[tuple[Payload, int] | None]:
        """Jobs ``lo:hi``'s raw DEFLATE streams and the Adler-32 each must
        inflate to: a payload without its 2-byte zlib header and its 4-byte
        trailer (what a GPU inflater such as nvCOMP decodes; see
        docs/architecture.md). None for a frame without a mask, or a payload
        too short to be a zlib stream (the CPU path reports it).
        """
        views, _ = self.views(lo, hi)
        out: list[tuple[Payload, int] | None] = []
        for view in views:
            if view is None or len(view) < ZLIB_HEADER_BYTES + ADLER_BYTES:
                out.append(None)
                continue
            trailer = bytes(view[len(view) - ADLER_BYTES :])
            out.append(
                (
                    view[ZLIB_HEADER_BYTES : len(view) - ADLER_BYTES],
                    int.from_bytes(trailer, "big"),
                )
            )
        return out

    def _errors_in(self, lo: int, hi: int) -> dict[int, DecodeError] | None:
        if not self._errors:
            return None
        found = {j - lo: e for j, e in list(self._errors.items()) if lo <= j < hi}
        return found or None

    def _fetch(self, names: list[bytes], first: int) -> list[Payload | None]:
        try:
            chunks = self._index.read_many(names)
        except DecodeError:
            # A chunk without a valid header: find which, one by one.
            chunks = []
            for k, name in enumerate(names):
                try:
                    chunks.append(self._index.read(name))
                except DecodeError as e:
                    self._errors[first + k] = e
                    chunks.append(None)
        return [
            None
            if chunk is None or len(chunk) <= MASK_PREFIX_BYTES
            else memoryview(chunk)[MASK_PREFIX_BYTES:]
            for chunk in chunks
        ]

    def _window(self, w: int) -> list[Payload | None]:
        with self._locks[w]:
            failed = self._failed[w]
            if failed is not None:
                raise failed
            fetched = self._fetched[w]
            if fetched is None:
                a, b = self._windows[w]
                plan = self._plan
                names = [
                    binary_frame_chunk_name(plan.layers[k].meta.file_tag, s)
                    for k, s in zip(
                        plan.layer[a:b].tolist(), plan.seqs[a:b].tolist(), strict=True
                    )
                ]
                try:
                    fetched = self._fetched[w] = self._fetch(names, a)
                except BaseException as e:
                    self._failed[w] = e
                    raise
            return fetched
