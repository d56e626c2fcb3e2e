"""A tiny end-to-end sweep (two replay shares, two model sizes, two lengths) produces the table, a
law fit with held-out errors, a recommendation written as recipe keys, and a merge front; bad
input (one-point grid, no feasible share) exits 2 with a one-line error."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
from helpers_curate import make_tokenizer, styled_texts, train_tiny_classifier, write_jsonl

from workflow.cli import main as continua_main
from workflow.sweep import _scaled_budget, grid_points, parse_grid, unequal_steps

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def _base(folder: Path, hidden: int, layers: int) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                                 num_attention_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
                     ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("sweep")
    return {"tmp": tmp, "tok": make_tokenizer(tmp / "tok"), "classifier": train_tiny_classifier(tmp),
            "small": _base(tmp / "base-s", 16, 1), "large": _base(tmp / "base-l", 32, 2),
            "med": write_jsonl(tmp / "data" / "med.jsonl", styled_texts("med", 200, 7)),
            "gen": write_jsonl(tmp / "data" / "gen.jsonl", styled_texts("gen", 160, 8))}


def _sets(w: dict) -> list[str]:
    return [f'data.tokenizer="{w["tok"]}"', f'data.sources.domain.paths=["{w["med"]}"]',
            f'data.sources.general.paths=["{w["gen"]}"]', f'curate.classifiers.quality="{w["classifier"]}"',
            "mix.valid_fraction=0.05", "mix.workers=1", "train.seq_len=32", "train.batch_size=4", "train.nproc=1", "train.threads=1",
            "train.tensorboard=false", "eval.num_evals=4", "eval.max_batches=2", "eval.batch_size=4",
            "schedule.warmup=1"]


def test_grid_parsing_names_and_budgets(world):
    assert parse_grid(["replay=0,0.25", "lr=1e-3"]) == {"replay": ["0", "0.25"], "lr": ["1e-3"]}
    assert _scaled_budget("100%", 0.1) == "10%" and _scaled_budget("2M", 0.5) == "1000000"
    pts = grid_points(RECIPES / "naive.toml", parse_grid(["replay=0,0.25", f"model={world['small']},{world['large']}"]),
                      0.5, _sets(world))
    assert [p[0] for p in pts] == ["naive-r0-base-s-f50", "naive-r0-base-l-f50", "naive-r0.25-base-s-f50",
                                   "naive-r0.25-base-l-f50"]
    assert 'mix.budget="50%"' in pts[0][1] and "mix.replay=0.25" in pts[2][1]
    for bad, msg in ((["replay"], "expected KEY=V1,V2"), (["replay=0", "replay=1"], "given twice"),
                     (["colour=red"], "unknown key")):
        with pytest.raises(ValueError, match=msg):
            parse_grid(bad)


def test_runs_of_one_budget_with_different_steps_are_named():
    runs = [{"run": "r0.25", "steps": 13, "grid": {"replay": "0.25", "fraction": 0.25}},
            {"run": "r0", "steps": 15, "grid": {"replay": "0", "fraction": 0.25}},
            {"run": "r0-f10", "steps": 6, "grid": {"replay": "0", "fraction": 0.1}},
            {"run": "r0.5-f10", "steps": 6, "grid": {"replay": "0.5", "fraction": 0.1}}]
    (line,) = unequal_steps(runs)
    assert "(fraction=0.25)" in line and "r0.25 13, r0 15" in line
    assert unequal_steps(runs[2:]) == []


def test_sweep_fit_choose_merge_end_to_end(world, capsys):
    out, fit, pick, mrg = (world["tmp"] / n for n in ("sw", "fit", "choice", "merge"))
    grid = ["--grid", "replay=0,0.5", "--grid", f"model={world['small']},{world['large']}", "--grid", "fraction=1%,2%"]
    args = ["sweep", str(RECIPES / "naive.toml"), "--out", str(out), *grid, *[a for s in _sets(world) for a in ("--set", s)]]
    assert continua_main(args) == 0
    table = json.loads((out / "sweep.json").read_text())
    assert len(table["runs"]) == 8
    sizes = sorted({r["N"] for r in table["runs"]})
    assert len(sizes) == 2 and sizes[0] < sizes[1]
    for r in table["runs"]:
        assert len(r["lrs"]) == r["steps"] and r["eval_steps"][0] == 0
        assert r["eval_steps"][-1] == r["steps"] and r["roles"] == {"loss/domain": "domain", "loss/general": "general"}
        assert all(math.isfinite(v) for v in r["losses"]["loss/domain"])
    # steps come from the plan's tokens (1% and 2% of the domain pool): every replay share and base of one
    # budget trains the same number of steps, so D is the same for all shares
    steps = {f: {r["steps"] for r in table["runs"] if r["fraction"] == f} for f in (0.01, 0.02)}
    assert all(len(v) == 1 for v in steps.values()) and steps[0.01] != steps[0.02], steps
    assert table["warnings"] == []
    rows = table["rows"]
    assert {"run", "N", "D", "replay", "lr", "schedule", "step", "loss/domain", "loss/general"} <= set(rows[0])
    assert (out / "sweep.csv").read_text().splitlines()[0].startswith("run,N,D,replay")
    last = [x for x in rows if x["run"] == table["runs"][0]["run"]][-1]
    assert last["D"] == table["runs"][0]["steps"] * 4 * 32

    # fit on the small model, hold out the large one
    assert continua_main(["law", "fit", str(out), "--out", str(fit), "--holdout", f"N>={sizes[1]}", "--boot", "4",
                          "--curves", "none"]) == 0
    res = json.loads((fit / "fit.json").read_text())
    assert len(res["heldout_runs"]) == 4
    for d in res["dcpt"]:
        assert d["fit"]["n_runs"] == 4 and len(d["heldout"]) == 4
        assert d["heldout_mae"] == pytest.approx(sum(abs(h["predicted"] - h["observed"]) for h in d["heldout"]) / 4)
    printed = capsys.readouterr().out
    assert "held-out MAE" in printed and (fit / "predicted_vs_observed.png").stat().st_size > 0

    assert continua_main(["merge", str(world["large"]), str(out / "naive-r0-base-l-f2" / "train"), "--out", str(mrg),
                          "--lambdas", "0,0.5,1"]) == 0
    m = json.loads((mrg / "merge.json").read_text())
    assert [p["lambda"] for p in m["points"]] == [0.0, 0.5, 1.0]
    run = next(r for r in table["runs"] if r["run"] == "naive-r0-base-l-f2")
    # l = 0 is the base (the run's step-0 evaluation), l = 1 the CPT export (its last evaluation)
    assert m["points"][0]["losses"]["loss/domain"] == pytest.approx(run["losses"]["loss/domain"][0], abs=1e-4)
    assert m["points"][-1]["losses"]["loss/general"] == pytest.approx(run["losses"]["loss/general"][-1], abs=1e-4)
    assert (mrg / "l0.50" / "config.json").exists()

    assert continua_main(["law", "choose", str(fit), "--tolerance", "5", "--tokens", str(run["steps"] * 4 * 32), "--out", str(pick), "--merge", str(mrg)]) == 0
    rec = tomllib.loads((pick / "recommendation.toml").read_text())
    choice = json.loads((pick / "choice.json").read_text())
    assert rec["mix"]["replay"] == choice["choice"]["replay"] and 0 <= rec["mix"]["replay"] <= 0.5
    assert rec["optim"]["lr"] == run["lr"] and rec["schedule"]["name"] == "cosine"
    assert choice["target"]["N"] == sizes[1] and choice["grid_check"] is not None
    assert (pick / "front.png").stat().st_size > 0

    capsys.readouterr()
    assert continua_main(["law", "choose", str(fit), "--tolerance", "0", "--base-general", "0.01", "--out", str(pick)]) == 2
    assert "no replay share in [0, 0.5] (the fitted runs' range) keeps the predicted loss/general within 0 nats" in capsys.readouterr().err
    assert continua_main(["sweep", str(RECIPES / "naive.toml"), "--out", str(out), "--grid", "replay=0",
                          *[a for s in _sets(world) for a in ("--set", s)]]) == 2
    assert "the grid has one point" in capsys.readouterr().err
