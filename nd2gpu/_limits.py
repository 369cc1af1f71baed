"""Resource limits: how much memory this process may use, and what nd2gpu refuses.

Sizes claimed by a file (frame shapes, frame counts) are checked here before
anything is allocated for them, so a corrupt or hostile file fails with a clear
error instead of exhausting memory.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

#: The largest frame accepted (pixels). A header claiming more is hostile or corrupt:
#: it is refused before anything is allocated for it. Below 2**31 so that every run
#: (at most one row long) fits the run table's int32 lengths.
MAX_FRAME_PIXELS = (1 << 31) - 1

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")
#: cgroup v1 writes "no limit" as a huge number (a page-rounded 2**63 - 1).
_NO_LIMIT_ABOVE = 1 << 60


def _sysconf_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():  # "max": no limit
        return None
    value = int(text)
    return value if 0 < value < _NO_LIMIT_ABOVE else None


def _cgroup_limits(
    root: Path = _CGROUP_ROOT, membership: Path = _PROC_CGROUP
) -> list[int]:
    """Memory limits of this process's cgroup and its ancestors (v2 and v1).

    Parameters
    ----------
    root : Path
        Where the cgroup file systems are mounted (v2: ``memory.max`` files
        under it; v1: ``memory/.../memory.limit_in_bytes``).
    membership : Path
        The process's cgroups, one ``id:controllers:path`` line each (an empty
        controller list is the v2 hierarchy).
    """
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return []
    limits = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, group = parts
        if controllers == "":  # cgroup v2: one unified hierarchy
            # Hybrid hosts mount v2 beside the v1 controllers, at unified/.
            base = root / "unified" if (root / "unified").is_dir() else root
            name = "memory.max"
        elif "memory" in controllers.split(","):
            base, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        here = base / group.lstrip("/")
        # The limit that binds may be set on any ancestor up to the mount root.
        for directory in (here, *here.parents):
            limit = _read_limit(directory / name)
            if limit is not None:
                limits.append(limit)
            if directory == base:
                break
    return limits


def memory_limit(
    root: Path = _CGROUP_ROOT, membership: Path = _PROC_CGROUP
) -> int | None:
    """Bytes of memory this process may use: the machine's, or its cgroup limit.

    Containers (Docker, Kubernetes) cap memory with cgroups (v1 or v2); the
    smallest limit of this process's cgroup and its ancestors counts, when it is
    below the machine's memory. None when neither can be read. ``root`` and
    ``membership`` are where the cgroup mounts and ``/proc/self/cgroup`` are.
    """
    candidates = [
        m for m in (_sysconf_memory(), *_cgroup_limits(root, membership)) if m
    ]
    return min(candidates) if candidates else None


@functools.cache
def physical_memory() -> int | None:
    """``memory_limit()`` of this process, read once."""
    return memory_limit()


def check_allocation(nbytes: int, max_bytes: int | None, what: str) -> None:
    """Refuse an allocation above ``max_bytes`` or above this process's memory.

    Raises
    ------
    MemoryError
        Naming ``what``, the bytes needed and the limit.
    """
    if max_bytes is not None and nbytes > max_bytes:
        raise MemoryError(
            f"{what} needs {nbytes} bytes, more than max_bytes={max_bytes}"
        )
    memory = physical_memory()
    if memory is not None and nbytes > memory:
        raise MemoryError(
            f"{what} needs {nbytes} bytes, more than the {memory} bytes of memory "
            "this process may use"
        )


def check_block(shape: tuple[int, ...], max_bytes: int | None) -> None:
    """Refuse (``MemoryError``) a uint16 block of ``shape`` that cannot be built."""
    check_allocation(2 * math.prod(shape), max_bytes, f"a {shape} uint16 block")
