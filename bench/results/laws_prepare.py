"""Prepare the laws experiment of docs/results.md (section "Choosing replay and LR from fitted laws").

    python bench/results/laws_prepare.py --data /work/shared/data --out /work/runs-laws

Writes under --out (nothing here is committed): data/general.jsonl and data/medical.jsonl (seeded
samples of enwiki and medical.jsonl), a byte-level BPE of 2,048 tokens (small, so the embedding
does not dwarf the model-size axis), pretrain.toml (a Llama pre-trained from scratch on the general
sample; sizes are set on the command line) and cpt.toml (the CPT recipe the sweeps vary).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from continua.io import atomic_open, write_text
from workflow.demo_corpus import train_demo_tokenizer

PRETRAIN = """# Base models of the laws experiment: a Llama pre-trained from scratch on an enwiki sample.
[run]
name = "pretrain"
out_dir = "{out}/pretrain"
seed = 0

[data]
tokenizer = "{out}/tokenizer"

[data.sources.general]
paths = ["{out}/data/general.jsonl"]
role = "domain"   # for pre-training, the general text is the corpus being learned
id_field = "id"

[curate]
heuristics = []

[mix]
budget = "{budget}"
valid_fraction = 0.03

[model]
hidden_size = 64
intermediate_size = 176
num_layers = 2
num_heads = 4
max_position_embeddings = 256

[optim]
lr = 3e-3
weight_decay = 0.1

[schedule]
name = "cosine"
warmup = 0.05
min_lr_ratio = 0.1

[eval]
num_evals = 6
max_batches = 4
batch_size = 8

[train]
steps = 0
seq_len = 128
batch_size = 8
nproc = 1
threads = 1   # one thread: small models on a shared CPU run far faster than with two
tensorboard = false
"""

CPT = """# CPT recipe the laws sweeps vary: enwiki-pre-trained base -> medical text, replay of enwiki.
[run]
name = "cpt"
out_dir = "{out}/cpt"
seed = 0

[data]
tokenizer = "{out}/tokenizer"

[data.sources.domain]
paths = ["{out}/data/medical.jsonl"]
role = "domain"
id_field = "id"

[data.sources.general]
paths = ["{out}/data/general.jsonl"]
role = "general"
id_field = "id"

[curate]
heuristics = []

[mix]
budget = "{cpt_tokens}"   # the full budget in tokens; the sweeps run fractions of it
valid_fraction = 0.03

[model]
path = "{out}/pre-m/train/export"

[optim]
lr = 3e-3
weight_decay = 0.1

[schedule]
name = "cosine"
warmup = 0.02
min_lr_ratio = 0.1

[eval]
num_evals = 12
max_batches = 4
batch_size = 8

[train]
steps = 0
seq_len = 128
batch_size = 8
nproc = 1
threads = 1   # one thread: small models on a shared CPU run far faster than with two
tensorboard = false
"""


def sample(path: Path, chars: int, seed: int) -> list[dict]:
    docs = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    random.Random(seed).shuffle(docs)
    out, have = [], 0
    for i, d in enumerate(docs):
        if have >= chars:
            break
        out.append({"id": str(d.get("id", i)), "text": d["text"]})
        have += len(d["text"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--out", type=Path, default=Path("/work/runs-laws"))
    ap.add_argument("--general-chars", type=int, default=1_500_000)
    ap.add_argument("--medical-chars", type=int, default=400_000)
    ap.add_argument("--pretrain-tokens", default="150000")
    ap.add_argument("--cpt-tokens", default="61440", help="full CPT budget in tokens (60 steps of 8 x 128)")
    ap.add_argument("--vocab", type=int, default=2048)
    args = ap.parse_args(argv)
    out = args.out.resolve()
    corpora = {"general": sample(args.data / "general" / "enwiki.jsonl", args.general_chars, 0),
               "medical": sample(args.data / "medical" / "medical.jsonl", args.medical_chars, 0)}
    for name, docs in corpora.items():
        (out / "data").mkdir(parents=True, exist_ok=True)
        if (out / "data" / f"{name}.jsonl").exists():  # a re-run keeps the files (and the scores made of them)
            continue
        with atomic_open(out / "data" / f"{name}.jsonl") as f:
            f.writelines(json.dumps(d) + "\n" for d in docs)
    if not (out / "tokenizer" / "tokenizer.json").exists():
        texts = [d["text"] for d in corpora["general"][: len(corpora["general"]) // 2]] + [d["text"] for d in corpora["medical"]]
        train_demo_tokenizer(iter(texts), out / "tokenizer", vocab_size=args.vocab)
    write_text(out / "pretrain.toml", PRETRAIN.format(out=out, budget=args.pretrain_tokens))
    write_text(out / "cpt.toml", CPT.format(out=out, cpt_tokens=args.cpt_tokens))
    print({k: (len(v), sum(len(d["text"]) for d in v)) for k, v in corpora.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
