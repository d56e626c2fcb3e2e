"""`curate score`: columns and counts, rejects, empty input, resume equality."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from continua.recipe import load_recipe
from continua.score_table import scan_scores, text_hash
from continua.tokenizer import load_tokenizer
from curate.cli import main
from helpers_curate import make_tokenizer, styled_texts, train_tiny_classifier, write_jsonl, write_recipe


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("assets")
    return {"tokenizer": make_tokenizer(tmp / "tok"), "model": train_tiny_classifier(tmp)}


def _bad_file(path: Path) -> Path:
    write_jsonl(path, styled_texts("med", 20, 3))
    with open(path, "ab") as f:
        f.write(b'{"text": "unterminated\n')          # malformed JSON
        f.write(b'{"body": "no text field here"}\n')  # missing text field
        f.write(b'{"text": "caf\xe9 latin-1"}\n')     # invalid UTF-8
    return path


def _sorted_table(out: Path, source: str) -> pl.DataFrame:
    return scan_scores(out / "curate", source).collect().sort("doc_id")


def test_score_columns_counts_and_rejects(tmp_path, assets):
    med = _bad_file(tmp_path / "data" / "med.jsonl")
    gen = write_jsonl(tmp_path / "data" / "gen.jsonl", styled_texts("gen", 15, 3))
    recipe = write_recipe(tmp_path / "r.toml", {"med": [med], "gen": [gen]}, assets["tokenizer"],
                          {"style": assets["model"]}, ["gopher_quality", "gopher_repetition", "c4", "fineweb"])
    assert main(["score", str(recipe), "--tasks", "2", "--workers", "1"]) == 0
    out = tmp_path / "out" / "curate"

    df = _sorted_table(tmp_path / "out", "med")
    assert df.height == 20
    for col in ("doc_id", "source", "path", "row", "n_chars", "n_tokens", "text_hash", "fasttext_style",
                "heur_gopher_quality_pass", "heur_gopher_quality_reason", "heur_gopher_repetition_pass",
                "heur_c4_pass", "heur_fineweb_pass", "heur_fineweb_reason"):
        assert col in df.columns, col
    assert df.schema["n_tokens"] == pl.Int64 and df.schema["fasttext_style"] == pl.Float64
    assert df.schema["heur_c4_pass"] == pl.Boolean
    # every reason is "" exactly when the document passes
    for g in ("gopher_quality", "gopher_repetition", "c4", "fineweb"):
        assert (df[f"heur_{g}_pass"] == (df[f"heur_{g}_reason"] == "")).all()
    # values agree with the shared tokenizer and hash, row by row
    texts = styled_texts("med", 20, 3)
    tok = load_tokenizer(assets["tokenizer"])
    first = df.filter(pl.col("row") == 0).row(0, named=True)
    assert first["doc_id"] == "med/med.jsonl#0"
    assert first["n_chars"] == len(texts[0])
    assert first["n_tokens"] == tok.count_batch([texts[0]])[0]
    assert first["text_hash"] == text_hash(texts[0])
    # the classifier separates the styles
    gen_df = _sorted_table(tmp_path / "out", "gen")
    assert df["fasttext_style"].mean() > 0.8 > 0.2 > gen_df["fasttext_style"].mean()

    stats = json.loads((out / "med" / "stats.json").read_text())
    assert stats["documents_in"] == 23 == stats["scored"] + stats["rejected"]
    assert stats["rejected_by_reason"] == {"invalid_utf8": 1, "malformed_json": 1, "missing_text": 1}
    rejects = [json.loads(line) for f in sorted((out / "med" / "rejects").glob("*.jsonl"))
               for line in f.read_text().splitlines()]
    assert sorted(r["reason"] for r in rejects) == ["invalid_utf8", "malformed_json", "missing_text"]
    assert {r["line"] for r in rejects} == {21, 22, 23} and all(r["path"] == str(med) for r in rejects)
    assert json.loads((out / "gen" / "stats.json").read_text())["rejected"] == 0


def test_empty_file_is_an_error_naming_it(tmp_path, assets, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    recipe = write_recipe(tmp_path / "r.toml", {"e": [empty]}, assets["tokenizer"])
    assert main(["score", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "empty" in err


def test_an_empty_file_in_a_folder_is_skipped_with_a_note_unless_it_is_all_there_is(tmp_path, assets, caplog, capsys):
    import logging

    folder = tmp_path / "corpus"
    write_jsonl(folder / "a.jsonl", styled_texts("gen", 5, 1))
    (folder / "b.jsonl").write_text("")
    recipe = write_recipe(tmp_path / "r.toml", {"e": [folder]}, assets["tokenizer"])
    with caplog.at_level(logging.WARNING, logger="continua.inputs"):
        assert main(["score", str(recipe), "--tasks", "1", "--workers", "1"]) == 0
    assert "skipped 1 empty file(s)" in caplog.text and "b.jsonl" in caplog.text
    stats = json.loads((tmp_path / "out" / "curate" / "e" / "stats.json").read_text())
    assert stats["documents_in"] == stats["scored"] == 5
    only = tmp_path / "only"
    only.mkdir()
    (only / "c.jsonl").write_text("")
    recipe = write_recipe(tmp_path / "o" / "r.toml", {"o": [only]}, assets["tokenizer"])
    capsys.readouterr()
    assert main(["score", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("curate score: error: ") and str(only) in err and "empty: c.jsonl" in err, err


def test_missing_classifier_is_an_error(tmp_path, assets, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", styled_texts("gen", 3, 0))
    recipe = write_recipe(tmp_path / "r.toml", {"d": [data]}, assets["tokenizer"], {"q": tmp_path / "nope.bin"})
    assert main(["score", str(recipe)]) == 2
    assert "nope.bin" in capsys.readouterr().err


def test_resume_after_crash_equals_clean_run(tmp_path, assets):
    data = write_jsonl(tmp_path / "d.jsonl", styled_texts("med", 30, 7) + styled_texts("gen", 30, 7))
    clean = write_recipe(tmp_path / "clean" / "r.toml", {"d": [data]}, assets["tokenizer"],
                         {"style": assets["model"]}, ["gopher_quality"])
    crashy = write_recipe(tmp_path / "crashy" / "r.toml", {"d": [data]}, assets["tokenizer"],
                          {"style": assets["model"]}, ["gopher_quality"])
    pieces = ["--set", "data.sources.d.piece_bytes=2000"]  # the file is read in several pieces
    assert main(["score", str(clean), "--tasks", "4", "--workers", "2", *pieces]) == 0  # parallel workers
    assert main(["score", str(crashy), "--tasks", "4", *pieces]) == 0
    folder = tmp_path / "crashy" / "out" / "curate" / "d"
    tables = sorted((folder / "scores").glob("*.parquet"))
    assert len(tables) >= 4
    # a crash while scoring one piece: its table and counts never got written
    lost = tables[2]
    lost.unlink()
    (folder / "counts" / f"{lost.stem}.json").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "scores").glob("*.parquet")}
    assert main(["score", str(crashy), "--tasks", "3", *pieces]) == 0  # another task count: same pieces
    after = {p.name: p.stat().st_mtime_ns for p in (folder / "scores").glob("*.parquet")}
    assert {k: after[k] for k in before} == before  # finished pieces were skipped, not redone
    assert lost.name in after
    a, b = _sorted_table(tmp_path / "clean" / "out", "d"), _sorted_table(tmp_path / "crashy" / "out", "d")
    assert a.height == 60 and a.drop("path").equals(b.drop("path"))
    assert json.loads((folder / "stats.json").read_text())["scored"] == 60


def test_changed_settings_refuse_to_resume_until_restart(tmp_path, assets, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", styled_texts("gen", 6, 1))
    recipe = write_recipe(tmp_path / "r.toml", {"d": [data]}, assets["tokenizer"], None, ["gopher_quality"])
    assert main(["score", str(recipe)]) == 0
    assert main(["score", str(recipe), "--set", 'curate.heuristics=["c4"]']) == 2
    assert "--restart" in capsys.readouterr().err
    assert main(["score", str(recipe), "--set", 'curate.heuristics=["c4"]', "--restart"]) == 0
    df = scan_scores(tmp_path / "out" / "curate", "d").collect()
    assert "heur_c4_pass" in df.columns and "heur_gopher_quality_pass" not in df.columns


def test_pipeline_pickles_without_models(tmp_path, assets):
    import pickle

    from curate.pipeline import build_steps

    data = write_jsonl(tmp_path / "d.jsonl", styled_texts("gen", 3, 1))
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", {"d": [data]}, assets["tokenizer"],
                                      {"style": assets["model"]}, ["gopher_quality"]))
    steps = build_steps(recipe, "d", tmp_path / "c" / "d")
    ft = steps[2]
    _ = ft.model  # loaded in this process ...
    blob = pickle.dumps(steps)
    assert len(blob) < 100_000  # ... but the model (MBs) does not travel to workers
    assert pickle.loads(blob)[2]._model is None


def test_offline_word_splitter_keeps_numbers_and_abbreviations_whole():
    from curate.heuristics import RegexWordTokenizer

    words = RegexWordTokenizer().word_tokenize("The U.S. spent 3.5 billion... on well-known things, 1,234 of them.")
    assert words == ["The", "U.S.", "spent", "3.5", "billion", "...", "on", "well", "-", "known", "things", ",",
                     "1,234", "of", "them", "."]


def test_heuristic_step_records_without_dropping_or_rewriting():
    from datatrove.data import Document

    from curate.heuristics import HeuristicSignals

    good = " ".join(["The patient was treated with the new therapy and recovered."] * 3) + "\n" + \
        "\n".join(f"Line {i} of the report is a full sentence with the usual words." for i in range(8))
    bad = "The function { returns } a value." * 5
    docs = [Document(text=good, id="a", metadata={}), Document(text=bad, id="b", metadata={})]
    out = list(HeuristicSignals("c4").run(iter(docs)))
    assert [d.id for d in out] == ["a", "b"] and out[0].text == good and out[1].text == bad  # C4 rewrites lines
    assert out[0].metadata["heur_c4_pass"] is True and out[0].metadata["heur_c4_reason"] == ""
    assert out[1].metadata["heur_c4_pass"] is False and out[1].metadata["heur_c4_reason"] == "curly_bracket"


def test_task_shards_partition_the_source_exactly(tmp_path):
    """Each task decodes only its own lines; together the tasks see every item exactly once."""
    from continua.documents import iter_source
    from continua.recipe import SourceConfig

    a = _bad_file(tmp_path / "a.jsonl")
    b = write_jsonl(tmp_path / "b.jsonl", styled_texts("gen", 7, 1))
    cfg = SourceConfig(paths=[a, b])

    def key(item):
        return (type(item).__name__, item.path, item.row, getattr(item, "reason", ""))

    whole = sorted(key(i) for i in iter_source("s", cfg))
    assert len(whole) == 23 + 7
    for world in (2, 3, 5):
        parts = [key(i) for rank in range(world) for i in iter_source("s", cfg, rank, world)]
        assert sorted(parts) == whole
