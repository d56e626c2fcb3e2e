"""Does a bigram fastText classifier trained on half of two corpora separate the other halves?

Usage: python bench/eval_classifier_auc.py --pos /work/shared/data/medical/medical.jsonl \
           --neg /work/shared/data/general/enwiki.jsonl [--out /tmp/med_vs_wiki.bin]

Each corpus is split in two by a seeded shuffle; the classifier (`curate train-classifier`'s code,
no internal validation split) is trained on the first halves and scored on the second halves.
Prints a table of held-out precision / recall / F1 / ROC AUC and writes OUT.metrics.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from continua.io import write_json
from curate.classifier import TrainParams, binary_metrics, read_texts, split, train_classifier
from curate.fasttext_scorer import load_fasttext, positive_probabilities


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pos", type=Path, default=Path("/work/shared/data/medical/medical.jsonl"))
    ap.add_argument("--neg", type=Path, default=Path("/work/shared/data/general/enwiki.jsonl"))
    ap.add_argument("--out", type=Path, default=None, help="model file (default: a temp file)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="use at most this many documents per corpus")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    pos_train, pos_test = split(read_texts([args.pos], limit=args.limit), 0.5, rng)
    neg_train, neg_test = split(read_texts([args.neg], limit=args.limit), 0.5, rng)
    out = args.out or Path(tempfile.mkdtemp(prefix="auc-")) / "classifier.bin"
    t0 = time.perf_counter()
    train_classifier(pos_train, neg_train, out, TrainParams(epochs=args.epochs, lr=args.lr, dim=args.dim,
                                                            valid_fraction=0.0, seed=args.seed))
    train_s = time.perf_counter() - t0
    model = load_fasttext(out)
    t0 = time.perf_counter()
    scores = np.array(positive_probabilities(model, pos_test + neg_test, "__label__hq"))
    score_s = time.perf_counter() - t0
    labels = np.array([True] * len(pos_test) + [False] * len(neg_test))
    m = binary_metrics(labels, scores)
    result = {"pos": str(args.pos), "neg": str(args.neg), "train": [len(pos_train), len(neg_train)],
              "test": [len(pos_test), len(neg_test)], "train_seconds": train_s, "score_seconds": score_s,
              "model": str(out), **m}
    write_json(Path(str(out).removesuffix(".bin") + ".heldout_halves.json"), result)

    t = Table(title=f"{args.pos.name} (positive) vs {args.neg.name}: trained on halves, tested on the other halves")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("train docs pos / neg", f"{len(pos_train):,} / {len(neg_train):,}")
    t.add_row("test docs pos / neg", f"{len(pos_test):,} / {len(neg_test):,}")
    for k in ("precision", "recall", "f1", "accuracy", "roc_auc"):
        t.add_row(k, f"{m[k]:.4f}")
    t.add_row("train time", f"{train_s:.1f} s")
    t.add_row("target", "roc_auc >= 0.95: " + ("met" if m["roc_auc"] >= 0.95 else "NOT met"))
    Console().print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
