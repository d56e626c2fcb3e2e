"""The whole chain on a tiny corpus, through the three commands as a user runs them:
raw JSONL (with broken lines) -> curate score -> mix plan -> mix build -> train run -> report."""

from __future__ import annotations

import json

import polars as pl
import pytest
from helpers_curate import make_tokenizer, styled_texts, train_tiny_classifier, write_jsonl

from curate.cli import main as curate_main
from mix.cli import main as mix_main
from train.cli import main as train_main


def test_raw_text_to_checkpoint_with_report(tmp_path):
    tok = make_tokenizer(tmp_path / "tok")
    classifier = train_tiny_classifier(tmp_path)
    med = write_jsonl(tmp_path / "data" / "med.jsonl", styled_texts("med", 240, 7))
    with open(med, "ab") as f:  # a user's corpus is never clean
        f.write(b'{"text": "truncated\n{"title": "no text"}\n{"text": "bad \xff byte"}\n')
    gen = write_jsonl(tmp_path / "data" / "gen.jsonl", styled_texts("gen", 160, 8))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f"""
[run]
out_dir = "{tmp_path / 'out'}"
seed = 3

[data]
tokenizer = "{tok}"

[data.sources.med]
paths = ["{med}"]
role = "domain"

[data.sources.gen]
paths = ["{gen}"]
role = "general"
group = "Wikipedia"

[curate]
heuristics = ["gopher_repetition"]

[curate.classifiers]
style = "{classifier}"

[mix]
budget = "40%"
score = "fasttext_style"
top = "10%"
preset = "llama1"
valid_fraction = 0.05

[model]
hidden_size = 32
intermediate_size = 64
num_layers = 2
num_heads = 2
max_position_embeddings = 64

[optim]
lr = 3e-3

[eval]
num_evals = 4
max_batches = 2
batch_size = 4

[train]
seq_len = 32
batch_size = 4
""")
    out = tmp_path / "out"
    assert curate_main(["score", str(recipe)]) == 0
    stats = json.loads((out / "curate" / "med" / "stats.json").read_text())
    assert stats["documents_in"] == 243 and stats["rejected"] == 3
    assert stats["documents_in"] == stats["scored"] + stats["rejected"]
    rejects = [json.loads(x) for f in (out / "curate" / "med" / "rejects").glob("*.jsonl")  # one file per task
               for x in f.read_text().splitlines()]
    assert sorted(r["reason"] for r in rejects) == ["invalid_utf8", "malformed_json", "missing_text"]
    table = pl.read_parquet(out / "curate" / "med" / "scores" / "*.parquet")
    assert table.height == 240 and "fasttext_style" in table.columns and table["n_tokens"].min() > 0

    assert mix_main(["plan", str(recipe)]) == 0
    plan = json.loads((out / "mix" / "plan.json").read_text())
    assert mix_main(["build", str(recipe)]) == 0
    manifest = json.loads((out / "mix" / "shards" / "manifest.json").read_text())
    med_entry, gen_entry = manifest["sources"]["med"], manifest["sources"]["gen"]
    # 40% budget with a 10% subset: four epochs; LLaMA-1 preset: 82% domain, 18% replay
    assert med_entry["epochs"] == pytest.approx(4.0, rel=0.05)
    total = med_entry["target_tokens"] + gen_entry["target_tokens"]
    assert med_entry["target_tokens"] / total == pytest.approx(0.82, abs=0.01)
    assert total == pytest.approx(plan["budget"]["tokens"], rel=0.01)

    assert train_main(["run", str(recipe), "--set", "train.steps=12"]) == 0
    run_dir = out / "train"
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 12
    assert {"loss/med", "loss/gen"} <= set(evals[0]["metrics"])
    assert evals[-1]["metrics"]["loss/med"] < evals[0]["metrics"]["loss/med"]  # it learned the domain
    gap = json.loads((run_dir / "gap.json").read_text())
    assert {"loss/med", "loss/gen"} <= set(gap["sets"] if "sets" in gap else gap)

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run_dir / "export")
    assert model.config.num_hidden_layers == 2

    assert train_main(["report", str(run_dir), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.md").exists()
    assert list((tmp_path / "report").glob("*.png"))
