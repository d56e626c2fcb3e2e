"""A three-source world (general text, code, medical) and a two-stage recipe over it, for the stage tests.

Score tables are written by hand (mix_fixtures.write_score_table), so `mix plan` and `mix build` run
for real without `curate score`; the model is a tiny Llama, trained in this process or under torchrun.
"""

from __future__ import annotations

import random
from pathlib import Path

from continua.recipe import toml_text
from mix_fixtures import CODE, GENERAL, MEDICAL, make_text, make_tokenizer, write_jsonl, write_score_table
from train_fixtures import TINY_MODEL

VOCABS = {"general": GENERAL, "code": CODE, "medical": MEDICAL}


def build_stage_world(root: Path, docs: int = 160) -> dict:
    """Corpora, a tokenizer and score tables for general, code and medical text."""
    rng = random.Random(7)
    texts = {name: [make_text(rng, vocab, rng.randint(10, 40)) for _ in range(docs)] for name, vocab in VOCABS.items()}
    files = {name: write_jsonl(root / "data" / f"{name}.jsonl", t) for name, t in texts.items()}
    tok = make_tokenizer(root / "tok", [t for ts in texts.values() for t in ts])
    for name, path in files.items():
        write_score_table(root / "out" / "curate", name, path, tok)
    return {"root": root, "files": files, "tok": tok}


def stage_recipe(world: dict, path: Path, schedule: dict | None = None, stages: list[dict] | None = None,
                 train: dict | None = None, out: Path | None = None) -> Path:
    """Stage `code` (replaying general text), then `medical` (replaying general text and code, switching half way to
    a blend with more replay); branches of 2 steps under the infinite schedule."""
    f = world["files"]
    table = {
        "run": {"out_dir": str(out or world["root"] / "out"), "seed": 0, "name": "stages"},
        "data": {"tokenizer": str(world["tok"]), "sources": {
            "general": {"paths": [str(f["general"])], "role": "general"},
            "code": {"paths": [str(f["code"])], "role": "domain"},
            "medical": {"paths": [str(f["medical"])], "role": "domain"}}},
        "mix": {"budget": "100%", "valid_fraction": 0.1, "min_valid_docs": 4, "workers": 1},
        "model": dict(TINY_MODEL),
        "optim": {"lr": 3e-3},
        "schedule": schedule or {"name": "infinite", "warmup": 1, "cooldown_fraction": 0.25, "eta_const_ratio": 0.5,
                                 "min_lr_ratio": 0.1},
        "eval": {"num_evals": 3, "max_batches": 1, "batch_size": 4},
        "train": {"seq_len": 32, "batch_size": 4, "peak_flops": 1e11, "tensorboard": False, **(train or {})},
        "stages": stages if stages is not None else [
            {"name": "code", "domains": ["code"], "replay": ["general"], "mix": {"replay": 0.25}, "steps": 10,
             "anneal": 2},
            {"name": "medical", "domains": ["medical"], "replay": ["general", "code"], "steps": 10, "anneal": 2,
             "mix": {"replay": 0.25, "replay_weights": {"general": 0.6, "code": 0.4}},
             "switches": [{"at_tokens": "50%", "replay": ["general"], "mix": {"replay": 0.5, "replay_weights": {}}}]},
        ],
    }
    path.write_text(toml_text(table))
    return path
