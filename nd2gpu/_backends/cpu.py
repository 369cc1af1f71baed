"""CPU back end: decode frames into a NumPy block, frames in parallel threads."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import wait

import numpy as np

from .._decode.frame import FrameHeader, parse_payload
from .._decode.mask_source import MaskSource, Payloads
from .._decode.plan import FrameJob, warn_versions, with_context
from .._decode.pool import thread_pool, worker_count
from .._errors import DecodeError
from ..kernels import _parse_kernels as pk
from .layout import check_layout

#: A call whose output is smaller than this (pixels) decodes in the calling
#: thread: handing tiny frames to the pool costs more than decoding them.
INLINE_PIXELS = 1 << 20
#: Contiguous groups of frames per pool thread (balance against hand-off cost).
TASKS_PER_WORKER = 4


def decode_frames_cpu(
    source: MaskSource,
    jobs: Sequence[FrameJob],
    out: np.ndarray,
    *,
    zero: bool = False,
) -> None:
    """Decode ``jobs`` into the block ``out`` of shape ``(slots, Y, X)``.

    ``out`` is zeroed, or with ``zero`` (a caller's reused block) each slot is
    zeroed by the thread that decodes into it, just before it paints the runs:
    the frame is then still in the cache when it is painted, and no separate
    pass over the whole block is needed. Frames without a mask are zeros. Every
    frame must have the block's frame shape. Frames are decoded in parallel, in
    contiguous groups (tiny blocks in the calling thread); the first error (in
    job order) is raised as a ``DecodeError`` naming the file, layer and frame.
    """
    frame_shape = out.shape[1:]
    slots = [job.slot for job in jobs]
    per_slot = zero and len(set(slots)) == len(slots)
    if zero and not per_slot:  # several jobs paint one slot: clear it all first
        clear(out)
    elif per_slot and len(slots) < out.shape[0]:
        taken = np.zeros(out.shape[0], bool)
        taken[slots] = True
        for slot in np.flatnonzero(~taken).tolist():
            out[slot].fill(0)

    def run(job: FrameJob, payloads: Payloads) -> FrameHeader | None:
        data = payloads.get(job.layer.file_tag, job.seq)
        frame = out[job.slot]
        if data is None:
            if per_slot:
                frame.fill(0)
            return None
        try:
            header, buffers, n_runs = parse_payload(data, frame_shape)
        except DecodeError as e:
            raise with_context(e, source, job) from None
        if per_slot:
            frame.fill(0)
        b = buffers
        pk.fill_runs(frame.reshape(-1), b.starts, b.lengths, b.values, 0, n_runs)
        return header

    def run_all(
        group: Sequence[FrameJob], payloads: Payloads
    ) -> list[FrameHeader | None]:
        return [run(job, payloads) for job in group]

    n_tasks = 1
    if out.size >= INLINE_PIXELS:
        n_tasks = min(len(jobs), TASKS_PER_WORKER * worker_count())
    with source.reading() as index:
        payloads = source.prefetch(index, [(j.layer.file_tag, j.seq) for j in jobs])
        if n_tasks <= 1:
            headers = run_all(jobs, payloads)
        else:
            bounds = [len(jobs) * i // n_tasks for i in range(n_tasks + 1)]
            futures = [
                thread_pool().submit(run_all, jobs[lo:hi], payloads)
                for lo, hi in itertools.pairwise(bounds)
            ]
            wait(futures)
            headers = [h for f in futures for h in f.result()]
    warn_versions(jobs, headers)


def zeros(shape: tuple[int, ...]) -> np.ndarray:
    """A new zeroed uint16 NumPy block."""
    return np.zeros(shape, dtype=np.uint16)


def check_out(out: object, shape: tuple[int, ...]) -> None:
    """Raise unless ``out`` is a writeable NumPy block that can take ``shape``."""
    if not isinstance(out, np.ndarray):
        raise TypeError(
            f"out must be a NumPy array for device 'cpu', not {type(out).__name__}"
        )
    check_layout(out.shape, out.dtype, out.flags.c_contiguous, shape)
    if not out.flags.writeable:
        raise ValueError("out must be writeable")


def clear(out: np.ndarray) -> None:
    """Zero ``out`` in place."""
    out.fill(0)


def meta(ndim: int) -> np.ndarray:
    """An empty uint16 NumPy array of ``ndim`` dimensions."""
    return np.empty((0,) * ndim, dtype=np.uint16)


def synchronize() -> None:
    """Nothing to wait for: the CPU back end returns when the work is done."""


decode_frames = decode_frames_cpu
