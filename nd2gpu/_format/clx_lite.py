"""Encoder of Python values into the "CLX lite" binary variant of ND2 v3 metadata.

The format, as ``nd2._parse._clx_lite.json_from_clx_lite_variant`` reads it, is a
sequence of records. Each record is::

    uint8  type                  (ClxType below)
    uint8  name_length           (UTF-16 code units, including the NUL terminator)
    name   UTF-16-LE, NUL-terminated
    value  depending on the type

Values: BOOL 1 byte; INT32/UINT32 4 bytes; INT64/UINT64/DOUBLE 8 bytes; STRING
UTF-16-LE ending with a NUL code unit; BYTEARRAY ``uint64 size`` + bytes; LEVEL
(a nested record set) ``uint32 item_count``, ``uint64 length`` (bytes from the
start of the record to the end of its items), the items, then ``item_count``
``uint64`` offsets of the items. Readers skip the offset table; we store each
item's offset from the start of the level record.

Python values map to types as follows: ``bool`` -> BOOL, ``int`` -> INT32 (use the
:class:`UInt32`, :class:`Int64` and :class:`UInt64` wrappers for the other integer
types), ``float`` -> DOUBLE, ``str`` -> STRING, ``bytes``/``bytearray`` ->
BYTEARRAY, ``Mapping`` -> LEVEL, ``list``/``tuple`` -> LEVEL of items named ``""``
(the way NIS-Elements stores lists; the reference turns them back into a dict
keyed ``i0000000000``, ``i0000000001``, ...).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any, Final

__all__ = ["ClxType", "Int64", "UInt32", "UInt64", "encode_clx_lite"]


class ClxType(IntEnum):
    """Type codes of CLX-lite records."""

    BOOL = 1
    INT32 = 2
    UINT32 = 3
    INT64 = 4
    UINT64 = 5
    DOUBLE = 6
    STRING = 8
    BYTEARRAY = 9
    LEVEL = 11


class UInt32(int):
    """An ``int`` to be stored as CLX-lite UINT32."""

    __slots__ = ()


class Int64(int):
    """An ``int`` to be stored as CLX-lite INT64."""

    __slots__ = ()


class UInt64(int):
    """An ``int`` to be stored as CLX-lite UINT64."""

    __slots__ = ()


_INT_TYPES: Final[dict[type, tuple[ClxType, struct.Struct]]] = {
    UInt32: (ClxType.UINT32, struct.Struct("<I")),
    Int64: (ClxType.INT64, struct.Struct("<q")),
    UInt64: (ClxType.UINT64, struct.Struct("<Q")),
    int: (ClxType.INT32, struct.Struct("<i")),
}
_BOOL = struct.Struct("<?")
_DOUBLE = struct.Struct("<d")
_SIZE = struct.Struct("<Q")
_LEVEL_HEAD = struct.Struct("<IQ")
_MAX_NAME_UNITS: Final = 255  # the name length (with its NUL) is one byte


def encode_clx_lite(data: Mapping[str, Any]) -> bytes:
    """Encode a mapping as a sequence of CLX-lite records, one per item.

    Parameters
    ----------
    data : Mapping[str, Any]
        Names to values (see the module docstring for the type mapping). A chunk
        that ``nd2`` decodes must hold exactly one top-level record, e.g.
        ``{"SLxImageAttributes": {...}}``: the reference reads only the first.

    Returns
    -------
    bytes
        The encoded records.

    Raises
    ------
    TypeError
        If a name is not a ``str`` or a value has no CLX-lite type.
    ValueError
        If a name or string holds a NUL character, a name is too long, or an
        integer does not fit its type.

    Examples
    --------
    >>> from nd2._parse._clx_lite import json_from_clx_lite_variant
    >>> raw = encode_clx_lite({"SLx": {"uiWidth": UInt32(512), "dZoom": 1.5}})
    >>> json_from_clx_lite_variant(raw, strip_prefix=False)
    {'SLx': {'uiWidth': 512, 'dZoom': 1.5}}
    """
    out = bytearray()
    for name, value in data.items():
        _encode_record(out, name, value)
    return bytes(out)


def _check_text(kind: str, text: str) -> None:
    # A NUL ends the text early; a leading byte-order mark is eaten by the
    # reader's "utf16" codec. Either would break the round trip.
    if "\x00" in text:
        raise ValueError(f"CLX-lite {kind} {text[:40]!r} contains a NUL character")
    if text[:1] in ("\ufeff", "\ufffe"):
        raise ValueError(f"CLX-lite {kind} {text[:40]!r} starts with a byte-order mark")


def _encode_name(name: str) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"CLX-lite names must be str, got {type(name).__name__}")
    _check_text("name", name)
    encoded = name.encode("utf-16-le") + b"\x00\x00"
    units = len(encoded) // 2
    if units > _MAX_NAME_UNITS:
        raise ValueError(f"CLX-lite name {name[:40]!r}... is too long ({units} units)")
    return bytes((units,)) + encoded


def _encode_string(value: str) -> bytes:
    _check_text("string", value)
    return value.encode("utf-16-le") + b"\x00\x00"


def _encode_record(out: bytearray, name: str, value: Any) -> None:
    head = _encode_name(name)
    if isinstance(value, bool):
        out += bytes((ClxType.BOOL,)) + head + _BOOL.pack(value)
    elif isinstance(value, int):
        clx_type, fmt = _INT_TYPES.get(type(value), _INT_TYPES[int])
        try:
            packed = fmt.pack(value)
        except struct.error:
            raise ValueError(
                f"CLX-lite value {name!r}={value} does not fit {clx_type.name}"
            ) from None
        out += bytes((clx_type,)) + head + packed
    elif isinstance(value, float):
        out += bytes((ClxType.DOUBLE,)) + head + _DOUBLE.pack(value)
    elif isinstance(value, str):
        out += bytes((ClxType.STRING,)) + head + _encode_string(value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        out += bytes((ClxType.BYTEARRAY,)) + head + _SIZE.pack(len(raw)) + raw
    elif isinstance(value, Mapping):
        _encode_level(out, head, list(value.items()))
    elif isinstance(value, Sequence):
        _encode_level(out, head, [("", item) for item in value])
    else:
        raise TypeError(
            f"no CLX-lite type for {name!r}: {type(value).__name__} ({value!r:.40})"
        )


def _encode_level(out: bytearray, head: bytes, items: list[tuple[str, Any]]) -> None:
    start = len(out)
    out += bytes((ClxType.LEVEL,)) + head
    length_at = len(out)
    out += _LEVEL_HEAD.pack(len(items), 0)  # length patched below
    offsets = []
    for item_name, item_value in items:
        offsets.append(len(out) - start)
        _encode_record(out, item_name, item_value)
    _LEVEL_HEAD.pack_into(out, length_at, len(items), len(out) - start)
    for offset in offsets:
        out += _SIZE.pack(offset)
