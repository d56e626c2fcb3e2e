"""The demo's quality signal: the reference split is stable and disjoint, and the selector report gives
the AUC of held-out reference text against the domain and the chosen subset's make-up by package."""

from __future__ import annotations

import json

import polars as pl
import pytest

from continua.documents import iter_documents
from continua.recipe import SourceConfig
from curate.ngram import train_ngram
from helpers_curate import styled_texts
from workflow.demo import selector_report, split_reference


def write(path, docs):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def test_reference_split_is_disjoint_stable_and_about_a_fifth(tmp_path):
    write(tmp_path / "data" / "stdlib.jsonl", [{"id": f"std-{i}", "package": "os", "text": t}
                                               for i, t in enumerate(styled_texts("med", 200, 1))])
    ref, held = split_reference(tmp_path)
    ids_ref = [json.loads(x)["id"] for x in ref.read_text().splitlines()]
    ids_held = [json.loads(x)["id"] for x in held.read_text().splitlines()]
    assert not set(ids_ref) & set(ids_held) and len(ids_ref) + len(ids_held) == 200
    assert 20 <= len(ids_held) <= 60
    held.unlink()
    ref.unlink()
    assert [json.loads(x)["id"] for x in split_reference(tmp_path)[1].read_text().splitlines()] == ids_held


def test_selector_report_auc_and_composition(tmp_path):
    model = train_ngram(styled_texts("med", 150, 1), order=3)
    path = tmp_path / "ref.npz"
    model.save(path)
    held = write(tmp_path / "held.jsonl", [{"id": f"h{i}", "text": t} for i, t in enumerate(styled_texts("med", 20, 2))])
    domain = [{"id": f"a{i}", "package": "alpha", "text": t} for i, t in enumerate(styled_texts("med", 5, 3))]
    domain += [{"id": f"b{i}", "package": "beta", "text": t} for i, t in enumerate(styled_texts("gen", 25, 4))]
    code = write(tmp_path / "code.jsonl", domain)
    mix = tmp_path / "mix"
    mix.mkdir()
    ids = [r.doc_id for r in iter_documents("code", SourceConfig(paths=[code]))]  # as curate names them
    pl.DataFrame({"doc_id": ids[:3] + ids[5:6] + ["b1"], "source": ["code"] * 4 + ["general"],
                  "split": ["train", "train", "train", "valid", "train"],
                  "repeats": [1.0] * 5}).write_parquet(mix / "selection.parquet")
    rep = selector_report(path, held, code, mix)
    assert rep["heldout_docs"] == 20 and rep["domain_docs"] == 30 and rep["selected_docs"] == 3
    # the 25 "gen" files are far from the reference; the 5 "med" ones are as close as the held-out set
    assert rep["auc"] >= 0.8
    assert rep["packages"] == [("alpha", [3, 2]), ("beta", [0, 25])]
    assert rep["auc"] == pytest.approx(model.ranking_auc([json.loads(x)["text"] for x in held.read_text().splitlines()],
                                                         [d["text"] for d in domain]))
