"""The package's modules import one another without a circle.

A circle makes the import order matter (a name used at import time may not exist yet) and
ties concepts that should stand apart: a module in one cannot be understood, tested or
replaced without the others. The graph is read from the source with ``ast``, so it sees every
import: at the top, inside functions, and under ``TYPE_CHECKING`` (which the type checker
follows, and which is a circle in the design even when the interpreter never meets it).

An import of ``ambrosia_edge.a.b`` is an edge to that module only, not to the packages above
it: the interpreter runs their ``__init__`` first, but they are being imported already
whenever a module inside them runs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from support import REPO

PACKAGE = "ambrosia_edge"
#: Where each package's source lives (the package-dir mapping of pyproject.toml).
SOURCES = {
    PACKAGE: REPO / "ambrosia_edge",
    f"{PACKAGE}.storage": REPO / "storage",
    f"{PACKAGE}.transports": REPO / "transports",
    f"{PACKAGE}.devices": REPO / "devices",
}


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, directory in SOURCES.items():
        for path in sorted(directory.glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The package's modules that module ``name`` imports, wherever the import statement is."""
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in known:  # `from . import codec`: a module
                    yield f"{target}.{alias.name}"
                elif target in known:  # a name defined by the module (or its __init__)
                    yield target


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set(imported(name, path, known)) - {name} for name, path in found.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each strongly connected group of modules (Tarjan), as a path that
    ends where it starts, so a failure says which imports to cut."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_within(graph, group) for group in groups]


def _path_within(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """The shortest circle from the group's first module back to itself (breadth first)."""
    start = min(group)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & group):
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, start]
                if successor not in previous:
                    previous[successor] = node
                    following.append(successor)
        frontier = following
    raise AssertionError(f"no circle in {group}")


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = import_graph()
    assert f"{PACKAGE}.errors" in graph[f"{PACKAGE}.codec"]  # from .errors import ...
    assert f"{PACKAGE}.codec" in graph[f"{PACKAGE}.messages"]  # from . import codec
    assert f"{PACKAGE}.loader" in graph[f"{PACKAGE}.runtime"]  # inside a function
    assert f"{PACKAGE}.storage.fallocate" in graph[f"{PACKAGE}.storage.local"]  # a subpackage
    assert f"{PACKAGE}.errors" in graph[f"{PACKAGE}.transports.tcp"]  # absolute


def test_circles_are_found_and_named() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert circles(graph) == [["a", "b", "c", "a"]]


def test_no_import_circle_in_the_package() -> None:
    found = circles(import_graph())
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)
