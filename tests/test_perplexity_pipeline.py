"""End to end: train-reference -> curate score adds ppl_ngram_NAME -> select keeps the CCNet head bucket."""

from __future__ import annotations

import json

import polars as pl

from curate.cli import main as curate_main
from helpers_curate import make_tokenizer, styled_texts, write_jsonl, write_recipe


def test_reference_perplexity_through_score_and_select(tmp_path):
    ref = write_jsonl(tmp_path / "ref.jsonl", styled_texts("med", 200, 1))
    mixed = write_jsonl(tmp_path / "mixed.jsonl", styled_texts("med", 30, 7) + styled_texts("gen", 30, 8))
    model = tmp_path / "ref.npz"
    assert curate_main(["train-reference", "--ref", str(ref), "--out", str(model), "--order", "3"]) == 0
    recipe = write_recipe(tmp_path / "recipe.toml", {"web": [mixed]}, make_tokenizer(tmp_path / "tok"), extra=(
        f'[curate.ngram_references]\nmed = {json.dumps(str(model))}\n[curate.buckets]\nppl_ngram_med = [30, 60]\n'))
    assert curate_main(["score", str(recipe)]) == 0
    scores = pl.read_parquet(tmp_path / "out/curate/web/scores/*.parquet")
    assert scores.height == 60 and scores["ppl_ngram_med"].is_finite().all()
    med = scores.filter(pl.col("row") < 30)["ppl_ngram_med"]
    gen = scores.filter(pl.col("row") >= 30)["ppl_ngram_med"]
    assert med.max() < gen.min()  # every medical-style document is closer to the reference
    assert curate_main(["select", str(recipe), "--source", "web", "--bucket", "ppl_ngram_med=head"]) == 0
    kept = pl.read_parquet(tmp_path / "out/curate/web/selection.parquet").filter(pl.col("kept"))
    rows = kept.join(scores, on="doc_id")["row"]
    assert kept.height == 18 and rows.max() < 30  # the head is 30% of the table, all medical-style
