"""Which frames one decode call reads and where each goes, and its error context."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._errors import DecodeError
from .._format.mask_stream import STREAM_VERSION
from ..kernels._parse_kernels import OK, R_STATUS, R_VERSION
from .layer_ref import LayerRef
from .mask_source import MaskSource


@dataclass(frozen=True, eq=False)
class DecodePlan:
    """The frames of one call: job ``i`` is frame ``seqs[i]`` of layer
    ``layers[layer[i]]``, decoded into slot ``slots[i]`` of the output.

    All layers are of one file. Plain arrays, so that no per-frame Python
    object is made.
    """

    layers: tuple[LayerRef, ...]
    layer: np.ndarray
    seqs: np.ndarray
    slots: np.ndarray

    @classmethod
    def of(
        cls,
        layers: Sequence[LayerRef],
        layer: int | Sequence[int] | np.ndarray,
        seqs: Sequence[int] | np.ndarray,
        slots: Sequence[int] | np.ndarray | None = None,
    ) -> DecodePlan:
        """A plan from per-job layer indices, frames and slots (default: the
        jobs' positions)."""
        seq_array = np.asarray(seqs, np.int64).reshape(-1)
        n = seq_array.shape[0]
        return cls(
            tuple(layers),
            np.broadcast_to(np.asarray(layer, np.int32), (n,)).copy(),
            seq_array,
            np.arange(n, dtype=np.int64)
            if slots is None
            else np.asarray(slots, np.int64).reshape(-1),
        )

    @property
    def n_jobs(self) -> int:
        return int(self.seqs.shape[0])

    @property
    def source(self) -> MaskSource:
        """The file every layer of the plan is read from."""
        return self.layers[0].source

    def with_context(self, error: DecodeError, job: int) -> DecodeError:
        """``error`` naming the file, layer and frame of job ``job``."""
        ref = self.layers[int(self.layer[job])]
        return error.with_context(
            path=ref.path, layer=ref.meta.name, frame=int(self.seqs[job])
        )

    def warn_versions(self, results: np.ndarray) -> None:
        """Warn once, as the reference does, naming the first decoded frame whose
        version word is not 3 (``results`` rows in job order)."""
        decoded = results[:, R_STATUS] == OK
        odd = np.flatnonzero(decoded & (results[:, R_VERSION] != STREAM_VERSION))
        if odd.size:
            job = int(odd[0])
            ref = self.layers[int(self.layer[job])]
            warnings.warn(
                f"Expected binary-mask version {STREAM_VERSION} but got "
                f"{int(results[job, R_VERSION])} in frame {int(self.seqs[job])} of "
                f"layer {ref.meta.name!r}; decoding it the same way nd2 does.",
                stacklevel=4,
            )
