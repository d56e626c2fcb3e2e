"""`curate train-classifier`: held-out metrics, AUC arithmetic, the two ways to give examples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curate.classifier import binary_metrics, roc_auc
from curate.cli import main
from curate.fasttext_scorer import load_fasttext, positive_probabilities
from helpers_curate import styled_texts, write_jsonl, write_recipe


def _auc_bruteforce(labels, scores) -> float:
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_roc_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.4
    scores = np.round(rng.random(200) + labels * 0.3, 1)  # rounding makes many ties
    assert roc_auc(labels, scores) == pytest.approx(_auc_bruteforce(labels, scores))
    assert roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert roc_auc([1, 0], [0.5, 0.5]) == 0.5
    with pytest.raises(ValueError):
        roc_auc([1, 1], [0.1, 0.2])


def test_binary_metrics_counts():
    m = binary_metrics(np.array([1, 1, 0, 0], bool), np.array([0.9, 0.4, 0.6, 0.1]))
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["f1"] == 0.5 and m["accuracy"] == 0.5


def test_train_from_files_separates_held_out_styles(tmp_path):
    pos = write_jsonl(tmp_path / "pos.jsonl", styled_texts("med", 200, 1))
    neg = write_jsonl(tmp_path / "neg.jsonl", styled_texts("gen", 200, 2), field="body")
    model = tmp_path / "q.bin"
    rc = main(["train-classifier", "--pos", str(pos), "--neg", str(neg), "--out", str(model),
               "--epochs", "20", "--lr", "0.5", "--dim", "16", "--threads", "1", "--text-field", "text"])
    # negatives use another field: they are unreadable with --text-field text -> clear error, no model
    assert rc == 2 and not model.exists()
    neg = write_jsonl(tmp_path / "neg.jsonl", styled_texts("gen", 200, 2))
    assert main(["train-classifier", "--pos", str(pos), "--neg", str(neg), "--out", str(model),
                 "--epochs", "20", "--lr", "0.5", "--dim", "16", "--threads", "1", "--valid-fraction", "0.2"]) == 0
    metrics = json.loads((tmp_path / "q.metrics.json").read_text())
    assert metrics["valid"] == {"positive": 40, "negative": 40}
    assert metrics["train"] == {"positive": 160, "negative": 160}
    assert metrics["held_out"]["roc_auc"] >= 0.95 and metrics["held_out"]["f1"] >= 0.9
    # fresh documents of each style, never seen in training
    ft = load_fasttext(model)
    p = positive_probabilities(ft, styled_texts("med", 50, 77), "__label__hq")
    n = positive_probabilities(ft, styled_texts("gen", 50, 77), "__label__hq")
    assert roc_auc(np.array([True] * 50 + [False] * 50), np.array(p + n)) >= 0.95


def test_train_from_recipe_sources_balances_negatives(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", styled_texts("med", 60, 1))
    b = write_jsonl(tmp_path / "b.jsonl", styled_texts("gen", 300, 2))
    recipe = write_recipe(tmp_path / "r.toml", {"med": [a], "gen": [b]}, None)
    model = tmp_path / "m.bin"
    assert main(["train-classifier", "--recipe", str(recipe), "--pos-source", "med", "--neg-source", "gen",
                 "--out", str(model), "--epochs", "20", "--lr", "0.5", "--dim", "16", "--threads", "1"]) == 0
    metrics = json.loads((tmp_path / "m.metrics.json").read_text())
    assert metrics["train"]["positive"] + metrics["valid"]["positive"] == 60
    assert metrics["train"]["negative"] + metrics["valid"]["negative"] == 60  # sampled down to balance
    assert metrics["held_out"]["roc_auc"] >= 0.9


def test_unknown_source_is_named(tmp_path, capsys):
    a = write_jsonl(tmp_path / "a.jsonl", styled_texts("med", 5, 1))
    recipe = write_recipe(tmp_path / "r.toml", {"med": [a]}, None)
    assert main(["train-classifier", "--recipe", str(recipe), "--pos-source", "med", "--neg-source", "web",
                 "--out", str(tmp_path / "m.bin")]) == 2
    assert "'web'" in capsys.readouterr().err


def test_a_diverged_fasttext_run_is_retried_at_half_the_rate(tmp_path, monkeypatch, capsys):
    """fastText now and then stops with "Encountered NaN." on small sets: retry at lr/2, say so, record it;
    NaN at every rate is one error line (exit 1) naming the model, the rates tried and what to change."""
    import curate.classifier as clf

    real, calls = clf.fit_in_fresh_process, []

    def diverges_once(kwargs, path):
        calls.append(kwargs["lr"])
        if len(calls) == 1:
            raise RuntimeError("Encountered NaN.")
        return real(kwargs, path)

    monkeypatch.setattr(clf, "fit_in_fresh_process", diverges_once)
    out = clf.train_classifier(styled_texts("med", 60, 1), styled_texts("gen", 60, 2), tmp_path / "m.bin",
                               clf.TrainParams(epochs=5, lr=0.4, threads=1))
    assert calls == [0.4, 0.2] and out["params"]["lr"] == 0.2 and (tmp_path / "m.bin").exists()
    assert "retrying at lr 0.2" in capsys.readouterr().err

    def always_nan(kwargs, path):
        raise RuntimeError("Encountered NaN.")

    monkeypatch.setattr(clf, "fit_in_fresh_process", always_nan)
    with pytest.raises(clf.DivergedError, match=r"n.bin: fastText diverged \(NaN\) at every learning rate tried "
                                                r"\(0.4, 0.2, 0.1, 0.05\) on 96 training examples; lower --lr"):
        clf.train_classifier(styled_texts("med", 60, 1), styled_texts("gen", 60, 2), tmp_path / "n.bin",
                             clf.TrainParams(epochs=5, lr=0.4, threads=1, valid_fraction=0.2))
    assert not (tmp_path / "n.bin").exists()
    pos = write_jsonl(tmp_path / "pos.jsonl", styled_texts("med", 30, 1))
    neg = write_jsonl(tmp_path / "neg.jsonl", styled_texts("gen", 30, 2))
    capsys.readouterr()
    assert main(["train-classifier", "--pos", str(pos), "--neg", str(neg), "--out", str(tmp_path / "c.bin"),
                 "--epochs", "5", "--threads", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err) and "c.bin: fastText diverged (NaN) at every learning rate" in err[-1]
    monkeypatch.setattr(clf, "fit_in_fresh_process", lambda kwargs, path: (_ for _ in ()).throw(RuntimeError("other")))
    with pytest.raises(RuntimeError, match="other"):  # any other failure is not retried
        clf.train_classifier(styled_texts("med", 60, 1), styled_texts("gen", 60, 2), tmp_path / "n.bin",
                             clf.TrainParams(epochs=5, threads=1))


def test_a_seeded_single_thread_training_gives_the_same_model_whatever_the_process_did_before(tmp_path):
    """fastText trained in a process that already trained gives another model each time (and at times NaN at
    every rate); trained in a fresh process it gives the first one's model, bit for bit."""
    import fasttext

    from curate.classifier import TrainParams, train_classifier

    pos, neg = styled_texts("med", 150, 1), styled_texts("gen", 150, 2)
    params = TrainParams(epochs=20, lr=0.5, dim=16, threads=1, valid_fraction=0.2, seed=0)
    first = train_classifier(pos, neg, tmp_path / "a.bin", params)
    lines = tmp_path / "lines.txt"
    lines.write_text("".join(f"__label__{'hq' if i % 2 else 'lq'} {t.replace(chr(10), ' ')}\n"
                             for i, t in enumerate(pos[:50] + neg[:50])))
    for _ in range(3):  # fastText's own work in this process (where it may well stop with NaN)
        try:
            fasttext.train_supervised(input=str(lines), epoch=20, lr=0.5, dim=16, thread=1, seed=0, verbose=0)
        except RuntimeError:
            pass
    for name in ("b.bin", "c.bin"):
        again = train_classifier(pos, neg, tmp_path / name, params)
        assert again["params"]["lr"] == first["params"]["lr"] == 0.5
        assert (tmp_path / name).read_bytes() == (tmp_path / "a.bin").read_bytes()
        assert again["held_out"] == first["held_out"]
