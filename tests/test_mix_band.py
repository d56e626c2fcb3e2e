"""Guo et al.'s selector end to end on a tiny corpus: a planted reference-like set must rank first, and
`mix plan` must show the kept band (size, score range, composition by file, examples) beside the rest."""

from __future__ import annotations

import json
import random

import numpy as np
import polars as pl
import pytest

from curate.classifier import roc_auc
from curate.cli import main as curate_main
from helpers_curate import GEN, MED, document, make_tokenizer, styled_texts, write_jsonl, write_recipe
from continua.recipe import load_recipe
from mix.cli import main as mix_main
from mix.band import _fill_texts
from mix.planner import make_plan


def mixed_texts(n: int, seed: int) -> list[str]:
    """Documents that mix both styles: near misses for the selector."""
    rng = random.Random(f"mixed-{seed}")
    return [document(rng, MED, 3) + "\n" + document(rng, GEN, 5) for _ in range(n)]


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("band")
    ref = write_jsonl(tmp / "ref.jsonl", styled_texts("med", 150, 1))
    # one planted document carries terminal control characters: excerpts must come out printable
    med = styled_texts("med", 15, 2)
    med[0] = "\x1b[2J\x9b" + med[0]
    planted = write_jsonl(tmp / "domain" / "planted.jsonl", med)
    rest = write_jsonl(tmp / "domain" / "other.jsonl", styled_texts("gen", 45, 3) + mixed_texts(20, 4))
    model = tmp / "ref.npz"
    assert curate_main(["train-reference", "--ref", str(ref), "--out", str(model), "--order", "3"]) == 0
    recipe = write_recipe(tmp / "recipe.toml", {"domain": [planted, rest]}, make_tokenizer(tmp / "tok"), extra=(
        f'[curate.ngram_references]\nref = {json.dumps(str(model))}\n'
        '[mix]\nbudget = "40%"\nscore = "ppl_ngram_ref"\nprefer = "low"\ntop = "10%"\nvalid_fraction = 0.05\n'
        'min_subset_docs = 1\n[train]\nseq_len = 64\nbatch_size = 2\n'))
    assert curate_main(["score", str(recipe)]) == 0
    return tmp, recipe


def test_selector_ranks_the_planted_set_first(planned):
    tmp, _ = planned
    scores = pl.read_parquet(tmp / "out/curate/domain/scores/*.parquet")
    is_planted = scores["path"].str.ends_with("planted.jsonl").to_numpy()
    assert is_planted.sum() == 15 and (~is_planted).sum() == 65
    auc = roc_auc(is_planted, -scores["ppl_ngram_ref"].to_numpy())  # lower perplexity = more reference-like
    assert auc >= 0.95


def test_plan_shows_the_kept_band_beside_the_rest(planned, capsys):
    tmp, recipe = planned
    assert mix_main(["plan", str(recipe)]) == 0
    printed = capsys.readouterr().out
    plan = json.loads((tmp / "out/mix/plan.json").read_text())
    band = plan["band"]
    assert band["score"] == "ppl_ngram_ref" and band["prefer"] == "low"
    kept, rest = band["band"], band["rest"]
    d = plan["sources"]["domain"]
    assert kept["docs"] == d["selected"]["docs"] and kept["tokens"] == d["selected"]["tokens"]
    assert kept["docs"] + rest["docs"] == 80 - d["valid"]["docs"]
    # the band is the planted set only, and every kept score is below every rest score
    assert [f["path"].rsplit("/", 1)[-1] for f in kept["by_file"]] == ["planted.jsonl"]
    assert kept["score"]["max"] <= rest["score"]["min"]
    assert kept["score"]["min"] <= kept["score"]["median"] <= kept["score"]["max"]
    assert {f["path"].rsplit("/", 1)[-1] for f in rest["by_file"]} == {"planted.jsonl", "other.jsonl"}
    # three examples each, best first, with their text read back from the input files
    for part in (kept, rest):
        assert len(part["examples"]) == 3
        ex_scores = [e["score"] for e in part["examples"]]
        assert ex_scores == sorted(ex_scores) and all(e["text"] for e in part["examples"])
        assert all(e["text"].isprintable() for e in part["examples"])
    assert np.isclose(kept["examples"][0]["score"], kept["score"]["min"])
    assert "kept band" in printed and "planted.jsonl" in printed and kept["examples"][0]["text"][:40] in printed
    # mix show prints it again from plan.json
    assert mix_main(["show", str(tmp / "out/mix")]) == 0
    assert "kept band" in capsys.readouterr().out


def test_no_score_no_band(planned):
    _, recipe = planned
    plan = make_plan(load_recipe(recipe, {"mix": {"score": None, "top": None}}), log=lambda m: None).plan
    assert "band" not in plan


def test_example_excerpts_are_one_printable_line(planned):
    tmp, recipe = planned
    ex = {"source": "domain", "path": str(tmp / "domain" / "planted.jsonl"), "row": 0, "doc_id": "x", "text": None}
    _fill_texts(load_recipe(recipe), [ex])  # row 0 starts with terminal control characters
    assert ex["text"].isprintable() and "\n" not in ex["text"] and len(ex["text"]) <= 304
    missing = dict(ex, row=999, text=None)
    with pytest.raises(FileNotFoundError, match="row 999"):
        _fill_texts(load_recipe(recipe), [missing])


def test_examples_of_a_cut_file_are_read_from_their_piece(planned, monkeypatch):
    """A JSON Lines file cut into byte ranges: an example near the end is read from its own piece only."""
    import mix.band as band

    tmp, recipe = planned
    lines = [json.dumps({"text": f"document number {i} " + "filler " * 20}) + "\n" for i in range(200)]
    big = tmp / "cut" / "big.jsonl"
    big.parent.mkdir(exist_ok=True)
    big.write_text("".join(lines))
    offsets = np.cumsum([0] + [len(line.encode()) for line in lines[:-1]])
    r = load_recipe(recipe, {"data": {"sources": {"domain": {"piece_bytes": 2000}}}})
    read_from = []
    real = band.iter_source

    def recording(source, cfg, **kw):
        read_from.extend(kw["pieces"])
        return real(source, cfg, **kw)

    monkeypatch.setattr(band, "iter_source", recording)
    ex = {"source": "domain", "path": str(big), "row": int(offsets[180]), "doc_id": "x", "text": None}
    _fill_texts(r, [ex])
    assert ex["text"].startswith("document number 180 ")
    assert len(read_from) == 1 and read_from[0].by_offset and read_from[0].start <= offsets[180] < read_from[0].stop
    assert read_from[0].start > 0  # not read from byte 0
