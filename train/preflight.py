"""What `train run` checks before it starts any process: the inputs only training reads."""

from __future__ import annotations

import json
from pathlib import Path

from continua.schema import RecipeError


def check_inputs(recipe) -> None:
    """The files only training reads ([model] path, [train] optimizer_from, [eval] benchmarks) must exist,
    and seq_len must fit the model's positions. Checked when training starts, not when the recipe
    loads, so `curate`, `mix`, `train schedule` and `train report` work before the model is here."""
    where = str(getattr(recipe, "path", None) or "<recipe>")
    named = [("model.path", recipe.model.path), ("train.optimizer_from", recipe.train.optimizer_from)]
    named += [(f"eval.benchmarks.{k}", v) for k, v in recipe.eval.benchmarks.items()]
    for key, path in named:
        if path is not None and not Path(path).exists():
            raise RecipeError(f"{where}: key '{key}' names a path that does not exist: {path}")
    positions, source = recipe.model.max_position_embeddings, "[model] max_position_embeddings"
    config = Path(recipe.model.path) / "config.json" if recipe.model.path is not None else None
    if config is not None and config.is_file():
        positions = json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")
        source = f"{config}"
    if isinstance(positions, int) and recipe.train.seq_len > positions:
        raise RecipeError(f"{where}: [train] seq_len = {recipe.train.seq_len} exceeds the model's "
                          f"max_position_embeddings = {positions} ({source}); lower seq_len to at most {positions}")
