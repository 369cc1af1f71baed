"""Helpers of the command-line tests: run ``main``, read files as nd2 does."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nd2
import numpy as np

from nd2gpu.cli import main


def run(capsys, *argv):
    """``main(argv)`` -> ``(exit status, stdout, stderr)``."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def nd2_masks(path: Path) -> dict[str, np.ndarray]:
    """``{name: asarray()}`` of the layers that have a mask, read by nd2 itself."""
    with nd2.ND2File(path) as f:
        return {
            layer.name: layer.asarray()
            for layer in f.binary_data
            if layer.asarray() is not None
        }


def tree_snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (relative name -> bytes)."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(Path(path).rglob("*"))
        if p.is_file()
    }
