"""The package's house rules: no import cycles inside `fedcore`, lazy imports included,
and no UI code outside `fedcore.app`."""

from __future__ import annotations

import ast
from pathlib import Path

import fedcore

ROOT = Path(fedcore.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imported_modules(path: Path) -> set[str]:
    """Every `fedcore` module this file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from fedcore.report import charts` imports the module fedcore.report.charts
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            names = [n for n in names if n in MODULES] or [node.module]
            if any(n != node.module for n in names):
                names = [n for n in names if n != node.module]
        else:
            continue
        found.update(name for name in names if name in MODULES)
    return found


def import_graph() -> dict[str, set[str]]:
    return {name: imported_modules(path) - {name} for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
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


def test_the_cycle_finder_finds_a_lazy_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    lines = ["def f():", "    from fedcore.report import tables", "    import fedcore.data.mnist"]
    source.write_text("\n".join(lines) + "\n")
    assert imported_modules(source) == {"fedcore.report.tables", "fedcore.data.mnist"}


def test_no_module_of_fedcore_imports_one_that_imports_it_back():
    found = cycles(import_graph())
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_packages_are_layers_none_imports_one_that_imports_it_back():
    """At the level of folders too: experiment, then data, learning, flower, engine,
    then report, app, cli and deploy on top; `fedcore.storage` beneath them all."""
    package = {name: ".".join(name.split(".")[:2]) for name in MODULES}
    graph: dict[str, set[str]] = {p: set() for p in package.values()}
    for name, targets in import_graph().items():
        graph[package[name]] |= {package[t] for t in targets} - {package[name]}
    found = cycles(graph)
    assert found == [], "package cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_only_fedcore_app_imports_marimo():
    users = [
        name
        for name, path in MODULES.items()
        if not name.startswith("fedcore.app")
        and any(n == "marimo" or n.startswith("marimo.") for n in _all_imports(path))
    ]
    assert users == []


def _all_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names
