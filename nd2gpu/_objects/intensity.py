"""Intensity images: an array of the frames, or a channel of the file read by nd2."""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._device import to_numpy
from .._typing import Intensity

if TYPE_CHECKING:
    from .._decode.layer_ref import LayerRef


_UINT16 = np.dtype(np.uint16)


@dataclass(frozen=True)
class Images:
    """Where intensity frames come from: an array, or a channel of the file.

    ``index`` of a frame is its position in ``frames`` (``by_position``) or its
    sequence index.
    """

    array: Any = None
    by_position: bool = True
    path: str | None = None
    channel: int = 0
    n_channels: int = 1
    frame_shape: tuple[int, int] = (0, 0)
    dtype: np.dtype = _UINT16

    @property
    def on_device(self) -> bool:
        """Whether the array lives on a GPU (``__cuda_array_interface__``)."""
        return self.array is not None and _is_device_array(self.array)

    def index(self, positions: np.ndarray, seqs: np.ndarray) -> np.ndarray:
        """Each frame's index in the images: its position in ``frames`` or its
        sequence index."""
        by_position = self.array is not None and self.by_position
        return np.asarray(positions if by_position else seqs, np.int64)

    @contextlib.contextmanager
    def reader(self) -> Iterator[Callable[[int], np.ndarray]]:
        """A function of ``index`` giving the frame's image as a 2-D NumPy array."""
        if self.array is None:
            import nd2

            assert self.path is not None  # a channel of a file
            with nd2.ND2File(self.path) as f:
                shape = (self.n_channels, *self.frame_shape)
                yield lambda seq: np.reshape(f.read_frame(seq), shape)[self.channel]
            return
        array = self.array
        lead = array.shape[:-2]

        def frame(index: int) -> np.ndarray:
            key = np.unravel_index(index, lead) if lead else ()
            return to_numpy(array[key])

        yield frame


def _is_device_array(array: Any) -> bool:
    return not isinstance(array, np.ndarray) and hasattr(
        array, "__cuda_array_interface__"
    )


def check_images(
    intensity: Intensity,
    layers: Sequence[LayerRef],
    n_asked: int,
    single: bool,
) -> Images:
    """Check ``intensity`` against the layers and the frames asked for.

    Raises
    ------
    ValueError
        If its shape fits neither ``(len(frames), Y, X)`` nor the layer's
        ``(*coordinate_shape, Y, X)``, or a channel does not exist.
    TypeError
        If it is neither an array nor a channel index or name.
    """
    shapes: set[tuple[int, int]] = {
        (int(layer.frame_shape[0]), int(layer.frame_shape[1])) for layer in layers
    } - {(0, 0)}
    if len(shapes) > 1:
        raise ValueError(
            "the layers have frames of different shapes "
            f"({', '.join(map(str, sorted(shapes)))}): measure them one by one "
            "to give each its intensity image"
        )
    frame_shape = next(iter(shapes)) if shapes else None
    coords = tuple(layers[0].coordinate_shape) if layers else ()
    if isinstance(intensity, (str, int, np.integer)) and not isinstance(
        intensity, bool
    ):
        channel = intensity if isinstance(intensity, str) else int(intensity)
        return _check_channel(channel, layers[0].path if layers else "", frame_shape)
    array: Any = intensity  # an array of any library, told by its attributes
    if not hasattr(array, "shape") or not hasattr(array, "dtype"):
        raise TypeError(
            "intensity must be an array (NumPy, CuPy, ...) of the frames' images, "
            "or a channel of the file (its index or name), not "
            f"{type(intensity).__name__}"
        )
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "biuf":
        raise TypeError(f"intensity must hold numbers, not {dtype}")
    shape = tuple(int(n) for n in array.shape)
    if frame_shape is None:  # no masks: nothing will be measured
        yx = (shape[-2], shape[-1]) if len(shape) >= 2 else (0, 0)
        return Images(array=array, frame_shape=yx, dtype=dtype)
    if shape == (n_asked, *frame_shape):
        return Images(array=array, frame_shape=frame_shape, dtype=dtype)
    if single and shape == frame_shape:
        return Images(array=array[None], frame_shape=frame_shape, dtype=dtype)
    if shape == (*coords, *frame_shape):
        return Images(
            array=array, by_position=False, frame_shape=frame_shape, dtype=dtype
        )
    raise ValueError(
        f"intensity has shape {shape}, but the masks need "
        f"{(n_asked, *frame_shape)} (one image per frame asked for, in that order) "
        f"or {(*coords, *frame_shape)} (the layer's whole shape)"
    )


def _check_channel(
    channel: int | str, path: str, frame_shape: tuple[int, int] | None
) -> Images:
    import nd2

    with nd2.ND2File(path) as f:
        attributes = f.attributes
        n_channels = int(attributes.channelCount or 1)
        if f.components_per_channel != 1:
            raise ValueError(
                f"{path}: the image is RGB ({f.components_per_channel} components "
                "per channel); pass intensity= as an array of the component to "
                "measure"
            )
        names = [c.channel.name for c in (f.metadata.channels or [])]
        if isinstance(channel, str):
            if channel not in names:
                raise ValueError(
                    f"{path} has no channel {channel!r}; its channels: "
                    + ", ".join(repr(n) for n in names)
                )
            index = names.index(channel)
        else:
            index = operator.index(channel)
            if not 0 <= index < n_channels:
                raise ValueError(
                    f"channel {index} out of range: {path} has {n_channels} "
                    f"channel(s) ({', '.join(repr(n) for n in names)})"
                )
        image_shape = (int(attributes.heightPx), int(attributes.widthPx or 0))
        dtype = np.dtype(f.dtype)
    if frame_shape is not None and image_shape != frame_shape:
        raise ValueError(
            f"{path}: the images are {image_shape[0]}x{image_shape[1]} but the "
            f"masks are {frame_shape[0]}x{frame_shape[1]}"
        )
    return Images(
        path=path,
        channel=index,
        n_channels=n_channels,
        frame_shape=image_shape,
        dtype=dtype,
    )


NO_IMAGE = np.zeros((0, 0), np.uint8)


def image_for_kernel(frame: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if frame.shape != shape:
        raise ValueError(
            f"an intensity image is {frame.shape[0]}x{frame.shape[1]}, the masks "
            f"are {shape[0]}x{shape[1]}"
        )
    if frame.dtype == np.bool_:
        return frame.view(np.uint8)
    if frame.dtype == np.float16:
        return frame.astype(np.float32)
    return frame


def host_frames(images: Images) -> Callable[[Sequence[int]], np.ndarray]:
    def fetch(indices: Sequence[int]) -> np.ndarray:
        # Stacked while the reader is open: nd2 gives views of its memory map.
        with images.reader() as image_of:
            return np.stack(
                [image_for_kernel(image_of(i), images.frame_shape) for i in indices]
            )

    return fetch
