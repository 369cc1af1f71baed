"""Decode many frames straight into one CUDA block.

Frames are inflated and parsed on the CPU (thread pool, as for the NumPy path)
into run tables, batch by batch; each batch's table is copied to the GPU and
expanded there into the block, which was allocated and zeroed once on the device.
While batch k expands on the GPU, batch k+1 is inflated and parsed. No dense mask
crosses PCIe: only run tables do.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, wait
from typing import Any

import numpy as np

from ..._decode.frame import FrameHeader, parse_payload
from ..._decode.mask_source import MaskSource, Payloads
from ..._decode.plan import FrameJob, warn_versions, with_context
from ..._decode.pool import thread_pool
from ..._errors import DecodeError
from ..._format.chunk_index import ChunkIndex
from ...kernels._overlap_kernels import make_non_overlapping
from ...kernels._run_table import RunTable
from .arrays import clear
from .expander import shared_expander

#: A batch holds at most this many frames: bounded host and device staging
#: memory, and enough batches to overlap the CPU and GPU halves of the pipeline.
BATCH_FRAMES = 16

#: One parsed frame: its runs (starts, lengths, values), header and frame base.
FrameRuns = tuple[np.ndarray, np.ndarray, np.ndarray, FrameHeader, int]


def parse_frame(
    source: MaskSource,
    index: ChunkIndex,
    job: FrameJob,
    frame_shape: tuple[int, int],
    frame_base: int,
    payloads: Payloads | None = None,
) -> FrameRuns | None:
    """Inflate and parse one frame into its own (starts, lengths, values) arrays.

    The payload comes from ``payloads`` (a batch fetched together) when given.
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
    return (
        buffers.starts[:n].copy(),
        buffers.lengths[:n].copy(),
        buffers.values[:n].copy(),
        header,
        frame_base,
    )


def assemble(
    parsed: Sequence[FrameRuns | None], frame_pixels: int
) -> tuple[RunTable, list[FrameHeader]]:
    """Concatenate per-frame runs into one batch table without overlapping runs."""
    present = [p for p in parsed if p is not None]
    counts = np.array([len(p[0]) for p in present], dtype=np.int64)
    ends = np.cumsum(counts)
    bases = np.array([p[4] for p in present], dtype=np.int64)
    bounds = np.stack([ends - counts, ends, bases], axis=1).reshape(-1, 3)
    if present:
        table = RunTable.from_runs(
            np.concatenate([p[0] for p in present]),
            np.concatenate([p[1] for p in present]),
            np.concatenate([p[2] for p in present]),
        )
    else:
        table = RunTable.from_runs([], [], [])
    table = make_non_overlapping(table, bounds, frame_pixels)
    return table, [p[3] for p in present]


def decode_frames_cuda(
    source: MaskSource, jobs: Sequence[FrameJob], d_out: Any, *, zero: bool = False
) -> None:
    """Decode ``jobs`` into the zeroed ``(slots, Y, X)`` uint16 device block ``d_out``
    (zeroed here first when ``zero``).

    Frames are inflated and parsed by the decode pool a batch at a time; while
    one batch expands on the GPU the next is parsed.
    """
    if zero:
        clear(d_out)
    shape = d_out.shape
    frame_shape = (shape[1], shape[2])
    frame_pixels = shape[1] * shape[2]
    expander = shared_expander()
    pool = thread_pool()
    headers: list[FrameHeader] = []
    version_jobs: list[FrameJob] = []

    with source.reading() as index:

        def submit(batch: list[int]) -> list[Future]:
            # One request for the batch's payloads (remote files), made by the
            # first pool thread that needs one of them.
            payloads = source.prefetch(
                index, [(jobs[i].layer.file_tag, jobs[i].seq) for i in batch]
            )
            return [
                pool.submit(
                    parse_frame,
                    source,
                    index,
                    jobs[i],
                    frame_shape,
                    jobs[i].slot * frame_pixels,
                    payloads,
                )
                for i in batch
            ]

        groups = [
            list(range(lo, min(lo + BATCH_FRAMES, len(jobs))))
            for lo in range(0, len(jobs), BATCH_FRAMES)
        ]
        pending = submit(groups[0]) if groups else []
        for k in range(len(groups)):
            wait(pending)
            parsed = [f.result() for f in pending]
            pending = submit(groups[k + 1]) if k + 1 < len(groups) else []
            table, batch_headers = assemble(parsed, frame_pixels)
            expander.expand(d_out, table)
            headers += batch_headers
            version_jobs += [
                jobs[i] for i, p in zip(groups[k], parsed, strict=True) if p
            ]
        expander.synchronize()
    warn_versions(version_jobs, headers)
