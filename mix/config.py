"""The [mix] recipe section: the budget and the strategies of the plan, and the shard layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from continua.schema import path_field


@dataclass
class MixConfig:
    budget: str = "100%"  # percent of one epoch over the domain corpus, or tokens: 500M, 2B, 123456
    score: str | None = None  # score column (or "a+b" combination) ranking domain quality, higher = better
    top: str | None = None  # size of the quality subset: "10%" of domain tokens, or a token count
    epochs: float | None = None  # fix the number of epochs over the subset (else chosen by the planner)
    replay: float = 0.0  # compute-equivalent replay: this fraction of the budget comes from general sources
    valid_fraction: float = 0.02  # share of each source's documents held out for validation
    valid_max_docs: int = 2000
    min_valid_docs: int = 1
    out: Path | None = path_field(None, must_exist=False)  # default: <run.out_dir>/mix

    def validate(self) -> None:
        if not 0.0 <= self.replay < 1.0:
            raise ValueError(f"replay must be in [0, 1), got {self.replay}")
        if not 0.0 < self.valid_fraction < 0.5:
            raise ValueError(f"valid_fraction must be in (0, 0.5), got {self.valid_fraction}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
