"""continua's numpy n-gram engine vs KenLM on the same ARPA file: equal perplexities, and speed.

Trains a reference model on a slice of medical.jsonl, exports it with `write_arpa`, then scores an
enwiki slice with (a) continua's engine on the .npz, (b) continua's ARPA reader, (c) the kenlm module.

    python bench/bench_kenlm.py [--train-docs 3000] [--docs 2000] [--order 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_perplexity import DATA, read
from curate.arpa import read_arpa, write_arpa
from curate.kenlm_query import KenlmModel
from curate.ngram import train_ngram, words


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-docs", type=int, default=3000)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--order", type=int, default=4)
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder (general/, medical/)")
    args = ap.parse_args()
    model = train_ngram(read(args.data / "medical" / "medical.jsonl", args.train_docs), order=args.order)
    texts = read(args.data / "general" / "enwiki.jsonl", args.docs)
    n_tokens = sum(len(words(t)) + 1 for t in texts)
    with tempfile.TemporaryDirectory() as tmp:
        arpa = Path(tmp) / "ref.arpa"
        t0 = time.perf_counter()
        write_arpa(model, arpa)
        t_export = time.perf_counter() - t0
        t0 = time.perf_counter()
        from_arpa = read_arpa(arpa)
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        km = KenlmModel(arpa)
        t_kload = time.perf_counter() - t0
        timings = {}
        results = {}
        for name, scorer in (("continua", model), ("continua-arpa", from_arpa), ("kenlm", km)):
            t0 = time.perf_counter()
            results[name] = scorer.perplexity(texts)
            timings[name] = time.perf_counter() - t0
        size = arpa.stat().st_size / 2**20
    rel = {n: float(np.max(np.abs(r / results["continua"] - 1))) for n, r in results.items()}
    print(f"order {args.order}, {sum(model.info['types']):,} n-grams, ARPA {size:.1f} MiB: export {t_export:.2f} s, "
          f"continua reads it in {t_read:.2f} s, kenlm in {t_kload:.2f} s")
    for name in results:
        print(f"  {name:14s} {n_tokens / timings[name]:>12,.0f} tokens/s   max |ppl / continua - 1| = {rel[name]:.2e}")


if __name__ == "__main__":
    main()
