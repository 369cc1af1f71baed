"""Dask arrays of binary layers, decoded block by block, on any worker.

Each block is a run of consecutive frames (sequence indices) of one layer, with
``(Y, X)`` whole. A block's task holds the layer as plain data (a ``LayerRef``:
its source, metadata and shapes), so the graph runs on any worker that can read
the source: the worker decodes the frames straight from the file's chunks,
without opening an ``ND2File`` or parsing the file's metadata.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._backends import backend, decode_block
from ._decode.layer_ref import LayerRef
from ._decode.plan import DecodePlan
from ._device import Device, DeviceRequest, resolve_device

if TYPE_CHECKING:
    import dask.array

__all__ = ["decode_block_task", "layer_to_dask", "layers_to_dask"]


def decode_block_task(
    layer: LayerRef, device: Device, seqs: range, shape: tuple[int, ...]
) -> Any:
    """Decode frames ``seqs`` of ``layer`` into one block of ``shape``.

    The task function of the dask arrays built by ``layer_to_dask`` and
    ``layers_to_dask``; ``layer`` arrives pickled (source and metadata) on
    worker processes.

    Returns
    -------
    numpy.ndarray or cupy.ndarray
        NumPy on "cpu", CuPy on "cuda" (checked here, on the worker).
    """
    block = decode_block(
        DecodePlan.of([layer], 0, seqs),
        (len(seqs), *layer.frame_shape),
        resolve_device(device),
    )
    return block.reshape(shape)


def frame_chunks(
    coordinate_shape: tuple[int, ...], frames_per_chunk: int
) -> tuple[tuple[int, ...], ...]:
    """Chunks of the loop axes so that every block is a run of consecutive frames.

    Inner axes are taken whole while the block stays within ``frames_per_chunk``
    frames; the next axis out is cut into pieces that fit, the outer ones into 1s.
    """
    if isinstance(frames_per_chunk, bool) or not isinstance(
        frames_per_chunk, (int, np.integer)
    ):
        raise TypeError(
            f"frames_per_chunk must be an int, not {type(frames_per_chunk).__name__}"
        )
    if frames_per_chunk < 1:
        raise ValueError(f"frames_per_chunk must be >= 1, not {frames_per_chunk}")
    sizes = [1] * len(coordinate_shape)
    frames = 1
    for axis in reversed(range(len(coordinate_shape))):
        count = coordinate_shape[axis]
        if frames * count <= frames_per_chunk:
            sizes[axis] = count
            frames *= count
        else:
            sizes[axis] = frames_per_chunk // frames
            break
    chunks = []
    for count, size in zip(coordinate_shape, sizes, strict=True):
        full, rest = divmod(count, size)
        chunks.append((size,) * full + ((rest,) if rest else ()))
    return tuple(chunks)


def frame_blocks(
    coordinate_shape: tuple[int, ...], loop_chunks: tuple[tuple[int, ...], ...]
) -> list[tuple[tuple[int, ...], range, tuple[int, ...]]]:
    """``(block index, frames, block loop shape)`` of every block, in C order."""
    starts = [np.cumsum((0, *c[:-1])).tolist() for c in loop_chunks]
    out = []
    for index in np.ndindex(*(len(c) for c in loop_chunks)):
        first = tuple(starts[axis][i] for axis, i in enumerate(index))
        shape = tuple(loop_chunks[axis][i] for axis, i in enumerate(index))
        seq = int(np.ravel_multi_index(first, coordinate_shape)) if first else 0
        out.append((index, range(seq, seq + math.prod(shape)), shape))
    return out


def _meta(ndim: int, device: Device) -> Any:
    return backend(device).meta(ndim)


def _build(
    layers: Sequence[LayerRef],
    device: DeviceRequest | None,
    frames_per_chunk: int,
    stacked: bool,
) -> dask.array.Array:
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    first = layers[0]
    # An explicit "cuda" is checked by each worker when it decodes, so that a
    # client without a GPU can build graphs for GPU workers.
    dev: Device = "cuda" if device == "cuda" else resolve_device(device)
    coordinate_shape = tuple(first.coordinate_shape)
    frame_shape = tuple(first.frame_shape)
    loop_chunks = frame_chunks(coordinate_shape, frames_per_chunk)
    blocks = frame_blocks(coordinate_shape, loop_chunks)
    tags = [layer.meta.file_tag for layer in layers]
    name = "nd2gpu-masks-" + tokenize(
        first.source.token(), tags, dev, loop_chunks, frame_shape, stacked
    )
    dsk: dict[Any, Any] = {}
    tail = (0,) * len(frame_shape)
    for i, layer in enumerate(layers):
        head = (i,) if stacked else ()
        lead = (1,) if stacked else ()
        for index, seqs, loop_shape in blocks:
            key = (name, *head, *index, *tail)
            dsk[key] = (
                decode_block_task,
                layer,
                dev,
                seqs,
                (*lead, *loop_shape, *frame_shape),
            )
    chunks = (
        *(((1,) * len(layers),) if stacked else ()),
        *loop_chunks,
        *((n,) for n in frame_shape),
    )
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    return da.Array(graph, name, chunks, meta=_meta(len(chunks), dev))


def layer_to_dask(
    layer: LayerRef, device: DeviceRequest | None = None, frames_per_chunk: int = 1
) -> dask.array.Array | None:
    """A dask array of one layer: ``BinaryLayer.asarray()``'s shape, dtype and
    values.

    Parameters
    ----------
    layer : LayerRef
        The layer (its file may be closed: blocks read the file's chunks).
    device : {"cpu", "cuda", "auto"}, optional
        Where blocks are decoded; None means "cpu". "cuda" gives CuPy
        blocks, decoded on each worker's current GPU; it is checked by the
        workers, not here (the meta is a CuPy array when CuPy is importable
        here). "auto" is resolved here, on the caller's machine.
    frames_per_chunk : int
        The most frames in one block. A block is a run of consecutive frames:
        the innermost loop axes are taken whole while the block stays within
        this many frames, the next axis out is cut into pieces that fit, and the
        outer axes into single steps. ``(Y, X)`` is always whole.

    Returns
    -------
    dask.array.Array or None
        Shape ``coordinate_shape + frame_shape``, uint16, or None when no frame
        of the layer has a mask (as ``asarray`` returns None).

    Examples
    --------
    >>> with nd2gpu.ND2File("cells.nd2") as f:  # doctest: +SKIP
    ...     masks = f.binary_data[0].to_dask(device="cpu", frames_per_chunk=8)
    >>> masks.max(axis=(-2, -1)).compute()  # doctest: +SKIP
    """
    if layer.frame_shape == (0, 0):
        return None
    return _build([layer], device, frames_per_chunk, stacked=False)


def layers_to_dask(
    layers: Sequence[LayerRef],
    device: DeviceRequest | None = None,
    frames_per_chunk: int = 1,
) -> dask.array.Array:
    """A dask array of layers: ``BinaryLayers.asarray()``'s shape, dtype and
    values.

    Blocks hold one layer each (chunks of 1 along the first axis).

    Parameters
    ----------
    layers : sequence of LayerRef
        The layers ``BinaryLayers.asarray()`` stacks (``stackable_layers``).
    device : {"cpu", "cuda", "auto"}, optional
        Where blocks are decoded; None means "cpu".
    frames_per_chunk : int
        The most frames in one block (see ``layer_to_dask``).

    Returns
    -------
    dask.array.Array
        Shape ``(n_layers, *coordinate_shape, Y, X)``, uint16.

    Examples
    --------
    >>> with nd2gpu.ND2File("cells.nd2") as f:  # doctest: +SKIP
    ...     masks = f.binary_data.to_dask()
    >>> masks[:, 0].compute()  # doctest: +SKIP
    """
    return _build(layers, device, frames_per_chunk, stacked=True)
