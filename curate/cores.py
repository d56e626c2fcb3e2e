"""How many datatrove tasks and workers `curate score` runs: the recipe's, or the cores available."""

from __future__ import annotations

from continua.cores import available_cores
from curate.config import CurateConfig


def parallelism(cfg: CurateConfig, tasks: int | None = None, workers: int | None = None) -> tuple[int, int]:
    """(tasks, workers): explicit values win over the recipe's; 0 = auto, one task per available core
    with the local executor (1 on Slurm / Ray, whose job size is the user's to choose), as many
    workers as cores, never more workers than tasks."""
    cores = available_cores()
    t = tasks or cfg.tasks or (cores if cfg.executor == "local" else 1)
    w = workers or cfg.workers or cores
    return t, min(w, t)
