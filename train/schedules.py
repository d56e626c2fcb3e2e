"""Learning-rate schedules as pure functions of the step: re-warming, resuming and plotting are trivial.

`build_schedule(cfg, peak_lr, total_steps)` returns `lr(step)`; the only state is the step.
"""

from __future__ import annotations

import math
from typing import Callable

from train.config import ScheduleConfig


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
