"""The ``BinaryMetadata_v1`` chunk: one descriptive record per binary layer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import DecodeError

# nd2's public ``custom_data`` decodes every CustomDataVar chunk, so one corrupt
# unrelated chunk would fail ``binary_data`` where nd2's own ``binary_data``
# (which decodes only the BinaryMetadata_v1 chunk) succeeds. We therefore decode
# that one chunk with the same variant decoders nd2's reader uses, and fall back
# to the public ``custom_data`` if a future nd2 moves them.
_Decoder = Callable[..., Any]
json_from_clx_lite_variant: _Decoder | None
json_from_clx_variant: _Decoder | None
try:
    from nd2._parse._clx_lite import json_from_clx_lite_variant
    from nd2._parse._clx_xml import json_from_clx_variant
except ImportError:  # pragma: no cover - depends on the nd2 version
    json_from_clx_lite_variant = json_from_clx_variant = None

#: The key of the decoded chunk (and of ``nd2.ND2File.custom_data``).
METADATA_KEY = "BinaryMetadata_v1"


@dataclass(frozen=True)
class LayerMeta:
    """One item of ``BinaryMetadata_v1``: a binary layer's descriptive fields."""

    name: str
    file_tag: str
    comp_name: str | None = None
    comp_order: int | None = None
    color: int | None = None
    color_mode: int | None = None
    state: int | None = None
    layer_id: int | None = None

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> LayerMeta:
        """Build from a decoded metadata item (nd2's ``BinaryMetaDict``)."""
        return cls(
            name=item["Name"],
            file_tag=item["FileTag"],
            comp_name=item.get("CompName"),
            comp_order=item.get("CompOrder"),
            color=item.get("Color"),
            color_mode=item.get("ColorMode"),
            state=item.get("State"),
            layer_id=item.get("BinLayerID"),
        )


def decode_layer_metadata(
    chunk: bytes, path: str, custom_data: Callable[[], Mapping[str, Any]]
) -> list[LayerMeta] | None:
    """The layers described by a ``BinaryMetadata_v1`` chunk, in nd2's order.

    The chunk is decoded with nd2's own variant decoders (CLX lite, or XML for
    version 2 files), as ``nd2``'s reader does; its items are sorted by key, as
    nd2 sorts them.

    Parameters
    ----------
    chunk : bytes
        The chunk's data.
    path : str
        The file, for error messages.
    custom_data : callable
        Returns nd2's ``custom_data``; used only when nd2's decoders moved.

    Returns
    -------
    list of LayerMeta, or None
        None when the decoded chunk lacks the ``BinaryMetadata_v1`` tag.

    Raises
    ------
    DecodeError
        If the chunk cannot be decoded, its items are not a mapping, or an item
        lacks a ``Name`` or ``FileTag``.
    """
    try:
        if json_from_clx_variant is None or json_from_clx_lite_variant is None:
            # custom_data maps the chunk's name to the decoded chunk, which
            # holds the METADATA_KEY record as nd2's decoders give it.
            decoded: Any = custom_data()[METADATA_KEY]
        elif chunk.startswith(b"<"):
            decoded = json_from_clx_variant(chunk, strip_prefix=True)
        else:
            decoded = json_from_clx_lite_variant(chunk, strip_prefix=True)
        if not isinstance(decoded, dict):
            raise TypeError(f"decoded to {type(decoded).__name__}, not a mapping")
        if METADATA_KEY not in decoded:
            return None
        items = sorted(decoded[METADATA_KEY].items())
    except Exception as e:
        raise DecodeError(
            f"cannot decode the binary-layer metadata chunk ({e!r})",
            path=path,
            where="file",
        ) from e
    layers = []
    for _, item in items:
        try:
            layers.append(LayerMeta.from_item(item))
        except (KeyError, TypeError, AttributeError) as e:
            raise DecodeError(
                f"a binary-layer metadata item lacks a Name or FileTag ({e!r})",
                path=path,
                where="file",
            ) from e
    return layers
