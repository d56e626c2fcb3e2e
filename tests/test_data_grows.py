"""Data that grows and folders that move: a file added to a scored source is refused by every later stage,
naming it, until `curate score` (no --restart) has scored it; an experiment folder copied or moved
trains on its own plan and shards, and a copied folder re-planned is refused like the original."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers_curate import make_tokenizer, styled_texts, write_chain_recipe, write_jsonl

from continua.exitcodes import FAILED, INTERRUPTED
from continua.fingerprint import StaleInputError
from continua.recipe import load_recipe
from curate.cli import main as curate_main
from mix.cli import main as mix_main
from train.cli import main as train_main
from train.preflight import check_manifest


def _recipe(path: Path, out: Path, data: Path, tok: Path) -> Path:
    return write_chain_recipe(path, out, data, tok, extra='steps = 2\n\n[curate]\ndedup = ["exact"]\n')


def _last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("grows")
    tok = make_tokenizer(root / "tok")
    data = root / "data"
    write_jsonl(data / "a.jsonl", styled_texts("med", 50, 1))
    recipe = _recipe(root / "exp" / "r.toml", root / "exp" / "out", data, tok)
    assert curate_main(["score", str(recipe)]) == 0
    assert mix_main(["plan", str(recipe)]) == 0
    assert mix_main(["build", str(recipe)]) == 0
    return {"root": root, "tok": tok, "data": data, "recipe": recipe}


def _built(experiment: dict, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the experiment's data, scored, planned and built: (its data folder, its recipe)."""
    data = tmp_path / "data"
    shutil.copytree(experiment["data"], data)
    recipe = _recipe(tmp_path / "r.toml", tmp_path / "out", data, experiment["tok"])
    assert curate_main(["score", str(recipe)]) == 0
    assert mix_main(["plan", str(recipe)]) == 0
    assert mix_main(["build", str(recipe)]) == 0
    return data, recipe


def test_a_file_added_is_refused_by_every_stage_until_scored_then_the_chain_runs(experiment, tmp_path, capsys):
    data, recipe = _built(experiment, tmp_path)
    new = write_jsonl(data / "b.jsonl", styled_texts("med", 20, 2))  # this month's file

    assert mix_main(["build", str(recipe)]) == FAILED  # the plan made before the file came
    last = _last_error(capsys)
    assert str(new) in last and "new file" in last and "`curate score`" in last
    with pytest.raises(StaleInputError, match="b.jsonl: new file"):
        check_manifest(load_recipe(recipe))  # what `train run` checks before it starts
    assert train_main(["run", str(recipe)]) == FAILED
    assert str(new) in _last_error(capsys)
    assert mix_main(["plan", str(recipe)]) == FAILED
    assert str(new) in _last_error(capsys)
    assert not (tmp_path / "out" / "mix" / "plan.json").read_text().count("b.jsonl")

    assert curate_main(["score", str(recipe)]) == 0  # no --restart: only b.jsonl is read
    assert mix_main(["plan", str(recipe)]) == 0
    plan = json.loads((tmp_path / "out" / "mix" / "plan.json").read_text())
    assert [Path(r["path"]).name for r in plan["source_files"]["med"]] == ["a.jsonl", "b.jsonl"]
    assert plan["sources"]["med"]["available"]["docs"] + plan["sources"]["med"]["valid"]["docs"] >= 70 - 10
    assert mix_main(["build", str(recipe)]) == 0
    assert train_main(["run", str(recipe)]) == 0

    new.unlink()  # and a file removed is named too
    assert mix_main(["plan", str(recipe)]) == FAILED
    assert "b.jsonl: removed" in _last_error(capsys)


def test_a_file_edited_after_a_finished_run_is_refused_and_a_touched_identical_one_is_not(experiment, tmp_path,
                                                                                           capsys):
    data, recipe = _built(experiment, tmp_path)
    assert train_main(["run", str(recipe)]) == 0
    source = data / "a.jsonl"
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched: same bytes, newer mtime
    assert train_main(["run", str(recipe)]) == 0
    capsys.readouterr()

    text = source.read_text()
    source.write_text(text.replace("patient", "Patient", 1))  # edited in place: same name, same size
    assert source.stat().st_size == len(text.encode())
    assert train_main(["run", str(recipe)]) == FAILED  # as for an added file: named, with what to re-run
    last = _last_error(capsys)
    assert str(source) in last and "changed since `mix build`" in last
    assert "`curate score`" in last and "`mix plan`" in last and "`mix build`" in last
    with pytest.raises(StaleInputError, match="a.jsonl: changed since `mix build`"):
        check_manifest(load_recipe(recipe))


def _copy(experiment, name: str) -> Path:
    root = experiment["root"]
    src, dst = root / "exp", root / name
    shutil.copytree(src, dst)
    return _recipe(dst / "r.toml", dst / "out", experiment["data"], experiment["tok"])


def test_copied_folder_trains_on_its_own_shards_and_a_replanned_copy_is_refused(experiment, capsys):
    copy = _copy(experiment, "copy")
    replanned = _copy(experiment, "copy2")
    assert mix_main(["plan", str(replanned), "--budget", "20%"]) == 0  # the copy's plan changes, not the original's
    assert train_main(["run", str(replanned)]) == FAILED
    last = _last_error(capsys)
    assert str(experiment["root"] / "copy2" / "out" / "mix" / "plan.json") in last and "re-run `mix build`" in last
    assert mix_main(["build", str(replanned)]) == 0
    assert train_main(["run", str(replanned)]) == 0
    assert train_main(["run", str(copy)]) == 0  # the untouched copy trains on its own shards
    inputs = json.loads((experiment["root"] / "copy" / "out" / "train" / "inputs.json").read_text())
    assert inputs["manifest"]["path"].startswith(str(experiment["root"] / "copy"))


def test_moved_folder_trains_and_resumes_without_rebuilding(experiment):
    root = experiment["root"]
    shutil.copytree(root / "exp", root / "before")
    shutil.move(root / "before", root / "moved")  # a move keeps every file (same inodes), the paths change
    moved = _recipe(root / "moved" / "r.toml", root / "moved" / "out", experiment["data"], experiment["tok"])
    logs: list[str] = []
    from mix.build import build_recipe

    build_recipe(load_recipe(moved), log=logs.append)
    assert logs and all("skipped" in m for m in logs)  # complete for this plan: nothing rebuilt
    assert train_main(["run", str(moved), "--set", "train.steps=4", "--stop-at", "2"]) == INTERRUPTED
    shutil.move(root / "moved", root / "moved2")
    again = _recipe(root / "moved2" / "r.toml", root / "moved2" / "out", experiment["data"], experiment["tok"])
    assert train_main(["run", str(again), "--set", "train.steps=4"]) == 0  # resumes in its new place
    metrics = (root / "moved2" / "out" / "train" / "metrics.jsonl").read_text().splitlines()
    assert max(json.loads(m).get("step", 0) for m in metrics) == 4
