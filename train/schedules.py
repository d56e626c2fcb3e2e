"""Learning-rate schedules as pure functions of the step: re-warming, resuming and plotting are trivial.

`build_schedule(cfg, peak_lr, total_steps)` returns `lr(step)`; the only state is the step, so a
resumed run gets the same curve without saving a scheduler. Convention: the optimizer step `s`
(0-based) uses `lr(s)`. A warmup of W steps runs steps 0 .. W-1 below the peak, at peak*(s+1)/(W+1),
and reaches the peak at step W, as Hugging Face's does, without its wasted step at LR 0. W may be
fractional (a fraction of a short run), so warmups of 0.5%, 1% and 2% stay different curves even
when they are one or two steps long. A decay reaches its end value at step `total_steps` (one past
the last step). `phases()` names the step where each phase starts, so `train schedule` can print and
plot the boundaries.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from train.config import ScheduleConfig

Schedule = Callable[[int], float]

# Parmar et al. (2024): continued pre-training decays from the old run's final LR to 1/100 of it.
PARMAR_END_RATIO = 0.01


def warmup_steps(warmup: float, total_steps: int) -> float:
    """Warmup length in steps, not rounded: a fraction (< 1) of the run, else a number of steps."""
    return warmup * total_steps if warmup < 1 else float(warmup)


def decay_shape(shape: str, progress: float) -> float:
    """Share of the way still to go (1 -> 0) after `progress` in [0, 1] of a decay."""
    p = min(1.0, max(0.0, progress))
    if shape == "linear":
        return 1.0 - p
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if shape == "1-sqrt":
        return 1.0 - math.sqrt(p)
    raise ValueError(f"unknown decay shape {shape!r} (linear, cosine, 1-sqrt)")


def _warm(peak: float, warm: float, step: int) -> float:
    return peak * (step + 1) / (warm + 1)


def cosine(peak: float, total: int, warm: float, eta_min: float) -> Schedule:
    """Linear warmup to `peak` over `warm` steps, then cosine to `eta_min` at step `total`."""

    def lr(step: int) -> float:
        if step < warm:
            return _warm(peak, warm, step)
        progress = (step - warm) / max(1, total - warm)
        return eta_min + (peak - eta_min) * decay_shape("cosine", progress)

    return lr


def constant(peak: float, warm: float) -> Schedule:
    def lr(step: int) -> float:
        return _warm(peak, warm, step) if step < warm else peak

    return lr


def wsd(peak: float, total: int, warm: float, decay: int, eta_min: float, shape: str) -> Schedule:
    """Warmup-stable-decay (MiniCPM): peak until the last `decay` steps, then `shape` down to eta_min."""
    start = total - decay

    def lr(step: int) -> float:
        if step < warm:
            return _warm(peak, warm, step)
        if step < start:
            return peak
        return eta_min + (peak - eta_min) * decay_shape(shape, (step - start) / decay)

    return lr


def _inv_sqrt_f(x: float, alpha: float) -> float:
    return 1.0 / math.sqrt(1.0 + alpha * x) - 1.0


def infinite(peak: float, total: int, warm: float, cooldown: int, anneal: int, eta_const: float,
             eta_min: float, shape: str, alpha: float) -> Schedule:
    """Ibrahim et al.'s infinite schedule: warmup -> cooldown -> constant eta_const -> optional anneal.

    The constant phase needs no end date, which is the point: more data can keep coming. The
    exponential anneal eta_const * (eta_min/eta_const)^(m/M) runs only over the last `anneal` steps.
    """
    cd_end = warm + cooldown
    anneal_start = total - anneal

    def lr(step: int) -> float:
        if step < warm:
            return _warm(peak, warm, step)
        if step < cd_end:
            x = (step - warm) / cooldown
            if shape == "cosine":
                return eta_const + (peak - eta_const) * decay_shape("cosine", x)
            return peak + (eta_const - peak) * _inv_sqrt_f(x, alpha) / _inv_sqrt_f(1.0, alpha)
        if anneal == 0 or step < anneal_start:
            return eta_const
        m = min(step - anneal_start, anneal)
        return eta_const * (eta_min / eta_const) ** (m / anneal)

    return lr


def parmar(start_lr: float, total: int, shape: str) -> Schedule:
    """No warmup: from the old run's final LR down to 1/100 of it at step `total` (Parmar et al.)."""
    end = start_lr * PARMAR_END_RATIO

    def lr(step: int) -> float:
        return end + (start_lr - end) * decay_shape(shape, step / max(1, total))

    return lr


def _lengths(cfg: ScheduleConfig, total_steps: int) -> dict[str, float]:
    """Phase lengths in steps (warmup may be fractional), checked against the total so a too-short
    run fails with a clear message."""
    if total_steps < 1:
        raise ValueError(f"the schedule needs total_steps >= 1, got {total_steps}")
    warm = 0 if cfg.name == "parmar" else warmup_steps(cfg.warmup, total_steps)
    out = {"warmup": warm}
    if cfg.name == "wsd":
        out["decay"] = max(1, int(round(cfg.decay_fraction * total_steps)))
    elif cfg.name == "infinite":
        out["cooldown"] = int(round(cfg.cooldown_fraction * total_steps))
        out["anneal"] = int(round(cfg.anneal_fraction * total_steps))
        if cfg.anneal_fraction > 0 and out["anneal"] == 0:
            out["anneal"] = 1
    used = sum(out.values())
    if used > total_steps:
        parts = " + ".join(f"{k} {v:g}" for k, v in out.items())
        raise ValueError(f"schedule {cfg.name!r}: phases need {parts} = {used:g} steps, more than the "
                         f"{total_steps} total steps")
    return out


def build_schedule(cfg: ScheduleConfig, peak_lr: float, total_steps: int) -> Schedule:
    """`lr(step)` for the recipe's [schedule]; `total_steps` comes from [train] steps or the plan."""
    cfg.validate()
    n = _lengths(cfg, total_steps)
    warm = n["warmup"]
    eta_min = cfg.min_lr_ratio * peak_lr
    if cfg.name == "cosine":
        return cosine(peak_lr, total_steps, warm, eta_min)
    if cfg.name == "constant":
        return constant(peak_lr, warm)
    if cfg.name == "wsd":
        return wsd(peak_lr, total_steps, warm, n["decay"], eta_min, cfg.decay_shape)
    if cfg.name == "infinite":
        return infinite(peak_lr, total_steps, warm, n["cooldown"], n["anneal"], cfg.eta_const_ratio * peak_lr,
                        eta_min, cfg.cooldown_shape, cfg.cooldown_alpha)
    if cfg.name == "parmar":
        return parmar(cfg.start_lr or peak_lr, total_steps, cfg.decay_shape)
    raise ValueError(f"unknown schedule {cfg.name!r}")


def phases(cfg: ScheduleConfig, total_steps: int) -> list[tuple[str, int]]:
    """(phase name, first step) for each non-empty phase, then ("end", total_steps).

    A phase starting at a fractional step (after a fractional warmup) begins at the next whole step.
    """
    n = _lengths(cfg, total_steps)
    warm = n["warmup"]
    if cfg.name == "cosine":
        seq = [("warmup", 0.0), ("cosine decay", warm)]
    elif cfg.name == "constant":
        seq = [("warmup", 0.0), ("constant", warm)]
    elif cfg.name == "wsd":
        seq = [("warmup", 0.0), ("stable", warm), (f"{cfg.decay_shape} decay", total_steps - n["decay"])]
    elif cfg.name == "infinite":
        seq = [("warmup", 0.0), (f"{cfg.cooldown_shape} cooldown", warm), ("constant", warm + n["cooldown"]),
               ("exponential anneal", total_steps - n["anneal"])]
    elif cfg.name == "parmar":
        seq = [(f"{cfg.decay_shape} decay to 1/100", 0.0)]
    else:
        raise ValueError(f"unknown schedule {cfg.name!r}")
    starts = [(name, math.ceil(start)) for name, start in seq] + [("end", total_steps)]
    return [(name, first) for (name, first), (_, nxt) in zip(starts, starts[1:]) if nxt > first] + [starts[-1]]


def plot_schedule(cfg: ScheduleConfig, peak_lr: float, total_steps: int, path: Path) -> Path:
    """Write the LR curve over steps 0..total_steps as a PNG with the phase boundaries marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from continua.io import atomic_path

    lr = build_schedule(cfg, peak_lr, total_steps)
    steps = list(range(total_steps + 1))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(steps, [lr(s) for s in steps], lw=1.5)
    for name, start in phases(cfg, total_steps)[:-1]:
        ax.axvline(start, color="grey", ls=":", lw=0.8)
        ax.annotate(name, (start, 0), xycoords=("data", "axes fraction"), xytext=(3, 4),
                    textcoords="offset points", fontsize=8, color="dimgrey", rotation=90, va="bottom")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"schedule: {cfg.name} (peak {peak_lr:g}, {total_steps} steps)")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def boundary_table(cfg: ScheduleConfig, peak_lr: float, total_steps: int) -> list[tuple[str, int, float]]:
    """(phase, first step, lr there) rows, plus the last optimizer step: what `train schedule` prints."""
    lr = build_schedule(cfg, peak_lr, total_steps)
    rows = [(name, step, lr(step)) for name, step in phases(cfg, total_steps)]
    rows.insert(-1, ("last step", total_steps - 1, lr(total_steps - 1)))
    return rows


def schedule_main(recipe, out_png: Path, total_steps: int | None = None) -> Path:
    """Print the LR at each phase boundary of the recipe's schedule and plot it to `out_png`."""
    steps = total_steps if total_steps is not None else recipe.train.steps or _planned_steps(recipe)
    peak = recipe.optim.lr
    for name, step, value in boundary_table(recipe.schedule, peak, steps):
        print(f"{name:<28} step {step:>9}  lr {value:.6g}")
    path = plot_schedule(recipe.schedule, peak, steps, out_png)
    print(f"wrote {path}")
    return path


def _planned_steps(recipe) -> int:
    """[train] steps = 0 means "as many as the mix budget holds": read them from the built shards' manifest."""
    from continua.layout import shards_dir

    shards = shards_dir(recipe)
    if not (shards / "manifest.json").exists():
        raise ValueError(f"[train] steps is 0 (auto: from the mix budget) but {shards}/manifest.json does not "
                         "exist yet (run `mix build`), or pass --steps N to plot the schedule for N steps")
    from train.data import open_shards, planned_steps

    steps = planned_steps(open_shards(shards), recipe.train.batch_size, recipe.train.seq_len)
    print(f"[train] steps = 0: {steps} steps from {shards}/manifest.json")
    return steps
