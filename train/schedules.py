"""Learning-rate schedules as pure functions of the step: re-warming, resuming and plotting are trivial.

`build_schedule(cfg, peak_lr, total_steps)` returns `lr(step)`; the only state is the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal


@dataclass
class ScheduleConfig:
    name: Literal["cosine", "constant"] = "cosine"
    warmup: float = 0.01  # fraction of the steps if < 1, else a number of steps
    min_lr_ratio: float = 0.1  # eta_min = min_lr_ratio * peak lr (Ibrahim et al.: 0.1)

    def validate(self) -> None:
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


def warmup_steps(warmup: float, total_steps: int) -> int:
    return int(round(warmup * total_steps)) if warmup < 1 else int(warmup)


def cosine(peak: float, total: int, warm: int, eta_min: float) -> Callable[[int], float]:
    """Linear warmup to `peak` over `warm` steps, then cosine to `eta_min` at step `total`."""

    def lr(step: int) -> float:
        if step < warm:
            return peak * (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return eta_min + 0.5 * (peak - eta_min) * (1.0 + math.cos(math.pi * progress))

    return lr


def constant(peak: float, warm: int) -> Callable[[int], float]:
    def lr(step: int) -> float:
        return peak * (step + 1) / warm if step < warm else peak

    return lr


def build_schedule(cfg: ScheduleConfig, peak_lr: float, total_steps: int) -> Callable[[int], float]:
    warm = warmup_steps(cfg.warmup, total_steps)
    if cfg.name == "cosine":
        return cosine(peak_lr, total_steps, warm, cfg.min_lr_ratio * peak_lr)
    if cfg.name == "constant":
        return constant(peak_lr, warm)
    raise ValueError(f"unknown schedule {cfg.name!r}")
