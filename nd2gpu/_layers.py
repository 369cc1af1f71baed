"""Lazy binary layers: nd2's BinaryLayers and BinaryLayer API, decoded on demand."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any, overload

import numpy as np

from ._cpu_stack import FrameJob, check_allocation, layer_frame_shape
from ._device import resolve_device
from ._errors import DecodeError
from ._mask_source import LayerMeta, MaskSource
from ._pipeline import decode_block


def check_block(
    n_frames: int, frame_shape: tuple[int, ...], max_bytes: int | None
) -> None:
    """Refuse (MemoryError) a block too large, before any per-frame bookkeeping."""
    shape = (n_frames, *frame_shape)
    check_allocation(2 * math.prod(shape), max_bytes, f"a {shape} uint16 block")


class _DeviceBlockCache:
    """The decoded device block behind ``__cuda_array_interface__``/``__dlpack__``."""

    def __init__(self) -> None:
        self._block: Any = None
        self._lock = threading.Lock()

    def get(self, build: Any) -> Any:
        with self._lock:
            if self._block is None:
                self._block = build()
            return self._block

    def clear(self) -> None:
        with self._lock:
            self._block = None


class _DeviceArrayInterop:
    """``__cuda_array_interface__`` and DLPack export of a cached CUDA block.

    ``cupy.asarray(x)`` and ``torch.from_dlpack(x)`` then take the decoded device
    array without a host round trip. The block is decoded on first use and kept
    (owned by this object) until ``release_device_memory()``.
    """

    _cuda_cache: _DeviceBlockCache

    def _cuda_block(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _cached_cuda_block(self) -> Any:
        block = self._cuda_cache.get(self._cuda_block)
        if block is None:
            raise TypeError("no binary layer has a mask in any frame")
        return block

    @property
    def __cuda_array_interface__(self) -> dict:
        return self._cached_cuda_block().__cuda_array_interface__

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self._cached_cuda_block().__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._cached_cuda_block().__dlpack_device__()

    def release_device_memory(self) -> None:
        """Drop the cached device block behind the CUDA interfaces."""
        self._cuda_cache.clear()


class BinaryLayer(_DeviceArrayInterop):
    """One binary layer of an ND2 file: a lazy sequence of per-frame label images.

    Behaves like nd2's ``BinaryLayer`` (a ``list[numpy.ndarray | None]`` with
    metadata), except that nothing is decoded until asked for: ``layer[i]``
    decodes frame ``i`` alone and ``asarray()`` decodes every frame once into one
    preallocated block.

    Attributes
    ----------
    name : str
        The layer's name.
    file_tag : str
        The key of the layer's chunks, e.g. ``RleZipBinarySequence_1_v1``.
    comp_name, comp_order, color, color_mode, state, layer_id : int | str | None
        As in ``BinaryMetadata_v1`` (None when absent).
    coordinate_shape : tuple[int, ...]
        The experiment loop counts; ``asarray()`` has shape
        ``coordinate_shape + frame_shape``.

    Examples
    --------
    >>> with nd2gpu.ND2File("cells.nd2") as f:  # doctest: +SKIP
    ...     layer = f.binary_data[0]
    ...     first = layer[0]  # one frame (None if it has no mask)
    ...     stack = layer.asarray(device="cpu")  # (*coords, Y, X) uint16
    """

    def __init__(
        self,
        meta: LayerMeta,
        source: MaskSource,
        coordinate_shape: tuple[int, ...],
        device: str,
    ) -> None:
        self._meta = meta
        self._source = source
        self.coordinate_shape = coordinate_shape
        self._device = device
        self._cuda_cache = _DeviceBlockCache()

    name = property(lambda self: self._meta.name, doc="The layer's name.")
    file_tag = property(lambda self: self._meta.file_tag, doc="Chunk key of the layer.")
    comp_name = property(lambda self: self._meta.comp_name, doc="Component name.")
    comp_order = property(lambda self: self._meta.comp_order, doc="Component order.")
    color = property(lambda self: self._meta.color, doc="Display color.")
    color_mode = property(lambda self: self._meta.color_mode, doc="Color mode.")
    state = property(lambda self: self._meta.state, doc="Layer state.")
    layer_id = property(lambda self: self._meta.layer_id, doc="Binary layer id.")

    def __repr__(self) -> str:
        m = self._meta
        return (
            f"BinaryLayer(name={m.name!r}, file_tag={m.file_tag!r}, "
            f"comp_name={m.comp_name!r}, comp_order={m.comp_order!r}, "
            f"color={m.color!r}, color_mode={m.color_mode!r}, state={m.state!r}, "
            f"layer_id={m.layer_id!r}, coordinate_shape={self.coordinate_shape!r})"
        )

    @property
    def device(self) -> str:
        """The device arrays are decoded to by default ("cpu" or "cuda")."""
        return resolve_device(self._device)

    def __len__(self) -> int:
        """Number of frames (sequence indices), with or without a mask."""
        return self._source.n_frames

    @cached_property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape ``(Y, X)`` of the first frame that has a mask, ``(0, 0)`` if none."""
        return layer_frame_shape(self._source, self._meta)

    @overload
    def __getitem__(self, key: int) -> Any: ...

    @overload
    def __getitem__(self, key: slice) -> list[Any]: ...

    def __getitem__(self, key: int | slice) -> Any:
        """Decode one frame (or a slice of frames) on the file's device.

        Returns None for a frame without a mask, like nd2.
        """
        if isinstance(key, slice):
            return [self._frame(i) for i in range(*key.indices(len(self)))]
        index = int(key)
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"frame index {key} out of range for {n} frames")
        return self._frame(index % n)

    def _frame(self, seq: int, device: str | None = None) -> Any:
        with self._source.reading() as index:
            data = self._source.payload(index, self.file_tag, seq)
        if data is None:
            return None
        from ._frame_decode import parse_header

        try:
            shape = parse_header(data).shape
        except DecodeError as e:
            raise e.with_context(
                path=self._source.path, layer=self.name, frame=seq
            ) from None
        block = decode_block(
            self._source,
            [FrameJob(self._meta, seq, 0)],
            1,
            shape,
            resolve_device(device or self._device),
        )
        return block[0]

    @property
    def data(self) -> list[np.ndarray | None]:
        """Every frame as NumPy (None where a frame has no mask), like nd2.

        Decodes the whole layer once; the arrays are views of one block.
        """
        return self._host_frames

    @cached_property
    def _host_frames(self) -> list[np.ndarray | None]:
        try:
            block = self._decode(device="cpu")
        except DecodeError:
            # nd2 gives frames of different shapes as they are; a corrupt frame
            # raises its own error again, decoded alone.
            return [self._frame(seq, "cpu") for seq in range(len(self))]
        if block is None:
            return [None] * len(self)
        present = set(self.frames_with_mask())
        flat = block.reshape(-1, *self.frame_shape)
        return [flat[i] if i in present else None for i in range(len(self))]

    @property
    def path(self) -> str:
        """The ND2 file this layer is read from."""
        return str(self._source.path)

    def frames_with_mask(self) -> list[int]:
        """Sequence indices of the frames that have a mask, ascending.

        Reads the chunk map and the chunks' sizes; decodes nothing. The other
        frames are None in ``layer[i]`` and ``data``, and zeros in ``asarray()``.
        """
        with self._source.reading() as index:
            return [
                seq
                for seq in self._source.frames(index, self.file_tag)
                if self._source.payload(index, self.file_tag, seq) is not None
            ]

    def _present(self) -> list[int]:
        """Sequence indices that have a chunk (only they can hold a mask)."""
        with self._source.reading() as index:
            return self._source.frames(index, self.file_tag)

    def _decode(self, device: str, max_bytes: int | None = None) -> Any:
        frame_shape = self.frame_shape
        if frame_shape == (0, 0):
            return None
        n = len(self)
        check_block(n, frame_shape, max_bytes)
        jobs = [FrameJob(self._meta, seq, seq) for seq in self._present()]
        block = decode_block(self._source, jobs, n, frame_shape, device, max_bytes)
        return block.reshape(self.coordinate_shape + frame_shape)

    def asarray(
        self, device: str | None = None, *, max_bytes: int | None = None
    ) -> Any:
        """Stack all frames into one array of shape ``coordinate_shape + frame_shape``.

        Frames without a mask are zeros. Returns None if no frame has a mask.

        Parameters
        ----------
        device : {"cpu", "cuda", "auto"}, optional
            Where to build the array; None uses the file's device. "cuda" gives a
            CuPy array, decoded on the GPU (no dense mask crosses PCIe).
        max_bytes : int, optional
            Refuse (``MemoryError``) to build an array larger than this.

        Returns
        -------
        numpy.ndarray, cupy.ndarray or None
        """
        return self._decode(resolve_device(device or self._device), max_bytes)

    def decode(
        self,
        frames: Sequence[int],
        device: str | None = None,
        *,
        max_bytes: int | None = None,
    ) -> Any:
        """Decode only the given frames into one ``(len(frames), Y, X)`` array.

        Meant for training loaders: each call decodes just the requested frames
        (missing ones are zeros), reusing the decoder's internal buffers across
        calls.

        Parameters
        ----------
        frames : sequence of int
            Sequence indices (negative ones count from the end); repeats allowed.
        device : {"cpu", "cuda", "auto"}, optional
            None uses the file's device.
        max_bytes : int, optional
            Refuse (``MemoryError``) a result larger than this.

        Returns
        -------
        numpy.ndarray or cupy.ndarray
            Shape ``(len(frames), *frame_shape)``, uint16; ``(len(frames), 0, 0)``
            if the layer has no mask at all.

        Examples
        --------
        >>> batch = layer.decode([0, 5, 9], device="cuda")  # doctest: +SKIP
        """
        n = len(self)
        seqs = [int(i) for i in frames]
        for i in seqs:
            if not -n <= i < n:
                raise IndexError(f"frame index {i} out of range for {n} frames")
        frame_shape = self.frame_shape
        check_block(len(seqs), frame_shape, max_bytes)
        present = set(self._present()) if frame_shape != (0, 0) else set()
        jobs = [
            FrameJob(self._meta, seq % n, slot)
            for slot, seq in enumerate(seqs)
            if seq % n in present
        ]
        return decode_block(
            self._source,
            jobs,
            len(seqs),
            frame_shape,
            resolve_device(device or self._device),
            max_bytes,
        )

    def to_dask(self, device: str | None = None, frames_per_chunk: int = 1) -> Any:
        """A dask array of ``asarray()``'s shape, chunked along frames.

        See ``nd2gpu._dask.layer_to_dask``.
        """
        from ._dask import layer_to_dask

        return layer_to_dask(self, device, frames_per_chunk)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """NumPy array of the layer (always on the host)."""
        array = self.asarray(device="cpu")
        if array is None:
            array = np.ndarray([])
        return array if dtype is None else array.astype(dtype, copy=False)

    def _cuda_block(self) -> Any:
        return self._decode("cuda")


class BinaryLayers(Sequence[BinaryLayer], _DeviceArrayInterop):
    """The binary layers of an ND2 file, as returned by ``ND2File.binary_data``.

    A sequence of ``BinaryLayer``; ``asarray()`` / ``np.asarray(layers)`` stack
    every layer that has at least one mask into one array of shape
    ``(n_layers, *coordinate_shape, Y, X)``, decoded once into one block.
    ``cupy.asarray(layers)`` (through ``__cuda_array_interface__``) and
    ``torch.from_dlpack(layers)`` take the block decoded on the GPU without a copy.

    Examples
    --------
    >>> with nd2gpu.ND2File("cells.nd2") as f:  # doctest: +SKIP
    ...     layers = f.binary_data
    ...     masks = np.asarray(layers)  # host
    ...     gpu = layers.asarray(device="cuda")  # CuPy
    """

    def __init__(self, layers: list[BinaryLayer]) -> None:
        self._data = layers
        self._cuda_cache = _DeviceBlockCache()

    @overload
    def __getitem__(self, key: int) -> BinaryLayer: ...

    @overload
    def __getitem__(self, key: slice) -> list[BinaryLayer]: ...

    def __getitem__(self, key: int | slice) -> BinaryLayer | list[BinaryLayer]:
        return self._data[key]

    def __iter__(self) -> Iterator[BinaryLayer]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} with {len(self)} layers>"

    def asarray(
        self, device: str | None = None, *, max_bytes: int | None = None
    ) -> Any:
        """Stack every layer that has a mask into ``(n_layers, *coords, Y, X)``.

        Parameters
        ----------
        device : {"cpu", "cuda", "auto"}, optional
            Where to build the array; None uses the file's device.
        max_bytes : int, optional
            Refuse (``MemoryError``) to build an array larger than this.

        Raises
        ------
        ValueError
            If no layer has a mask in any frame (as nd2's ``np.stack`` does).
        DecodeError
            If the layers' frames differ in shape, or any payload is corrupt.
        """
        layers = self.stackable_layers()
        frame_shape = layers[0].frame_shape
        first = layers[0]
        n = len(first)
        check_block(len(layers) * n, frame_shape, max_bytes)
        jobs = [
            FrameJob(layer._meta, seq, i * n + seq)
            for i, layer in enumerate(layers)
            for seq in layer._present()
        ]
        block = decode_block(
            first._source,
            jobs,
            len(layers) * n,
            frame_shape,
            resolve_device(device or first._device),
            max_bytes,
        )
        return block.reshape((len(layers), *first.coordinate_shape, *frame_shape))

    def stackable_layers(self) -> list[BinaryLayer]:
        """The layers ``asarray()`` stacks: those with a mask in some frame.

        Raises
        ------
        ValueError
            If no layer has a mask in any frame (as nd2's ``np.stack`` does).
        DecodeError
            If their frames differ in shape.
        """
        layers = [layer for layer in self._data if layer.frame_shape != (0, 0)]
        if not layers:
            raise ValueError("no binary layer has a mask in any frame")
        frame_shape = layers[0].frame_shape
        for layer in layers[1:]:
            if layer.frame_shape != frame_shape:
                raise DecodeError(
                    f"layer {layer.name!r} has {layer.frame_shape} frames but layer "
                    f"{layers[0].name!r} has {frame_shape}: they cannot be stacked",
                    path=layer._source.path,
                )
        return layers

    def to_dask(self, device: str | None = None, frames_per_chunk: int = 1) -> Any:
        """A dask array of ``asarray()``'s shape, chunked along frames.

        See ``nd2gpu._dask.layers_to_dask``.
        """
        from ._dask import layers_to_dask

        return layers_to_dask(self, device, frames_per_chunk)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """NumPy array of all layers (always on the host)."""
        array = self.asarray(device="cpu")
        return array if dtype is None else array.astype(dtype, copy=False)

    def _cuda_block(self) -> Any:
        return self.asarray(device="cuda")
