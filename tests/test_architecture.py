"""The shape of the code: no import cycles, no library -> CLI imports, and CuPy and
numba.cuda imported only by the CUDA back end and the CUDA kernels.

The import graph is read from the source: every ``import`` anywhere in a module
(inside functions and ``if TYPE_CHECKING:`` blocks too), and for each the parent
packages it runs (importing ``nd2gpu._backends.cuda.probe`` runs
``nd2gpu._backends`` and ``nd2gpu._backends.cuda``; the root package ``nd2gpu``,
which Python imports before anything in it, aside). So the graph holds for code
paths no test runs, and "dependencies point down" is checked, not hoped.
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


def imported_names(module: str, path: Path) -> Iterator[str]:
    """Absolute names of everything ``module`` imports, wherever in the module."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
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


def with_parents(name: str) -> Iterator[str]:
    """``name`` and the packages importing it runs (the root package aside)."""
    parts = name.split(".")
    for i in range(2, len(parts) + 1):
        yield ".".join(parts[:i])


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        own_packages = set(with_parents(module))
        graph[module] = {
            name
            for imported in imported_names(module, path)
            for name in with_parents(imported)
            if name in files and name not in own_packages
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


def test_the_graph_counts_parent_packages_and_type_checking_imports():
    graph = import_graph()
    # nd2gpu._device imports nd2gpu._backends.cuda.probe: that runs both packages.
    assert {"nd2gpu._backends", "nd2gpu._backends.cuda"} <= graph["nd2gpu._device"]
    assert list(with_parents("nd2gpu.a.b")) == ["nd2gpu.a", "nd2gpu.a.b"]


def test_stages_receive_plain_data_not_the_facade():
    """Nothing below the façade imports it: stages get a LayerRef, never a
    BinaryLayer or ND2File."""
    facade = {"nd2gpu._layers", "nd2gpu._nd2file", "nd2gpu._regionprops_dask"}
    stages = (
        "nd2gpu._decode",
        "nd2gpu._backends",
        "nd2gpu._objects",
        "nd2gpu._format",
        "nd2gpu._dask",
        "nd2gpu.kernels",
    )
    offenders = {
        module: sorted(imports & facade)
        for module, imports in import_graph().items()
        if module.startswith(stages) and imports & facade
    }
    assert offenders == {}


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


def _third_party_importers(name: str) -> set[str]:
    return {
        module
        for module, path in module_files().items()
        if any(
            n == name or n.startswith(name + ".") for n in imported_names(module, path)
        )
    }


def test_napari_is_imported_by_the_plugin_only():
    # nd2gpu/napari/ is the plugin; the library never imports napari (nor the
    # plugin), so that it installs and runs without napari.
    assert {m for m in _third_party_importers("napari") if "napari" not in m} == set()
    graph = import_graph()
    importers = {
        module
        for module, imports in graph.items()
        if not module.startswith("nd2gpu.napari")
        and any(n.startswith("nd2gpu.napari") for n in imports)
    }
    assert importers == set()


def test_the_plugin_uses_the_public_api_only():
    # The plugin sits on the façade: ``nd2gpu`` and its public names, nothing
    # private (no ``nd2gpu._...`` module).
    for module, imports in import_graph().items():
        if module.startswith("nd2gpu.napari"):
            private = sorted(
                n for n in imports if n.startswith("nd2gpu._") or ".._" in n
            )
            assert private == [], module
    reader = module_files()["nd2gpu.napari._reader"]
    names = set(imported_names("nd2gpu.napari._reader", reader))
    assert {n for n in names if n.startswith("nd2gpu")} == {"nd2gpu"}
