"""The package's modules form no import cycle, counting every import: at the top, inside functions
(lazy imports for speed) and under TYPE_CHECKING. A cycle is two rooms that each reach into the
other; one of them should be handed what it needs instead.

Nor do its rooms: a room is a subfolder of edgepack/ (convert, compress, search, runners, ...) or a
top-level module (engines.py, inspection.py, ...). No two rooms import each other, and no rooms import
each other round a longer loop; what two rooms share lives in a room below both."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "edgepack"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py") if "templates" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for target in targets:
                # "from edgepack.x import y" may name the module edgepack.x.y
                if isinstance(node, ast.ImportFrom) and target in modules:
                    found |= {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules} or {target}
                elif target in modules:
                    found.add(target)
        graph[name] = found - {name, "edgepack"}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def room_of(module: str) -> str:
    """``edgepack.convert.routes`` -> ``convert``; ``edgepack.engines`` -> ``engines``."""
    return module.split(".")[1]


def room_imports(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """Each pair (room, room it imports) with the module imports that make it, ``a -> b``."""
    found: dict[tuple[str, str], list[str]] = {}
    for module, targets in graph.items():
        if module == "edgepack":  # the package itself is no room
            continue
        for target in sorted(targets):
            if room_of(module) != room_of(target):
                found.setdefault((room_of(module), room_of(target)), []).append(f"{module} -> {target}")
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(set(graph) | {n for targets in graph.values() for n in targets}):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_two_rooms_import_each_other():
    pairs = room_imports(imports())
    both_ways = {f"{a} <-> {b}": pairs[(a, b)] + pairs[(b, a)] for a, b in sorted(pairs) if a < b and (b, a) in pairs}
    assert both_ways == {}


def test_rooms_form_no_cycle():
    rooms: dict[str, set[str]] = {}
    for a, b in room_imports(imports()):
        rooms.setdefault(a, set()).add(b)
    assert strongly_connected(rooms) == []


def test_the_room_cycle_finder_finds_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert room_of("edgepack.convert.routes") == "convert" and room_of("edgepack.engines") == "engines"
    found = room_imports({"edgepack.x.a": {"edgepack.x.b", "edgepack.y"}})
    assert found == {("x", "y"): ["edgepack.x.a -> edgepack.y"]}


def test_no_module_imports_itself_through_another():
    assert cycles(imports()) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_every_module_imports():
    names = sorted(imports())
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    done = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert importlib.import_module("edgepack.pipeline").Build
