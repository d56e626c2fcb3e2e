"""Does reference n-gram perplexity separate domain text from general text on real data?

Trains the reference model (curate.ngram, as `curate train-reference` does) on a random half of
medical.jsonl, scores the other half and as many enwiki.jsonl articles, and reports the AUC that a
held-out medical document has LOWER perplexity than a general one (target >= 0.9), per medical
sub-source too. Writes a table, a JSON file and a PNG histogram to --out.

    python bench/eval_reference_auc.py --out /tmp/ref_auc [--order 4] [--tokenizer PATH]
        [--unseen-source bc5cdr]   # reference trained without that sub-source, tested on it
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import orjson

from continua.io import write_json
from curate.ngram import train_ngram

DATA = Path("/work/shared/data")


def auc(low: np.ndarray, high: np.ndarray) -> float:
    """P(a score of `low` < a score of `high`), ties counted half: ROC AUC with `high` as positives."""
    from curate.classifier import roc_auc

    labels = np.concatenate([np.zeros(len(low), bool), np.ones(len(high), bool)])
    return roc_auc(labels, np.concatenate([low, high]))


def read(path: Path) -> list[dict]:
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--medical", type=Path, default=DATA / "medical/medical.jsonl")
    ap.add_argument("--general", type=Path, default=DATA / "general/enwiki.jsonl")
    ap.add_argument("--order", type=int, default=4)
    ap.add_argument("--tokenizer", type=Path, default=None)
    ap.add_argument("--min-count", type=int, default=1)
    ap.add_argument("--prune", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unseen-source", default=None,
                    help="test only on this medical sub-source (e.g. bc5cdr) and keep it out of the reference")
    ap.add_argument("--out", type=Path, default=Path("bench_out/reference_auc"))
    args = ap.parse_args(argv)

    medical, general = read(args.medical), read(args.general)
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(medical))
    train_idx, test_idx = perm[: len(perm) // 2], perm[len(perm) // 2:]
    if args.unseen_source:  # harder: the reference never saw this sub-source's style
        family = np.array([str(m.get("source", "?")).split("/")[0] for m in medical])
        if args.unseen_source not in set(family):
            ap.error(f"--unseen-source {args.unseen_source!r}: not among {sorted(set(family))}")
        train_idx = train_idx[family[train_idx] != args.unseen_source]
        test_idx = np.flatnonzero(family == args.unseen_source)
    general_idx = rng.choice(len(general), size=min(len(test_idx), len(general)), replace=False)

    t0 = time.perf_counter()
    model = train_ngram((medical[i]["text"] for i in train_idx), order=args.order, tokenizer=args.tokenizer,
                        min_count=args.min_count, prune=args.prune)
    t_train = time.perf_counter() - t0
    med_texts = [medical[i]["text"] for i in test_idx]
    gen_texts = [general[i]["text"] for i in general_idx]
    t0 = time.perf_counter()
    ppl_med = np.concatenate([model.perplexity(med_texts[i:i + 2000]) for i in range(0, len(med_texts), 2000)])
    ppl_gen = np.concatenate([model.perplexity(gen_texts[i:i + 2000]) for i in range(0, len(gen_texts), 2000)])
    t_score = time.perf_counter() - t0
    n_tokens = sum(len(x) + 1 for x in model.encoder.encode(med_texts + gen_texts))

    overall = auc(ppl_med, ppl_gen)
    sources = np.array([str(medical[i].get("source", "?")).split("/")[0] for i in test_idx])
    rows = [("all medical", len(ppl_med), float(np.median(ppl_med)), overall)]
    for s in sorted(set(sources)):
        sel = ppl_med[sources == s]
        rows.append((s, len(sel), float(np.median(sel)), auc(sel, ppl_gen)))
    size = sum(a.nbytes for arrays in (model.keys, model.prob, model.ctx, model.gamma) for a in arrays) / 2**20
    print(f"reference: {len(train_idx):,} medical docs, {model.info['n_tokens']:,} tokens, order {model.order}, "
          f"{model.encoder.kind} tokenizer, min_count {args.min_count}, prune {args.prune}, trained in "
          f"{t_train:.1f} s; n-grams per order {model.info['types']}, arrays {size:.1f} MiB")
    print(f"scored {len(ppl_med):,} held-out medical + {len(ppl_gen):,} enwiki docs ({n_tokens:,} tokens) in "
          f"{t_score:.1f} s = {n_tokens / t_score:,.0f} tokens/s (2-core CPU sandbox)")
    print(f"\n{'held-out set':<22}{'docs':>8}{'median ppl':>12}{'AUC vs enwiki':>15}")
    for name, n, med, a in rows:
        print(f"{name:<22}{n:>8,}{med:>12.1f}{a:>15.4f}")
    print(f"{'enwiki':<22}{len(ppl_gen):>8,}{float(np.median(ppl_gen)):>12.1f}{'':>15}")

    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "reference_auc.json", {
        "auc": overall, "unseen_source": args.unseen_source, "order": model.order, "tokenizer": model.encoder.kind,
        "min_count": args.min_count, "prune": args.prune, "model_mib": size, "train_docs": len(train_idx),
        "train_tokens": model.info["n_tokens"], "train_seconds": t_train, "score_tokens": n_tokens,
        "score_seconds": t_score, "per_source": [{"source": r[0], "docs": r[1], "median_ppl": r[2], "auc": r[3]}
                                                  for r in rows],
        "median_ppl_general": float(np.median(ppl_gen))})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(np.log10(min(ppl_med.min(), ppl_gen.min())), np.log10(max(ppl_med.max(), ppl_gen.max())), 80)
    ax.hist(np.log10(ppl_med), bins, alpha=0.6, label=f"held-out medical (n={len(ppl_med)})")
    ax.hist(np.log10(ppl_gen), bins, alpha=0.6, label=f"enwiki (n={len(ppl_gen)})")
    ax.set_xlabel("log10 perplexity under the medical reference n-gram model")
    ax.set_ylabel("documents")
    ax.set_title(f"Reference n-gram perplexity, order {model.order}: AUC = {overall:.3f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "reference_auc.png", dpi=120)
    print(f"\nwrote {args.out / 'reference_auc.json'} and {args.out / 'reference_auc.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
