"""How many datatrove tasks and workers `curate score` runs: the recipe's, or the cores available."""

from __future__ import annotations

import os

from curate.config import CurateConfig


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity: a Slurm allocation or a container limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parallelism(cfg: CurateConfig, tasks: int | None = None, workers: int | None = None) -> tuple[int, int]:
    """(tasks, workers): explicit values win over the recipe's; 0 = auto, one task per available core
    with the local executor (1 on Slurm / Ray, whose job size is the user's to choose), as many
    workers as cores, never more workers than tasks."""
    cores = available_cores()
    t = tasks or cfg.tasks or (cores if cfg.executor == "local" else 1)
    w = workers or cfg.workers or cores
    return t, min(w, t)
