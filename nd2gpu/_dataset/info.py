"""What a dataset needs to know of its file, read once when it is made."""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import nd2

from .._errors import DecodeError
from .._format.image_frames import ImageLayout
from .._format.layer_metadata import LayerMeta
from .._nd2file import ND2File
from .._sources import SourceSpec, is_file_object

#: A channel or layer: its index, or its name.
Selector = int | str


@dataclass(frozen=True)
class FileInfo:
    """A file's image layout, channels, loops and binary layers (plain data).

    Attributes
    ----------
    spec : SourceSpec
        How to read the file's bytes (pickles as its path or URL).
    layout : ImageLayout
        How its image frames are stored.
    channel_names : tuple of str
        Channel names, as ``nd2.ND2File.metadata.channels`` gives them.
    loops : tuple of (str, int)
        Experiment loops, outermost first: the axis nd2 names (``T``, ``P``,
        ``Z``, ...) and the count.
    layers : tuple of LayerMeta
        The binary layers, in nd2's order.
    """

    spec: SourceSpec
    layout: ImageLayout
    channel_names: tuple[str, ...]
    loops: tuple[tuple[str, int], ...]
    layers: tuple[LayerMeta, ...]

    @property
    def n_frames(self) -> int:
        """Sequence frames: the product of the loop counts (1 without loops)."""
        return math.prod(count for _, count in self.loops)

    @property
    def path(self) -> str:
        """The file as errors name it."""
        return self.spec.name

    def channel_indices(
        self, channels: Selector | Sequence[Selector] | None
    ) -> int | tuple[int, ...] | None:
        """``channels`` as indices (one, or a tuple); None stays None.

        Raises
        ------
        ValueError
            For a channel that does not exist.
        """
        if channels is None:
            return None
        picks, one = _picks(channels)
        n = self.layout.channels
        found = tuple(
            _index(c, self.channel_names, n, "channel", self.path) for c in picks
        )
        return found[0] if one else found

    def layer_selection(
        self, layers: Selector | Sequence[Selector] | None
    ) -> tuple[LayerMeta, ...]:
        """The binary layers ``layers`` selects (None: all of them).

        Raises
        ------
        ValueError
            For a layer that does not exist.
        """
        if layers is None:
            return self.layers
        names = tuple(layer.name for layer in self.layers)
        picks, _ = _picks(layers)
        return tuple(
            self.layers[_index(p, names, len(names), "binary layer", self.path)]
            for p in picks
        )


def _picks(selection: object) -> tuple[list[object], bool]:
    """The channels or layers of a selection, and whether it was just one (not
    a sequence of them)."""
    if isinstance(selection, (str, bytes)) or not hasattr(selection, "__iter__"):
        return [selection], True
    return list(cast(Iterable[object], selection)), False


def _index(selector: object, names: Sequence[str], n: int, what: str, path: str) -> int:
    """The index of a channel or layer given by index or name."""
    listed = ", ".join(repr(name) for name in names) or "none named"
    if isinstance(selector, str):
        if names.count(selector) != 1:
            problem = "no" if selector not in names else "more than one"
            raise ValueError(
                f"{path} has {problem} {what} named {selector!r} ({n}: {listed})"
            )
        return names.index(selector)
    if isinstance(selector, bool):
        raise TypeError(f"a {what} is an index or a name, not {selector!r}")
    try:
        i = operator.index(selector)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"a {what} is an index or a name, not {type(selector).__name__}"
        ) from None
    if not 0 <= i < n:
        raise ValueError(f"{what} {i} out of range: {path} has {n} ({listed})")
    return i


def _loop_axis(loop: Any) -> str:
    # nd2's own names of loop types (as in ``ND2File.loop_indices``).
    return str(nd2.AXIS._MAP.get(loop.type, nd2.AXIS.UNKNOWN))


def read_info(
    source: str | os.PathLike[str] | ND2File | Any,
) -> tuple[FileInfo, ND2File | None]:
    """Read what a dataset needs of ``source``'s metadata (no frame is read).

    Parameters
    ----------
    source : path, URL, binary file object or nd2gpu.ND2File
        An ``ND2File`` is read as it is (its storage options included) and left
        open; a path or URL is opened and closed again.

    Returns
    -------
    info, keep
        The file's facts, and the ``ND2File`` opened on a file object, which the
        dataset keeps open as long as it reads from it (closing it would close
        the object); None for any other source.

    Raises
    ------
    ValueError
        For a legacy (v1) file.
    DecodeError
        If the image attributes describe frames nd2 cannot read.
    """
    if isinstance(source, ND2File):
        return _info(source), None
    if is_file_object(source):
        f = ND2File(source)
        try:
            return _info(f), f
        except BaseException:
            f.close()
            raise
    with ND2File(source) as f:
        return _info(f), None


def _info(f: ND2File) -> FileInfo:
    if f.is_legacy:
        raise ValueError(
            f"{f.path}: a legacy (JPEG 2000) ND2 file; nd2gpu reads the images of "
            "modern files only"
        )
    layout = ImageLayout.from_attributes(f.attributes)
    problem = layout.check()
    if problem is not None:
        raise DecodeError(f"cannot read image frames of {problem}", path=str(f.path))
    channels = f.metadata.channels or []
    layers = f.binary_data
    return FileInfo(
        spec=f._source_spec,
        layout=layout,
        channel_names=tuple(c.channel.name for c in channels),
        loops=tuple((_loop_axis(loop), int(loop.count)) for loop in f.experiment),
        layers=() if layers is None else tuple(layer.meta for layer in layers),
    )
