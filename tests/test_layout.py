"""The import graph reads one way: continua/ is the base, the stages stand on it, workflow/ and bench/ on top.

Every import counts, the ones inside functions included: a function-local import is still an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ("continua", "curate", "mix", "train", "workflow", "bench")  # each may import only the ones before it
STAGES = ("curate", "mix", "train")


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    found = {}
    for package in FLOORS:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Project modules that the module `name` imports anywhere in its file (function bodies included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..pkg import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return {m for m in out if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    floor = {name: i for i, name in enumerate(FLOORS)}
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if floor[b.split(".")[0]] > floor[a.split(".")[0]])


def test_no_module_imports_a_higher_floor():
    """continua imports no stage, curate no mix, mix no train, no stage the workflow, nothing the benchmarks."""
    assert upward_arrows(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_walk_sees_function_local_imports_and_cycles():
    """The checks above can fail: a lazy import inside a function is an arrow, and two such arrows a cycle."""
    graph = {"curate.a": {"curate.b"}, "curate.b": {"curate.c"}, "curate.c": {"curate.a"}, "mix.x": {"train.y"},
             "train.y": set()}
    assert cycles(graph) == [["curate.a", "curate.b", "curate.c"]]
    assert upward_arrows(graph) == ["mix.x -> train.y"]
    modules = module_files()
    assert "curate.pipeline" in imports_of(modules["curate.cli"], "curate.cli", modules)  # imported inside a function


def test_stage_schemas_stand_on_the_base_alone():
    """Every command loads every stage's recipe sections: those modules must not pull a stage's machinery in."""
    for stage in STAGES:
        tree = ast.parse((ROOT / stage / "config.py").read_text())
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert {m.split(".")[0] for m in modules} <= {"continua", "__future__", "dataclasses", "typing",
                                                      "pathlib", "math", "re"}, (stage, modules)
