"""Which frame goes where: the jobs of one decode call, and their error context."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .._errors import DecodeError
from .._format.layer_metadata import LayerMeta
from .._format.mask_stream import STREAM_VERSION
from .frame import FrameHeader, warn_version
from .mask_source import MaskSource


@dataclass(frozen=True)
class FrameJob:
    """Decode frame ``seq`` of ``layer`` into slot ``slot`` of the output block."""

    layer: LayerMeta
    seq: int
    slot: int


def with_context(error: DecodeError, source: MaskSource, job: FrameJob) -> DecodeError:
    """``error`` naming the file, layer and frame of ``job``."""
    return error.with_context(path=source.path, layer=job.layer.name, frame=job.seq)


def warn_versions(
    jobs: Sequence[FrameJob], headers: Sequence[FrameHeader | None]
) -> None:
    """Warn once, naming the first decoded frame whose version word is not 3.

    ``headers[i]`` is the header of ``jobs[i]``, None for a frame without a mask.
    """
    for job, header in zip(jobs, headers, strict=True):
        if header is not None and header.version != STREAM_VERSION:
            warn_version(header, f" in frame {job.seq} of layer {job.layer.name!r}")
            return
