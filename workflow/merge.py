"""`continua merge BASE CPT_RUN --out DIR --lambdas 0,0.25,0.5,0.75,1`: the merge front.

theta(l) = (1 - l) theta_base + l theta_cpt (WiSE-FT, Wortsman et al. 2022) for each l, saved as a
Hugging Face export (DIR/l0.50/, tokenizer included) and evaluated on the CPT run's own validation
windows (the same windows its loop scored), so general vs domain loss of interpolation sits on the
same axes as the replay front of `continua law choose --merge DIR`. Merging costs no training:
the question is whether it buys what replay buys during training.

BASE is the model the CPT run started from (a Hugging Face folder); CPT_RUN is the `train run`
folder (recipe.toml, export/). Writes DIR/merge.json (one point per l: loss per set, general and
domain means).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from continua.io import read_json, write_json

__all__ = ["interpolate", "merge_front", "load_merge"]


def _lambdas(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--lambdas {text!r}: expected numbers such as 0,0.25,0.5,0.75,1") from None
    if not vals or any(not 0 <= v <= 1 for v in vals):
        raise ValueError(f"--lambdas {text!r}: every l must be in [0, 1]")
    return sorted(set(vals))


def interpolate(base: dict, cpt: dict, lam: float) -> dict:
    """(1 - lam) base + lam cpt for every tensor; the two state dicts must have the same keys and shapes."""
    if base.keys() != cpt.keys():
        missing = sorted(set(base) ^ set(cpt))[:3]
        raise ValueError(f"base and CPT weights differ in their tensors (e.g. {missing}): not the same architecture")
    out = {}
    for k, b in base.items():
        c = cpt[k]
        if b.shape != c.shape:
            raise ValueError(f"tensor {k}: base shape {tuple(b.shape)} vs CPT {tuple(c.shape)}")
        out[k] = b.lerp(c, lam) if b.is_floating_point() else c
    return out


def _windows(run_dir: Path):
    from continua.layout import shards_dir
    from continua.recipe import load_recipe
    from train.data import open_shards
    from train.evaluate import validation_sets

    recipe = load_recipe(run_dir / "recipe.toml")
    shards = Path(shards_dir(recipe))
    manifest = open_shards(shards)
    windows = validation_sets(shards, manifest, recipe.train.seq_len, recipe.eval.max_batches * recipe.eval.batch_size)
    roles = {n: s.role for n, s in recipe.data.sources.items()}
    return recipe, windows, roles


def merge_front(base: Path, run_dir: Path, out: Path, lambdas: list[float], say=print) -> dict:
    """Interpolate, export and evaluate every l; returns what merge.json holds."""
    import torch
    from transformers import AutoModelForCausalLM

    from train.evaluate import evaluate_losses

    run_dir, out = Path(run_dir), Path(out)
    export = run_dir / "export"
    if not (run_dir / "recipe.toml").is_file() or not (export / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir}: not a finished `train run` folder (needs recipe.toml and export/)")
    if not (Path(base) / "config.json").is_file():
        raise FileNotFoundError(f"{base}: not a Hugging Face model folder (no config.json)")
    recipe, windows, roles = _windows(run_dir)
    base_model = AutoModelForCausalLM.from_pretrained(str(base), torch_dtype=torch.float32)
    cpt_model = AutoModelForCausalLM.from_pretrained(str(export), torch_dtype=torch.float32)
    base_sd = {k: v.detach().clone() for k, v in base_model.state_dict().items()}
    cpt_sd = {k: v.detach().clone() for k, v in cpt_model.state_dict().items()}
    del base_model
    points = []
    for lam in lambdas:
        cpt_model.load_state_dict(interpolate(base_sd, cpt_sd, lam))
        folder = out / f"l{lam:.2f}"
        cpt_model.save_pretrained(str(folder))
        for f in export.iterdir():  # tokenizer files beside the weights
            if f.is_file() and f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
                shutil.copy2(f, folder / f.name)
        losses = evaluate_losses(cpt_model, windows, recipe.eval.batch_size, torch.device("cpu"))
        point = {"lambda": lam, "export": str(folder), "losses": {f"loss/{k}": v for k, v in losses.items()}}
        for role in ("general", "domain"):
            vals = [v for k, v in losses.items() if roles.get(k) == role]
            point[role] = sum(vals) / len(vals) if vals else None
        points.append(point)
        say(f"l = {lam:.2f}: " + ", ".join(f"{k} {v:.4f}" for k, v in point["losses"].items()))
    result = {"base": str(Path(base).resolve()), "cpt_run": str(run_dir.resolve()), "points": points}
    write_json(out / "merge.json", result)
    return result


def load_merge(path: Path) -> dict:
    path = Path(path)
    f = path / "merge.json" if path.is_dir() else path
    if not f.is_file():
        raise FileNotFoundError(f"{path}: no merge.json (run `continua merge BASE CPT_RUN --out {path}` first)")
    return read_json(f)


def _command(args) -> int:
    merge_front(args.base, args.cpt_run, args.out, _lambdas(args.lambdas))
    print(f"wrote {Path(args.out) / 'merge.json'} and one export per l under {args.out}")
    return 0


def add_merge_command(sub) -> None:
    p = sub.add_parser("merge", help="interpolate base and CPT weights over l, export and evaluate each (merge front)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("base", type=Path, metavar="BASE", help="the base model folder the CPT run started from")
    p.add_argument("cpt_run", type=Path, metavar="CPT_RUN", help="the CPT `train run` folder (recipe.toml, export/)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--lambdas", default="0,0.25,0.5,0.75,1", help="weights of the CPT model (default 0,0.25,0.5,0.75,1)")
    p.set_defaults(func=_command)
