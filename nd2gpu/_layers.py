"""Lazy binary layers: nd2's ``BinaryLayers`` and ``BinaryLayer``, decoded on demand."""

from __future__ import annotations

import math
import operator
import threading
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, overload

import nd2
import numpy as np
from numpy.typing import DTypeLike

from ._backends import decode_block
from ._dask import layer_to_dask, layers_to_dask
from ._decode.frame import parse_header
from ._decode.layer_ref import LayerRef
from ._decode.mask_source import MaskSource
from ._decode.plan import DecodePlan
from ._device import DeviceRequest, check_request, cuda_status, resolve_device
from ._errors import DecodeError
from ._format.layer_metadata import LayerMeta
from ._objects import DEFAULT_PROPERTIES, check_spacing, regionprops_table
from ._typing import Array, FrameIndex, Intensity

#: What ``spacing=`` takes: ``(dy, dx)``, or "file" for the file's pixel size.
Spacing = tuple[float, float] | str | None

if TYPE_CHECKING:
    import dask.array


def frame_indices(frames: FrameIndex, n: int) -> tuple[np.ndarray, bool]:
    """Sequence indices in ``[0, n)`` of an index as nd2 users write one.

    Parameters
    ----------
    frames : int, slice, range, sequence of int, or integer/bool array
        Negative integers count from the end; a bool array of length ``n``
        selects the frames where it is True.
    n : int
        Frames in the layer.

    Returns
    -------
    seqs, single
        The indices (``int64``), and whether ``frames`` was one integer (a 2-D
        result).

    Raises
    ------
    IndexError
        If an index is out of range.
    TypeError
        If ``frames`` is not one of the kinds above.
    """
    if isinstance(frames, slice):
        return np.arange(n, dtype=np.int64)[frames], False
    if isinstance(frames, (bool, np.bool_)):
        raise TypeError(f"frames must be integers, not {type(frames).__name__}")
    if isinstance(frames, (int, np.integer)):
        return np.array([_check_index(int(frames), n)], np.int64), True
    if isinstance(frames, (str, bytes)) or not hasattr(frames, "__len__"):
        raise TypeError(
            "frames must be an int, a slice, a range, a sequence of ints or an "
            f"integer array, not {type(frames).__name__}"
        )
    if isinstance(frames, range):
        array = np.arange(frames.start, frames.stop, frames.step, dtype=np.int64)
    else:
        array = np.asarray(frames)
    if array.dtype == np.bool_:
        if array.shape != (n,):
            raise IndexError(
                f"a boolean frame mask must have shape ({n},), not {array.shape}"
            )
        return np.flatnonzero(array), False
    if array.size and array.dtype.kind not in "iu":
        raise TypeError(f"frame indices must be integers, not {array.dtype}")
    if array.ndim > 1:
        raise IndexError(f"frame indices must be one-dimensional, not {array.shape}")
    bad = (array >= n) if array.dtype.kind == "u" else (array < -n) | (array >= n)
    if bad.any():
        raise IndexError(
            f"frame index {int(array[bad][0])} out of range for {n} frames"
        )
    array = array.astype(np.int64, copy=False)
    return array % n if n else array, False


def _check_index(i: int, n: int) -> int:
    if not -n <= i < n:
        raise IndexError(f"frame index {i} out of range for {n} frames")
    return i % n


class _GpuExport:
    """``__cuda_array_interface__`` and DLPack export of a decoded CUDA block.

    The attributes exist only where CUDA is usable: elsewhere they raise
    ``AttributeError`` (so ``hasattr`` is False and probes such as
    ``numba.cuda.is_cuda_array`` fall through to the host path) without
    decoding anything. ``cupy.asarray(x)`` and ``torch.from_dlpack(x)`` take the
    block without a host round trip, whatever the file's default device; it is
    decoded on first use and kept until ``release_device_memory()``.
    """

    _block_lock: threading.Lock
    _block: Any

    def _cuda_block(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _gpu_block(self, attribute: str) -> Any:
        ok, why = cuda_status()
        if not ok:
            raise AttributeError(f"{attribute}: CUDA is not usable here ({why})")
        with self._block_lock:
            if self._block is None:
                self._block = self._cuda_block()
            block = self._block
        if block is None:
            raise AttributeError(f"{attribute}: no frame has a mask")
        return block

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return self._gpu_block("__cuda_array_interface__").__cuda_array_interface__

    @property
    def __dlpack__(self) -> Any:
        return _dlpack_attribute(self._gpu_block("__dlpack__"), "__dlpack__")

    @property
    def __dlpack_device__(self) -> Any:
        block = self._gpu_block("__dlpack_device__")
        return _dlpack_attribute(block, "__dlpack_device__")

    def release_device_memory(self) -> None:
        """Drop the decoded device block behind the GPU interfaces."""
        with self._block_lock:
            self._block = None

    def _init_export(self) -> None:
        self._block_lock = threading.Lock()
        self._block = None


def _dlpack_attribute(block: Any, name: str) -> Any:
    try:
        return getattr(block, name)
    except AttributeError:
        raise AttributeError(
            f"{name}: not available for {type(block).__name__} (numba's CUDA "
            "simulator has no DLPack)"
        ) from None


class BinaryLayer(nd2.BinaryLayer, _GpuExport):
    """One binary layer of an ND2 file: a lazy sequence of per-frame label images.

    An ``nd2.BinaryLayer`` (a ``list[numpy.ndarray | None]`` with metadata)
    whose frames are decoded only when asked for: ``layer[i]`` decodes frame
    ``i`` alone, ``asarray()`` decodes every frame once into one block, and
    ``decode(frames)`` fills a batch.

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
    ...     first = layer[0]  # one frame, NumPy (None if it has no mask)
    ...     stack = layer.asarray()  # (*coords, Y, X) uint16
    ...     batch = layer.decode([3, 7, 9], device="cuda")  # (3, Y, X) CuPy
    """

    # nd2's dataclass compares and hashes its fields, ``data`` included: that
    # would decode the whole layer. Layers are equal only to themselves.
    __eq__ = object.__eq__
    __hash__ = object.__hash__
    # nd2's frozen dataclass guards its fields' slots; ours are properties over
    # private state.
    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__

    def __init__(
        self,
        meta: LayerMeta,
        source: MaskSource,
        coordinate_shape: tuple[int, ...],
        device: DeviceRequest | None = None,
        *,
        axes: tuple[str, ...] | None = None,
        pixel_size: tuple[float, float] | None = None,
    ) -> None:
        self._meta = meta
        self._source = source
        self._coordinate_shape = tuple(int(c) for c in coordinate_shape)
        self._device = check_request(device)
        self._axes = (
            tuple(axes) if axes is not None else ("",) * len(self._coordinate_shape)
        )
        if len(self._axes) != len(self._coordinate_shape):
            raise ValueError("axes must name each loop of coordinate_shape")
        self._pixel_size = pixel_size
        self._init_export()

    name = property(lambda self: self._meta.name, doc="The layer's name.")
    file_tag = property(lambda self: self._meta.file_tag, doc="Chunk key of the layer.")
    comp_name = property(lambda self: self._meta.comp_name, doc="Component name.")
    comp_order = property(lambda self: self._meta.comp_order, doc="Component order.")
    color = property(lambda self: self._meta.color, doc="Display color.")
    color_mode = property(lambda self: self._meta.color_mode, doc="Color mode.")
    state = property(lambda self: self._meta.state, doc="Layer state.")
    layer_id = property(lambda self: self._meta.layer_id, doc="Binary layer id.")
    coordinate_shape = property(
        lambda self: self._coordinate_shape, doc="The experiment loop counts."
    )

    @property
    def meta(self) -> LayerMeta:
        """The layer's ``BinaryMetadata_v1`` record."""
        return self._meta

    @property
    def source(self) -> MaskSource:
        """Where the layer's payloads are read from (shared by a file's layers)."""
        return self._source

    @property
    def axes(self) -> tuple[str, ...]:
        """The letter of each loop axis as in ``ND2File.sizes`` (``T``, ``P``,
        ``Z``, ...; ``""`` for a loop of count 1, which ``sizes`` leaves out)."""
        return self._axes

    @property
    def pixel_size(self) -> tuple[float, float] | None:
        """The file's pixel size ``(dy, dx)`` in micrometres (``spacing="file"``),
        None when the file does not say."""
        return self._pixel_size

    @property
    def ref(self) -> LayerRef:
        """The layer as plain data for the stages below (picklable)."""
        return LayerRef(
            self._source,
            self._meta,
            self._coordinate_shape,
            self.frame_shape,  # type: ignore[arg-type]
            self._axes,
        )

    @property
    def device(self) -> str:
        """The device arrays are decoded to by default ("cpu" or "cuda")."""
        return resolve_device(self._device)

    @property
    def device_request(self) -> DeviceRequest | None:
        """The default device as asked for (None, "auto", "cpu" or "cuda")."""
        return self._device

    @property
    def path(self) -> str:
        """The ND2 file this layer is read from: its path or URL."""
        return str(self._source.path)

    def __repr__(self) -> str:
        m = self._meta
        return (
            f"BinaryLayer(name={m.name!r}, file_tag={m.file_tag!r}, "
            f"comp_name={m.comp_name!r}, comp_order={m.comp_order!r}, "
            f"color={m.color!r}, color_mode={m.color_mode!r}, state={m.state!r}, "
            f"layer_id={m.layer_id!r}, coordinate_shape={self.coordinate_shape!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        return {
            "meta": self._meta,
            "source": self._source,
            "coordinate_shape": self._coordinate_shape,
            "device": self._device,
            "axes": self._axes,
            "pixel_size": self._pixel_size,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["meta"],
            state["source"],
            state["coordinate_shape"],
            state["device"],
            axes=state.get("axes"),
            pixel_size=state.get("pixel_size"),
        )

    def __len__(self) -> int:
        """Number of frames (sequence indices), with or without a mask."""
        return math.prod(self._coordinate_shape)

    @cached_property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape ``(Y, X)`` of the first frame that has a mask, ``(0, 0)`` if none."""
        return self._source.frame_shape(self._meta, len(self))

    @overload
    def __getitem__(self, key: int) -> Array | None: ...

    @overload
    def __getitem__(self, key: slice) -> list[Array | None]: ...

    def __getitem__(self, key: int | slice) -> Array | list[Array | None] | None:
        """Decode one frame (or a slice of frames) on the file's device.

        Returns None for a frame without a mask, like nd2.
        """
        if isinstance(key, slice):
            return [self._frame(i) for i in range(len(self))[key]]
        return self._frame(_check_index(operator.index(key), len(self)))

    def __iter__(self) -> Iterator[Array | None]:
        for seq in range(len(self)):
            yield self._frame(seq)

    def _frame(self, seq: int, device: str | None = None) -> Array | None:
        with self._source.reading() as index:
            data = self._source.payload(index, self.file_tag, seq)
        if data is None:
            return None
        try:
            shape = parse_header(data).shape
        except DecodeError as e:
            raise e.with_context(path=self.path, layer=self.name, frame=seq) from None
        ref = LayerRef(self._source, self._meta, self._coordinate_shape, shape)
        block = decode_block(
            DecodePlan.of([ref], 0, [seq]),
            (1, *shape),
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
            block = self._decode("cpu")
        except DecodeError:
            # nd2 gives frames of different shapes as they are; a corrupt frame
            # raises its own error again, decoded alone.
            return [self._frame(seq, "cpu") for seq in range(len(self))]
        if block is None:
            return [None] * len(self)
        present = set(self.frames_with_mask())
        flat = block.reshape(-1, *self.frame_shape)
        return [flat[i] if i in present else None for i in range(len(self))]

    def frames_with_mask(self) -> list[int]:
        """Sequence indices of the frames that have a mask, ascending.

        Reads the chunk map and the chunks' headers; decodes nothing. The other
        frames are None in ``layer[i]`` and ``data``, and zeros in ``asarray()``.
        """
        with self._source.reading() as index:
            seqs = self._source.frames(index, self.file_tag, len(self))
            return self._source.masked_frames(index, self.file_tag, seqs)

    def frames_with_chunk(self) -> list[int]:
        """Sequence indices that have a chunk (only they can hold a mask)."""
        with self._source.reading() as index:
            return list(self._source.frames(index, self.file_tag, len(self)))

    def _decode(
        self, device: DeviceRequest | None, max_bytes: int | None = None
    ) -> Array | None:
        frame_shape = self.frame_shape
        if frame_shape == (0, 0):
            return None
        seqs = self.frames_with_chunk()
        block = decode_block(
            DecodePlan.of([self.ref], 0, seqs, seqs),
            (len(self), *frame_shape),  # type: ignore[arg-type]
            resolve_device(device),
            max_bytes=max_bytes,
        )
        return block.reshape(self.coordinate_shape + frame_shape)

    def asarray(
        self, device: DeviceRequest | None = None, *, max_bytes: int | None = None
    ) -> Array | None:
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
        return self._decode(_request(device, self._device), max_bytes)

    def decode(
        self,
        frames: FrameIndex,
        device: DeviceRequest | None = None,
        *,
        out: Array | None = None,
        max_bytes: int | None = None,
    ) -> Array:
        """Decode only the given frames into one ``(len(frames), Y, X)`` array.

        Meant for training loaders: each call decodes just the requested frames
        (frames without a mask are zeros), optionally into a buffer of the
        caller's that is reused from batch to batch.

        Parameters
        ----------
        frames : int, slice, range, sequence of int, or integer/bool array
            Sequence indices as nd2 users index (negative ones count from the
            end; repeats allowed). One integer gives one ``(Y, X)`` frame.
        device : {"cpu", "cuda", "auto"}, optional
            None uses the file's device (or, with ``out``, the device ``out``
            lives on).
        out : numpy.ndarray or CUDA array, optional
            Where to write the result: uint16, C-contiguous, of exactly the
            result's shape, on the device decoded to. Overwritten entirely.
        max_bytes : int, optional
            Refuse (``MemoryError``) a new result larger than this.

        Returns
        -------
        numpy.ndarray or cupy.ndarray
            ``out`` when given; else shape ``(len(frames), *frame_shape)``
            uint16, ``(len(frames), 0, 0)`` if the layer has no mask at all.

        Raises
        ------
        IndexError
            If a frame index is out of range.
        TypeError, ValueError
            If ``frames`` or ``out`` is not usable (wrong kind, dtype or shape).

        Examples
        --------
        >>> batch = layer.decode([0, 5, 9])  # (3, Y, X) NumPy  # doctest: +SKIP
        >>> buf = cupy.empty((16, *layer.frame_shape), cupy.uint16)  # doctest: +SKIP
        >>> layer.decode(range(16), device="cuda", out=buf)  # doctest: +SKIP
        """
        seqs, single = frame_indices(frames, len(self))
        frame_shape = self.frame_shape
        if out is not None and device is None:
            # A CUDA array (not NumPy) goes to "cuda"; anything else is refused
            # by the CPU back end with a message naming what "out" must be.
            on_gpu = hasattr(out, "__cuda_array_interface__")
            device = "cuda" if on_gpu and not isinstance(out, np.ndarray) else "cpu"
        plan = DecodePlan.of([self.ref], 0, seqs if frame_shape != (0, 0) else [])
        shape = (len(seqs), *frame_shape)
        target = out
        if out is not None and single:
            if tuple(out.shape) != frame_shape:
                raise ValueError(
                    f"out has shape {tuple(out.shape)}, the result {frame_shape}"
                )
            target = out[None]
        block = decode_block(
            plan,
            shape,  # type: ignore[arg-type]
            resolve_device(_request(device, self._device)),
            max_bytes=max_bytes,
            out=target,
        )
        if out is not None:
            return out
        return block[0] if single else block

    def to_dask(
        self, device: DeviceRequest | None = None, frames_per_chunk: int = 1
    ) -> dask.array.Array | None:
        """A dask array of ``asarray()``'s shape, chunked along frames.

        See ``nd2gpu._dask.layer_to_dask``.
        """
        return layer_to_dask(self.ref, _request(device, self._device), frames_per_chunk)

    def regionprops_table(
        self,
        frames: FrameIndex | None = None,
        *,
        properties: str | Sequence[str] = DEFAULT_PROPERTIES,
        intensity: Intensity | None = None,
        spacing: Spacing = None,
        device: DeviceRequest | None = None,
    ) -> dict[str, Array]:
        """Measure the objects of each frame, straight from the mask runs.

        The columns are those of ``skimage.measure.regionprops_table`` (and
        cuCIM's) on the label image ``layer[i]`` of each frame, plus ``frame``
        and the frame's loop coordinates; no label image is built.
        ``pandas.DataFrame(table)`` (``cudf.DataFrame`` for CuPy columns) makes a
        data frame of it. See docs/objects.md.

        Parameters
        ----------
        frames : int, slice, range, sequence of int, or integer/bool array, optional
            The frames to measure, as in ``decode`` (without repeats); None
            measures every frame. Frames without a mask give no rows.
        properties : sequence of str
            Any of "label", "area", "bbox", "centroid", "intensity_mean",
            "intensity_min", "intensity_max".
        intensity : array, int or str, optional
            For the intensity columns: the frames' images, ``(len(frames), Y,
            X)`` in the order of ``frames`` (``(Y, X)`` for one integer frame)
            or the layer's whole ``(*coordinate_shape, Y, X)``, NumPy or CuPy;
            or a channel of the file, by index or name, read with nd2.
        spacing : (float, float) or "file", optional
            The pixel size ``(dy, dx)``: ``area`` and ``centroid`` in its units,
            exactly as skimage's ``regionprops_table(..., spacing=)`` gives
            them; "file" takes the file's pixel size (``pixel_size``, µm).
            Costs a pass over the objects' pixels.
        device : {"cpu", "cuda", "auto"}, optional
            Where to measure; None uses the file's device. "cuda" gives CuPy
            columns.

        Returns
        -------
        dict of str to numpy.ndarray or cupy.ndarray
            Equal-length columns ``frame``; one per loop axis named as in
            ``ND2File.sizes`` (``T``, ``P``, ``Z``, ...: the frame's
            ``numpy.unravel_index`` in ``coordinate_shape``); ``label``,
            ``area``, ``bbox-0`` .. ``bbox-3``, ``centroid-0``, ``centroid-1``,
            ``intensity_*`` (the ones asked for); rows sorted by (frame, label);
            dtypes as skimage's.

        Raises
        ------
        ValueError
            For an unknown property, intensity columns without ``intensity``,
            an intensity of the wrong shape, repeated frames, a spacing that is
            not two positive numbers, or ``spacing="file"`` for a file without a
            pixel size.
        DecodeError
            If a frame's data are corrupt (naming file, layer, frame, offset).

        Examples
        --------
        >>> with nd2gpu.ND2File("cells.nd2") as f:  # doctest: +SKIP
        ...     table = f.binary_data[0].regionprops_table()
        >>> pandas.DataFrame(table)  # doctest: +SKIP
        """
        seqs, single = (
            (range(len(self)), False)
            if frames is None
            else frame_indices(frames, len(self))
        )
        return regionprops_table(
            [(0, self.ref)],
            seqs,
            single=single,
            properties=properties,
            intensity=intensity,
            spacing=self._spacing(spacing),
            axes=self._axes,
            device=_request(device, self._device),
        )

    def _spacing(self, spacing: Spacing) -> tuple[float, float] | None:
        if isinstance(spacing, str):
            if spacing != "file":
                raise ValueError(
                    f"spacing must be two numbers (dy, dx) or 'file', not {spacing!r}"
                )
            if self._pixel_size is None:
                raise ValueError(
                    f"{self.path}: the file gives no pixel size for spacing='file'"
                )
            return check_spacing(self._pixel_size)
        return check_spacing(spacing)

    def __array__(
        self, dtype: DTypeLike | None = None, copy: bool | None = None
    ) -> np.ndarray:
        """NumPy array of the layer (always on the host)."""
        array = self.asarray(device="cpu")
        if array is None:
            array = np.ndarray([])
        return array if dtype is None else array.astype(dtype, copy=False)

    def _cuda_block(self) -> Any:
        return self._decode("cuda")


def _request(
    device: DeviceRequest | None, default: DeviceRequest | None
) -> DeviceRequest | None:
    """A call's device request, falling back to the file's."""
    return check_request(device) if device is not None else default


class BinaryLayers(nd2.BinaryLayers, _GpuExport):
    """The binary layers of an ND2 file, as returned by ``ND2File.binary_data``.

    An ``nd2.BinaryLayers``: a sequence of ``BinaryLayer``; ``asarray()`` /
    ``np.asarray(layers)`` stack every layer that has at least one mask into one
    array of shape ``(n_layers, *coordinate_shape, Y, X)``, decoded once into
    one block. ``cupy.asarray(layers)`` (through ``__cuda_array_interface__``)
    and ``torch.from_dlpack(layers)`` take the block decoded on the GPU without
    a copy.

    Examples
    --------
    >>> with nd2gpu.ND2File("cells.nd2") as f:  # doctest: +SKIP
    ...     layers = f.binary_data
    ...     masks = np.asarray(layers)  # host
    ...     gpu = layers.asarray(device="cuda")  # CuPy
    """

    _data: list[BinaryLayer]  # type: ignore[assignment]

    def __init__(self, layers: Sequence[BinaryLayer]) -> None:
        super().__init__(list(layers))
        self._init_export()

    def __getstate__(self) -> dict[str, Any]:
        return {"layers": self._data}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["layers"])  # type: ignore[misc]

    # nd2's slice overload returns list[nd2.BinaryLayer]; ours holds only
    # nd2gpu layers, and list is invariant.
    @overload  # type: ignore[override]
    def __getitem__(self, key: int) -> BinaryLayer: ...

    @overload
    def __getitem__(self, key: slice) -> list[BinaryLayer]: ...

    def __getitem__(self, key: int | slice) -> BinaryLayer | list[BinaryLayer]:
        return self._data[key]

    def __iter__(self) -> Iterator[BinaryLayer]:
        return iter(self._data)

    def asarray(
        self, device: DeviceRequest | None = None, *, max_bytes: int | None = None
    ) -> Array:
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
        first = layers[0]
        frame_shape = first.frame_shape
        n = len(first)
        with_chunk = [
            np.asarray(layer.frames_with_chunk(), np.int64) for layer in layers
        ]
        plan = DecodePlan.of(
            [layer.ref for layer in layers],
            np.concatenate([np.full(s.shape, i) for i, s in enumerate(with_chunk)]),
            np.concatenate(with_chunk),
            np.concatenate([i * n + s for i, s in enumerate(with_chunk)]),
        )
        block = decode_block(
            plan,
            (len(layers) * n, *frame_shape),  # type: ignore[arg-type]
            resolve_device(_request(device, first.device_request)),
            max_bytes=max_bytes,
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
                    path=layer.path,
                )
        return layers

    def to_dask(
        self, device: DeviceRequest | None = None, frames_per_chunk: int = 1
    ) -> dask.array.Array:
        """A dask array of ``asarray()``'s shape, chunked along frames.

        See ``nd2gpu._dask.layers_to_dask``.
        """
        default = self._data[0].device_request if self._data else None
        refs = [layer.ref for layer in self.stackable_layers()]
        return layers_to_dask(refs, _request(device, default), frames_per_chunk)

    def regionprops_table(
        self,
        frames: FrameIndex | None = None,
        *,
        properties: str | Sequence[str] = DEFAULT_PROPERTIES,
        intensity: Intensity | None = None,
        spacing: Spacing = None,
        device: DeviceRequest | None = None,
    ) -> dict[str, Array]:
        """Measure the objects of every layer: ``BinaryLayer.regionprops_table``
        with a ``layer`` column (the layer's index in the file) first.

        Parameters and errors are those of ``BinaryLayer.regionprops_table``;
        ``frames`` and ``intensity`` apply to every layer. Rows are sorted by
        (layer, frame, label).

        Returns
        -------
        dict of str to numpy.ndarray or cupy.ndarray
        """
        n = len(self._data[0]) if self._data else 0
        seqs, single = (range(n), False) if frames is None else frame_indices(frames, n)
        first = self._data[0] if self._data else None
        return regionprops_table(
            [(i, layer.ref) for i, layer in enumerate(self._data)],
            seqs,
            single=single,
            properties=properties,
            intensity=intensity,
            spacing=None if first is None else first._spacing(spacing),
            axes=() if first is None else first.axes,
            device=_request(device, None if first is None else first.device_request),
            layer_column=True,
        )

    def __array__(
        self, dtype: DTypeLike | None = None, copy: bool | None = None
    ) -> np.ndarray:
        """NumPy array of all layers (always on the host)."""
        array = self.asarray(device="cpu")
        return array if dtype is None else array.astype(dtype, copy=False)

    def _cuda_block(self) -> Any:
        return self.asarray(device="cuda")
