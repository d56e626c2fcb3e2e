"""The import graph reads one way: continua/ is the base, the stages stand on it, workflow/ on top."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("curate", "mix", "train")


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level packages imported anywhere in `package` (lazy imports inside functions included)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[-1] == "config" and name.split(".")[0] in STAGES and package == "continua":
                    continue  # the recipe loader assembles each stage's schema module (plain dataclasses)
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_the_base_imports_no_stage_and_no_workflow():
    used = imported_packages("continua")
    assert not {p: used[p] for p in (*STAGES, "workflow") if p in used}


def test_stage_schemas_stand_on_the_base_alone():
    """The schema modules the recipe loader imports must not pull a stage's machinery into continua."""
    for stage in STAGES:
        tree = ast.parse((ROOT / stage / "config.py").read_text())
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert {m.split(".")[0] for m in modules} <= {"continua", "__future__", "dataclasses", "typing",
                                                      "pathlib", "math", "re"}, (stage, modules)


def test_no_stage_imports_the_workflow():
    for stage in STAGES:
        assert "workflow" not in imported_packages(stage), stage


def test_each_stage_reads_only_the_stages_before_it():
    """mix reads curate's score tables and train reads mix's shards; never the other way round."""
    for i, stage in enumerate(STAGES):
        later = set(STAGES[i + 1:])
        assert not later & set(imported_packages(stage)), stage
