"""Decode many frames straight into one CUDA block.

Frames are inflated, parsed and checked for overlapping runs on the CPU (the
decode pool), batch by batch; each batch's run table is written straight into
pinned staging buffers by the same threads, copied to the GPU and expanded
there into the block, which was allocated and zeroed once on the device. While
batch k is uploaded and expanded, batch k+1 is parsed. No dense mask crosses
PCIe: only run tables do, and the calling thread only schedules.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._decode.frame import FrameHeader, parse_payload
from ..._decode.mask_source import MaskSource, Payloads
from ..._decode.plan import FrameJob, warn_versions, with_context
from ..._decode.pool import thread_pool
from ..._errors import DecodeError
from ..._format.chunk_index import ChunkIndex
from ...kernels._overlap_kernels import frame_has_overlap, resolve_later_wins
from ...kernels._run_table import RunTable, stage_runs
from .arrays import clear
from .expander import StagingBuffers, shared_expander

#: A batch holds at most this many frames: bounded host and device staging
#: memory, and enough batches to overlap the CPU and GPU halves of the pipeline.
BATCH_FRAMES = 16

#: Frames whose runs one pool task copies into the staging buffers.
_STAGE_FRAMES_PER_TASK = 4

_scratch = threading.local()


@dataclass(frozen=True)
class ParsedFrame:
    """One frame's runs, without overlaps, as flat offsets into the block."""

    header: FrameHeader
    starts: np.ndarray
    lengths: np.ndarray
    values: np.ndarray
    #: Pixels the runs paint (the sum of ``lengths``).
    n_pixels: int

    @property
    def n_runs(self) -> int:
        return int(self.starts.shape[0])

    @classmethod
    def of(
        cls,
        header: FrameHeader,
        starts: np.ndarray,
        lengths: np.ndarray,
        values: np.ndarray,
    ) -> ParsedFrame:
        return cls(header, starts, lengths, values, int(lengths.sum(dtype=np.int64)))


def _bitmap(frame_pixels: int) -> np.ndarray:
    """This thread's scratch bitmap of at least ``frame_pixels`` bits."""
    words = max(1, (frame_pixels + 63) >> 6)
    bits = getattr(_scratch, "bits", None)
    if bits is None or bits.shape[0] < words:
        bits = _scratch.bits = np.empty(words, dtype=np.uint64)
    return bits


def parse_frame(
    source: MaskSource,
    index: ChunkIndex,
    job: FrameJob,
    frame_shape: tuple[int, int],
    frame_base: int,
    payloads: Payloads | None = None,
) -> ParsedFrame | None:
    """Inflate and parse one frame into its own arrays, overlaps resolved.

    The payload comes from ``payloads`` (a batch fetched together) when given.
    Runs that overlap within the frame (never seen in files NIS-Elements
    writes, but legal) are rewritten into non-overlapping runs, the later run
    winning, so the GPU may write them in any order.
    """
    if payloads is not None:
        data = payloads.get(job.layer.file_tag, job.seq)
    else:
        data = source.payload(index, job.layer.file_tag, job.seq)
    if data is None:
        return None
    try:
        header, buffers, n = parse_payload(data, frame_shape, frame_base)
    except DecodeError as e:
        raise with_context(e, source, job) from None
    frame_pixels = frame_shape[0] * frame_shape[1]
    bits = _bitmap(frame_pixels)
    starts, lengths, values = buffers.starts, buffers.lengths, buffers.values
    if frame_has_overlap(starts, lengths, 0, n, frame_base, frame_pixels, bits):
        cap = max(1, 2 * n - 1)
        out = (
            np.empty(cap, np.int64),
            np.empty(cap, np.int32),
            np.empty(cap, np.uint16),
        )
        k = resolve_later_wins(
            starts, lengths, values, 0, n, frame_base, frame_pixels, bits, *out
        )
        return ParsedFrame.of(header, out[0][:k], out[1][:k], out[2][:k])
    return ParsedFrame.of(
        header, starts[:n].copy(), lengths[:n].copy(), values[:n].copy()
    )


def batch_table(frames: Sequence[ParsedFrame]) -> RunTable:
    """One run table of several parsed frames' runs, in order."""
    if not frames:
        return RunTable.from_runs([], [], [])
    return RunTable.from_runs(
        np.concatenate([f.starts for f in frames]),
        np.concatenate([f.lengths for f in frames]),
        np.concatenate([f.values for f in frames]),
    )


def _stage(
    frames: Sequence[ParsedFrame], staged: StagingBuffers, run: int, pixel: int
) -> None:
    """Write consecutive frames' runs into the staging buffers (a pool task)."""
    for frame in frames:
        stage_runs(
            frame.starts,
            frame.lengths,
            frame.values,
            staged.starts,
            staged.values,
            staged.prefix,
            run,
            pixel,
        )
        run += frame.n_runs
        pixel += frame.n_pixels


def _stage_batch(
    expander: Any, pool: Any, frames: Sequence[ParsedFrame]
) -> tuple[StagingBuffers, list[Future[None]], int, int]:
    """Queue the copies of a batch's runs into staging buffers, a few frames per
    pool task; return the buffers, the tasks, and the batch's runs and pixels."""
    n_runs = sum(f.n_runs for f in frames)
    staged = expander.staging(n_runs)
    tasks: list[Future[None]] = []
    run = pixel = 0
    for lo in range(0, len(frames), _STAGE_FRAMES_PER_TASK):
        chunk = frames[lo : lo + _STAGE_FRAMES_PER_TASK]
        tasks.append(pool.submit(_stage, chunk, staged, run, pixel))
        run += sum(f.n_runs for f in chunk)
        pixel += sum(f.n_pixels for f in chunk)
    return staged, tasks, n_runs, pixel


def decode_frames_cuda(
    source: MaskSource, jobs: Sequence[FrameJob], d_out: Any, *, zero: bool = False
) -> None:
    """Decode ``jobs`` into the ``(slots, Y, X)`` uint16 device block ``d_out``:
    zeroed, or zeroed here first when ``zero`` (a caller's reused block).

    Raises
    ------
    DecodeError
        The first corrupt frame in job order, naming file, layer and frame.
    """
    if zero:
        clear(d_out)
    shape = d_out.shape
    frame_shape = (int(shape[1]), int(shape[2]))
    frame_pixels = frame_shape[0] * frame_shape[1]
    expander = shared_expander()
    pool = thread_pool()
    headers: list[FrameHeader | None] = []
    groups = [jobs[lo : lo + BATCH_FRAMES] for lo in range(0, len(jobs), BATCH_FRAMES)]

    with source.reading() as index:

        def submit(group: Sequence[FrameJob]) -> list[Future[ParsedFrame | None]]:
            # One request for the batch's payloads (remote files), made by the
            # first pool thread that needs one of them.
            payloads = source.prefetch(
                index, [(job.layer.file_tag, job.seq) for job in group]
            )
            return [
                pool.submit(
                    parse_frame,
                    source,
                    index,
                    job,
                    frame_shape,
                    job.slot * frame_pixels,
                    payloads,
                )
                for job in group
            ]

        pending = submit(groups[0]) if groups else []
        try:
            for k in range(len(groups)):
                wait(pending)
                parsed = [f.result() for f in pending]
                headers += [p.header if p is not None else None for p in parsed]
                frames = [p for p in parsed if p is not None]
                staged, tasks, n_runs, n_pixels = _stage_batch(expander, pool, frames)
                # The next batch is parsed while this one is staged and expanded.
                pending = submit(groups[k + 1]) if k + 1 < len(groups) else []
                wait(tasks)
                for task in tasks:
                    task.result()
                if n_runs:
                    staged.prefix[n_runs] = n_pixels
                    expander.expand_staged(d_out, staged, n_runs, n_pixels)
            expander.synchronize()
        finally:
            # No task may read the file after it is released (on an error).
            wait(pending)
    warn_versions(jobs, headers)
