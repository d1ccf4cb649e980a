"""The package's import graph, read from the source with ``ast`` (nothing is imported): ``deploy`` is the end point,
which nothing else in the package imports, and no modules or subpackages import each other in a cycle.

Every import counts: at module level, deferred ones inside functions and ``importlib.import_module("...")`` of a
literal name (the lazy ``__getattr__`` of the packages); only ``if TYPE_CHECKING:`` blocks, which never run, do not.
Importing ``a.b.c`` runs ``a/__init__``, ``a.b/__init__`` and ``a.b.c``, so an import is an edge to each of them,
except to the importer's own enclosing packages (already being imported when it runs).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "anomalib_ssimae"
DEPLOY = "anomalib_ssimae.deploy"


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``package`` (``__init__.py`` names the package)."""
    files = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """The nodes of ``tree`` outside ``if TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imported_names(name: str, path: Path) -> set[str]:
    """Absolute names ``name`` (the module in ``path``) imports: modules, and ``module.attribute`` for ``from``
    imports (an attribute can be a submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) == "importlib.import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(node.args[0].value)
    return names


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules that importing it runs directly (see the module docstring)."""
    files = module_files(package)
    graph = {}
    for name, path in files.items():
        edges = set()
        for imported in imported_names(name, path):
            parts = imported.split(".")
            for end in range(1, len(parts) + 1):
                target = ".".join(parts[:end])
                if target in files and target != name and not name.startswith(target + "."):
                    edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def subpackage(name: str) -> str:
    """``anomalib_ssimae.models.ssim_ae.loss`` -> ``anomalib_ssimae.models``: the package's top-level part."""
    return ".".join(name.split(".")[:2])


def subpackage_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph between the package's top-level modules and subpackages."""
    collapsed: dict[str, set[str]] = {}
    for name, targets in graph.items():
        edges = collapsed.setdefault(subpackage(name), set())
        edges.update(subpackage(t) for t in targets if subpackage(t) != subpackage(name))
    return collapsed


def test_nothing_outside_deploy_imports_deploy() -> None:
    graph = import_graph()
    assert DEPLOY in graph and f"{DEPLOY}.cli" in graph  # the graph sees the package
    offenders = {
        name: sorted(t for t in targets if t == DEPLOY or t.startswith(DEPLOY + "."))
        for name, targets in graph.items()
        if not (name == DEPLOY or name.startswith(DEPLOY + "."))
    }
    assert {name: targets for name, targets in offenders.items() if targets} == {}


def test_no_import_cycles_between_modules() -> None:
    assert cycles(import_graph()) == []


def test_no_import_cycles_between_subpackages() -> None:
    graph = subpackage_graph(import_graph())
    assert {"anomalib_ssimae.callbacks", "anomalib_ssimae.models", "anomalib_ssimae.deploy"} <= set(graph)
    assert cycles(graph) == []


def test_cycles_and_deferred_imports_are_seen(tmp_path: Path) -> None:
    """The checks see what they must: a deferred import inside a function closing a cycle through a package."""
    package = tmp_path / "anomalib_ssimae"
    (package / "data").mkdir(parents=True)
    (package / "deploy").mkdir()
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("")
    (package / "data" / "images.py").write_text("def f():\n    from anomalib_ssimae.deploy.records import x\n")
    (package / "deploy" / "__init__.py").write_text("from anomalib_ssimae.data.images import f\n")
    (package / "deploy" / "records.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import os\n"
    )
    graph = import_graph(package)
    assert graph["anomalib_ssimae.data.images"] == {DEPLOY, f"{DEPLOY}.records"}
    assert cycles(graph) == [["anomalib_ssimae.data.images", DEPLOY]]
    assert cycles(subpackage_graph(graph)) == [["anomalib_ssimae.data", DEPLOY]]
