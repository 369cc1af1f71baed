"""The wheel and the sdist hold the package, all of it, and nothing else.

    python .ci/check_dist.py DIST_DIR

The wheel's files are the package's source files (nd2gpu/**, with the files of
kernels/ as nd2gpu/kernels/**, that git knows: no build tooling, no caches)
plus its metadata; the sdist holds the same package files and what builds it
(pyproject.toml, README.md, LICENSE, MANIFEST.in), no tests.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The package's data besides its modules.
DATA = {"nd2gpu/py.typed", "nd2gpu/data/sample.nd2", "nd2gpu/napari/napari.yaml"}
#: What builds the wheel, in the sdist's top folder.
SDIST_TOP = {"pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "PKG-INFO"}


def package_files() -> set[str]:
    """The files the package is made of, as the wheel names them."""
    git = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]
    listed = subprocess.run(
        [*git, "--", "nd2gpu", "kernels"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    files = set()
    for name in listed:
        if name == "nd2gpu/kernels":  # the link to kernels/
            continue
        if name.startswith("kernels/"):
            name = "nd2gpu/" + name
        if name.endswith(".py") or name in DATA:
            files.add(name)
    return files


def check_wheel(wheel: Path, expected: set[str]) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    meta = {n for n in names if n.split("/")[0].endswith(".dist-info")}
    files = set(names) - meta
    missing, extra = expected - files, files - expected
    assert not missing, f"{wheel.name} lacks {sorted(missing)}"
    assert not extra, f"{wheel.name} holds what is not the package: {sorted(extra)}"
    assert any(n.endswith("/entry_points.txt") for n in meta), "no entry points"
    print(f"{wheel.name}: the package's {len(files)} files, and its metadata")


def check_sdist(sdist: Path, expected: set[str]) -> None:
    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
    top = members[0].name.split("/")[0]
    links = [m.name for m in members if m.issym() or m.islnk()]
    assert not links, f"{sdist.name} holds links: {links}"
    names = {m.name[len(top) + 1 :] for m in members if m.isfile()}
    package = {n for n in names if n.startswith("nd2gpu/")}
    missing, extra = expected - package, package - expected
    assert not missing, f"{sdist.name} lacks {sorted(missing)}"
    assert not extra, f"{sdist.name} holds what is not the package: {sorted(extra)}"
    generated = ("nd2gpu.egg-info/", "setup.cfg")
    others = {n for n in names - package if not n.startswith(generated)}
    assert others == SDIST_TOP, f"{sdist.name}: {sorted(others ^ SDIST_TOP)}"
    print(f"{sdist.name}: the package's {len(package)} files, and what builds it")


def main(dist: str) -> None:
    expected = package_files()
    assert "nd2gpu/kernels/_expand_cuda.py" in expected, sorted(expected)
    (wheel,) = Path(dist).glob("nd2gpu-*.whl")
    (sdist,) = Path(dist).glob("nd2gpu-*.tar.gz")
    check_wheel(wheel, expected)
    check_sdist(sdist, expected)


if __name__ == "__main__":
    main(sys.argv[1])
