"""``nd2gpu.ND2File``: nd2's ``ND2File`` with fast, device-aware binary layers."""

from __future__ import annotations

import math
import os
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import nd2

# nd2's public ``custom_data`` decodes every CustomDataVar chunk, so one corrupt
# unrelated chunk would fail ``binary_data`` where nd2's own ``binary_data``
# (which decodes only the BinaryMetadata_v1 chunk) succeeds. We therefore decode
# that one chunk with the same variant decoders nd2's reader uses, and fall back
# to the public ``custom_data`` if a future nd2 moves them.
try:
    from nd2._parse._clx_lite import json_from_clx_lite_variant
    from nd2._parse._clx_xml import json_from_clx_variant
except ImportError:  # pragma: no cover - depends on the nd2 version
    json_from_clx_lite_variant = json_from_clx_variant = None

from ._chunk_format import BINARY_METADATA_CHUNK
from ._errors import DecodeError
from ._layers import BinaryLayer, BinaryLayers
from ._mask_source import LayerMeta, MaskSource

DEVICES = ("auto", "cpu", "cuda")


def _binary_metadata_items(
    chunk: bytes, source: MaskSource, custom_data: Callable[[], dict[str, Any]]
) -> list[tuple[Any, Any]] | None:
    """The sorted items of a ``BinaryMetadata_v1`` chunk, as nd2 decodes them.

    The chunk is read by nd2gpu (cut at the end of the file like any chunk) and
    decoded with nd2's own variant decoders, as ``nd2``'s reader does. Returns
    None when the decoded chunk lacks the ``BinaryMetadata_v1`` tag.

    Raises
    ------
    DecodeError
        If the chunk cannot be decoded or its items are not a mapping.
    """
    try:
        if json_from_clx_variant is None or json_from_clx_lite_variant is None:
            decoded = custom_data()["BinaryMetadata_v1"]
        elif chunk.startswith(b"<"):
            decoded = json_from_clx_variant(chunk, strip_prefix=True)
        else:
            decoded = json_from_clx_lite_variant(chunk, strip_prefix=True)
        if not isinstance(decoded, dict):
            raise TypeError(f"decoded to {type(decoded).__name__}, not a mapping")
        if "BinaryMetadata_v1" not in decoded:
            return None
        return sorted(decoded["BinaryMetadata_v1"].items())
    except Exception as e:
        raise DecodeError(
            f"cannot decode the binary-layer metadata chunk ({e!r})",
            path=source.path,
            where="file",
        ) from e


def _layer_meta(item: Any, source: MaskSource) -> LayerMeta:
    try:
        return LayerMeta.from_item(item)
    except (KeyError, TypeError, AttributeError) as e:
        raise DecodeError(
            f"a binary-layer metadata item lacks a Name or FileTag ({e!r})",
            path=source.path,
            where="file",
        ) from e


class ND2File(nd2.ND2File):
    """An ND2 file whose binary layers decode fast, to NumPy or straight to the GPU.

    A drop-in subclass of ``nd2.ND2File``: everything nd2 offers keeps working.
    ``binary_data`` returns a lazy ``nd2gpu.BinaryLayers`` with the same values
    nd2 gives, decoded only when asked for.

    Parameters
    ----------
    path : str or os.PathLike
        The ND2 file (a local path: nd2gpu memory-maps it).
    device : {"auto", "cpu", "cuda"}
        Where arrays are decoded by default. "auto" picks "cuda" when a CUDA GPU
        and CuPy are usable, else "cpu". Asking for "cuda" where it is not usable
        raises ``nd2gpu.DeviceUnavailableError`` naming what is missing (on first
        decode, or on reading ``device``).
    **nd2_kwargs
        Passed to ``nd2.ND2File``.

    Examples
    --------
    >>> import numpy as np, nd2gpu  # doctest: +SKIP
    >>> with nd2gpu.ND2File("cells.nd2") as f:
    ...     layers = f.binary_data  # BinaryLayers, or None
    ...     masks = np.asarray(layers)  # (n_layers, *coords, Y, X) uint16
    """

    def __init__(
        self, path: str | os.PathLike[str], *, device: str = "auto", **nd2_kwargs: Any
    ) -> None:
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(
                f"nd2gpu.ND2File needs a local file path, not {type(path).__name__}"
            )
        super().__init__(path, **nd2_kwargs)
        self._device_request = device
        self._mask_source: MaskSource | None = None
        self._binary_layers: BinaryLayers | None = None
        self._binary_loaded = False

    @property
    def device(self) -> str:
        """The resolved default device of this file: "cpu" or "cuda"."""
        from ._device import resolve_device

        return resolve_device(self._device_request)

    @property
    def binary_data(self) -> BinaryLayers | None:  # type: ignore[override]
        """The file's binary layers (lazy), or None if it has none.

        Returns
        -------
        BinaryLayers or None
            One ``BinaryLayer`` per item of ``BinaryMetadata_v1``, in the order nd2
            gives them. Opening and listing decode nothing.
        """
        if not self._binary_loaded:
            self._binary_layers = self._load_binary_layers()
            self._binary_loaded = True
        return self._binary_layers

    def _source(self) -> MaskSource:
        if self._mask_source is None:
            self._mask_source = source = MaskSource(self.path, 0)
            # An unclosed file that is garbage-collected releases its map too.
            weakref.finalize(self, source.detach)
            if self.closed:
                source.detach()
        return self._mask_source

    def _load_binary_layers(self) -> BinaryLayers | None:
        if self.is_legacy:
            return None
        # The same steps in the same order as nd2's binary_data: metadata chunk,
        # its items, then the experiment loops.
        source = self._source()
        with source.reading() as index:
            if BINARY_METADATA_CHUNK not in index:
                return None
            chunk = index.read(BINARY_METADATA_CHUNK)
        items = _binary_metadata_items(chunk or b"", source, lambda: self.custom_data)
        if items is None:
            warnings.warn(
                f"{self.path!r} has a BinaryMetadata_v1 chunk without the "
                "'BinaryMetadata_v1' tag: no binary layers read",
                stacklevel=3,
            )
            return None
        coordinate_shape = tuple(loop.count for loop in self.experiment)
        metas = [_layer_meta(item, source) for _, item in items]
        source.n_frames = math.prod(coordinate_shape)
        return BinaryLayers(
            [
                BinaryLayer(meta, source, coordinate_shape, self._device_request)
                for meta in metas
            ]
        )

    def open(self) -> None:
        """Open the file for reading (also reopens the binary layers' map)."""
        super().open()
        if self._mask_source is not None:
            self._mask_source.attach()

    def close(self) -> None:
        """Close the file and its memory map.

        Binary layers handed out earlier still decode afterwards: each call
        reopens the file for its own duration.
        """
        if getattr(self, "_mask_source", None) is not None:
            self._mask_source.detach()
        super().close()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for key in ("_mask_source", "_binary_layers", "_binary_loaded"):
            state.pop(key, None)
        return state

    def __setstate__(self, d: dict[str, Any]) -> None:
        super().__setstate__(d)
        self._mask_source = None
        self._binary_layers = None
        self._binary_loaded = False
