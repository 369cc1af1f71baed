"""``nd2gpu.FrameDataset``: (image, masks) pairs of frames, for training."""

from __future__ import annotations

import operator
import os
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._decode.mask_source import MaskSource
from .._decode.pool import Tasks, thread_pool
from .._device import Device, DeviceRequest, check_request, resolve_device
from .._errors import DecodeError
from .._format.layer_metadata import LayerMeta
from .._layers import frame_indices
from .._nd2file import ND2File
from .._typing import Array, FrameIndex
from .images import ImageFrames, ImageSelection
from .info import FileInfo, Selector, read_info
from .masks import decode_masks

#: Batches of fewer image bytes than this are copied in the calling thread:
#: handing tiny frames to the pool costs more than copying them.
INLINE_BYTES = 1 << 20


class FrameDataset:
    """Images and binary-layer masks of an ND2 file's frames, for training.

    A map-style dataset (what ``torch.utils.data.DataLoader`` takes; torch is
    not needed): ``len(ds)`` is the number of sequence frames, ``ds[i]`` is
    ``(image, masks)`` of frame ``i``, and a list, array or slice of indices
    gives stacked batches, decoded in parallel. Nothing is decoded before it
    is asked for, and a batch reads only its own frames.

    Parameters
    ----------
    source : str, os.PathLike, URL, binary file object or nd2gpu.ND2File
        The ND2 file, as ``nd2gpu.ND2File`` takes it (an open ``ND2File``, to
        give nd2's options such as ``storage_options``). Local files are
        memory-mapped; URLs are read in byte ranges, a batch's frames at once.
    channels : int, str or sequence of them, optional
        The image channels, by index or name. None (default): every channel,
        exactly as ``nd2.ND2File.read_frame`` gives them; one channel: its
        image, without a channel axis; a sequence: those channels, along a
        first axis (kept even for one).
    layers : int, str or sequence of them, optional
        The binary layers whose masks come with each image, by index or name,
        in that order. None (default): every layer of the file (none: masks
        have ``n_layers == 0``).
    device : {"cpu", "cuda", "auto"}, optional
        None or "cpu": NumPy arrays. "cuda": CuPy arrays; masks are decoded on
        the GPU (only run tables cross PCIe) and images copied to it
        asynchronously through pinned memory. "auto": "cuda" where usable.

    Attributes
    ----------
    image_shape : tuple of int
        One frame's image.
    dtype : numpy.dtype
        The images' dtype (nd2's: uint8, uint16 or float32).
    mask_shape : tuple of int
        One frame's masks, ``(n_layers, Y, X)``, uint16.

    Raises
    ------
    ValueError
        For a channel or layer that does not exist, or a legacy file.
    DecodeError
        If a selected layer's masks do not have the images' shape.

    Notes
    -----
    A dataset pickles as its source (path or URL and storage options), its
    selection, its device and the file's layout, so ``DataLoader`` workers
    (forked or spawned) read in parallel without reopening the file with nd2;
    one made from an unnamed file object (``io.BytesIO``) does not pickle.
    Errors name the file, the frame and, for masks, the layer. Frames past the
    end of a truncated file raise ``DecodeError`` where nd2 gives zeros.

    Examples
    --------
    >>> ds = nd2gpu.FrameDataset("cells.nd2", layers=["cells"])  # doctest: +SKIP
    >>> image, masks = ds[0]  # (Y, X) image, (1, Y, X) uint16 masks
    >>> images, masks = ds[[3, 7, 9]]  # (3, Y, X), (3, 1, Y, X)
    >>> ds.coords(3)  # {'T': 1, 'Z': 0}
    """

    _owner: ND2File | None

    def __init__(
        self,
        source: str | os.PathLike[str] | ND2File | Any,
        *,
        channels: Selector | Sequence[Selector] | None = None,
        layers: Selector | Sequence[Selector] | None = None,
        device: DeviceRequest | None = None,
    ) -> None:
        request = check_request(device)
        info, keep = read_info(source)
        try:
            selection = ImageSelection.of(info.layout, info.channel_indices(channels))
            self._setup(
                info,
                selection,
                info.layer_selection(layers),
                MaskSource(info.spec),
                request,
            )
            self._check_mask_shapes()
        except BaseException:
            if keep is not None:
                keep.close()
            raise
        self._owner = keep
        if keep is not None:  # closing it closes the caller's file object
            weakref.finalize(self, keep.close)

    def _setup(
        self,
        info: FileInfo,
        selection: ImageSelection,
        layers: tuple[LayerMeta, ...],
        source: MaskSource,
        device: DeviceRequest | None,
    ) -> None:
        self._info = info
        self._selection = selection
        self._layers = layers
        self._source = source
        self._device = device
        self._owner = None

    def _check_mask_shapes(self) -> None:
        for layer in self._layers:
            shape = self._source.frame_shape(layer, len(self))
            if shape not in ((0, 0), self.frame_shape):
                raise DecodeError(
                    f"layer {layer.name!r} has {shape[0]}x{shape[1]} masks but the "
                    f"images are {self.frame_shape[0]}x{self.frame_shape[1]}",
                    path=self.path,
                    layer=layer.name,
                )

    # -- what the dataset holds ------------------------------------------------

    def __len__(self) -> int:
        """Number of sequence frames (the product of the experiment's loops)."""
        return self._info.n_frames

    @property
    def path(self) -> str:
        """The ND2 file: its path or URL."""
        return self._info.path

    @property
    def device(self) -> Device:
        """Where arrays are made: "cpu" (NumPy) or "cuda" (CuPy)."""
        return resolve_device(self._device)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """One frame's image (``read_frame``'s, with the channels selected)."""
        return self._selection.shape

    @property
    def dtype(self) -> np.dtype:
        """The images' dtype (as nd2's ``read_frame``)."""
        return self._selection.dtype

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(Y, X)`` of a frame."""
        layout = self._info.layout
        return (layout.height, layout.width)

    @property
    def mask_shape(self) -> tuple[int, int, int]:
        """One frame's masks: ``(n_layers, Y, X)``."""
        return (len(self._layers), *self.frame_shape)

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Names of the channels taken, in order (empty where the file names none)."""
        names = self._info.channel_names
        return tuple(names[c] for c in self._selection.channels if c < len(names))

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the binary layers whose masks come with each frame, in order."""
        return tuple(layer.name for layer in self._layers)

    def coords(self, i: int) -> dict[str, int]:
        """The loop coordinates of frame ``i``, e.g. ``{"T": 3, "Z": 1}``.

        As ``nd2.ND2File.loop_indices[i]``; negative ``i`` counts from the end.

        Raises
        ------
        IndexError
            If ``i`` is out of range.
        """
        (seq,), _ = frame_indices(operator.index(i), len(self))
        loops = self._info.loops
        if not loops:
            return {}
        position = np.unravel_index(seq, [count for _, count in loops])
        return {axis: int(k) for (axis, _), k in zip(loops, position, strict=True)}

    def __repr__(self) -> str:
        return (
            f"FrameDataset({self.path!r}, frames={len(self)}, "
            f"image_shape={self.image_shape}, dtype={self.dtype}, "
            f"layers={list(self.layer_names)!r}, device={self._device!r})"
        )

    # -- decoding --------------------------------------------------------------

    def __getitem__(self, frames: FrameIndex) -> tuple[Array, Array]:
        """``(image, masks)`` of one frame, or stacked for several (see ``get``)."""
        return self.get(frames)

    def get(
        self, frames: FrameIndex, *, out: tuple[Array, Array] | None = None
    ) -> tuple[Array, Array]:
        """The images and masks of ``frames``, optionally into buffers of yours.

        Parameters
        ----------
        frames : int, slice, range, sequence of int, or integer/bool array
            Sequence indices (negative ones count from the end; repeats
            allowed). One integer gives one frame's pair.
        out : (images, masks), optional
            Buffers to fill: C-contiguous, writeable, of exactly the result's
            shapes and dtypes, on the dataset's device (NumPy, or CuPy for
            "cuda"). Overwritten entirely.

        Returns
        -------
        images, masks
            ``(B, *image_shape)`` of ``dtype`` and ``(B, n_layers, Y, X)``
            uint16 (``image_shape`` and ``(n_layers, Y, X)`` for one integer);
            ``out`` when given. Frames without a mask in a layer are zeros there;
            a frame without image data is zeros, as in nd2.

        Raises
        ------
        IndexError
            If a frame index is out of range.
        TypeError, ValueError
            If ``frames`` or ``out`` is not usable.
        DecodeError
            If a frame's data are corrupt (naming file, frame and layer).
        """
        seqs, single = frame_indices(frames, len(self))
        device = self.device
        shapes = (
            (len(seqs), *self.image_shape),
            (len(seqs), *self.mask_shape),
        )
        buffers = None
        if out is not None:
            buffers = _unpack_out(out, single)
            _check_out(buffers, shapes, (self.dtype, np.dtype(np.uint16)), device)
        if device == "cuda":
            images, masks = self._decode_cuda(seqs, shapes, buffers)
        else:
            images, masks = self._decode_cpu(seqs, shapes, buffers)
        if out is not None:
            return out
        return (images[0], masks[0]) if single else (images, masks)

    def _decode_cpu(
        self,
        seqs: np.ndarray,
        shapes: tuple[tuple[int, ...], tuple[int, ...]],
        buffers: tuple[Any, Any] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        images = np.empty(shapes[0], self.dtype) if buffers is None else buffers[0]
        tasks: Tasks[None] | None = None
        with self._source.reading() as index:
            frames = ImageFrames(index, self._selection, seqs, self.path)
            if images.nbytes < INLINE_BYTES:
                for i in range(len(seqs)):
                    frames.fill(i, images[i])
            else:
                tasks = thread_pool().start(
                    lambda i: frames.fill(i, images[i]), len(seqs)
                )
            try:  # the masks decode while the images are copied
                masks = decode_masks(
                    self._source,
                    self._layers,
                    seqs,
                    self.frame_shape,
                    "cpu",
                    None if buffers is None else buffers[1],
                )
            finally:
                if tasks is not None:
                    tasks.wait()
        return images, masks

    def _decode_cuda(
        self,
        seqs: np.ndarray,
        shapes: tuple[tuple[int, ...], tuple[int, ...]],
        buffers: tuple[Any, Any] | None,
    ) -> tuple[Any, Any]:
        from .._backends.cuda.images import empty, shared_stager

        images = empty(shapes[0], self.dtype) if buffers is None else buffers[0]
        with self._source.reading() as index:
            frames = ImageFrames(index, self._selection, seqs, self.path)
            shared_stager().upload(images, frames.fill)
        masks = decode_masks(
            self._source,
            self._layers,
            seqs,
            self.frame_shape,
            "cuda",
            None if buffers is None else buffers[1],
        )
        return images, masks

    # -- lifetime and pickling -------------------------------------------------

    def close(self) -> None:
        """Release the file's memory map (reopened on the next read); a dataset
        made from a file object closes that object and cannot read again."""
        self._source.close()
        if self._owner is not None:
            self._owner.close()

    def __getstate__(self) -> dict[str, Any]:
        # The source pickles as its path or URL (an unnamed file object
        # refuses); the rest is plain data.
        return {
            "info": self._info,
            "selection": self._selection,
            "layers": self._layers,
            "source": self._source,
            "device": self._device,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._setup(**state)


def _unpack_out(out: Any, single: bool) -> tuple[Any, Any]:
    """``out``'s images and masks, with a batch axis for one frame."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(
            f"out must be a pair (images, masks) of arrays, not {type(out).__name__}"
        )
    images, masks = out
    return (images[None], masks[None]) if single else (images, masks)


def _check_out(
    buffers: tuple[Any, Any],
    shapes: tuple[tuple[int, ...], tuple[int, ...]],
    dtypes: tuple[np.dtype, np.dtype],
    device: Device,
) -> None:
    """Raise unless each buffer can take its result on ``device``."""
    if device == "cuda":
        from .._backends.cuda.images import check_device_out

        for what, buffer, shape, dtype in zip(
            ("images", "masks"), buffers, shapes, dtypes, strict=True
        ):
            check_device_out(buffer, shape, dtype, what)
        return
    for what, buffer, shape, dtype in zip(
        ("images", "masks"), buffers, shapes, dtypes, strict=True
    ):
        _check_host_out(buffer, shape, dtype, what)


def _check_host_out(
    out: Any, shape: tuple[int, ...], dtype: np.dtype, what: str
) -> None:
    if not isinstance(out, np.ndarray):
        raise TypeError(
            f"out {what} must be a NumPy array for device 'cpu', not "
            f"{type(out).__name__}"
        )
    if out.dtype != dtype:
        raise TypeError(f"out {what} must be {dtype}, not {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out {what} have shape {out.shape}, the result {shape}")
    if not out.flags.c_contiguous:
        raise ValueError(f"out {what} must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"out {what} must be writeable")
