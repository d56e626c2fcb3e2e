"""Checks `train run` makes in the parent process, before any rank starts.

A mistake found inside 8 ranks is printed 8 times under a torchrun traceback; found here it is one
line and exit code 2 (continua.exitcodes.USAGE). Nothing here reads weights: only the manifest,
the model's config and the machine's device counts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from continua.cores import available_cores
from continua.layout import shards_dir
from continua.recipe import Recipe


class PreflightError(ValueError):
    """A recipe or usage mistake found before starting: one line, exit code 2."""


# Extra checks of the manifest against the recipe (e.g. "built for the current plan"), each
# `check(recipe, manifest)` raising PreflightError; other modules append to this list.
MANIFEST_CHECKS: list[Callable] = []


def check_inputs(recipe: Recipe) -> None:
    """The files only training reads ([model] path, [train] optimizer_from, [eval] benchmarks) exist.
    Checked when training starts, not when the recipe loads, so `curate`, `mix`, `train schedule` and
    `train report` work before the model is here."""
    where = str(getattr(recipe, "path", None) or "<recipe>")
    named = [("model.path", recipe.model.path), ("train.optimizer_from", recipe.train.optimizer_from)]
    named += [(f"eval.benchmarks.{k}", v) for k, v in recipe.eval.benchmarks.items()]
    for key, path in named:
        if path is not None and not Path(path).exists():
            raise PreflightError(f"{where}: key '{key}' names a path that does not exist: {path}")


def check_manifest(recipe: Recipe, staged: bool = False):
    """The shards exist, load, and were built for the plan as it is now (a stale plan: exit 1, not 2).
    `staged`: the recipe is one blend of a sequence, whose shards only `mix build` places."""
    from continua.fingerprint import StaleInputError
    from continua.io import DamagedFileError
    from train.data import open_shards

    shards = shards_dir(recipe)
    path = shards / "manifest.json"
    if not path.is_file():
        raise PreflightError(f"no shards to train on: {path} does not exist; run `mix build` with this recipe first"
                             + ("" if staged else " (or set [train] shards)"))
    try:
        manifest = open_shards(shards, record=False)
    except (StaleInputError, DamagedFileError):  # found while reading the shards' files: exit 1
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PreflightError(f"{path}: cannot be read: {e}") from e
    check_source_listing(recipe, manifest)
    for check in MANIFEST_CHECKS:
        check(recipe, manifest)
    return manifest


def check_stages_shards(recipe: Recipe):
    """Every blend of every stage (the recipe itself when it has no [[stages]]) as `check_manifest` checks one, and
    the run's timeline (stage steps, branches, switches) as `train run` will build it; returns the first manifest."""
    from continua.stages import is_staged, stage_blends
    from train.data import planned_steps
    from train.timeline import blend_shards, build_timeline

    staged = is_staged(recipe)
    by_path = {blend_shards(b): check_manifest(b.recipe, staged) for stage in stage_blends(recipe) for b in stage}
    tc = recipe.train
    try:
        build_timeline(recipe, lambda path: planned_steps(by_path[path], tc.batch_size, tc.seq_len))
    except ValueError as e:
        raise PreflightError(str(e)) from e
    return next(iter(by_path.values()))


def check_source_listing(recipe: Recipe, manifest) -> None:
    """Every source the shards were built from still holds the files they were built from, as they were: a
    file added to, removed from or edited in a source folder since is named, never silently left out of (or
    kept in) training. A file whose size, mtime and inode are as recorded is not read again; a touched one
    is hashed and passes when its content is the same."""
    from continua import fingerprint as fp
    from continua.documents import expand_inputs

    rerun = f"{fp.RESCORE}, `mix plan` and `mix build`"
    for name in manifest.sources:
        built = [i for i in manifest.inputs if i.get("source") == name and i.get("kind") == "source"]
        if built and name in recipe.data.sources:
            fp.check_listing([i["path"] for i in built], [p for p, _, _ in expand_inputs(recipe.data.sources[name])],
                             "`mix build`", rerun)
            fp.check(built, "`mix build` read it", rerun)


def check_model(recipe: Recipe, vocab: int) -> None:
    """The model's config loads (remote code refused), fits the tokenizer, and allows [train] seq_len."""
    from continua.trust import UntrustedModelError
    from train.weights import ModelSourceError, load_config, max_positions, resolve_source

    seq_len = recipe.train.seq_len
    if recipe.model.path is None:
        limit, where = recipe.model.max_position_embeddings, "[model] max_position_embeddings"
    else:
        try:
            config = load_config(resolve_source(recipe.model.path, recipe.model.gguf_file))
        except (ModelSourceError, UntrustedModelError) as e:
            raise PreflightError(str(e)) from e
        if vocab and config.vocab_size < vocab:
            raise PreflightError(f"[model] path {recipe.model.path}: {config.vocab_size} embeddings but the shards' "
                                 f"tokenizer has {vocab} ids; use the model's own tokenizer in [data] tokenizer")
        limit, where = max_positions(config), f"the max_position_embeddings of {recipe.model.path}"
    if limit is not None and seq_len > limit:
        raise PreflightError(f"[train] seq_len {seq_len} is above {where} ({limit}); lower seq_len")


def check_processes(recipe: Recipe, nproc: int, nnodes: int, say: Callable[[str], None]) -> None:
    """Processes against GPUs (an error: ranks cannot share one) or CPU cores (a warning: slower, not wrong)."""
    import torch

    tc = recipe.train
    world = nproc * nnodes
    if tc.batch_size % world:
        raise PreflightError(f"[train] batch_size {tc.batch_size} is not divisible by {world} processes")
    micro = tc.micro_batch_size or tc.batch_size // world
    if (tc.batch_size // world) % micro:
        raise PreflightError(f"[train] batch_size / processes = {tc.batch_size // world} is not a multiple of "
                             f"micro_batch_size {micro}")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if tc.device == "cuda" and gpus == 0:
        raise PreflightError("[train] device = 'cuda' but torch sees no CUDA device")
    if tc.device != "cpu" and gpus:
        if nproc > gpus:
            raise PreflightError(f"{nproc} processes per node but this machine has {gpus} GPU(s): "
                                 f"set --nproc (or [train] nproc) to at most {gpus}")
        return
    cores = available_cores()
    threads = tc.threads or 1
    if nproc * threads > cores:
        say(f"warning: {nproc} processes x {threads} thread(s) on {cores} CPU core(s): they will share cores "
            "(slower, same results)")


def preflight(recipe: Recipe, nproc: int, nnodes: int = 1, say: Callable[[str], None] = print) -> None:
    """All checks, in the order a user fixes them: inputs, shards, model, processes. Raises PreflightError."""
    check_inputs(recipe)
    manifest = check_stages_shards(recipe)
    check_model(recipe, int(manifest.tokenizer.get("vocab_size") or 0))
    check_processes(recipe, nproc, nnodes, say)
