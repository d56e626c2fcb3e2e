"""The score table as `continua.score_table` declares it: what `curate score` writes is what mix reads."""

from __future__ import annotations

import polars as pl
from helpers_curate import make_tokenizer, styled_texts, write_jsonl, write_recipe

from continua.score_formula import score_columns, score_expr
from continua.score_table import BASE_SCHEMA, score_files, scan_scores
from curate.cli import main as curate_main


def test_curate_score_writes_the_declared_base_columns_and_types(tmp_path):
    med = write_jsonl(tmp_path / "data" / "med.jsonl", styled_texts("med", 12, 3))
    recipe = write_recipe(tmp_path / "r.toml", {"med": [med]}, make_tokenizer(tmp_path / "tok"), heuristics=["gopher_quality"])
    assert curate_main(["score", str(recipe), "--tasks", "2", "--workers", "1"]) == 0
    curate = tmp_path / "out" / "curate"
    files = score_files(curate, "med")
    assert files
    for f in files:
        schema = pl.read_parquet_schema(f)
        assert {c: schema[c] for c in BASE_SCHEMA} == BASE_SCHEMA, f
    table = scan_scores(curate, "med").collect()
    assert table.height == 12 and table["doc_id"].n_unique() == 12
    # a formula over the table's numeric columns ranks with polars, nothing evaluated as Python
    usable = score_columns(dict(table.schema))
    assert "n_tokens" in usable and "doc_id" not in usable
    ranked = table.select(score_expr("n_tokens / n_chars", usable).alias("s"))["s"]
    assert ranked.to_list() == (table["n_tokens"] / table["n_chars"]).to_list()
