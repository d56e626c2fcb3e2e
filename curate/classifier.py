"""Train a DCLM-style fastText quality classifier (word bigrams, supervised) and measure it held out.

Positives are `__label__hq`, negatives `__label__lq`. A random `valid_fraction` of each class is
held out; precision, recall and F1 at p >= 0.5 and ROC AUC (rank statistic) are computed on it and
saved beside the model as MODEL.metrics.json.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from continua.documents import Record, iter_source
from continua.exitcodes import RunFailure
from continua.io import atomic_path, write_json
from continua.recipe import SourceConfig
from curate.fasttext_fit import fit_in_fresh_process
from curate.fasttext_scorer import load_fasttext, positive_probabilities, prepare

POS_LABEL = "hq"
NEG_LABEL = "lq"


MIN_EXAMPLES_SEEN = 30_000  # auto epochs: fewer updates leave every P(hq) near 0.5 (see `auto_epochs`)


@dataclass
class TrainParams:
    """fastText supervised hyper-parameters: DCLM's (lr 0.1, word bigrams), with a model size a user can
    ship and epochs sized to the data.

    Measured on 3,000 medical vs 3,000 enwiki documents (held-out AUC): bucket 2M x dim 100 = 820 MB,
    0.9930; bucket 200k x dim 32 = 44 MB, 0.9937; so the smaller one is the default.
    """

    epochs: int = 0  # 0 = auto_epochs(training examples)
    lr: float = 0.1
    word_ngrams: int = 2
    dim: int = 32
    bucket: int = 200_000  # hashed word n-gram rows: the model holds bucket x dim floats (200k x 32 = 25 MB)
    min_count: int = 1
    valid_fraction: float = 0.1
    seed: int = 0
    threads: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))


def auto_epochs(n_train: int) -> int:
    """Epochs so that training sees >= MIN_EXAMPLES_SEEN examples (5 to 100).

    fastText's learning rate decays to zero over the run, so a small training set with DCLM's 5 epochs
    (tuned for hundreds of thousands of documents) stops after a few thousand updates: the model ranks
    well but every probability stays near 0.5. Measured, 270 medical + 270 enwiki training documents:
    5 epochs put every held-out score in [0.500, 0.500] (AUC 0.953); 56 epochs spread them over
    [0.000, 1.000] (q10-q90 0.007-0.996, AUC 0.993).
    """
    return int(min(100, max(5, -(-MIN_EXAMPLES_SEEN // max(n_train, 1)))))


def read_texts(paths: Iterable[str | Path], text_field: str = "text", limit: int | None = None) -> list[str]:
    """Texts of example files (any format continua.documents reads); unreadable items are counted
    and reported on stderr with the file and reasons, never dropped without a word."""
    out: list[str] = []
    for path in paths:
        cfg = SourceConfig(paths=[Path(path)], text_field=text_field)
        rejected: Counter[str] = Counter()
        for item in iter_source("examples", cfg):
            if isinstance(item, Record):
                out.append(item.text)
                if limit is not None and len(out) >= limit:
                    break
            else:
                rejected[item.reason] += 1
        if rejected:
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items()))
            print(f"warning: {path}: skipped {sum(rejected.values())} unreadable items ({reasons})", file=sys.stderr)
        if limit is not None and len(out) >= limit:
            break
    return out


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney U statistic, ties getting average ranks."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs at least one positive and one negative example")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average rank (1-based) over each run of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    labels = np.asarray(labels, dtype=bool)
    pred = np.asarray(scores) >= threshold
    tp = int((pred & labels).sum())
    fp = int((pred & ~labels).sum())
    fn = int((~pred & labels).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": threshold, "precision": precision, "recall": recall, "f1": f1,
            "accuracy": float((pred == labels).mean()), "roc_auc": roc_auc(labels, scores)}


def split(texts: list[str], fraction: float, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(train, valid) after a seeded shuffle; valid gets round(fraction * n) items."""
    idx = rng.permutation(len(texts))
    n_valid = int(round(fraction * len(texts)))
    return [texts[i] for i in idx[n_valid:]], [texts[i] for i in idx[:n_valid]]


NAN_RETRIES = 3  # fastText occasionally diverges on small sets; each retry halves lr (recorded in params)


class DivergedError(RunFailure):
    """fastText stopped with NaN at every learning rate tried: exit 1, with what to change."""


def train_classifier(pos: list[str], neg: list[str], out: Path, params: TrainParams) -> dict:
    """Train on pos/neg texts, evaluate on held-out texts, save MODEL and MODEL.metrics.json.

    fastText trains in a fresh process (curate.fasttext_fit): with threads = 1 the same inputs and
    seed give the same model, whatever this process did before."""
    if not pos or not neg:
        raise ValueError(f"need positive and negative examples (got {len(pos)} positive, {len(neg)} negative)")
    if not 0.0 <= params.valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {params.valid_fraction}")
    rng = np.random.default_rng(params.seed)
    pos_train, pos_valid = split(pos, params.valid_fraction, rng)
    neg_train, neg_valid = split(neg, params.valid_fraction, rng)
    lines = [f"__label__{POS_LABEL} {prepare(t)}" for t in pos_train] + \
            [f"__label__{NEG_LABEL} {prepare(t)}" for t in neg_train]
    order = rng.permutation(len(lines))
    out = Path(out)
    if params.epochs <= 0:
        params = TrainParams(**{**asdict(params), "epochs": auto_epochs(len(lines))})
    tried = []
    with tempfile.TemporaryDirectory(prefix="curate-ft-") as tmp:
        train_file = Path(tmp) / "train.txt"
        with open(train_file, "w", encoding="utf-8") as f:
            for i in order:
                f.write(lines[i] + "\n")
        with atomic_path(out) as tmp_model:
            for attempt in range(NAN_RETRIES + 1):
                tried.append(params.lr)
                try:
                    fit_in_fresh_process(dict(
                        input=str(train_file), epoch=params.epochs, lr=params.lr, wordNgrams=params.word_ngrams,
                        dim=params.dim, bucket=params.bucket, minCount=params.min_count, seed=params.seed,
                        thread=params.threads, verbose=0), tmp_model)
                    break
                except RuntimeError as e:  # fastText diverged ("Encountered NaN."): retry at half the rate
                    if "NaN" not in str(e):
                        raise
                    if attempt == NAN_RETRIES:
                        raise DivergedError(
                            f"{out}: fastText diverged (NaN) at every learning rate tried "
                            f"({', '.join(f'{lr:g}' for lr in tried)}) on {len(lines):,} training examples; "
                            f"lower --lr or --dim, or give more examples") from None
                    print(f"curate train-classifier: fastText diverged at lr {params.lr:g}; retrying at "
                          f"lr {params.lr / 2:g}", file=sys.stderr)
                    params = TrainParams(**{**asdict(params), "lr": params.lr / 2})
    model = load_fasttext(out)
    metrics: dict = {"model": str(out), "labels": {"positive": f"__label__{POS_LABEL}",
                                                   "negative": f"__label__{NEG_LABEL}"},
                     "params": asdict(params),
                     "train": {"positive": len(pos_train), "negative": len(neg_train)},
                     "valid": {"positive": len(pos_valid), "negative": len(neg_valid)}}
    if pos_valid and neg_valid:
        scores = np.array(positive_probabilities(model, pos_valid + neg_valid, f"__label__{POS_LABEL}"))
        labels = np.array([True] * len(pos_valid) + [False] * len(neg_valid))
        metrics["held_out"] = binary_metrics(labels, scores)
        metrics["held_out"]["score_quantiles"] = {  # what the scores look like: 10th, 50th, 90th percentile
            "positive": [round(float(q), 4) for q in np.quantile(scores[labels], [0.1, 0.5, 0.9])],
            "negative": [round(float(q), 4) for q in np.quantile(scores[~labels], [0.1, 0.5, 0.9])]}
    else:
        metrics["held_out"] = None
    write_json(metrics_path(out), metrics)
    return metrics


def metrics_path(model: Path) -> Path:
    return Path(str(model) + ".metrics.json") if Path(model).suffix != ".bin" else Path(model).with_suffix(".metrics.json")


def sample(texts: list[str], n: int, seed: int) -> list[str]:
    """n texts drawn without replacement (all when n >= len)."""
    if n >= len(texts):
        return list(texts)
    idx = np.sort(np.random.default_rng(seed).choice(len(texts), size=n, replace=False))
    return [texts[i] for i in idx]
