"""Between the stages: each stage checks the fingerprints of what it reads, refuses
stale or incomplete inputs with one line naming the file and what to re-run, and the commands share
one exit-code table (0 finished, 1 failed, 2 usage/recipe, 75 interrupted and resumable)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import polars as pl
import pytest
from helpers_curate import make_tokenizer, styled_texts, write_chain_recipe, write_jsonl

from continua.exitcodes import FAILED, INTERRUPTED, USAGE
from continua.recipe import RecipeError, load_recipe
from continua.tokenizer import load_tokenizer
from curate.cli import main as curate_main
from mix.cli import main as mix_main
from mix.shards import ShardSet
from train.cli import main as train_main
from train.cli import report_status


def _recipe(root: Path, med: Path, tok: Path, extra: str = "") -> Path:
    return write_chain_recipe(root / "r.toml", root / "out", med, tok, extra)


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "no error printed"
    last = err[-1]
    assert "Traceback" not in "\n".join(err)
    for n in needles:
        assert n in last, (n, last)
    return last


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """One curated, planned and built source (40% budget), shared read-only by the tests below."""
    root = tmp_path_factory.mktemp("stage-inputs")
    tok = make_tokenizer(root / "tok")
    med = write_jsonl(root / "data" / "med.jsonl", styled_texts("med", 80, 5))
    recipe = _recipe(root, med, tok)
    assert curate_main(["score", str(recipe)]) == 0
    assert mix_main(["plan", str(recipe)]) == 0
    assert mix_main(["build", str(recipe)]) == 0
    return {"root": root, "tok": tok, "med": med, "recipe": recipe, "out": root / "out"}


def test_source_edited_after_scoring_is_refused_and_nothing_wrong_is_written(scored, tmp_path, capsys):
    med, original = scored["med"], scored["med"].read_bytes()
    mix_out = tmp_path / "mix"
    sets = ["--set", f'mix.out="{mix_out}"']
    assert mix_main(["plan", str(scored["recipe"]), *sets]) == 0
    try:
        med.write_bytes(b'{"text": "a line inserted at the top"}\n' + original)  # every FILE#ROW id shifts
        assert mix_main(["build", str(scored["recipe"]), *sets]) == FAILED
        _one_line_error(capsys, str(med), "changed since `curate score`", "re-run `curate score` (it scores only")
        assert not (mix_out / "shards" / "manifest.json").exists()
        assert not (mix_out / "shards" / "med" / "complete.json").exists()

        # same size and mtime, other text: only the per-document hash can tell, and it does
        lines = original.decode().splitlines(keepends=True)
        swapped = "".join(reversed(lines))  # the documents change places: every FILE#ROW names another text
        assert len(swapped.encode()) == len(original)
        med.write_bytes(swapped.encode())
        recorded = json.loads((scored["out"] / "curate" / "med" / "fingerprint.json").read_text())["inputs"][0]
        os.utime(med, ns=(recorded["mtime_ns"], recorded["mtime_ns"]))
        assert mix_main(["build", str(scored["recipe"]), *sets]) == FAILED
        _one_line_error(capsys, str(med), "is not the text `curate score` scored")
        assert not (mix_out / "shards" / "manifest.json").exists()
    finally:
        med.write_bytes(original)  # restored: a new mtime, the same content
    assert mix_main(["build", str(scored["recipe"]), *sets]) == 0
    # the shards hold exactly the planned texts, validation documents only in validation shards
    tok = load_tokenizer(scored["tok"])
    texts = {f"med/med.jsonl#{i}": json.loads(line)["text"] for i, line in enumerate(original.decode().splitlines())}
    sel = pl.read_parquet(mix_out / "selection.parquet")
    for split in ("train", "valid"):
        ids = sel.filter(pl.col("split") == split)["doc_id"].to_list()
        want = sorted(tuple(x) for x in tok.encode_batch([texts[d] for d in ids]))
        shards = ShardSet.open(mix_out / "shards" / "med" / split)
        assert sorted(tuple(shards.doc(i).tolist()) for i in range(shards.num_docs)) == want


def test_complete_shards_are_checked_against_their_fingerprints(scored, capsys):
    from mix.build import build_recipe

    recipe = load_recipe(scored["recipe"])
    shard = scored["out"] / "mix" / "shards" / "med" / "train" / "00000.ds"
    good = shard.read_bytes()
    shard.write_bytes(good[::-1])  # same size, other bytes
    logs: list[str] = []
    build_recipe(recipe, log=logs.append)
    assert not any("skipped" in m for m in logs)  # rebuilt, not kept
    assert shard.read_bytes() == good


def test_train_refuses_shards_of_an_earlier_plan(scored, tmp_path, capsys):
    sets = ["--set", f'mix.out="{tmp_path / "mix"}"', "--set", f'train.out="{tmp_path / "run"}"',
            "--set", "train.steps=0"]
    assert mix_main(["plan", str(scored["recipe"]), *sets]) == 0  # 40%
    assert mix_main(["build", str(scored["recipe"]), *sets]) == 0
    assert mix_main(["plan", str(scored["recipe"]), *sets, "--budget", "10%"]) == 0
    plan = tmp_path / "mix" / "plan.json"
    assert train_main(["schedule", str(scored["recipe"]), *sets, "--out", str(tmp_path / "lr.png")]) == FAILED
    _one_line_error(capsys, str(plan), "changed since `mix build`", "re-run `mix build`")
    assert train_main(["run", str(scored["recipe"]), *sets]) == FAILED
    _one_line_error(capsys, str(plan), "re-run `mix build`")
    assert not (tmp_path / "run" / "metrics.jsonl").exists() and not (tmp_path / "lr.png").exists()


def _edited_copy(scored, tmp_path: Path, name: str, edit) -> Path:
    """A copy of the built mix folder whose `name` (manifest or plan) `edit` changed in place."""
    import shutil

    mix = tmp_path / "mix"
    shutil.copytree(scored["out"] / "mix", mix)
    path = mix / ("shards/manifest.json" if name == "manifest" else "plan.json")
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m["sources"]["med"]["valid"].pop("docs"), "missing key 'sources.med.valid.docs'"),
    (lambda m: m["sources"]["med"].pop("train"), "missing key 'sources.med.train'"),
    (lambda m: m["sources"]["med"].update(target_tokens="7096"), "key 'sources.med.target_tokens' must be an integer"),
    (lambda m: m["sources"]["med"]["train"].update(shards="med/train/00000.ds"),
     "key 'sources.med.train.shards' must be an array"),
    (lambda m: m.update(sources=[]), "key 'sources' must be an object"),
    (lambda m: m["inputs"][0].pop("hash"), "missing key 'inputs[0].hash'"),
])
def test_a_manifest_of_the_wrong_shape_is_one_line_naming_the_key(scored, tmp_path, capsys, edit, needle):
    from continua.io import DamagedFileError
    from mix.manifest import Manifest

    path = _edited_copy(scored, tmp_path, "manifest", edit)
    sets = ["--set", f'mix.out="{tmp_path / "mix"}"', "--set", f'train.out="{tmp_path / "run"}"']
    assert train_main(["run", str(scored["recipe"]), *sets]) == FAILED
    _one_line_error(capsys, str(path), needle, "re-run `mix build`")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    with pytest.raises(DamagedFileError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        Manifest.load(path.parent)


@pytest.mark.parametrize("edit, needle", [
    (lambda p: p["sources"]["med"].pop("valid"), "missing key 'sources.med.valid'"),
    (lambda p: p["sources"]["med"]["selected"].update(tokens=None), "key 'sources.med.selected.tokens' must be an "
                                                                    "integer, got null"),
    (lambda p: p["budget"].update(tokens="40%"), "key 'budget.tokens' must be an integer"),
    (lambda p: p.pop("sources"), "missing key 'sources'"),
])
def test_a_plan_of_the_wrong_shape_is_one_line_naming_the_key(scored, tmp_path, capsys, edit, needle):
    path = _edited_copy(scored, tmp_path, "plan", edit)
    assert mix_main(["show", str(path), "--out", str(tmp_path / "plan.png")]) == FAILED
    _one_line_error(capsys, str(path), needle, "re-run `mix plan`")
    assert mix_main(["build", str(scored["recipe"]), "--set", f'mix.out="{tmp_path / "mix"}"']) == FAILED
    _one_line_error(capsys, str(path), needle, "re-run `mix plan`")
    assert not (tmp_path / "plan.png").exists()


def test_plan_refuses_a_score_run_killed_before_its_dedup_step(tmp_path, monkeypatch, capsys):
    import curate.dedup

    tok = make_tokenizer(tmp_path / "tok")
    texts = styled_texts("med", 40, 2)
    med = write_jsonl(tmp_path / "med.jsonl", texts + texts[:6])  # six exact duplicates
    recipe = _recipe(tmp_path, med, tok, extra='\n[curate]\ndedup = ["exact"]\n')

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(curate.dedup, "write_marks", killed)
    assert curate_main(["score", str(recipe)]) == INTERRUPTED
    assert (tmp_path / "out" / "curate" / "med" / "stats.json").exists()  # scores and stats are there
    assert mix_main(["plan", str(recipe)]) == FAILED
    _one_line_error(capsys, str(tmp_path / "out" / "curate" / "med" / "dedup.parquet"), "re-run `curate score`")
    assert not (tmp_path / "out" / "mix" / "plan.json").exists()
    monkeypatch.undo()
    assert curate_main(["score", str(recipe)]) == 0  # resumes: only the dedup step is left
    assert mix_main(["plan", str(recipe)]) == 0
    plan = json.loads((tmp_path / "out" / "mix" / "plan.json").read_text())
    removed = plan["sources"]["med"]["removed"]
    assert removed["marked"] > 0 and removed["marked"] + removed["valid_copies"] == 6  # curate's marks are used


def test_system_errors_are_one_line_naming_the_path(scored, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be\n")
    out = blocker / "out"
    recipe = scored["recipe"]
    assert curate_main(["score", str(recipe), "--out", str(out / "curate")]) == FAILED
    _one_line_error(capsys, str(blocker), "Not a directory")
    assert mix_main(["plan", str(recipe), "--set", f'mix.out="{out / "mix"}"']) == FAILED
    _one_line_error(capsys, str(blocker), "Not a directory")
    assert train_main(["run", str(recipe), "--set", f'train.out="{out / "train"}"']) == FAILED
    _one_line_error(capsys, str(blocker), "Not a directory")
    from workflow.cli import main as continua_main

    assert continua_main(["compare", str(recipe), "--out", str(out / "cmp")]) == FAILED
    _one_line_error(capsys, str(blocker), "Not a directory")

    def full(fd):  # a full disk fails the write, with no file name of its own
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    assert mix_main(["plan", str(recipe), "--set", f'mix.out="{tmp_path / "mix"}"']) == FAILED
    _one_line_error(capsys, str(tmp_path / "mix"), "No space left on device")
    assert not (tmp_path / "mix" / "plan.json").exists()


def test_exit_codes_tell_finished_from_interrupted(scored, tmp_path, capsys):
    assert report_status("finished") == 0
    assert report_status("stopped") == report_status("interrupted") == INTERRUPTED
    run = ["run", str(scored["recipe"]), "--set", f'train.out="{tmp_path / "run"}"', "--set", "train.steps=4"]
    assert train_main([*run, "--stop-at", "1"]) == INTERRUPTED  # a time slice is not "finished"
    assert (tmp_path / "run" / "inputs.json").exists()
    # a recipe error is 2 for train as for curate and mix
    assert train_main([*run, "--set", "optim.lr=nan"]) == USAGE
    _one_line_error(capsys, "optim.lr", "finite")
    # the shards change under a run that is not finished: resuming would train on other data
    manifest = scored["out"] / "mix" / "shards" / "manifest.json"
    saved = manifest.read_bytes()
    try:
        manifest.write_text(saved.decode().replace('"seed": 1', '"seed": 1 '))
        assert train_main(run) == FAILED
        _one_line_error(capsys, str(manifest), "--no-resume")
    finally:
        manifest.write_bytes(saved)
    assert train_main(run) == 0


@pytest.mark.parametrize("override,key", [("optim.lr=nan", "optim.lr"), ("optim.lr=inf", "optim.lr"),
                                          ("optim.lr=-inf", "optim.lr"), ("mix.replay=nan", "mix.replay"),
                                          ("train.steps=-1", "steps"), ("train.seq_len=0", "seq_len"),
                                          ("train.batch_size=0", "batch_size"), ("curate.workers=-1", "workers")])
def test_validation_names_the_key(tmp_path, override, key):
    path = tmp_path / "r.toml"
    path.write_text("[run]\nout_dir = \"out\"\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(path, [override])
    assert key in str(e.value) and "\n" not in str(e.value)
    if key == "steps":
        assert "seq_len" not in str(e.value)


def test_bare_budget_from_the_command_line_is_a_usage_error(scored, capsys):
    assert mix_main(["plan", str(scored["recipe"]), "--budget", "40"]) == USAGE
    _one_line_error(capsys, "did you mean '40%'")
