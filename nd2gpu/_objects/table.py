"""``regionprops_table``: the object table of frames of layers, on either device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._device import DeviceRequest, resolve_device
from .._typing import Intensity
from .columns import (
    DEFAULT_PROPERTIES,
    INTENSITY_PROPERTIES,
    check_properties,
    table_columns,
)
from .cpu import table_cpu
from .gpu import table_cuda
from .intensity import check_images
from .jobs import ObjectJob, empty_table

if TYPE_CHECKING:
    from .._layers import BinaryLayer


def regionprops_table(
    layers: Sequence[tuple[int, BinaryLayer]],
    seqs: Sequence[int],
    *,
    single: bool = False,
    properties: str | Sequence[str] = DEFAULT_PROPERTIES,
    intensity: Intensity | None = None,
    device: DeviceRequest | None = None,
    layer_column: bool = False,
) -> dict[str, Any]:
    """The object table of frames ``seqs`` of ``layers`` (see the layer methods).

    Parameters
    ----------
    layers : sequence of (int, BinaryLayer)
        The layers to measure and their indices in the file (one file).
    seqs : sequence of int
        Sequence indices, in range, without repeats.
    single : bool
        ``frames`` was one integer (then a ``(Y, X)`` intensity image is taken).
    properties, intensity, device
        As in ``BinaryLayer.regionprops_table``.
    layer_column : bool
        Whether the table has a ``layer`` column.

    Returns
    -------
    dict of str to numpy.ndarray or cupy.ndarray
    """
    props = check_properties(properties)
    names = table_columns(props, layer_column)
    seqs = [int(s) for s in seqs]
    if len(set(seqs)) != len(seqs):
        raise ValueError("frames must not repeat a frame (rows are keyed by frame)")
    want_values = any(p in INTENSITY_PROPERTIES for p in props)
    if want_values and intensity is None:
        raise ValueError(
            "intensity_mean, intensity_min and intensity_max need intensity=: the "
            "frames' images (an array) or a channel of the file (index or name)"
        )
    images = (
        None
        if intensity is None or not layers
        else check_images(intensity, [layer for _, layer in layers], len(seqs), single)
    )
    dev = resolve_device(device)
    if not layers:
        return empty_table(names, dev)
    order = sorted(range(len(seqs)), key=seqs.__getitem__)
    jobs = [
        ObjectJob(
            index,
            layer,
            seqs[pos],
            -1 if images is None else images.index(pos, seqs[pos]),
        )
        for index, layer in layers
        for pos in order
    ]
    use = images if want_values else None
    if dev == "cuda":
        return table_cuda(jobs, names, use)
    return table_cpu(jobs, names, use)
