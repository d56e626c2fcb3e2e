"""What the commands default to and print: versions, defaults that fit the machine, quiet logs, and what tables say."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import polars as pl
import pytest

from continua.recipe import load_recipe
from continua.schema import RecipeError


@pytest.mark.parametrize("module", ["curate.cli", "mix.cli", "train.cli", "workflow.cli"])
def test_version_on_every_command(module, capsys):
    import importlib

    parser = importlib.import_module(module).build_parser()
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{parser.prog}: continua 0.1.0, python ") and "datatrove " in out and "torch " in out


def test_curate_tasks_and_workers_default_to_available_cores(tmp_path, monkeypatch):
    import curate.cores as cc

    monkeypatch.setattr(cc, "available_cores", lambda: 6)
    recipe = tmp_path / "r.toml"
    recipe.write_text("[run]\nout_dir = \"out\"\n")
    cur = load_recipe(recipe).curate
    assert (cur.tasks, cur.workers) == (0, 0) and cc.parallelism(cur) == (6, 6)
    assert cc.parallelism(cur, tasks=2) == (2, 2) and cc.parallelism(cur, tasks=12, workers=3) == (12, 3)
    cur.executor = "slurm"
    assert cc.parallelism(cur) == (1, 1)  # a cluster job's size is the user's choice, not the login node's
    with pytest.raises(RecipeError, match=r"tasks must be >= 0 \(0 = one per available core\)"):
        load_recipe(recipe, ["curate.tasks=-1"])


def test_only_training_needs_the_model_file(tmp_path):
    from train.preflight import PreflightError, check_inputs

    recipe = tmp_path / "r.toml"
    recipe.write_text('[run]\nout_dir = "out"\n[model]\npath = "models/not-downloaded-yet"\n')
    r = load_recipe(recipe)  # curate, mix, train schedule/report read this recipe fine
    assert r.model.path == (tmp_path / "models" / "not-downloaded-yet").resolve()
    with pytest.raises(PreflightError, match=r"key 'model\.path' names a path that does not exist"):
        check_inputs(r)  # `train run` calls it (train.preflight) before torchrun starts any process
    (tmp_path / "models" / "not-downloaded-yet").mkdir(parents=True)
    check_inputs(load_recipe(recipe))  # seq_len against the model's positions: tests/test_train_models.py


def test_schedule_png_goes_under_the_run_out_dir(tmp_path, monkeypatch, capsys):
    from train.commands import add_eval_commands

    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[run]\nout_dir = "runs/a"\n[train]\nsteps = 50\n')
    parser = argparse.ArgumentParser(prog="train")
    add_eval_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["schedule", str(recipe)])
    assert args.func(args) == 0
    assert (tmp_path / "runs" / "a" / "lr_schedule.png").stat().st_size > 1000
    assert not (tmp_path / "lr.png").exists() and not (tmp_path / "lr_schedule.png").exists()


def test_report_prints_its_tables(tmp_path, capsys):
    from tests.test_report import fake_run
    from train.commands import add_eval_commands

    run = fake_run(tmp_path / "a" / "train", "rewarm", [3.0, 3.3, 2.9, 2.6], [2.0, 2.5, 2.3, 2.2],
                   [0.30, 0.25, 0.31, 0.33], 3e-4, 95.0)
    parser = argparse.ArgumentParser(prog="train")
    add_eval_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(run)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "Overview" in out and "rewarm" in out and "2.6000" in out and "forgetting" in out
    assert "wrote" in out and "![" not in out


def test_progress_says_what_evaluation_costs(monkeypatch):
    import train.metrics as tm

    clock = iter([0.0, 10.0, 14.0, 20.0, 24.0, 40.0])
    monkeypatch.setattr(tm.time, "perf_counter", lambda: next(clock))
    p = tm.Progress(100, 0, enabled=False, n_evals=5)
    p.eval_start(0)
    assert p.eval_end() == 4.0
    p.eval_start(10)
    assert p.eval_end() == 4.0
    assert p.eval_cost() == "4.0s x 2/5 (20% of time)"  # 8 s of the 40 s so far


def test_heuristic_pass_rates_in_stats(tmp_path):
    from curate.stats import format_pass_rates, heuristic_pass_rates, run_stats

    scores = tmp_path / "curate" / "med" / "scores"
    scores.mkdir(parents=True)
    pl.DataFrame({"doc_id": [str(i) for i in range(8)], "n_tokens": [10] * 8, "n_chars": [50] * 8,
                  "heur_gopher_quality_pass": [True, True, False, True, False, True, True, False],
                  "heur_gopher_quality_reason": ["", "", "gopher_short_doc", "", "gopher_short_doc", "", "",
                                                 "gopher_below_alpha_threshold"],
                  }).write_parquet(scores / "00000.parquet")
    rates = heuristic_pass_rates(pl.scan_parquet(scores / "00000.parquet"))
    assert rates == {"gopher_quality": {"pass": 0.625, "top_failure": {"reason": "gopher_short_doc", "share": 0.25}}}
    assert format_pass_rates(rates) == "gopher_quality 62.5% (most fail gopher_short_doc: 25.0%)"
    out = run_stats(tmp_path / "curate", ["med"])
    assert out["sources"]["med"]["heuristics"]["gopher_quality"]["pass"] == 0.625
    assert "gopher_quality 62.5%" in (tmp_path / "curate" / "stats.md").read_text()


def _quiet_pipeline(tmp_path: Path, verbose: bool):
    from datatrove.data import Document
    from datatrove.pipeline.base import PipelineStep

    from curate.logs import QuietLocalExecutor

    class Echo(PipelineStep):
        name = "echo"

        def run(self, data, rank=0, world_size=1):
            from loguru import logger

            logger.info(f"echo task {rank} says hello")
            yield from [Document(text="x", id=str(rank))]

    return QuietLocalExecutor([Echo()], tasks=2, workers=1, logging_dir=str(tmp_path / "logs"), verbose=verbose)


@pytest.mark.parametrize("workers", [1, 2])
def test_datatrove_console_is_quiet_unless_verbose(tmp_path, capfd, workers):
    ex = _quiet_pipeline(tmp_path / "q", verbose=False)
    ex.workers = workers
    ex.run()
    err = capfd.readouterr().err
    assert "says hello" not in err and "Launching pipeline" not in err and "Stats" not in err
    assert "tasks completed" not in err
    logs = (tmp_path / "q" / "logs" / "logs" / "task_00001.log").read_text()
    assert "echo task 1 says hello" in logs  # the full log is in the file
    if workers > 1:
        return
    _quiet_pipeline(tmp_path / "v", verbose=True).run()
    assert "echo task 0 says hello" in capfd.readouterr().err


def test_classifier_epochs_fit_the_data_so_scores_spread(tmp_path):
    from curate.classifier import TrainParams, auto_epochs, train_classifier

    assert (auto_epochs(100_000), auto_epochs(5_400), auto_epochs(540), auto_epochs(10)) == (5, 6, 56, 100)
    rng = random.Random(0)
    a = [f"w{i}" for i in range(40)]
    b = [f"v{i}" for i in range(40)]
    shared = [f"s{i}" for i in range(40)]

    def doc(own):
        return " ".join(rng.choice(own if rng.random() < 0.3 else shared) for _ in range(60))

    pos, neg = [doc(a) for _ in range(150)], [doc(b) for _ in range(150)]
    short = train_classifier(pos, neg, tmp_path / "short.bin", TrainParams(epochs=5, threads=1))
    auto = train_classifier(pos, neg, tmp_path / "auto.bin", TrainParams(threads=1))
    assert auto["params"]["epochs"] == auto_epochs(270) == 100 and auto["params"]["bucket"] == 200_000
    q_short, q_auto = short["held_out"]["score_quantiles"], auto["held_out"]["score_quantiles"]
    assert q_short["positive"][1] - q_short["negative"][1] < 0.05  # 5 epochs: every score near 0.5
    assert q_auto["positive"][1] > 0.9 and q_auto["negative"][1] < 0.1
    assert auto["held_out"]["roc_auc"] >= short["held_out"]["roc_auc"]
    assert (tmp_path / "auto.bin").stat().st_size < 30 * 2**20


def test_mix_plan_table_says_how_often_each_document_repeats(tmp_path):
    from rich.console import Console

    sys.path.insert(0, str(Path(__file__).parent))
    from mix_fixtures import build_world, write_recipe

    from mix.planner import make_plan
    from mix.show import plan_table

    world = build_world(tmp_path, n_domain=600, n_general=300)
    r = load_recipe(write_recipe(tmp_path / "r.toml", world["sources"], world["tok"],
                                 mix={"budget": "40%", "top": "10%", "score": "fasttext_q", "preset": "llama1"}))
    plan = make_plan(r, log=lambda m: None).plan
    d = plan["sources"]["domain"]
    seen = d["target_tokens"] / d["selected"]["tokens"]
    assert d["epochs"] == pytest.approx(4.0, rel=0.03) and seen == pytest.approx(0.82 * 4, rel=0.03)
    console = Console(width=250, record=True)
    console.print(plan_table(plan))
    text = console.export_text()
    assert "each doc seen" in text and f"{d['epochs']:.2f}" in text and f"{seen:.2f}x" in text
