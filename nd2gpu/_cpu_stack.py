"""Decode many frames into one preallocated NumPy block, frames in parallel threads."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import numpy as np

from ._errors import DecodeError
from ._frame_decode import (
    EXPECTED_VERSION,
    FrameHeader,
    decode_into,
    parse_header,
    warn_version,
)
from ._mask_source import LayerMeta, MaskSource


@dataclass(frozen=True)
class FrameJob:
    """Decode frame ``seq`` of ``layer`` into slot ``slot`` of the output block."""

    layer: LayerMeta
    seq: int
    slot: int


def worker_count() -> int:
    """Threads used to decode (``ND2GPU_NUM_THREADS`` or the usable CPUs)."""
    env = os.environ.get("ND2GPU_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: A call whose output is smaller than this (pixels) decodes in the calling
#: thread: handing tiny frames to the pool costs more than decoding them.
INLINE_PIXELS = 1 << 20
#: Contiguous groups of frames per pool thread (balance against hand-off cost).
TASKS_PER_WORKER = 4

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def thread_pool() -> ThreadPoolExecutor:
    """The process-wide decode pool (created on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(worker_count(), thread_name_prefix="nd2gpu")
        return _pool


def check_allocation(nbytes: int, max_bytes: int | None, what: str) -> None:
    """Refuse an allocation above ``max_bytes`` or above the machine's memory."""
    if max_bytes is not None and nbytes > max_bytes:
        raise MemoryError(
            f"{what} needs {nbytes} bytes, more than max_bytes={max_bytes}"
        )
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return
    if nbytes > physical:
        raise MemoryError(
            f"{what} needs {nbytes} bytes, more than this machine's {physical} "
            "bytes of memory"
        )


def with_context(
    error: DecodeError, source: MaskSource, layer: LayerMeta, seq: int
) -> DecodeError:
    return error.with_context(path=source.path, layer=layer.name, frame=seq)


def layer_frame_shape(source: MaskSource, layer: LayerMeta) -> tuple[int, int]:
    """Shape of the layer's first frame that has a mask, ``(0, 0)`` if none has.

    Reads only that frame's header.
    """
    with source.reading() as index:
        for seq in source.frames(index, layer.file_tag):
            data = source.payload(index, layer.file_tag, seq)
            if data is None:
                continue
            try:
                return parse_header(data).shape
            except DecodeError as e:
                raise with_context(e, source, layer, seq) from None
    return (0, 0)


def decode_frames_cpu(
    source: MaskSource,
    jobs: Sequence[FrameJob],
    out: np.ndarray,
) -> None:
    """Decode ``jobs`` into the zeroed block ``out`` of shape ``(slots, Y, X)``.

    Frames without a mask stay zero. Every frame must have the block's frame
    shape. Frames are decoded in parallel, in contiguous groups (tiny blocks in
    the calling thread); the first error (in job order) is raised as a
    ``DecodeError`` naming the file, layer and frame.
    """
    frame_shape = out.shape[1:]

    def run(job: FrameJob, index) -> FrameHeader | None:
        data = source.payload(index, job.layer.file_tag, job.seq)
        if data is None:
            return None
        try:
            return decode_into(data, out[job.slot], frame_shape)
        except DecodeError as e:
            raise with_context(e, source, job.layer, job.seq) from None

    def run_all(chunk: Sequence[FrameJob], index) -> list[FrameHeader | None]:
        return [run(job, index) for job in chunk]

    n_tasks = 1
    if out.size >= INLINE_PIXELS:
        n_tasks = min(len(jobs), TASKS_PER_WORKER * worker_count())
    with source.reading() as index:
        if n_tasks <= 1:
            headers = run_all(jobs, index)
        else:
            bounds = [len(jobs) * i // n_tasks for i in range(n_tasks + 1)]
            futures = [
                thread_pool().submit(run_all, jobs[lo:hi], index)
                for lo, hi in itertools.pairwise(bounds)
            ]
            wait(futures)
            headers = [h for f in futures for h in f.result()]
    decoded = [(j, h) for j, h in zip(jobs, headers, strict=True) if h is not None]
    warn_versions([j for j, _ in decoded], [h for _, h in decoded])


def warn_versions(jobs: Sequence[FrameJob], headers: Sequence[FrameHeader]) -> None:
    """Warn once, naming the first frame whose version word is not 3."""
    for job, header in zip(jobs, headers, strict=True):
        if header.version != EXPECTED_VERSION:
            warn_version(header, f" in frame {job.seq} of layer {job.layer.name!r}")
            return
