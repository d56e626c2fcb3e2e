"""Where each stage's artifact lives for a recipe: one answer, used by every stage."""

from __future__ import annotations

from pathlib import Path

from continua.recipe import Recipe


def curate_dir(recipe: Recipe) -> Path:
    return Path(recipe.curate.out) if recipe.curate.out else recipe.out_dir / "curate"


def mix_dir(recipe: Recipe) -> Path:
    return Path(recipe.mix.out) if recipe.mix.out else recipe.out_dir / "mix"


def plan_path(recipe: Recipe) -> Path:
    return mix_dir(recipe) / "plan.json"


def shards_dir(recipe: Recipe) -> Path:
    return Path(recipe.train.shards) if recipe.train.shards else mix_dir(recipe) / "shards"


def train_dir(recipe: Recipe) -> Path:
    return Path(recipe.train.out) if recipe.train.out else recipe.out_dir / "train"
