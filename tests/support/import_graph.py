"""An import-graph checker: cycles and forbidden imports between the project's packages.

Built on grimp (the graph import-linter uses), with ``TYPE_CHECKING`` imports included: a
type-only cycle still means two modules cannot be read or moved apart. Packages are found
by folder (every top-level folder with an ``__init__.py`` except ``tests``), so a new
package or sub-package is checked without editing a list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp

#: Top-level folders that hold tests, not the product or its benchmarks.
NOT_CHECKED = frozenset({"tests"})


def project_packages(root: Path) -> list[str]:
    """Every top-level package under ``root`` (a folder with an ``__init__.py``)."""
    return sorted(
        init.parent.name
        for init in root.glob("*/__init__.py")
        if init.parent.name not in NOT_CHECKED
    )


def build(packages: Iterable[str]) -> grimp.ImportGraph:
    """The import graph of ``packages``; no cache, so a rerun never reads a stale graph."""
    first, *rest = packages
    return grimp.build_graph(first, *rest, cache_dir=None)


def _collapse(module: str, depth: int | None) -> str:
    """A module's package at ``depth`` dotted parts (None keeps the module itself)."""
    return module if depth is None else ".".join(module.split(".")[:depth])


def cycles(graph: grimp.ImportGraph, depth: int | None = None) -> list[list[str]]:
    """Import cycles, as sorted strongly connected components of two or more nodes.

    ``depth=None`` looks at modules; ``depth=1`` at top-level packages (an import from
    ``service.x`` of ``workers.y`` is an edge ``service → workers``).
    """
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        source = _collapse(module, depth)
        edges.setdefault(source, set())
        for imported in graph.find_modules_directly_imported_by(module):
            target = _collapse(imported, depth)
            if target != source:
                edges[source].add(target)
                edges.setdefault(target, set())
    return sorted(sorted(c) for c in _strongly_connected(edges) if len(c) > 1)


def _strongly_connected(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (import chains can be deeper than the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(edges[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def forbidden_imports(graph: grimp.ImportGraph, rules: Mapping[tuple[str, str], str]) -> list[str]:
    """One line per import that breaks a rule ``(importer package, imported package) → why``."""
    found: list[str] = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            for (importer_pkg, imported_pkg), why in rules.items():
                if _inside(module, importer_pkg) and _inside(imported, imported_pkg):
                    lines = [
                        d["line_number"]
                        for d in graph.get_import_details(importer=module, imported=imported)
                    ]
                    found.append(f"{module} imports {imported} (line {lines}): {why}")
    return found
