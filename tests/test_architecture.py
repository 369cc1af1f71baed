"""The shape of the code: no import cycles, no library -> CLI imports, and CuPy and
numba.cuda imported only by the CUDA back end and the CUDA kernels.

The import graph is read from the source (every ``import`` anywhere in a module,
``if TYPE_CHECKING:`` blocks aside), so it holds for code paths no test runs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import nd2gpu
import nd2gpu.kernels

#: The folders of the package that is imported: the source tree (where
#: nd2gpu/kernels is a link to kernels/, which rglob does not follow) or an
#: installed copy.
PACKAGES = {
    "nd2gpu": Path(nd2gpu.__file__).parent,
    "nd2gpu.kernels": Path(nd2gpu.kernels.__file__).parent,
}


def module_files() -> dict[str, Path]:
    """Module name -> file, for nd2gpu and nd2gpu.kernels."""
    files = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join((package, *parts))] = path
    return files


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or 0) + 1))
    return lines


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Absolute names of everything ``module`` imports, wherever in the module."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            yield prefix
            for alias in node.names:
                yield f"{prefix}.{alias.name}"


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        graph[module] = {
            name
            for name in imported_names(module, path)
            if name in files and name != module
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_modules():
    graph = import_graph()
    assert "nd2gpu._layers" in graph and "nd2gpu.kernels._parse_kernels" in graph
    assert "nd2gpu._backends" in graph["nd2gpu._layers"]
    assert "nd2gpu._format.mask_stream" in graph["nd2gpu.kernels._parse_kernels"]


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_library_never_imports_the_cli():
    offenders = {
        module: sorted(n for n in imports if n.startswith("nd2gpu.cli"))
        for module, imports in import_graph().items()
        if not module.startswith("nd2gpu.cli")
        and module != "nd2gpu.__main__"
        and any(n.startswith("nd2gpu.cli") for n in imports)
    }
    assert offenders == {}


def _allowed_gpu_importer(module: str) -> bool:
    return module.startswith("nd2gpu._backends.cuda") or (
        module.startswith("nd2gpu.kernels.") and "_cuda" in module
    )


@pytest.mark.parametrize("banned", ["cupy", "numba.cuda"])
def test_gpu_libraries_stay_in_the_cuda_back_end(banned):
    offenders = []
    for module, path in module_files().items():
        names = set(imported_names(module, path))
        imports = any(n == banned or n.startswith(banned + ".") for n in names)
        if imports and not _allowed_gpu_importer(module):
            offenders.append(module)
    assert offenders == []
