"""The reader: which paths it takes, and the layers of an ND2 file."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

import nd2gpu

#: ``nd2.ND2File.sizes`` keys that are not leading (loop) axes.
CHANNEL, RGB, Y, X = "C", "S", "Y", "X"
#: A napari layer: data, keyword arguments, layer type.
LayerData = tuple[Any, dict[str, Any], str]
#: Shows a one-line message in napari's notifications.
Notify = Callable[[str], None]


def napari_get_reader(path: str | Sequence[str]) -> Callable[..., Any] | None:
    """The reader of ``path`` if it is an ND2 file, else None (napari moves on).

    A local path (or ``file://`` URL) must be a readable ND2 file, told by its
    signature bytes; a remote URL is taken by its name (``*.nd2``), and read
    through fsspec when the reader runs.
    """
    if not isinstance(path, (str, os.PathLike)):
        if len(path) != 1:
            return None
        (path,) = path
    text = os.fspath(path)
    if not text.lower().endswith(".nd2"):
        return None
    scheme = urlsplit(text).scheme.lower()
    if len(scheme) > 1 and scheme != "file":  # a URL (one letter: a drive)
        return read_nd2
    local = text[len("file://") :] if scheme == "file" else text
    if not os.path.isfile(local) or not nd2gpu.is_supported_file(local):
        return None
    return read_nd2


def read_nd2(path: str | Sequence[str]) -> list[LayerData]:
    """The layers of the ND2 file ``path`` (napari's reader function)."""
    if not isinstance(path, (str, os.PathLike)):
        (path,) = path
    return layer_data(os.fspath(path))


def layer_data(
    source: str | os.PathLike[str] | Any,
    *,
    notify: Notify | None = None,
    **nd2_kwargs: Any,
) -> list[LayerData]:
    """The napari layers of an ND2 file: its channels, then its binary layers.

    Parameters
    ----------
    source : str, os.PathLike, URL or binary file object
        Anything ``nd2gpu.ND2File`` opens.
    notify : callable, optional
        Shows a frame's decoding error (one line); default: napari's
        ``show_error``.
    **nd2_kwargs
        Passed to ``nd2gpu.ND2File`` (e.g. ``storage_options`` for URLs).

    Returns
    -------
    list of (data, kwargs, layer type)
        Image layers (nd2's dask arrays) and Labels layers (dask arrays that
        decode one frame per block).
    """
    if notify is None:
        from napari.utils.notifications import show_error

        notify = show_error
    f = nd2gpu.ND2File(source, **nd2_kwargs)
    try:
        sizes = dict(f.sizes)
        lead = [k for k in sizes if k not in (CHANNEL, RGB, Y, X)]
        voxel = f.voxel_size()
        step = {"Z": float(voxel.z), Y: float(voxel.y), X: float(voxel.x)}
        scale = [step.get(k, 1.0) for k in (*lead, Y, X)]
        common = {"scale": scale, "axis_labels": (*lead, Y, X)}
        out = _images(f, sizes, common, _name(source))
        frame = (sizes.get(Y, 1), sizes.get(X, 1))
        for layer in f.binary_data or ():
            out.append(_labels(layer, frame, common, notify))
    except BaseException:
        f.close()
        raise
    _close_when_unused(f, [data for data, _, _ in out])
    return out


def _close_when_unused(f: nd2gpu.ND2File, arrays: list[Any]) -> None:
    """Keep ``f`` open while any of ``arrays`` lives; close it after the last.

    The layers read through the open file (no reopening for each plane, and a
    file object, which cannot be reopened, stays usable).
    """
    users = [len(arrays)]

    def release() -> None:
        users[0] -= 1
        if not users[0]:
            f.close()

    for array in arrays:
        weakref.finalize(array, release)


def _name(source: Any) -> str:
    """The file's name without ``.nd2``, for a layer that has no other name."""
    name = source if isinstance(source, (str, os.PathLike)) else None
    name = getattr(source, "name", name)
    if not isinstance(name, (str, os.PathLike)):
        return "nd2"
    return Path(urlsplit(os.fspath(name)).path).stem


def _images(
    f: nd2gpu.ND2File, sizes: dict[str, int], common: dict[str, Any], stem: str
) -> list[LayerData]:
    """One image layer per channel, nd2's dask array, named and coloured."""
    from napari.utils.colormaps import Colormap

    data = f.to_dask()
    channels = [c.channel for c in (f.metadata.channels or [])]
    count = sizes.get(CHANNEL, 1)
    axis = list(sizes).index(CHANNEL) if CHANNEL in sizes else None
    out: list[LayerData] = []
    for c in range(count):
        plane = data if axis is None else data[(slice(None),) * axis + (c,)]
        kwargs: dict[str, Any] = dict(common, blending="additive")
        channel = channels[c] if c < len(channels) else None
        kwargs["name"] = channel.name if channel is not None else stem
        if RGB in sizes:
            kwargs["rgb"] = True
        elif channel is not None:
            r, g, b = (v / 255 for v in channel.color[:3])
            colors = [[0.0, 0.0, 0.0, 1.0], [r, g, b, 1.0]]
            kwargs["colormap"] = Colormap(
                colors, name=f"{channel.name} ({r:.2f}, {g:.2f}, {b:.2f})"
            )
        out.append((plane, kwargs, "image"))
    return out


def _labels(
    layer: nd2gpu.BinaryLayer,
    frame: tuple[int, int],
    common: dict[str, Any],
    notify: Notify,
) -> LayerData:
    """The layer as labels: decoded one frame per block, all in its colour."""
    from napari.utils.colormaps import DirectLabelColormap

    color = nd2gpu.structures.Color.from_abgr_u4(int(layer.color or 0))
    rgba = (color.r / 255, color.g / 255, color.b / 255, 1.0)
    colormap = DirectLabelColormap(color_dict={None: rgba, 0: (0.0, 0.0, 0.0, 0.0)})
    kwargs = dict(common, name=layer.name, colormap=colormap)
    return _frames(layer, frame, notify), kwargs, "labels"


def _frames(layer: nd2gpu.BinaryLayer, frame: tuple[int, int], notify: Notify) -> Any:
    """A dask array of the layer, one frame per block, loops of count 1 left out.

    The blocks are those of ``layer.to_dask(frames_per_chunk=1)``; a frame that
    cannot be decoded is reported once through ``notify`` and shown empty.
    """
    import dask.array as da

    coordinate_shape = tuple(layer.coordinate_shape)
    keep = tuple(0 if n == 1 else slice(None) for n in coordinate_shape)
    base = layer.to_dask(frames_per_chunk=1)
    if base is None:  # no frame has a mask: an empty layer of the image's shape
        return da.zeros((*coordinate_shape, *frame), np.uint16)[keep]
    reported: set[int] = set()
    lock = threading.Lock()

    def decode(block_info: dict[Any, Any] | None = None) -> np.ndarray:
        assert block_info is not None
        location = block_info[None]["array-location"]
        shape = tuple(stop - start for start, stop in location)
        starts = [start for start, _ in location[: len(coordinate_shape)]]
        seq = int(np.ravel_multi_index(starts, coordinate_shape)) if starts else 0
        try:
            return np.asarray(layer.decode([seq])).reshape(shape)
        except nd2gpu.DecodeError as e:
            with lock:
                first = seq not in reported
                reported.add(seq)
            if first:
                notify(str(e))
            return np.zeros(shape, np.uint16)

    array = da.map_blocks(
        decode,
        chunks=base.chunks,
        dtype=np.uint16,
        meta=np.empty((0,) * base.ndim, np.uint16),
        name=f"nd2gpu-napari-{base.name}",
    )
    return array[keep]
