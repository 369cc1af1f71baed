"""Every example in README.md and docs/*.md runs as written.

For each document, in a fresh temporary working directory that holds
``cells.nd2`` (the file README's quick start writes, which the other documents'
examples read) and a fresh Python process with this environment:

its fenced ```python blocks run as one script, in document order (later
blocks may use what earlier ones defined or wrote, e.g. README's quick start
writes ``cells.nd2``), and the ``$ nd2gpu ...`` lines of its ```console blocks
run as commands (``python -m nd2gpu``) where they stand between them. A command
must succeed, unless the lines shown after it (its output) start with
``nd2gpu: error:``: then it must fail with such a line.

A block that needs what this machine may lack says so on the line before it::

    <!-- requires: cuda -->        a usable CUDA GPU (never numba's simulator)
    <!-- requires: torch, cuda -->  several; any other name is a Python module
    <!-- requires: network -->      reads a remote file: never run by the tests

Python blocks that import ``torch``, ``cupy`` or ``dask_cuda`` need those (and
cupy/dask_cuda a GPU) even unmarked. A block whose needs are not met is left
out of the script and reported as a skipped test naming what is missing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
REQUIRES = re.compile(r"^<!--\s*requires:\s*(?P<names>[^>]*?)\s*-->$")
#: Modules whose import in a Python block implies requirements.
IMPLIED = {
    "torch": {"torch"},
    "cupy": {"cuda"},
    "cudf": {"cuda", "cudf"},
    "dask_cuda": {"cuda", "dask_cuda"},
}
IMPORT = re.compile(r"^\s*(?:import|from)\s+(?P<module>[\w]+)", re.MULTILINE)
#: Seconds one document's examples may take.
TIMEOUT = 240


def write_cells_nd2(directory: Path) -> Path:
    """``cells.nd2`` exactly as README's quick start writes it."""
    import numpy as np

    import nd2gpu

    cells = np.zeros((3, 64, 64), np.uint16)
    cells[:, 10:20, 10:30] = 1
    cells[2, 40:50, 5:9] = 2
    return nd2gpu.write_nd2(
        directory / "cells.nd2",
        {"cells": cells, "nuclei": cells // 2},
        loops=[("T", 3)],
    )


@dataclass
class Block:
    """One fenced code block of a document."""

    document: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    requires: set[str] = field(default_factory=set)

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks(document: Path) -> list[Block]:
    """The fenced code blocks of ``document``, with their requirements."""
    lines = document.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, start = m["fence"], i
        body = []
        i += 1
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        requires: set[str] = set()
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        if before >= 0 and (r := REQUIRES.match(lines[before].strip())):
            requires = {n.strip() for n in r["names"].split(",") if n.strip()}
        text = "\n".join(body) + "\n"
        if m["lang"] == "python":
            for module in IMPORT.findall(text):
                requires |= IMPLIED.get(module, set())
        out.append(Block(document, start + 1, m["lang"], text, requires))
        i += 1
    return out


def missing(requires: set[str]) -> list[str]:
    """What of ``requires`` this machine lacks, as reasons."""
    reasons = []
    for name in sorted(requires):
        if name == "cuda":
            if not _real_gpu():
                reasons.append("a CUDA GPU (none usable here)")
        elif name == "network":
            reasons.append("network access (remote examples are not run by tests)")
        elif importlib.util.find_spec(name) is None:
            reasons.append(f"{name} (not installed)")
    return reasons


def _real_gpu() -> bool:
    from nd2gpu._device import cuda_status, simulator_active

    return cuda_status()[0] and not simulator_active()


def _examples() -> list[Block]:
    return [b for d in DOCUMENTS for b in blocks(d) if b.lang in ("python", "console")]


def console_commands(block: Block) -> list[tuple[list[str], bool]]:
    """``(argv after "nd2gpu", expected to fail)`` for each ``$ nd2gpu`` line."""
    out: list[tuple[list[str], bool]] = []
    lines = block.text.splitlines()
    for k, line in enumerate(lines):
        if not line.startswith("$ nd2gpu"):
            continue
        shown = []
        for later in lines[k + 1 :]:
            if later.startswith("$"):
                break
            shown.append(later)
        fails = bool(shown) and shown[0].startswith("nd2gpu: error:")
        out.append((shlex.split(line[len("$ nd2gpu") :], comments=True), fails))
    return out


#: Runs one console command from inside the script, where it stands in the
#: document; only in the main process (worker processes may import the script).
CONSOLE_RUNNER = """\
def _docs_nd2gpu(argv, fails, where):
    import subprocess, sys
    if __name__ != "__main__":
        return
    r = subprocess.run([sys.executable, "-m", "nd2gpu", *argv],
                       capture_output=True, text=True)
    if fails and (r.returncode == 0 or not r.stderr.startswith("nd2gpu: error:")):
        sys.exit(f"{where}: nd2gpu {' '.join(argv)} should fail:\\n{r.stderr}")
    if not fails and r.returncode != 0:
        sys.exit(f"{where}: nd2gpu {' '.join(argv)} failed:\\n{r.stderr}")
"""


def document_script(document: Path) -> tuple[str, int]:
    """The script of ``document``'s runnable examples, and how many there are."""
    parts = [CONSOLE_RUNNER]
    n = 0
    for block in blocks(document):
        if missing(block.requires):
            continue
        if block.lang == "python":
            parts.append(f"# --- {block.where} ---\n{block.text}")
            n += 1
        elif block.lang == "console":
            for argv, fails in console_commands(block):
                parts.append(f"_docs_nd2gpu({argv!r}, {fails!r}, {block.where!r})\n")
                n += 1
    return "\n".join(parts), n


@pytest.mark.slow
@pytest.mark.parametrize(
    "document", DOCUMENTS, ids=[str(d.relative_to(ROOT)) for d in DOCUMENTS]
)
def test_examples_run(document, tmp_path):
    script, n = document_script(document)
    if not n:
        pytest.skip(f"{document.name}: no example runnable here")
    write_cells_nd2(tmp_path)
    path = tmp_path / f"{document.stem.lower()}_examples.py"
    path.write_text(script, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, path.name],
        cwd=tmp_path,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"{document.name}: its examples failed\n{result.stderr[-4000:]}"
    )


NEEDY = [b for b in _examples() if b.requires]


@pytest.mark.parametrize("block", NEEDY, ids=[b.where for b in NEEDY])
def test_examples_with_requirements(block):
    """A block left out of its document's run says what it needs."""
    reasons = missing(block.requires)
    if reasons:
        pytest.skip(f"{block.where} needs {', '.join(reasons)}")
    # Its needs are met: test_examples_run ran it with its document.


@pytest.mark.slow
def test_cells_nd2_is_the_quick_starts(tmp_path):
    """The file the documents start with is what README's quick start writes."""
    readme = next(b for b in blocks(ROOT / "README.md") if b.lang == "python")
    assert 'nd2gpu.write_nd2("cells.nd2"' in readme.text
    ours = write_cells_nd2(tmp_path)
    (tmp_path / "readme").mkdir()
    quick_start = readme.text.split("\nwith ")[0]  # the lines that write the file
    result = subprocess.run(
        [sys.executable, "-c", quick_start],
        cwd=tmp_path / "readme",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "readme" / "cells.nd2").read_bytes() == ours.read_bytes()


def test_harness_reads_blocks_and_markers(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "Text\n\n```python\nx = 1\n```\n\n<!-- requires: cuda, torch -->\n"
        "```python\nimport cupy\n```\n\n```console\n$ nd2gpu info a.nd2  # note\n"
        "file: a.nd2\n$ nd2gpu export a.nd2 a.nd2\nnd2gpu: error: refused\n"
        "$ ls\n```\n"
    )
    found = blocks(doc)
    assert [(b.lang, b.line) for b in found] == [
        ("python", 3),
        ("python", 8),
        ("console", 12),
    ]
    assert found[0].requires == set() and found[0].text == "x = 1\n"
    assert found[1].requires == {"cuda", "torch"}
    assert console_commands(found[2]) == [
        (["info", "a.nd2"], False),
        (["export", "a.nd2", "a.nd2"], True),
    ]
    implied = tmp_path / "implied.md"
    implied.write_text("```python\nfrom torch.utils.data import Dataset\n```\n")
    assert blocks(implied)[0].requires == {"torch"}
