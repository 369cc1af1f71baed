"""Which output paths an export may write: never one that would destroy an input.

`check_output` is called before anything is opened or written. It refuses, even
when the caller allows replacing an existing output:

- an output whose name ends in ``.nd2`` (any case): nd2gpu never writes an
  export under a name that reads as an ND2 file;
- an output that is an input, through symbolic or hard links;
- an output directory that holds an input (replacing it would delete the input);
- an existing output that is an ND2 file, told by its signature bytes (modern
  and legacy JPEG2000 ND2 files), whatever its name;
- an existing directory that is not a Zarr store, and an existing directory
  where a file is to be written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import nd2

ND2_SUFFIX = ".nd2"
#: The outputs of an export, as the message refusing a ``.nd2`` name suggests them.
EXPORT_SUFFIXES = (".zarr", ".ome.tif")
#: Files whose presence marks a directory as a Zarr store (v3, then v2).
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zattrs")


class OutputRefusedError(ValueError):
    """An output path that nd2gpu will not write, because of what is there.

    Raised whatever ``overwrite`` says: writing there could destroy an input or
    another file that is not an export. The message names the path and why.
    """


def check_output(
    inputs: Path | str | os.PathLike[str] | Iterable[Path | str | os.PathLike[str]],
    out: Path | str | os.PathLike[str],
    *,
    overwrite: bool = False,
    tree: bool = False,
    suffixes: Sequence[str] = EXPORT_SUFFIXES,
) -> Path:
    """Check that ``out`` may be written by an export of ``inputs``.

    Parameters
    ----------
    inputs : path-like or iterable of path-likes
        The files the export reads.
    out : path-like
        The output path (a file, or a directory tree when ``tree``).
    overwrite : bool
        Whether an existing output may be replaced (an export, never an input).
    tree : bool
        The output is a directory tree (OME-Zarr) rather than a file.
    suffixes : sequence of str
        The names the output may end in, suggested when it ends in ``.nd2``.

    Returns
    -------
    pathlib.Path
        ``out`` as a ``Path``.

    Raises
    ------
    OutputRefusedError
        ``out`` ends in ``.nd2``, is (a link to) an input, holds an input, is
        an existing ND2 file, is an existing directory that is not a Zarr store,
        or is a directory where a file is to be written.
    FileExistsError
        ``out`` exists and ``overwrite`` is False.
    FileNotFoundError
        The directory ``out`` would be written in does not exist.
    """
    out = Path(out)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    sources = [Path(p) for p in inputs]
    if out.name.lower().endswith(ND2_SUFFIX):
        raise OutputRefusedError(
            f"{out}: refusing to write an export to a name ending in {ND2_SUFFIX} "
            f"(choose an output ending in {' or '.join(suffixes)})"
        )
    exists = out.exists() or out.is_symlink()
    for source in sources:
        if exists and _same_file(out, source):
            raise OutputRefusedError(
                f"{out}: refusing to write over the input file {source}"
            )
        if _inside(source, out):
            raise OutputRefusedError(
                f"{out}: refusing to replace a directory that holds the input {source}"
            )
    if out.is_file() and nd2.is_supported_file(out):
        raise OutputRefusedError(f"{out}: refusing to write over an ND2 file")
    if out.is_dir():
        if not tree:
            raise OutputRefusedError(f"{out}: is a directory")
        if not out.is_symlink() and not any(
            (out / marker).exists() for marker in ZARR_MARKERS
        ):
            raise OutputRefusedError(
                f"{out}: refusing to replace a directory that is not a Zarr store"
            )
    if exists and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{out}: the directory {parent} does not exist")
    return out


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file (following links, hard links too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        # A dangling link or an input that is not there: compare where they lead.
        return a.resolve() == b.resolve()


def _inside(path: Path, directory: Path) -> bool:
    """Whether ``path`` lies inside the directory tree ``directory``."""
    if not directory.is_dir():
        return False
    return directory.resolve() in path.resolve().parents


__all__ = ["OutputRefusedError", "check_output"]
