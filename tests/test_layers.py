"""promptopt's imports follow the layer order written in ARCHITECTURE.md, with no cycles.

Every ``import`` of every module counts, those inside functions and under
``TYPE_CHECKING`` included: a function-level import hides a dependency from the
interpreter's import order, not from whoever has to change the code.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "promptopt"


def layers() -> dict[str, int]:
    """Each top-level unit (module or package of promptopt) -> its layer, from ARCHITECTURE.md."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```layers\n(.*?)```", text, flags=re.DOTALL)
    return {unit: i for i, line in enumerate(block.splitlines()) for unit in line.split()}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The promptopt modules ``name`` imports (a name imported from a package counts as the
    submodule it names, if it is one, else as the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target in known and target != name:
                yield target


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "promptopt"


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imports(name, path, known)) for name, path in known.items()}


def test_every_top_level_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    placed = layers()
    assert {unit(m) for m in graph} - set(placed) == set()
    assert set(placed) - {unit(m) for m in graph} == set()  # no stale names either


def test_no_module_imports_from_a_later_layer(graph: dict[str, set[str]]) -> None:
    rank = layers()
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if rank[unit(target)] > rank[unit(module)]
    )
    assert upward == []


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.get(target, ())))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_the_walk_finds_cycles_and_upward_edges() -> None:
    """The checks themselves: a cycle and an upward edge in a made-up graph are caught."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    known = modules()
    inside = set(imports("promptopt.task.loader", known["promptopt.task.loader"], known))
    assert "promptopt.plugins" in inside  # function-level and module-level imports both count
    planning = set(imports("promptopt.planning", known["promptopt.planning"], known))
    assert "promptopt.llm.types" in planning  # imported inside estimate_plan
