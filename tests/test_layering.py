"""The house rules of the code, checked on its import graph: no import circle between modules or between rooms,
and every import goes down the layering (benchmark -> s2ap -> baselines; inside benchmark, the rooms in the order
of the pipeline). Every import counts: at module level, inside functions, and lazy ones (only imports under
``if TYPE_CHECKING:`` are left out, since they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("baselines", "s2ap", "benchmark")

# Lower rooms first; a module may import its own room and any room below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("baselines",),
    ("s2ap",),
    ("benchmark.errors", "benchmark.measure", "benchmark.progress"),
    ("benchmark.store",),
    ("benchmark.data",),
    ("benchmark.models",),
    ("benchmark.config",),
    ("benchmark.attacks",),
    ("benchmark.train",),
    ("benchmark.evaluate",),
    ("benchmark.report",),
    ("benchmark.run",),
    ("benchmark.bench",),
    ("benchmark.cli",),
]
FACADES = {"benchmark"}  # benchmark/__init__.py: the lazy public API above every room


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports (``from a.b import c`` counts as ``a.b.c`` when that is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def layer_of(module: str) -> int:
    for i, rooms in enumerate(LAYERS):
        if any(module == r or module.startswith(r + ".") for r in rooms):
            return i
    raise AssertionError(f"module {module} belongs to no layer: add its room to LAYERS in {__file__}")


def room_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "benchmark" and len(parts) > 1 else parts[0]


def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {m: imported_modules(p, modules) - {m} for m, p in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, as a list of nodes, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_find_cycle_finds_a_cycle_and_only_a_real_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_layer_table_covers_every_module() -> None:
    for module in all_modules():
        if module not in FACADES:
            layer_of(module)


def test_no_import_circle_between_modules() -> None:
    edges = {m: {d for d in deps if d not in FACADES} for m, deps in graph().items() if m not in FACADES}
    cycle = find_cycle(edges)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_no_import_circle_between_rooms() -> None:
    rooms: dict[str, set[str]] = {}
    for module, deps in graph().items():
        if module in FACADES:
            continue
        rooms.setdefault(room_of(module), set()).update(room_of(d) for d in deps if d not in FACADES)
    edges = {room: deps - {room} for room, deps in rooms.items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import circle between rooms: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", sorted(m for m in all_modules() if m not in FACADES))
def test_imports_go_down_the_layering(module: str) -> None:
    modules = all_modules()
    mine = layer_of(module)
    upward = sorted(d for d in imported_modules(modules[module], modules) - {module}
                    if d in FACADES or layer_of(d) > mine)
    assert not upward, f"{module} (layer {mine}) imports higher rooms: {upward}"
