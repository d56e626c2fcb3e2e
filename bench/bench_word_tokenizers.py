"""The heuristics' word splitters: continua's regex vs datatrove's spaCy tokenizer (spacy.blank("en")).

Word counts (the Gopher / FineWeb thresholds count words) and speed on prose (enwiki, medical) and on
Python source (this repository's own files).

    python bench/bench_word_tokenizers.py [--docs 300]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.bench_perplexity import DATA, read
from curate.heuristics import word_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder (general/, medical/)")
    args = ap.parse_args()
    sets = {"enwiki": read(args.data / "general" / "enwiki.jsonl", args.docs),
            "medical": read(args.data / "medical" / "medical.jsonl", args.docs),
            "python source": [p.read_text() for p in sorted(ROOT.glob("*/*.py"))[:60]]}
    regex, spacy = word_tokenizer("regex"), word_tokenizer("spacy")
    spacy.word_tokenize("warm up")  # load the blank pipeline outside the timing
    for name, texts in sets.items():
        t0 = time.perf_counter()
        a = sum(len(regex.word_tokenize(t)) for t in texts)
        t1 = time.perf_counter()
        b = sum(len(spacy.word_tokenize(t)) for t in texts)
        t2 = time.perf_counter()
        print(f"{name:14s} {len(texts):4d} docs: regex {a:9,d} words, spaCy {b:9,d} ({100 * (a - b) / b:+.2f}%); "
              f"regex {t1 - t0:.2f} s, spaCy {t2 - t1:.2f} s ({(t2 - t1) / (t1 - t0):.0f}x)")


if __name__ == "__main__":
    main()
