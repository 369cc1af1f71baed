"""``LayerRef``: what the stages need of one binary layer, as plain data."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._format.layer_metadata import LayerMeta
from .mask_source import MaskSource


@dataclass(frozen=True)
class LayerRef:
    """One binary layer of a file, as the stages below the façade see it.

    Small and picklable (the source pickles as its path or URL), so it travels
    to decode threads, worker processes and dask tasks; nothing in it calls
    back into ``BinaryLayer`` or ``ND2File``.

    Attributes
    ----------
    source : MaskSource
        Where the layer's payloads are read from (shared by a file's layers).
    meta : LayerMeta
        The layer's ``BinaryMetadata_v1`` record.
    coordinate_shape : tuple of int
        The experiment loop counts.
    frame_shape : (int, int)
        The shape of the layer's frames, ``(0, 0)`` if no frame has a mask.
    axes : tuple of str
        The name of each loop axis (nd2's letters: ``T``, ``P``, ``Z``, ...),
        ``""`` for a loop that ``ND2File.sizes`` leaves out (a count of 1).
    """

    source: MaskSource
    meta: LayerMeta
    coordinate_shape: tuple[int, ...]
    frame_shape: tuple[int, int]
    axes: tuple[str, ...] = ()

    @property
    def n_frames(self) -> int:
        """Sequence indices of the layer (with or without a mask)."""
        return math.prod(self.coordinate_shape)

    @property
    def path(self) -> str:
        """The file, as errors name it."""
        return self.source.path
