"""``nd2gpu.ND2File``: nd2's ``ND2File`` with fast, device-aware binary layers."""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from typing import Any

import nd2

from ._decode.mask_source import MaskSource
from ._device import DeviceRequest, check_request, resolve_device
from ._format.container import BINARY_METADATA_CHUNK
from ._format.layer_metadata import decode_layer_metadata
from ._format.loops import loop_axes
from ._layers import BinaryLayer, BinaryLayers
from ._sources import source_spec


class ND2File(nd2.ND2File):
    """An ND2 file whose binary layers decode fast, to NumPy or straight to the GPU.

    A drop-in subclass of ``nd2.ND2File``: everything nd2 offers keeps working,
    with the same types. ``binary_data`` returns a lazy ``nd2gpu.BinaryLayers``
    with the same values nd2 gives, decoded only when asked for.

    Parameters
    ----------
    path : str, os.PathLike, URL or binary file object
        The ND2 file: whatever ``nd2.ND2File`` accepts. A local path (or
        ``file://`` URL) is memory-mapped. A URL of any other scheme
        (``http(s)://``, ``s3://``, ``memory://``, ...) is read through fsspec
        (``pip install "nd2gpu[remote]"``): the chunk map once, then only the
        byte ranges of the frames asked for, a batch at a time. An open binary
        file object is read as what it is: a local file (``open(p, "rb")``)
        memory-mapped by name, an fsspec file by its URL, anything else
        (``io.BytesIO``) with ``seek``/``read``; such an unnamed object cannot
        be pickled, and its layers decode only while it is open.
    device : {"cpu", "cuda", "auto"}, optional
        Where binary layers are decoded by default. None (the default) and "cpu"
        give NumPy arrays, exactly as nd2 does; "cuda" gives CuPy arrays decoded
        on the GPU; "auto" gives CuPy where a GPU and CuPy are usable, else
        NumPy. Asking for "cuda" where it is not usable raises
        ``nd2gpu.DeviceUnavailableError`` naming what is missing (on first
        decode, or on reading ``device``). Whatever the default,
        ``cupy.asarray(layers)`` and ``torch.from_dlpack(layers)`` decode on the
        GPU where one is usable.
    **nd2_kwargs
        Passed to ``nd2.ND2File`` (e.g. ``storage_options``, fsspec's options
        for URLs, also used by nd2gpu's own range reads).

    Notes
    -----
    A file pickles as nd2's does, with its source (path, or URL and storage
    options), its binary layers' metadata and its device request; where it is
    unpickled, binary layers decode straight from the source, and nd2's own
    reader is reopened only when nd2's API first needs it.

    Examples
    --------
    >>> import numpy as np, nd2gpu  # doctest: +SKIP
    >>> with nd2gpu.ND2File("cells.nd2") as f:
    ...     layers = f.binary_data  # BinaryLayers, or None
    ...     masks = np.asarray(layers)  # (n_layers, *coords, Y, X) uint16
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | Any,
        *,
        device: DeviceRequest | None = None,
        **nd2_kwargs: Any,
    ) -> None:
        check_request(device)
        super().__init__(path, **nd2_kwargs)
        options = nd2_kwargs.get("storage_options")
        self._source_spec = source_spec(
            path,
            options,
            lock=getattr(getattr(self, "_rdr", None), "_fh_lock", None),
        )
        self._device_request = device
        self._mask_source: MaskSource | None = None
        self._binary_layers: BinaryLayers | None = None
        self._binary_loaded = False

    def __enter__(self) -> ND2File:
        """Open the file (if closed) for a ``with`` block; closed at its end."""
        super().__enter__()
        return self

    @property
    def device(self) -> str:
        """The resolved default device of this file: "cpu" or "cuda"."""
        return resolve_device(self._device_request)

    @property
    def binary_data(self) -> BinaryLayers | None:
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
            self._mask_source = source = MaskSource(self._source_spec)
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
        metas = decode_layer_metadata(
            chunk or b"", str(source.path), lambda: self.custom_data
        )
        if metas is None:
            warnings.warn(
                f"{self.path!r} has a BinaryMetadata_v1 chunk without the "
                "'BinaryMetadata_v1' tag: no binary layers read",
                stacklevel=3,
            )
            return None
        coordinate_shape = tuple(loop.count for loop in self.experiment)
        axes = loop_axes((loop.type, loop.count) for loop in self.experiment)
        pixel_size = self._pixel_size()
        return BinaryLayers(
            [
                BinaryLayer(
                    meta,
                    source,
                    coordinate_shape,
                    self._device_request,
                    axes=axes,
                    pixel_size=pixel_size,
                )
                for meta in metas
            ]
        )

    def _pixel_size(self) -> tuple[float, float] | None:
        """``(dy, dx)`` in micrometres, None if the file's metadata lack it."""
        try:
            size = self.voxel_size()
        except Exception:  # nd2 raises various errors on incomplete metadata
            return None
        return (float(size.y), float(size.x))

    def open(self) -> None:
        """Open the file for reading (also reopens the binary layers' map)."""
        if _READER not in self.__dict__:  # unpickled, not read since: open now
            self.__dict__[_REOPEN_CLOSED] = False
        super().open()
        if self._mask_source is not None:
            self._mask_source.attach()

    def close(self) -> None:
        """Close the file and its memory map.

        Binary layers handed out earlier still decode afterwards: each call
        reopens the file for its own duration.
        """
        source = getattr(self, "_mask_source", None)
        if source is not None:
            source.detach()
        if _READER not in self.__dict__:  # unpickled, never reopened
            self.__dict__[_REOPEN_CLOSED] = True
            return
        super().close()

    @property
    def closed(self) -> bool:
        """Whether the file is closed."""
        if _READER not in self.__dict__:
            return bool(self.__dict__.get(_REOPEN_CLOSED, False))
        return super().closed

    # nd2's reader of the file. An unpickled file makes it only when nd2's API
    # first needs it: binary layers decode without it, so a worker process that
    # only decodes never has nd2 open (or, for a URL, download) the file.
    def _get_reader(self) -> Any:
        try:
            return self.__dict__[_READER]
        except KeyError:
            pass
        with self.__dict__["_lock"]:
            if _READER not in self.__dict__:
                from nd2._readers import ND2Reader

                options = self.__dict__.get("_storage_options")
                extra = () if options is None else (options,)
                if (
                    self._path is None
                ):  # pragma: no cover - unnamed objects refuse pickling
                    raise TypeError("an ND2File of an unnamed file object")
                reader = ND2Reader.create(self._path, self._error_radius, *extra)
                if self.__dict__.pop(_REOPEN_CLOSED, False):
                    reader.close()
                self.__dict__[_READER] = reader
            return self.__dict__[_READER]

    def _set_reader(self, reader: Any) -> None:
        self.__dict__[_READER] = reader

    _rdr = property(_get_reader, _set_reader)

    def __getstate__(self) -> dict[str, Any]:
        # nd2's refuses an unnamed file object (TypeError) and pickles the
        # instance's dict: with it the source spec (path or URL, storage
        # options), the binary layers (their metadata) and the device request.
        if _READER in self.__dict__:
            return super().__getstate__()
        state = self.__dict__.copy()  # unpickled and never reopened
        state.pop("_lock", None)
        state.pop("sizes", None)  # as nd2's: a mappingproxy does not pickle
        state["_closed"] = state.pop(_REOPEN_CLOSED, False)
        return state

    def __setstate__(self, d: dict[str, Any]) -> None:
        # As nd2's, but nd2's reader is made on first use (see _get_reader).
        closed = d.pop("_closed", False)
        self.__dict__ = d
        self.__dict__[_REOPEN_CLOSED] = closed
        self._lock = threading.RLock()
        source = self.__dict__.get("_mask_source")
        if source is not None:
            weakref.finalize(self, source.detach)
            if closed:
                source.detach()

    def __del__(self) -> None:
        if _READER in self.__dict__:  # nd2's check that the file was closed
            super().__del__()


#: Where nd2's reader lives in an ND2File's dict (nd2's own attribute name).
_READER = "_rdr"
#: An unpickled file whose reader is not made yet: was it closed when pickled.
_REOPEN_CLOSED = "_nd2gpu_reopen_closed"
