"""The [curate] recipe section: which scorers run and how the work is executed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from continua.schema import path_field


@dataclass
class CurateConfig:
    # fastText quality classifiers: column name -> model file (column becomes fasttext_<name>)
    classifiers: dict[str, Path] = field(default_factory=dict, metadata={"path": True, "must_exist": False})
    # datatrove heuristic signal groups to add as columns
    heuristics: list[Literal["gopher_quality", "gopher_repetition", "c4", "fineweb"]] = field(
        default_factory=lambda: ["gopher_quality", "gopher_repetition"])
    executor: Literal["local", "slurm", "ray"] = "local"
    tasks: int = 1
    workers: int = 1
    out: Path | None = path_field(None, must_exist=False)  # default: <run.out_dir>/curate

    def validate(self) -> None:
        if self.tasks < 1 or self.workers < 1:
            raise ValueError("tasks and workers must be at least 1")
