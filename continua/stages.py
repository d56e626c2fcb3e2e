"""A sequence of CPT stages in one recipe (`[[stages]]`), and the blends each stage trains on.

Ibrahim et al. keep updating one model: Pile, then SlimPajama, then German, each stage continuing
from the last. A recipe says so with an ordered list of stages, each naming its domain sources, the
sources it replays (general ones, and earlier stages' domains) and its `[mix]` keys; a stage may
switch blend inside itself (Parmar et al.: to a QA-like blend once the LR has decayed), each switch
naming the blend after it the same way.

Every blend is planned and built as the single-stage recipe it amounts to: the same recipe with only
that blend's sources (its domains as role "domain", its replay as role "general") and the stage's
`[mix]` keys, written under `<mix out>/stages/STAGE/blend-K`. So `mix plan`, `mix build` and the
sampler need no second code path, and the score tables of `curate` serve every stage. A recipe
without `[[stages]]` is one stage of one blend: the recipe itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continua.schema import RecipeError, build, to_dict

# [mix] keys that decide the validation split: the recipe's, the same in every stage
SHARED_MIX_KEYS = {"valid_fraction", "valid_max_docs", "min_valid_docs", "dedup"}

__all__ = ["StageConfig", "SwitchConfig", "Blend", "stage_blends", "stage_schedule", "check_stages", "is_staged",
           "stage_dir"]


@dataclass
class SwitchConfig:
    """A change of blend inside a stage, at a point of the stage's timeline (its trunk steps, then its branch)."""

    at_lr: float | None = None  # once the LR has fallen to this fraction of the peak (after the peak)
    at_tokens: str | None = None  # after this share of the stage's tokens ("60%") or this many tokens ("2M")
    domains: list[str] | None = None  # the blend after the switch: default the stage's
    replay: list[str] | None = None
    mix: dict[str, Any] = field(default_factory=dict)  # [mix] keys over the stage's

    def validate(self) -> None:
        if (self.at_lr is None) == (self.at_tokens is None):
            raise ValueError("a switch needs exactly one of at_lr (a fraction of the peak LR) or at_tokens")
        if self.at_lr is not None and not 0.0 < self.at_lr < 1.0:
            raise ValueError(f"at_lr must be in (0, 1) (a fraction of the peak LR), got {self.at_lr}")


@dataclass
class StageConfig:
    """One stage of the sequence: what it trains on, for how long, and whether an annealed branch is taken."""

    name: str
    domains: list[str]  # the stage's domain sources ([data.sources] names)
    replay: list[str] | None = None  # sources replayed: general ones, earlier stages' domains; default: role "general"
    mix: dict[str, Any] = field(default_factory=dict)  # [mix] keys for this stage over the recipe's [mix]
    steps: int = 0  # 0: from the stage's plan (its first blend's tokens / tokens per step)
    # its part of the schedule: [schedule] keys for this stage (a schedule that restarts in each stage), and its
    # peak LR (default [optim] lr); under `infinite` the trunk is one curve: only min_lr_ratio (its branch's end)
    schedule: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None
    # infinite schedule: an annealed copy from the trunk over this share of the stage's steps (>= 1: a step
    # count), out of the stage's steps; exported; the next stage continues from the un-annealed trunk. 0: none
    anneal: float = 0.0
    switches: list[SwitchConfig] = field(default_factory=list)

    def validate(self) -> None:
        if not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"stage name {self.name!r} may only hold letters, digits, '-' and '_'")
        if not self.domains:
            raise ValueError(f"stage {self.name!r}: domains must name at least one source")
        if self.steps < 0:
            raise ValueError(f"stage {self.name!r}: steps must be >= 0 (0 = from the plan), got {self.steps}")
        if self.anneal < 0:
            raise ValueError(f"stage {self.name!r}: anneal must be >= 0, got {self.anneal}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"stage {self.name!r}: lr must be positive, got {self.lr}")


@dataclass(frozen=True)
class Blend:
    """One planned-and-built mixture: the single-stage recipe it amounts to, and where it lives."""

    stage: int  # index in the sequence
    stage_name: str
    index: int  # 0: the stage's own blend; k: after its k-th switch
    recipe: Any  # continua.recipe.Recipe of this blend alone

    @property
    def label(self) -> str:
        return self.stage_name if self.index == 0 else f"{self.stage_name}/blend-{self.index}"


def is_staged(recipe) -> bool:
    return bool(getattr(recipe, "stages", None))


def stage_dir(mix_dir: Path, stage: str, blend: int) -> Path:
    """Where a blend's plan.json and shards/ live: <mix out>/stages/STAGE/blend-K."""
    return Path(mix_dir) / "stages" / stage / f"blend-{blend}"


def check_stages(recipe, where: str = "<recipe>") -> None:
    """Stage names unique, every source a stage names declared, no stage both training and replaying one
    source, and each blend's [mix] keys valid: found when the recipe loads, not at stage 3."""
    stages = getattr(recipe, "stages", None) or []
    seen: set[str] = set()
    sources = recipe.data.sources
    for i, st in enumerate(stages):
        key = f"stages[{i}]"
        if st.name in seen:
            raise RecipeError(f"{where}: {key}.name {st.name!r} is used by two stages")
        seen.add(st.name)
        for j, (domains, replay) in enumerate([(st.domains, st.replay)] +
                                              [(sw.domains or st.domains, st.replay if sw.replay is None else sw.replay)
                                               for sw in st.switches]):
            at = key if j == 0 else f"{key}.switches[{j - 1}]"
            for name in list(domains) + list(replay or []):
                if name not in sources:
                    raise RecipeError(f"{where}: {at} names source {name!r}, which is not a [data.sources] table "
                                      f"(declared: {', '.join(sources) or 'none'})")
            both = sorted(set(domains) & set(replay or []))
            if both:
                raise RecipeError(f"{where}: {at} both trains and replays {', '.join(both)}")
        for at, table in [(f"{key}.mix", st.mix)] + [(f"{key}.switches[{j}].mix", sw.mix)
                                                      for j, sw in enumerate(st.switches)]:
            fixed = sorted(set(table) & SHARED_MIX_KEYS)
            if fixed:
                raise RecipeError(f"{where}: {at} sets {', '.join(fixed)}: every stage must hold out the same "
                                  "validation documents (or one would train on what another evaluates on); set it in [mix]")
        _stage_blends(recipe, i, st, where)  # builds each blend's [mix]: its errors name the key
        if st.schedule and hasattr(recipe, "schedule"):
            stage_schedule(recipe, st, where, key)


def stage_blends(recipe, mix_dir: Path | None = None) -> list[list[Blend]]:
    """Per stage, its blends in order. A recipe without [[stages]] is one stage of one blend: itself."""
    if not is_staged(recipe):
        return [[Blend(0, "main", 0, recipe)]]
    return [_stage_blends(recipe, i, st, str(recipe.path or "<recipe>"), mix_dir) for i, st in enumerate(recipe.stages)]


def _stage_blends(recipe, i: int, st: StageConfig, where: str, mix_dir: Path | None = None) -> list[Blend]:
    base = mix_dir if mix_dir is not None else (Path(recipe.mix.out) if recipe.mix.out else recipe.out_dir / "mix")
    stage_mix = {**_plain(recipe.mix), **st.mix}
    out = [Blend(i, st.name, 0, _blend_recipe(recipe, st.domains, st.replay, stage_mix, stage_dir(base, st.name, 0),
                                                f"stages[{i}].mix", where))]
    for k, sw in enumerate(st.switches, start=1):
        replay = st.replay if sw.replay is None else sw.replay
        recipe_k = _blend_recipe(recipe, sw.domains or st.domains, replay, {**stage_mix, **sw.mix},
                                 stage_dir(base, st.name, k), f"stages[{i}].switches[{k - 1}].mix", where)
        out.append(Blend(i, st.name, k, recipe_k))
    return out


def stage_schedule(recipe, st: StageConfig, where: str = "<recipe>", key: str = "stages"):
    """The [schedule] of one stage: the recipe's with the stage's keys over it (validated like [schedule])."""
    if not st.schedule:
        return recipe.schedule
    return build(type(recipe.schedule), {**_plain(recipe.schedule), **st.schedule}, where, None,
                 prefix=f"{key}.schedule")


def _plain(section) -> dict:
    """A section's keys as a table, unset ones left out (they keep their defaults when rebuilt)."""
    return {k: v for k, v in to_dict(section).items() if v is not None}


def _blend_recipe(recipe, domains: list[str], replay: list[str] | None, mix_table: dict, out: Path, key: str,
                  where: str):
    """The single-stage recipe of one blend: its sources only (domains as "domain", replay as "general")."""
    sources = recipe.data.sources
    if replay is None:
        replay = [n for n, s in sources.items() if s.role == "general" and n not in domains]
    chosen = {n: dataclasses.replace(sources[n], role="domain") for n in domains}
    chosen |= {n: dataclasses.replace(sources[n], role="general") for n in replay}
    target = mix_table.get("dsir_target")
    if target in sources and target not in chosen:  # a DSIR reference source is read, never trained on
        chosen[target] = sources[target]
    mix_table = {**mix_table, "out": str(out)}
    mix = build(type(recipe.mix), mix_table, where, None, prefix=key)
    data = dataclasses.replace(recipe.data, sources=chosen)
    return recipe.replace(data=data, mix=mix, stages=[])
