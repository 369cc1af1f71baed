"""Which frame of which layer a table row comes from, and the empty table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .columns import column_dtype

if TYPE_CHECKING:
    from .._layers import BinaryLayer


@dataclass(frozen=True)
class ObjectJob:
    """Measure frame ``seq`` of ``layer`` (the file's layer ``layer_index``)."""

    layer_index: int
    layer: BinaryLayer
    seq: int
    image: int  # the frame's index in the intensity source (-1: none)


def empty_table(names: Sequence[str], device: str) -> dict[str, Any]:
    if device == "cuda":
        from .._backends.cuda import objects as cuda_objects

        return cuda_objects.table_columns([], names)
    return {name: np.empty(0, column_dtype(name)) for name in names}
