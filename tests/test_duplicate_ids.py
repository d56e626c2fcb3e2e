"""Ids unique by construction; repeated id_field values an error, or the first kept and the rest rejected."""

from __future__ import annotations

import json

import polars as pl
import pytest

from continua.score_table import scan_scores
from curate.cli import main
from helpers_curate import make_tokenizer, styled_texts, write_recipe


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok") / "tok")


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_same_basename_in_two_folders_gives_distinct_ids(tmp_path, tok):
    texts = styled_texts("med", 8, 5)
    a = _write(tmp_path / "a" / "part.jsonl", [{"text": t} for t in texts[:4]])
    b = _write(tmp_path / "b" / "part.jsonl", [{"text": t} for t in texts[4:]])
    recipe = write_recipe(tmp_path / "r.toml", {"m": [a, b]}, tok)
    assert main(["score", str(recipe), "--tasks", "2"]) == 0
    ids = scan_scores(tmp_path / "out" / "curate", "m").collect()["doc_id"].sort().to_list()
    assert ids == [f"m/{d}/part.jsonl#{i}" for d in "ab" for i in range(4)]


def test_repeated_id_field_values(tmp_path, tok, capsys):
    texts = styled_texts("med", 12, 6)
    a = _write(tmp_path / "d" / "a.jsonl", [{"text": t, "uid": f"u{i}"} for i, t in enumerate(texts[:6])])
    # u1 and u4 repeat in the second file (other texts); u4 even twice
    b = _write(tmp_path / "d" / "b.jsonl", [{"text": texts[6], "uid": "u1"}, {"text": texts[7], "uid": "x7"},
                                            {"text": texts[8], "uid": "u4"}, {"text": texts[9], "uid": "u4"}])
    recipe = write_recipe(tmp_path / "r.toml", {"m": [a, b]}, tok)
    recipe.write_text(recipe.read_text().replace('paths = [', 'id_field = "uid"\npaths = [', 1)
                      .replace("[curate]\n", '[curate]\ndedup = ["exact", "minhash"]\n'))
    folder = tmp_path / "out" / "curate" / "m"
    assert main(["score", str(recipe), "--tasks", "3"]) == 1  # found after scoring: a failure, not "nothing started"
    err = capsys.readouterr().err
    assert "2 uid value(s) repeat (5 documents)" in err and "'m/u1' at " in err and "keep-first" in err
    assert f"'m/u1' at {a} line 2 and {b} line 1" in err  # 1-based lines, as every reject names them
    assert not (folder / "stats.json").exists() and not (folder / "dedup.parquet").exists()

    keep = ["--set", 'data.sources.m.duplicate_ids="keep-first"']
    assert main(["score", str(recipe), "--tasks", "3", "--restart", *keep]) == 0
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["documents_in"] == 10 and stats["scored"] == 7
    assert stats["rejected_by_reason"] == {"duplicate_id": 3}
    df = scan_scores(tmp_path / "out" / "curate", "m").collect()
    assert df["doc_id"].is_unique().all() and df.height == 7
    first = dict(zip(df["doc_id"].to_list(), df["path"].to_list()))
    assert first["m/u1"] == str(a) and first["m/u4"] == str(a)  # the first copy in input order is kept
    assert df["dup_exact"].null_count() == 0 and df["dup_minhash_keep"].null_count() == 0
    rejects = [json.loads(x) for x in (folder / "rejects" / "duplicate_ids.jsonl").open()]
    assert sorted((r["doc_id"], r["line"], r["offset"]) for r in rejects) == \
        [("m/u1", 1, None), ("m/u4", 3, None), ("m/u4", 4, None)]
    assert all(r["path"] == str(b) and f"{a} line {2 if r['doc_id'] == 'm/u1' else 5}" in r["detail"] for r in rejects)
    # a re-run resumes to the same result
    assert main(["score", str(recipe), "--tasks", "3", *keep]) == 0
    assert json.loads((folder / "stats.json").read_text()) == stats
    assert scan_scores(tmp_path / "out" / "curate", "m").collect().sort("doc_id").equals(df.sort("doc_id"))
    assert pl.read_parquet(folder / "duplicate_ids.parquet").height == 3
