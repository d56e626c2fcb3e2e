"""Prepare the real-data experiment of docs/results.md: corpora, tokenizer, classifier sets, pre-training recipe.

    python bench/results/prepare_medical.py --data /work/shared/data --out /work/runs-results

Writes under --out (nothing here is committed):
  data/general.jsonl      a seeded random sample of enwiki.jsonl (pre-training corpus, then replay)
  data/medical.jsonl      a seeded random sample of medical.jsonl (the CPT domain corpus)
  data/clf_pos.jsonl      half of the PubMedQA contexts (positives of the quality classifier) ...
  data/clf_neg.jsonl      ... and other medical documents (negatives); neither is in data/medical.jsonl
  data/pubmedqa_test.jsonl the 500 test items of PubMedQA's labelled set (its other contexts are in medical.jsonl)
  tokenizer/              byte-level BPE (8192) trained on a sample of both corpora
  pretrain.toml           recipe: pre-train a small Llama from scratch on data/general.jsonl
Then run the commands printed at the end (curate train-classifier, the pre-training, continua compare).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from workflow.demo_corpus import train_demo_tokenizer
from continua.io import atomic_open, write_text

PRETRAIN = """# Pre-training of the base model for docs/results.md: a small Llama from scratch on an enwiki sample.
[run]
name = "pretrain"
out_dir = "{out}/pretrain"
seed = 0

[data]
tokenizer = "{out}/tokenizer"

[data.sources.general]
paths = ["{out}/data/general.jsonl"]
role = "domain"      # for pre-training, the general text is the corpus being learned
id_field = "id"

[curate]
heuristics = []

[mix]
budget = "{budget}"   # sized for ~3 minutes on an idle 2-core CPU
valid_fraction = {valid}

[model]
hidden_size = {hidden}
intermediate_size = {inter}
num_layers = {layers}
num_heads = 4
max_position_embeddings = 512

[optim]
lr = 3e-3   # the strategy recipes re-warm to 3e-3: they assume the base was pre-trained at this peak
weight_decay = 0.1

[schedule]
name = "cosine"
warmup = 0.05
min_lr_ratio = 0.1

[eval]
num_evals = 6
max_batches = 4
batch_size = 16

[train]
steps = 0
seq_len = 256
batch_size = 8
nproc = 2
"""


def read(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def dump(path: Path, docs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    return path


def take_chars(docs: list[dict], chars: int) -> list[dict]:
    out, n = [], 0
    for d in docs:
        if n >= chars:
            break
        out.append(d)
        n += len(d["text"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--out", type=Path, default=Path("/work/runs-results"))
    ap.add_argument("--general-chars", type=int, default=8_000_000, help="enwiki sample size (characters)")
    ap.add_argument("--medical-chars", type=int, default=600_000, help="CPT domain corpus size (characters)")
    ap.add_argument("--neg-docs", type=int, default=1500, help="negatives for the quality classifier")
    ap.add_argument("--budget", default="400000", help="pre-training budget: tokens, or a percentage of one epoch")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--inter", type=int, default=384)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--valid", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = args.out.resolve()
    rng = random.Random(args.seed)

    wiki = read(args.data / "general" / "enwiki.jsonl")
    rng.shuffle(wiki)
    general = take_chars([{"id": d["id"], "text": d["text"]} for d in wiki], args.general_chars)

    med = read(args.data / "medical" / "medical.jsonl")
    rng.shuffle(med)
    pubmedqa = [d for d in med if d["source"].startswith("pubmedqa")]
    rest = [d for d in med if not d["source"].startswith("pubmedqa")]
    pos, pubmedqa_keep = pubmedqa[: len(pubmedqa) // 2], pubmedqa[len(pubmedqa) // 2:]
    neg, rest = rest[: args.neg_docs], rest[args.neg_docs:]
    domain = pubmedqa_keep + rest
    rng.shuffle(domain)
    domain = take_chars(domain, args.medical_chars)

    dump(out / "data" / "general.jsonl", general)
    dump(out / "data" / "medical.jsonl", domain)
    dump(out / "data" / "clf_pos.jsonl", pos)
    dump(out / "data" / "clf_neg.jsonl", neg)
    # PubMedQA's non-test contexts are in medical.jsonl: score only its test split
    bench = read(args.data / "benchmarks" / "pubmedqa_labeled_1000.jsonl")
    dump(out / "data" / "pubmedqa_test.jsonl", [b for b in bench if b.get("split") == "test"])
    counts = {name: {"docs": len(docs), "chars": sum(len(d["text"]) for d in docs)}
              for name, docs in (("general", general), ("medical", domain), ("clf_pos", pos), ("clf_neg", neg))}
    counts["medical_sources"] = {}
    for d in domain:
        s = d["source"].split("/")[0]
        counts["medical_sources"][s] = counts["medical_sources"].get(s, 0) + 1
    write_text(out / "data" / "counts.json", json.dumps(counts, indent=2))

    if not (out / "tokenizer" / "tokenizer.json").exists():
        sample = [d["text"] for d in take_chars(general, 2_000_000)] + [d["text"] for d in take_chars(domain, 2_000_000)]
        train_demo_tokenizer(iter(sample), out / "tokenizer")
    write_text(out / "pretrain.toml", PRETRAIN.format(out=out, budget=args.budget, valid=args.valid, hidden=args.hidden,
                                                       inter=args.inter, layers=args.layers))
    print(json.dumps(counts, indent=2))
    print(f"wrote {out}/data, {out}/tokenizer and {out}/pretrain.toml")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
