"""What `train run` tells a person while it works, and what an evaluation keeps: plain lines in a log
(loading, each evaluation and its progress, set by set), before-and-after-only evaluation, and
per-item benchmark predictions with the share of each answer."""

from __future__ import annotations

import json
import re

import pytest
from train_fixtures import two_source_shards, write_recipe

from train.cli import main
from train.gap import read_metrics


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return two_source_shards(tmp_path_factory.mktemp("data"))


def test_a_logged_run_says_what_it_does_and_keeps_per_item_predictions(tmp_path, shards, capsys, monkeypatch):
    monkeypatch.setenv("CONTINUA_PROGRESS_INTERVAL", "0")  # every progress line, not one per 30 s
    recipe = write_recipe(tmp_path / "r.toml", tmp_path / "out", shards, train={"steps": 6})
    bench = tmp_path / "yesno.jsonl"
    bench.write_text("".join(json.dumps({"question": f"is {i} even?", "context": "numbers",
                                         "answer": ["yes", "no", "yes", "maybe", "no"][i]}) + "\n" for i in range(5)))
    assert main(["run", str(recipe), "--set", "eval.every=0", "--set", "eval.before_after_only=true",
                 "--set", f"eval.benchmarks.yesno={bench}"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "[train] building a fresh Llama (2 layers" in err
    assert re.search(r"\[train\] evaluated at step 0 \(1/2\) in [\d.]+s: 2 validation sets x 8 windows, yesno 5 items", err)
    assert "evaluated at step 6 (2/2)" in err and "at step 1 " not in err
    assert "evaluating at step 0 (1/2): loss/med 1/2 batches" in err  # progress inside an evaluation
    assert "evaluating at step 0 (1/2): yesno (5 items) 1/" in err
    assert "tensorboard" not in err and "MFU" not in err

    run_dir = tmp_path / "out" / "train"
    evals = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 6]
    for r in evals:
        rows = [json.loads(x) for x in
                (run_dir / "predictions" / "yesno" / f"step_{r['step']:06d}.jsonl").read_text().splitlines()]
        assert [x["answer"] for x in rows] == ["yes", "no", "yes", "maybe", "no"]
        assert all(x["chosen"] in ("yes", "no", "maybe") and len(x["loglikelihoods"]) == 3 for x in rows)
        assert all(x["correct"] == (x["chosen"] == x["answer"]) for x in rows)
        assert r["metrics"]["acc/yesno"] == pytest.approx(sum(x["correct"] for x in rows) / 5)
        shares = {lab: r["metrics"][f"answers/yesno/{lab}"] for lab in ("yes", "no", "maybe")}
        assert shares == {lab: sum(x["chosen"] == lab for x in rows) / 5 for lab in shares}
        assert max(shares.values()) == pytest.approx(r["metrics"]["top_answer/yesno"])
