"""The code's structure, read from its imports: layers only import downwards, no cycles.

The layers are the map in docs/architecture.md; every import counts, function-level
ones included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Top to bottom: a module may import its own layer and the ones below it, never above.
LAYERS = [
    ["broker.cli"],
    ["broker.api"],
    ["broker.metrics"],
    ["broker.service"],
    ["broker.audit"],
    ["broker.registryauth", "broker.prune", "broker.registryconfig"],
    ["broker.tokens", "broker.auth", "broker.keys", "broker.sessions"],
    ["broker.store"],
    ["broker.errors", "broker.settings", "broker.logs", "broker"],
    ["tailor"],
]


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for pkg in ("broker", "tailor") for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path) -> Iterator[str]:
    """Every project module ``path`` imports, at any depth of the file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                # `from a.b import c` imports the module a.b.c when there is one, else a.b.
                name = f"{node.module}.{alias.name}"
                if name in MODULES:
                    yield name
                elif node.module in MODULES:
                    yield node.module


GRAPH = {name: set(_imports(path)) - {name} for name, path in MODULES.items()}


def _layer(module: str) -> int:
    """The layer of the longest prefix that names ``module`` or a package holding it."""
    owners = [
        (len(prefix), i)
        for i, layer in enumerate(LAYERS)
        for prefix in layer
        if module == prefix or module.startswith(prefix + ".")
    ]
    return max(owners)[1]


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _layer(module)


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if _layer(target) < _layer(module)
    ]
    assert upward == []


def test_the_tailor_never_imports_the_broker() -> None:
    tailor = {m: targets for m, targets in GRAPH.items() if m.startswith("tailor")}
    assert [
        m for m, targets in tailor.items() if any(t.startswith("broker") for t in targets)
    ] == []


def test_there_is_no_import_cycle() -> None:
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        path.append(module)
        for target in sorted(GRAPH[module]):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)
