"""recipes/*.toml load with user overrides; `continua compare` runs a set of them on a tiny corpus,
sharing scores and identical plans, writes the comparison, and skips finished runs on re-run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers_curate import make_tokenizer, styled_texts, train_tiny_classifier, write_jsonl

from continua.recipe import load_recipe
from workflow.cli import main as continua_main

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
STRATEGIES = sorted(RECIPES.glob("*.toml"))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Tiny domain (med) and general corpora, tokenizer, classifier and a tiny saved base model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tmp = tmp_path_factory.mktemp("compare")
    tok = make_tokenizer(tmp / "tok")
    base = tmp / "base"
    LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
                     ).save_pretrained(base)
    return {"tmp": tmp, "tok": tok, "base": base, "classifier": train_tiny_classifier(tmp),
            "code": write_jsonl(tmp / "data" / "med.jsonl", styled_texts("med", 240, 7)),
            "general": write_jsonl(tmp / "data" / "gen.jsonl", styled_texts("gen", 160, 8))}


def overrides(w: dict) -> list[str]:
    return [f'data.tokenizer="{w["tok"]}"', f'data.sources.domain.paths=["{w["code"]}"]',
            f'data.sources.general.paths=["{w["general"]}"]', f'curate.classifiers.quality="{w["classifier"]}"',
            f'model.path="{w["base"]}"', "mix.valid_fraction=0.05", "mix.min_subset_docs=10", "mix.workers=1",
            "train.seq_len=32", "train.batch_size=4", "train.nproc=1", "train.steps=6", "train.tensorboard=false",
            "eval.num_evals=3", "eval.max_batches=2", "eval.batch_size=4"]


def test_the_strategy_recipes_exist_and_load(world):
    names = {p.stem for p in STRATEGIES}
    assert {"naive", "guo-40", "replay-5", "replay-25", "warmup-0", "warmup-0.5", "warmup-1", "warmup-2",
            "lr-low", "lr-mid", "lr-high", "infinite", "infinite-anneal"} <= names
    loaded = {p.stem: load_recipe(p, overrides(world)) for p in STRATEGIES}
    assert all(r.run.name == stem for stem, r in loaded.items())  # compare needs one name per recipe
    assert all(r.data.sources["domain"].paths == [world["code"]] for r in loaded.values())
    assert loaded["naive"].mix.budget == "100%" and loaded["naive"].mix.top is None and loaded["naive"].mix.replay == 0
    g = loaded["guo-40"].mix
    assert (g.budget, g.top, g.preset, g.resample) == ("40%", "10%", "llama1", "dynamic")
    gr = loaded["guo-40-reference"]  # Guo et al.'s own selector: lowest reference perplexity
    assert (gr.mix.budget, gr.mix.top, gr.mix.score, gr.mix.prefer) == ("40%", "10%", "ppl_ngram_ref", "low")
    assert set(gr.curate.ngram_references) == {"ref"}
    assert loaded["replay-5"].mix.replay == 0.05 and loaded["replay-25"].mix.replay == 0.25
    assert [loaded[f"warmup-{t}"].schedule.warmup for t in ("0", "0.5", "1", "2")] == [0, 0.005, 0.01, 0.02]
    pre_lr = loaded["naive"].optim.lr
    assert [loaded[f"lr-{t}"].optim.lr / pre_lr for t in ("low", "mid", "high")] == pytest.approx([0.5, 1.0, 2.0])
    assert loaded["infinite"].schedule.name == "infinite" and loaded["infinite"].schedule.anneal_fraction == 0
    assert loaded["infinite-anneal"].schedule.anneal_fraction > 0


def test_compare_shares_work_writes_the_comparison_and_resumes(world, capsys):
    out = world["tmp"] / "cmp"
    quiz = world["tmp"] / "quiz.jsonl"
    quiz.write_text("".join(json.dumps({"question": f"which style is text {i}", "options": ["med", "gen", "none"],
                                        "answer": i % 3}) + "\n" for i in range(6)))
    recipes = [str(RECIPES / n) for n in ("naive.toml", "lr-mid.toml", "lr-high.toml", "guo-40.toml")]
    sets = overrides(world) + [f'eval.benchmarks.quiz="{quiz}"']
    args = ["compare", *recipes, "--out", str(out), *[a for s in sets for a in ("--set", s)]]
    assert continua_main(args) == 0

    curated = [p for p in (out / "curate").iterdir() if p.is_dir()]
    assert len(curated) == 1  # same sources and [curate]: scored once
    assert {p.name for p in curated[0].iterdir()} >= {"domain", "general"}
    assert (out / "naive" / "mix" / "shards" / "manifest.json").exists()
    assert (out / "guo-40" / "mix" / "shards" / "manifest.json").exists()
    assert not (out / "lr-high" / "mix").exists()  # same plan as naive: its shards are reused
    lr_high = (out / "lr-high" / "train" / "recipe.toml").read_text()
    assert str(out / "naive" / "mix") in lr_high

    result = json.loads((out / "comparison.json").read_text())
    rows = {r["run"]: r for r in result["runs"]}
    assert list(rows) == ["naive", "lr-mid", "lr-high", "guo-40"]
    # lr-mid is naive under another name (the sweep's centre point): trained once, reported twice
    assert rows["lr-mid"]["same_training_as"] == "naive" and rows["lr-high"]["same_training_as"] is None
    assert not (out / "lr-mid").exists()
    assert rows["lr-mid"]["sets"] == rows["naive"]["sets"] and rows["lr-mid"]["tokens"] == rows["naive"]["tokens"]
    assert rows["lr-high"]["shared_mix_with"] == "naive" and rows["naive"]["shared_mix_with"] is None
    for r in rows.values():
        assert r["steps"] == 6 and r["tokens"] == 6 * 4 * 32
        assert {"loss/domain", "loss/general"} <= set(r["sets"])
        assert r["sets"]["loss/domain"]["role"] == "domain" and r["sets"]["loss/general"]["role"] == "general"
        assert r["sets"]["acc/quiz"]["role"] == r["sets"]["acc_norm/quiz"]["role"] == "benchmark"
        assert r["sets"]["acc/quiz"]["final"] in {k / 6 for k in range(7)}  # accuracy over the 6 items
        assert r["sets"]["acc/quiz"]["noise"] > 0.4  # 6 items: changes under 2 SE are reported as noise
        assert all(math.isfinite(s["final"]) for s in r["sets"].values())
        assert r["train_wall_s"] > 0 and r["stage_wall_s"]["train"] > 0
    # the table holds the same numbers as the runs' own gap.json
    gap = json.loads((out / "guo-40" / "train" / "gap.json").read_text())
    assert rows["guo-40"]["sets"]["loss/domain"]["final"] == gap["sets"]["loss/domain"]["final"]
    md = (out / "comparison.md").read_text()
    assert "loss/domain (domain)" in md and "loss/general (general)" in md and "| guo-40 |" in md
    assert "acc/quiz (benchmark)" in md
    assert rows["guo-40"]["sets"]["acc/quiz"]["final"] == gap["sets"]["acc/quiz"]["final"]
    assert f"{gap['sets']['loss/domain']['final']:.4f}" in md
    assert "lr-mid has the same settings as naive" in md and "| lr-mid |" in md
    assert "naive = lr-mid" in (out / "report.md").read_text()
    assert (out / "report.md").exists() and (out / "eval_loss_domain.png").exists() and (out / "eval_loss_general.png").exists()

    # a re-run trains nothing: every run is finished with the same settings
    metrics = out / "naive" / "train" / "metrics.jsonl"
    before = metrics.stat().st_mtime_ns
    capsys.readouterr()
    assert continua_main(args) == 0
    assert metrics.stat().st_mtime_ns == before
    err = capsys.readouterr().err
    assert err.count("finished earlier, skipped") == 3 and err.count("same training settings as naive") == 1


def test_compare_rejects_two_recipes_with_one_name(world, capsys):
    naive = str(RECIPES / "naive.toml")
    sets = [a for s in overrides(world) for a in ("--set", s)]
    assert continua_main(["compare", naive, naive, "--out", str(world["tmp"] / "dup"), *sets]) == 2
    assert "is also the name of" in capsys.readouterr().err
    assert not (world["tmp"] / "dup").exists()  # validated before any work


def test_keys_ignore_new_default_fields_but_not_changed_values(world):
    """A field added to a section later, left at its default, must not make finished runs look stale."""
    import dataclasses

    from workflow.compare import curate_key, mix_key, train_key

    recipe = load_recipe(RECIPES / "naive.toml", overrides(world))
    keys = (curate_key(recipe), train_key(recipe))

    @dataclasses.dataclass
    class TrainWithNewField(type(recipe.train)):
        brand_new_knob: int = 7

    recipe.train = TrainWithNewField(**dataclasses.asdict(recipe.train))
    assert (curate_key(recipe), train_key(recipe)) == keys
    recipe.train.brand_new_knob = 8
    assert train_key(recipe) != keys[1]
    changed = load_recipe(RECIPES / "naive.toml", overrides(world) + ["optim.lr=1e-4"])
    assert train_key(changed) != keys[1] and curate_key(changed) == keys[0]
    assert mix_key(changed, keys[0]) == mix_key(load_recipe(RECIPES / "naive.toml", overrides(world)), keys[0])


def test_an_interrupted_training_makes_compare_exit_75_and_a_rerun_finishes(world, monkeypatch, capsys):
    """A signal-stopped run is 'interrupted, resumable' (75), not a failure and not a success."""
    import train.loop

    real_run = train.loop.run
    monkeypatch.setattr(train.loop, "run", lambda recipe, resume=True: {**real_run(recipe, resume=resume, stop_at=2),
                                                                        "status": "stopped"})
    out = world["tmp"] / "interrupted"
    args = ["compare", str(RECIPES / "naive.toml"), "--out", str(out),
            *[a for s in overrides(world) for a in ("--set", s)]]
    assert continua_main(args) == 75
    assert "interrupted" in capsys.readouterr().err and not (out / "comparison.json").exists()
    monkeypatch.setattr(train.loop, "run", real_run)
    assert continua_main(args) == 0 and (out / "comparison.json").exists()
