"""A sequence of CPT stages in one recipe: planning each stage's blends, the trunk and its annealed branches,
blend switches, evaluation across the sequence, and resuming anywhere on any process count."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from continua.recipe import RecipeError, load_recipe
from stage_fixtures import build_stage_world, stage_recipe
from train import loop
from train.timeline import build_timeline

REPO = Path(__file__).resolve().parent.parent


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _losses(run: Path) -> dict:
    return {(r["kind"], r["stage"], r["step"]): r["loss"] for r in _rows(run) if r["kind"] in ("train", "branch_train")}


def _orders(run: Path) -> list[tuple]:
    return [(r["kind"], r["stage"], r["blend"], r["consumed"]) for r in _rows(run) if r["kind"].endswith("segment_end")]


def _recipe(path: Path, run: Path):
    return load_recipe(path, [f"train.out={json.dumps(str(run))}"])


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """The world, planned and built once (`mix plan`, `mix build` on the two-stage recipe), and one whole run."""
    from mix.cli import main as mix

    root = tmp_path_factory.mktemp("stages")
    w = build_stage_world(root)
    recipe = stage_recipe(w, root / "stages.toml")
    assert mix(["plan", str(recipe)]) == 0
    assert mix(["build", str(recipe)]) == 0
    whole = root / "whole"
    assert loop.run(_recipe(recipe, whole))["status"] == "finished"
    return {**w, "recipe": recipe, "whole": whole}


# ------------------------------------------------------------------ the recipe and the timeline


def _timeline(tmp_path: Path, world_files: dict | None = None, **kw):
    w = world_files or build_stage_world(tmp_path, docs=20)
    return build_timeline(load_recipe(stage_recipe(w, tmp_path / "r.toml", **kw)), lambda shards: 10)


def test_stage_mistakes_are_named_when_the_recipe_loads(tmp_path):
    w = build_stage_world(tmp_path, docs=20)
    cases = [
        ([{"name": "a", "domains": ["nope"]}], r"stages\[0\] names source 'nope'"),
        ([{"name": "a", "domains": ["code"], "replay": ["code"]}], "both trains and replays code"),
        ([{"name": "a", "domains": ["code"]}, {"name": "a", "domains": ["medical"]}], "'a' is used by two stages"),
        ([{"name": "a", "domains": ["code"], "mix": {"bogus": 1}}], r"unknown key 'stages\[0\]\.mix\.bogus'"),
        ([{"name": "a", "domains": ["code"], "switches": [{"at_lr": 0.5, "at_tokens": "10%"}]}], "exactly one of"),
        ([{"name": "a b", "domains": ["code"]}], "may only hold letters"),
        ([{"name": "a", "domains": ["code"], "mix": {"valid_fraction": 0.3}}], "same validation documents"),
    ]
    for stages, message in cases:
        with pytest.raises(RecipeError, match=message):
            load_recipe(stage_recipe(w, tmp_path / "r.toml", stages=stages))


def test_a_staged_recipe_reads_back_as_written(tmp_path):
    w = build_stage_world(tmp_path, docs=20)
    recipe = load_recipe(stage_recipe(w, tmp_path / "r.toml"))
    (tmp_path / "again.toml").write_text(recipe.to_toml())
    again = load_recipe(tmp_path / "again.toml")
    assert again.stages == recipe.stages
    assert [s.name for s in again.stages] == ["code", "medical"]
    assert again.stages[1].switches[0].at_tokens == "50%"


def test_the_infinite_trunk_warms_up_once_and_each_branch_anneals_from_it(tmp_path):
    t = _timeline(tmp_path)
    peak, eta_const, eta_min = 3e-3, 1.5e-3, 3e-4
    trunk = [g for g in t.segments if not g.branch]
    branches = [g for g in t.segments if g.branch]
    assert [(g.stage_name, g.first, g.last) for g in trunk] == [("code", 1, 8), ("medical", 9, 13), ("medical", 14, 16)]
    assert [(g.stage_name, g.first, g.last) for g in branches] == [("code", 9, 10), ("medical", 17, 18)]
    assert trunk[0].lr_at(1) < peak and math.isclose(max(trunk[0].lr_at(s) for s in range(1, 9)), peak)
    assert all(math.isclose(g.lr_at(s), eta_const) for g in trunk[1:] for s in range(g.first, g.last + 1))  # no re-warm
    for b in branches:
        lrs = [b.lr_at(s) for s in range(b.first, b.last + 1)]
        assert math.isclose(lrs[0], eta_const) and lrs == sorted(lrs, reverse=True) and lrs[-1] > eta_min
    assert t.stages[1].switches == [{"blend": 1, "step": 14, "segment": "trunk", "why": "after 640 tokens (50%)"}]
    assert {0, 8, 9, 16} <= t.trunk_evals(lambda n: [0, 1, n])  # each stage's cadence from its own start


def test_cosine_rewarms_and_redecays_in_every_stage_and_refuses_branches(tmp_path):
    w = build_stage_world(tmp_path, docs=20)
    cosine = {"name": "cosine", "warmup": 2, "min_lr_ratio": 0.1}
    stages = [{"name": "code", "domains": ["code"], "steps": 10}, {"name": "medical", "domains": ["medical"], "steps": 10}]
    t = _timeline(tmp_path, w, schedule=cosine, stages=stages)
    for g in t.segments:
        lrs = [g.lr_at(s) for s in range(g.first, g.last + 1)]
        assert lrs[0] == pytest.approx(1e-3) and max(lrs) == pytest.approx(3e-3)  # warmup 2: peak / 3, then the peak
        assert lrs[-1] < 0.2 * 3e-3
    branched = [{**stages[0], "anneal": 2}, stages[1]]
    with pytest.raises(ValueError, match="anneal = 2.*infinite schedule"):
        _timeline(tmp_path, w, schedule=cosine, stages=branched)


def test_a_switch_at_the_lr_falls_after_the_peak_and_one_never_reached_is_refused(tmp_path):
    w = build_stage_world(tmp_path, docs=20)
    cosine = {"name": "cosine", "warmup": 2, "min_lr_ratio": 0.1}
    stage = {"name": "code", "domains": ["code"], "steps": 10,
             "switches": [{"at_lr": 0.5, "domains": ["medical"]}]}
    t = _timeline(tmp_path, w, schedule=cosine, stages=[stage])
    (switch,) = t.stages[0].switches
    lr = t.segments[0].lr_at
    assert switch["step"] > 3 and lr(switch["step"]) <= 0.5 * 3e-3 < lr(switch["step"] - 1)  # not in the warmup
    assert t.segments[1].blend == 1 and t.segments[1].first == switch["step"]
    infinite = {"name": "infinite", "warmup": 1, "cooldown_fraction": 0.2, "eta_const_ratio": 0.6}
    with pytest.raises(ValueError, match="never does"):
        _timeline(tmp_path, w, schedule=infinite, stages=[stage])


# ------------------------------------------------------------------ planning and training


def test_each_stage_plans_its_own_blend_with_the_replay_it_names(world):
    stages = world["root"] / "out" / "mix" / "stages"
    plans = {p.parent.parent.name + "/" + p.parent.name: json.loads(p.read_text())
             for p in sorted(stages.glob("*/blend-*/plan.json"))}
    assert sorted(plans) == ["code/blend-0", "medical/blend-0", "medical/blend-1"]
    shares = {k: {s: v["share"] for s, v in p["sources"].items()} for k, p in plans.items()}
    assert shares["code/blend-0"] == pytest.approx({"code": 0.75, "general": 0.25}, abs=0.01)
    assert shares["medical/blend-0"] == pytest.approx({"medical": 0.75, "general": 0.15, "code": 0.10}, abs=0.01)
    assert shares["medical/blend-1"] == pytest.approx({"medical": 0.5, "general": 0.5}, abs=0.01)
    for k in ("code/blend-0", "medical/blend-0"):
        assert (stages / k / "shards" / "manifest.json").is_file()


def test_a_staged_run_trains_in_order_and_exports_each_branch_and_the_trunk(world):
    run = world["whole"]
    rows = _rows(run)
    segments = [(r["kind"], r["stage"], r["blend"], r["step"]) for r in rows if r["kind"].endswith("segment")]
    assert segments == [("segment", "code", 0, 1), ("branch_segment", "code", 0, 9), ("segment", "medical", 0, 9),
                        ("segment", "medical", 1, 14), ("branch_segment", "medical", 1, 17)]
    evals = [r for r in rows if r["kind"] in ("eval", "branch_eval")]
    assert all({"loss/general", "loss/code", "loss/medical"} <= set(r["metrics"]) for r in evals)  # every domain, always
    assert [(r["stage"], r["step"]) for r in evals if r["kind"] == "branch_eval"] == [("code", 10), ("medical", 18)]
    medical_lr = [r["lr"] for r in rows if r["kind"] == "train" and r["stage"] == "medical"]
    assert medical_lr and all(math.isclose(v, 1.5e-3) for v in medical_lr)  # the trunk is not re-warmed
    ends = {(r["kind"], r["stage"], r["blend"]): r["tokens_by_source"] for r in rows if r["kind"].endswith("segment_end")}
    assert set(ends[("segment_end", "medical", 1)]) == {"medical", "general"}  # after the switch: no code replay
    assert ends[("segment_end", "medical", 0)]["code"] > 0
    stages = json.loads((run / "stages.json").read_text())
    assert [(s["name"], s["trunk_steps"], s["branch_steps"]) for s in stages["stages"]] == [("code", 8, 2),
                                                                                          ("medical", 8, 2)]
    weights = {name: load_file(run / name / "model.safetensors") for name in
               ("export", "branches/code/export", "branches/medical/export")}
    key = next(k for k in weights["export"] if "layers.0" in k)
    assert not weights["export"][key].equal(weights["branches/medical/export"][key])
    assert not weights["branches/code/export"][key].equal(weights["branches/medical/export"][key])
    assert json.loads((run / "branches" / "medical" / "branch.json").read_text())["last_step"] == 18
    assert not list((run / "branches").glob("*/checkpoints/step_*"))  # a finished branch keeps its export only


def test_the_gap_and_report_of_a_sequence_start_each_stage_at_its_boundary(world):
    from train.stagereport import stage_table

    run = world["whole"]
    gap = json.loads((run / "gap.json").read_text())
    code, medical = gap["stages"]
    assert (code["stage"], code["first_step"], medical["stage"], medical["first_step"]) == ("code", 0, "medical", 8)
    for key in ("loss/code", "loss/general"):  # stage 2 starts where stage 1's trunk ended
        assert medical["sets"][key]["start"] == code["sets"][key]["final"]
    evals = {r["step"]: r["metrics"] for r in _rows(run) if r["kind"] == "branch_eval"}
    assert medical["branch"] == {"step": 18, "metrics": {k: v for k, v in evals[18].items() if k.startswith("loss/")}}
    table = stage_table(run)
    assert {(r["stage"], r["set"]) for r in table} == {(s, v) for s in ("code", "medical")
                                                      for v in ("code", "general", "medical")}
    assert (run / "stages.png").stat().st_size > 10_000


def test_a_run_stopped_anywhere_resumes_to_the_same_losses_and_sample_order(world, tmp_path):
    """Stopped mid-stage (3), where the first branch leaves the trunk (8), in it (9), at its end (10), at the
    switch (13) and in the last branch (17)."""
    run = tmp_path / "run"
    recipe = _recipe(world["recipe"], run)
    for stop in (3, 8, 9, 10, 13, 17):
        assert loop.run(recipe, stop_at=stop)["status"] == "stopped"
    assert loop.run(recipe)["status"] == "finished"
    assert _losses(run) == _losses(world["whole"])  # bit-equal on the same process count
    assert _orders(run) == _orders(world["whole"])
    assert (run / "branches" / "medical" / "export" / "config.json").is_file()


def test_a_branch_stopped_at_its_last_step_is_exported_and_the_next_stage_starts_from_the_trunk(world, tmp_path,
                                                                                                monkeypatch):
    """Stopped at the code branch's last step (10): it is exported before the exit. A process that dies after that
    step's checkpoint but before the export: the resumed run exports it, then goes back to the trunk."""
    stopped = tmp_path / "stopped"
    assert loop.run(_recipe(world["recipe"], stopped), stop_at=10)["status"] == "stopped"
    whole = load_file(world["whole"] / "branches" / "code" / "export" / "model.safetensors")
    mine = load_file(stopped / "branches" / "code" / "export" / "model.safetensors")
    assert all(mine[k].equal(whole[k]) for k in whole)

    real = loop.export_pretrained

    def dies_on_a_branch(model, dest, *args, **kw):
        if "branches" in str(dest):
            raise RuntimeError("killed")
        return real(model, dest, *args, **kw)

    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(loop, "export_pretrained", dies_on_a_branch)
        with pytest.raises(RuntimeError, match="killed"):
            loop.run(_recipe(world["recipe"], run), stop_at=10)
    assert not (run / "branches" / "code" / "branch.json").exists()
    assert loop.run(_recipe(world["recipe"], run))["status"] == "finished"
    assert _losses(run) == _losses(world["whole"])  # the medical stage went on from the trunk, not the branch
    done = json.loads((run / "branches" / "code" / "branch.json").read_text())
    assert done["metrics"]["loss/code"] == json.loads(
        (world["whole"] / "branches" / "code" / "branch.json").read_text())["metrics"]["loss/code"]


def _train_cli(recipe: Path, run: Path, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "train.cli", "run", str(recipe), "--nproc", str(nproc),
           "--set", f"train.out={json.dumps(str(run))}", *extra]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("first, then, stop", [(1, 2, 9), (2, 1, 13)])
def test_resuming_on_another_process_count_continues_the_same_sample_order(world, tmp_path, first, then, stop):
    run = tmp_path / "run"
    done = _train_cli(world["recipe"], run, first, "--stop-at", str(stop))
    assert done.returncode == 75, done.stderr[-3000:]
    done = _train_cli(world["recipe"], run, then)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _orders(run) == _orders(world["whole"])
    mine, whole = _losses(run), _losses(world["whole"])
    assert mine.keys() == whole.keys()
    assert max(abs(mine[k] - whole[k]) for k in whole) < 1e-4


def test_train_schedule_of_a_sequence_prints_every_segment_and_plots_it(world, tmp_path, capsys):
    from train.cli import main as train

    out = tmp_path / "lr.png"
    assert train(["schedule", str(world["recipe"]), "--out", str(out)]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if "blend" in line]
    assert [(w[0], w[1], w[3], w[5]) for w in lines] == [("code", "trunk", "0", "1-8"), ("code", "branch", "0", "9-10"),
                                                         ("medical", "trunk", "0", "9-13"),
                                                         ("medical", "trunk", "1", "14-16"),
                                                         ("medical", "branch", "1", "17-18")]
    assert out.stat().st_size > 10_000


def test_the_sequence_recipes_load_with_the_same_stages_and_equal_compute(world):
    """recipes/sequence/: the infinite trunk with branches and its cosine baseline, on the same stages."""
    folder = REPO / "recipes" / "sequence"
    over = [f'data.tokenizer="{world["tok"]}"', f'model.path="{world["tok"]}"']
    over += [f'data.sources.{n}.paths=["{world["files"][f]}"]' for n, f in
             (("general", "general"), ("code", "code"), ("stdlib", "medical"))]
    inf = load_recipe(folder / "infinite-branches.toml", over)
    cos = load_recipe(folder / "cosine-rewarm.toml", over)
    assert [(s.name, s.domains, s.replay) for s in inf.stages] == [(s.name, s.domains, s.replay) for s in cos.stages]
    assert (inf.schedule.name, cos.schedule.name) == ("infinite", "cosine")
    t_inf, t_cos = (build_timeline(r, lambda shards: 50) for r in (inf, cos))
    assert [s.steps for s in t_inf.stages] == [s.steps for s in t_cos.stages] == [50, 50]
    assert [s.branch_steps for s in t_inf.stages] == [10, 10] and not any(g.branch for g in t_cos.segments)


def test_compare_and_sweep_refuse_a_sequence_with_one_line(world, tmp_path):
    from workflow.compare import plan_runs
    from workflow.sweep import grid_points

    with pytest.raises(RecipeError, match=r"has \[\[stages\]\].*`continua compare` runs single-stage recipes"):
        plan_runs([world["recipe"]], tmp_path / "cmp", [])
    with pytest.raises(RecipeError, match=r"has \[\[stages\]\]: a sweep varies one stage's recipe"):
        grid_points(world["recipe"], {"replay": ["0", "0.1"]}, None, [])


def test_blends_that_hold_out_different_validation_sets_are_refused(tmp_path):
    from train.data import open_blends
    from train_fixtures import make_shards, make_tokenizer

    tok = make_tokenizer(tmp_path / "tok")
    make_shards(tmp_path / "a", tok, {"web": {"docs": 10, "role": "general"}, "med": {"docs": 10}}, valid_docs=6)
    make_shards(tmp_path / "b", tok, {"web": {"docs": 10}}, valid_docs=6)
    blends = {"one": tmp_path / "a", "two": tmp_path / "b"}
    assert set(open_blends(blends, tmp_path / "run", False, True)) == {"one", "two"}
    make_shards(tmp_path / "b", tok, {"web": {"docs": 10}}, valid_docs=4)
    with pytest.raises(ValueError, match="source 'web' holds out 6 validation documents .* in one but 4"):
        open_blends(blends, tmp_path / "run2", False, True)


def test_a_fresh_start_never_keeps_the_branches_of_an_earlier_run(world, tmp_path):
    import shutil

    run = tmp_path / "run"
    recipe = _recipe(world["recipe"], run)
    assert loop.run(recipe, stop_at=11)["status"] == "stopped"  # the code branch done, then stopped
    (run / "branches" / "code" / "branch.json").write_text('{"stage": "code", "stale": true}')
    shutil.rmtree(run / "checkpoints")  # nothing to resume from: the run starts over
    assert loop.run(recipe)["status"] == "finished"
    assert "stale" not in json.loads((run / "branches" / "code" / "branch.json").read_text())
    assert _losses(run) == _losses(world["whole"])


def test_a_resume_refuses_stages_that_changed_since_the_run_started(tmp_path):
    from train.stagerun import check_timeline

    w = build_stage_world(tmp_path, docs=20)
    recipe = load_recipe(stage_recipe(w, tmp_path / "r.toml"))
    run = tmp_path / "run"
    run.mkdir()
    check_timeline(run, build_timeline(recipe, lambda shards: 10), resuming=False, is_main=True)
    check_timeline(run, build_timeline(recipe, lambda shards: 10), resuming=True, is_main=True)  # the same: fine
    longer = recipe.replace(stages=[recipe.stages[0].__class__(**{**vars(recipe.stages[0]), "steps": 12}),
                                    recipe.stages[1]])
    with pytest.raises(ValueError, match="stages changed since this run started"):
        check_timeline(run, build_timeline(longer, lambda shards: 10), resuming=True, is_main=True)


def test_train_report_of_a_sequence_has_a_table_and_a_figure_of_its_stages(world, tmp_path):
    from train.report import write_report

    report = write_report([world["whole"]], tmp_path / "report").read_text()
    section = report.split("## Stages of `stages`", 1)[1].split("## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| code |") or line.startswith("| medical |")]
    assert len(rows) == 6 and "![stages of stages](stages_stages.png)" in section
    assert (tmp_path / "report" / "stages_stages.png").stat().st_size > 10_000


def test_each_stage_may_set_its_part_of_a_restarting_schedule_but_not_of_the_infinite_trunk(tmp_path):
    w = build_stage_world(tmp_path, docs=20)
    cosine = {"name": "cosine", "warmup": 2, "min_lr_ratio": 0.1}
    stages = [{"name": "code", "domains": ["code"], "steps": 10},
              {"name": "medical", "domains": ["medical"], "steps": 10, "lr": 1e-3,
               "schedule": {"warmup": 0, "min_lr_ratio": 0.5}}]
    t = _timeline(tmp_path, w, schedule=cosine, stages=stages)
    second = t.segments[1]
    assert second.lr_at(second.first) == pytest.approx(1e-3)  # no warmup, its own peak
    assert second.lr_at(second.last) == pytest.approx(5e-4, rel=0.05)  # decays to its own 0.5 x peak
    assert t.segments[0].lr_at(1) == pytest.approx(1e-3) and max(map(t.segments[0].lr_at, range(1, 11))) == 3e-3
    infinite = {"name": "infinite", "warmup": 1, "cooldown_fraction": 0.2}
    with pytest.raises(ValueError, match="infinite trunk is one curve"):
        _timeline(tmp_path, w, schedule=infinite, stages=stages)
    with pytest.raises(RecipeError, match=r"unknown key 'stages\[1\]\.schedule\.warmpu'"):
        _timeline(tmp_path, w, schedule=cosine, stages=[stages[0], {**stages[1], "schedule": {"warmpu": 0}}])


def test_train_run_before_mix_build_names_the_stage_folder_it_needs(tmp_path):
    from train.cli import main as train
    from train.preflight import PreflightError, preflight

    w = build_stage_world(tmp_path, docs=20)
    recipe = stage_recipe(w, tmp_path / "r.toml")
    with pytest.raises(PreflightError, match=r"stages/code/blend-0/shards/manifest\.json does not exist; run `mix "
                                             r"build` with this recipe first$"):
        preflight(load_recipe(recipe), 1)
    assert train(["run", str(recipe)]) == 2
