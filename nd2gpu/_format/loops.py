"""The experiment's loops: the letter nd2 names each loop's axis by."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

#: Loop type -> axis letter, as in ``nd2.ND2File.sizes``.
LOOP_AXES: Final[dict[str, str]] = {
    "TimeLoop": "T",
    "NETimeLoop": "T",
    "XYPosLoop": "P",
    "ZStackLoop": "Z",
    "CustomLoop": "U",
    "Unknown": "U",
}


def loop_axes(loops: Iterable[tuple[str, int]]) -> tuple[str, ...]:
    """The axis letter of each ``(type, count)`` loop, ``""`` where
    ``ND2File.sizes`` has no axis for it (a count of 1, or a letter taken by an
    earlier loop)."""
    seen: set[str] = set()
    out = []
    for kind, count in loops:
        letter = LOOP_AXES.get(kind, "U")
        if count == 1 or letter in seen:
            out.append("")
            continue
        seen.add(letter)
        out.append(letter)
    return tuple(out)
