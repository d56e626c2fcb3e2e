"""The run's timeline: its stages cut into segments of steps, each on one blend, with its LR curve.

A recipe without [[stages]] is one segment: the recipe's shards and schedule, as always. With stages,
the trunk's steps are numbered 1, 2, ... across the whole sequence; stage s trains its trunk steps,
then (infinite schedule, `anneal` > 0) an annealed branch of `anneal` steps, numbered on from the
stage's last trunk step, which is exported; the next stage continues from the trunk, not the branch
(Ibrahim et al.). The branch's steps come out of the stage's steps, so a stage costs the same compute
with or without one. Under `infinite` the trunk warms up and cools down once (fractions of the first
stage's steps) and stays at eta_const across stages; every other schedule restarts (re-warms and
re-decays) in each stage over its steps. Switches cut a stage's timeline (trunk, then branch) where
its blend changes: at a token count, or where the LR first falls to a fraction of the peak after it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from continua.layout import shards_dir
from continua.recipe import Recipe
from continua.stages import Blend, is_staged, stage_blends, stage_schedule
from train.schedules import build_schedule, infinite, warmup_steps

__all__ = ["Segment", "StagePlan", "Timeline", "build_timeline"]


@dataclass(frozen=True)
class Segment:
    """Consecutive steps of one stage on one blend, trunk or branch; steps are the loop's (1-based)."""

    index: int
    stage: int
    stage_name: str
    kind: str  # "trunk" or "branch"
    blend: int
    shards: Path
    first: int
    last: int
    lr_at: Callable[[int], float] = field(compare=False, repr=False)  # step -> LR of that step
    why: str = ""  # what starts it: the stage, its branch, or a switch (with its reason)

    @property
    def branch(self) -> bool:
        return self.kind == "branch"


@dataclass(frozen=True)
class StagePlan:
    """A stage's numbers: its steps in all, how many are the branch's, where its trunk starts and ends."""

    index: int
    name: str
    steps: int
    branch_steps: int
    trunk_first: int  # its first trunk step
    trunk_last: int  # its last trunk step (the trunk checkpoint its branch starts from)
    switches: list[dict]  # {"blend": k, "step": loop step, "segment": "trunk"|"branch", "why": text}

    @property
    def trunk_steps(self) -> int:
        return self.steps - self.branch_steps

    def to_dict(self) -> dict:
        return {"name": self.name, "steps": self.steps, "trunk_steps": self.trunk_steps,
                "branch_steps": self.branch_steps, "first_step": self.trunk_first, "last_step": self.trunk_last,
                "switches": self.switches}


@dataclass(frozen=True)
class Timeline:
    staged: bool
    stages: list[StagePlan]
    segments: list[Segment]
    blends: list[list[Blend]]

    @property
    def trunk_steps(self) -> int:
        return sum(s.trunk_steps for s in self.stages)

    def trunk_evals(self, eval_steps: Callable[[int], list[int]]) -> set[int]:
        """Evaluation steps of the trunk: each stage's cadence from its own start (dense where its gap is)."""
        out: set[int] = set()
        for st in self.stages:
            out |= {st.trunk_first - 1 + e for e in eval_steps(st.trunk_steps)}
        return out

    def to_dict(self) -> dict:
        return {"stages": [s.to_dict() for s in self.stages],
                "segments": [{"index": g.index, "stage": g.stage_name, "kind": g.kind, "blend": g.blend,
                              "first_step": g.first, "last_step": g.last, "why": g.why, "shards": str(g.shards)}
                             for g in self.segments]}


def blend_shards(blend: Blend) -> Path:
    """Where a blend's shards are ([train] shards, else its mix folder's; a stage's blend has its own folder)."""
    return shards_dir(blend.recipe)


def build_timeline(recipe: Recipe, planned_steps: Callable[[Path], int]) -> Timeline:
    """The run's segments. `planned_steps(shards)` reads a blend's steps from its manifest (when not set)."""
    blends = stage_blends(recipe)
    o, cfg = recipe.optim, recipe.schedule
    if not is_staged(recipe):
        shards = blend_shards(blends[0][0])
        steps = recipe.train.steps or planned_steps(shards)
        lr = build_schedule(cfg, o.lr, steps)
        plan = StagePlan(0, "main", steps, 0, 1, steps, [])
        return Timeline(False, [plan], [Segment(0, 0, "main", "trunk", 0, shards, 1, steps, lambda s: lr(s - 1))],
                        blends)
    _check_staged(recipe)
    sizes = [(st.steps or planned_steps(blend_shards(bl[0]))) for st, bl in zip(recipe.stages, blends)]
    branches = [_branch_steps(st.anneal, n, st.name) for st, n in zip(recipe.stages, sizes)]
    trunk_lr = _trunk_lr(recipe, sizes[0], sizes[0] - branches[0]) if cfg.name == "infinite" else None
    stages, segments, done = [], [], 0
    for i, (st, bl) in enumerate(zip(recipe.stages, blends)):
        n, a = sizes[i], branches[i]
        first, last = done + 1, done + n - a
        lr_u = _stage_lr(recipe, st, trunk_lr, n, a, done)
        cuts = _switch_points(st, lr_u, n, st.lr or o.lr, recipe.train.batch_size * recipe.train.seq_len)
        switches = []
        for k, (u, why) in enumerate(cuts, start=1):
            step, kind = _step_of(u, n - a, done)
            switches.append({"blend": k, "step": step, "segment": kind, "why": why})
        bounds = sorted({0, n - a, n, *(u for u, _ in cuts)} - {n + 1})
        for lo, hi in zip(bounds, bounds[1:]):
            if hi <= lo:
                continue
            blend = sum(u <= lo for u, _ in cuts)
            kind = "trunk" if lo < n - a else "branch"
            s_lo, _ = _step_of(lo, n - a, done)
            s_hi, _ = _step_of(hi - 1, n - a, done)
            why = dict(cuts).get(lo) or ("stage start" if lo == 0 else f"branch from the trunk at step {last}")
            segments.append(Segment(len(segments), i, st.name, kind, blend, blend_shards(bl[blend]), s_lo, s_hi,
                                    _lr_by_step(lr_u, n - a, done), why))
        stages.append(StagePlan(i, st.name, n, a, first, last, switches))
        done = last
    return Timeline(True, stages, segments, blends)


def _check_staged(recipe: Recipe) -> None:
    where = str(recipe.path or "<recipe>")
    if recipe.train.steps:
        raise ValueError(f"{where}: [train] steps = {recipe.train.steps} with [[stages]]: set steps per stage "
                         "([[stages]] steps), or leave them to each stage's plan")
    if recipe.train.shards is not None:
        raise ValueError(f"{where}: [train] shards with [[stages]]: each stage trains on its own blends' shards "
                         "(<mix out>/stages/STAGE/blend-K/shards)")
    if recipe.schedule.name == "infinite" and recipe.schedule.anneal_fraction > 0:
        raise ValueError(f"{where}: [schedule] anneal_fraction with [[stages]]: the anneal is each stage's branch "
                         "([[stages]] anneal)")
    for st in recipe.stages:
        if recipe.schedule.name == "infinite" and (set(st.schedule) - {"min_lr_ratio"} or st.lr is not None):
            raise ValueError(f"{where}: stage {st.name!r} sets its own schedule or lr, but the infinite trunk is one "
                             "curve across the stages (warmup and cooldown once, then eta_const); a stage may set only "
                             "schedule.min_lr_ratio, where its branch's anneal ends")
        if stage_schedule(recipe, st, where).name == "infinite" and recipe.schedule.name != "infinite":
            raise ValueError(f"{where}: stage {st.name!r} sets schedule name = \"infinite\": an infinite trunk spans "
                             "the whole sequence; set it in [schedule]")
        if st.anneal > 0 and recipe.schedule.name != "infinite":
            raise ValueError(f"{where}: stage {st.name!r} has anneal = {st.anneal:g}, but branches are annealed "
                             f"from an infinite schedule's trunk; [schedule] name is {recipe.schedule.name!r} (a "
                             "schedule that decays in every stage needs no branch)")


def _branch_steps(anneal: float, steps: int, name: str) -> int:
    if anneal <= 0:
        return 0
    a = max(1, int(round(anneal * steps))) if anneal < 1 else int(anneal)
    if a >= steps:
        raise ValueError(f"stage {name!r}: anneal = {anneal:g} is {a} of its {steps} steps; the trunk needs at least one")
    return a


def _trunk_lr(recipe: Recipe, span: int, first_trunk: int) -> Callable[[int], float]:
    """The trunk's infinite schedule over its 0-based steps: warmup and cooldown once, as fractions of the
    first stage's `span` steps, inside its `first_trunk` trunk steps; eta_const ever after."""
    cfg, peak = recipe.schedule, recipe.optim.lr
    warm = warmup_steps(cfg.warmup, span)
    cooldown = int(round(cfg.cooldown_fraction * span))
    if warm + cooldown > first_trunk:
        raise ValueError(f"stage {recipe.stages[0].name!r}: warmup {warm:g} + cooldown {cooldown} steps do not fit in "
                         f"its {first_trunk} trunk steps; lower [schedule] warmup or cooldown_fraction")
    return infinite(peak, first_trunk, warm, cooldown, 0, cfg.eta_const_ratio * peak, cfg.min_lr_ratio * peak,
                    cfg.cooldown_shape, cfg.cooldown_alpha)


def _stage_lr(recipe: Recipe, st, trunk_lr, n: int, a: int, done: int) -> Callable[[int], float]:
    """LR over the stage's timeline u = 0 .. n-1 (its trunk steps, then its branch's)."""
    cfg, peak = stage_schedule(recipe, st), st.lr or recipe.optim.lr
    if trunk_lr is None:  # decays in every stage: the stage's schedule over its steps
        return build_schedule(cfg, peak, n)
    eta_min = cfg.min_lr_ratio * peak

    def lr(u: int) -> float:
        if u < n - a:
            return trunk_lr(done + u)
        eta_c = trunk_lr(done + n - a)  # where the trunk goes on from
        return eta_c * (eta_min / eta_c) ** ((u - (n - a)) / a)

    return lr


def _step_of(u: int, trunk: int, done: int) -> tuple[int, str]:
    """Loop step of the stage's timeline point u: trunk steps after `done`, then the branch's after them."""
    return done + u + 1, ("trunk" if u < trunk else "branch")


def _lr_by_step(lr_u: Callable[[int], float], trunk: int, done: int) -> Callable[[int], float]:
    return lambda step: lr_u(step - 1 - done)  # trunk and branch steps alike run on from `done`


def _switch_points(st, lr_u: Callable[[int], float], n: int, peak: float, tokens_per_step: int) -> list[tuple[int, str]]:
    """Where each switch cuts the stage's timeline (0-based u), in order, with a reason for the log."""
    from mix.budget import parse_amount

    out = []
    for k, sw in enumerate(st.switches, start=1):
        if sw.at_tokens is not None:
            amount = parse_amount(sw.at_tokens, f"stages {st.name!r} switch {k} at_tokens")
            tokens = amount.tokens if amount.tokens is not None else amount.fraction * n * tokens_per_step
            u = math.ceil(tokens / tokens_per_step)
            why = f"after {tokens:,.0f} tokens ({sw.at_tokens})"
        else:
            top = max(range(n), key=lambda t: (lr_u(t), -t))
            u = next((t for t in range(top, n) if lr_u(t) <= sw.at_lr * peak + 1e-18), None)
            if u is None:
                raise ValueError(f"stage {st.name!r}: switch {k} waits for the LR to fall to {sw.at_lr:g} x the peak, "
                                 f"but it never does within the stage's {n} steps (lowest {min(map(lr_u, range(n))):.3g})")
            why = f"LR {lr_u(u):.3g} <= {sw.at_lr:g} x peak {peak:g}"
        if not 0 < u < n:
            raise ValueError(f"stage {st.name!r}: switch {k} falls at step {u} of the stage's {n}: it must be inside it")
        if out and u <= out[-1][0]:
            raise ValueError(f"stage {st.name!r}: switch {k} (step {u} of the stage) is not after switch {k - 1} "
                             f"(step {out[-1][0]}); list switches in the order they happen")
        out.append((u, why))
    return out



def sequence_schedule_main(recipe: Recipe, out_png: Path, stage_steps: int | None = None) -> Path:
    """`train schedule` of a sequence: each segment's steps and LR at both ends, and the LR over the trunk with
    each branch drawn from where it leaves it. Stage steps come from the stages, else their built shards (or
    `stage_steps` for every stage that sets none, before `mix build`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from continua.io import atomic_path
    from train.data import open_shards, planned_steps

    tc = recipe.train

    def steps_of(shards: Path) -> int:
        if stage_steps:
            return stage_steps
        if not (shards / "manifest.json").is_file():
            raise ValueError(f"a stage takes its steps from its plan, but {shards}/manifest.json does not exist yet "
                             "(run `mix build`), or pass --steps N (steps of every stage that sets none)")
        return planned_steps(open_shards(shards), tc.batch_size, tc.seq_len)

    t = build_timeline(recipe, steps_of)
    fig, ax = plt.subplots(figsize=(9, 4))
    for g in t.segments:
        steps = list(range(g.first, g.last + 1))
        print(f"{g.stage_name:<14} {g.kind:<7} blend {g.blend}  steps {g.first:>7}-{g.last:<7} lr "
              f"{g.lr_at(g.first):.4g} -> {g.lr_at(g.last):.4g}  ({g.why})")
        ax.plot(steps, [g.lr_at(s) for s in steps], color=f"C{g.stage % 10}", ls="--" if g.branch else "-", lw=1.5,
                label=f"{g.stage_name} {g.kind}" if g.blend == 0 or g.branch else None)
    for st in t.stages:
        ax.axvline(st.trunk_first - 0.5, color="0.5", ls=":", lw=0.8)
    ax.set_xlabel("step (trunk; dashed: each stage's branch, from where it leaves the trunk)")
    ax.set_ylabel("learning rate")
    ax.set_title(f"{recipe.schedule.name} over {len(t.stages)} stages (peak {recipe.optim.lr:g})")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(Path(out_png)) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    print(f"wrote {out_png}")
    return Path(out_png)
