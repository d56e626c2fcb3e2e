"""Prepare the SmolLM2-135M experiment of docs/results.md: reference, candidate pool, replay, recipes.

    python bench/results/prepare_smollm2.py --data /work/shared/data --model /work/smollm2-hf --out OUT

Guo et al.'s selector ranks the domain by perplexity under a reference n-gram model of high-quality
text. The reference here is the BC5CDR PubMed titles + abstracts of medical.jsonl (peer-reviewed
research text, public domain), held apart from the candidate pool, minus any document sharing a
13-word sequence with any benchmark item (MMLU, MedQA, PubMedQA questions, options and contexts);
a seeded 10% of it is kept out of the reference too, to measure how well the selector ranks unseen
reference-like text (bench/results/eval_smollm2.py). PubMedQA non-test contexts are not used as the
reference: they are the contexts of the benchmark file's train-split items.

Writes under --out (nothing here is committed):
  data/reference.jsonl, data/reference_heldout.jsonl   the reference, and its held-out part
  data/medical/<sub-source>.jsonl   the candidate pool (a seeded sample of MedQuAD, Medical Abstracts
                                    TC and PubMedQA non-test contexts) without the documents sharing a
                                    13-word sequence with a benchmark item, one file per sub-source so that
                                    `mix plan`'s band shows its composition by file
  data/general.jsonl                a seeded enwiki sample (replay and general validation)
  data/pubmedqa_test.jsonl          the 500 PubMedQA test items (its other contexts are in medical.jsonl)
  recipes/*.toml                    recipes/{naive,guo-40-reference,replay-25,lr-high}.toml pointed at this data
  prepare.json                      counts and the overlap check
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from prepare_medical import dump, read, take_chars  # noqa: E402

from continua.io import write_json, write_text  # noqa: E402

try:  # the recipe writer: continua.recipe.toml_text where it exists, else the older continua.tomlw
    from continua.recipe import toml_text as dumps  # noqa: E402
except ImportError:
    from continua.tomlw import dumps  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHINGLE = 13  # words: the usual contamination window (GPT-3, Llama)


def shingles(text: str, n: int = SHINGLE) -> set[int]:
    w = re.findall(r"\w+", text.lower())
    return {hash(" ".join(w[i:i + n])) for i in range(max(0, len(w) - n + 1))}


def benchmark_shingles(bench_dir: Path) -> set[int]:
    """13-word shingles of every benchmark item's text fields (questions, options, contexts, answers)."""
    out: set[int] = set()
    for path in sorted(bench_dir.glob("*.jsonl")):
        for item in read(path):
            parts = [item.get("question", ""), item.get("context", ""), item.get("long_answer", "")]
            opts = item.get("options") or {}
            parts += list(opts.values()) if isinstance(opts, dict) else list(opts)
            out |= shingles(" ".join(p if isinstance(p, str) else " ".join(p) for p in parts))
    return out


def family(source: str) -> str:
    return source.split("/")[0]


def recipe(base: str, name: str, out: Path, model: Path, lr: float, a) -> str:
    """A repository recipe with its data, model and sizes pointed at this experiment."""
    r = tomllib.loads((REPO / "recipes" / f"{base}.toml").read_text())
    r["run"].update(name=name, out_dir=str(out / "runs" / name), seed=0)
    r["data"] = {"tokenizer": str(model), "sources": {
        "medical": {"paths": [str(out / "data" / "medical")], "role": "domain", "id_field": "id"},
        "general": {"paths": [str(out / "data" / "general.jsonl")], "role": "general", "group": "Wikipedia",
                    "id_field": "id"}}}
    cur = r.setdefault("curate", {})
    cur.pop("classifiers", None)
    cur["heuristics"] = []
    if "ngram_references" in cur:
        cur["ngram_references"] = {"ref": str(out / "reference" / "bc5cdr.ngram.npz")}
    r["mix"].update(valid_fraction=a.valid, min_subset_docs=5)
    r["model"] = {"path": str(model)}
    r["optim"]["lr"] = lr
    r["eval"].update(num_evals=a.num_evals, max_batches=a.eval_batches, batch_size=a.batch)
    if name in a.bench_runs.split(",") and a.bench_items > 0:  # benchmark accuracy at every evaluation
        r["eval"].update(mcq_max_items=a.bench_items, benchmarks={
            "mmlu_medical": str(a.data.resolve() / "benchmarks" / "mmlu_medical6_test.jsonl"),
            "pubmedqa": str(out / "data" / "pubmedqa_test.jsonl")})
    r["train"].update(batch_size=a.batch, seq_len=a.seq, nproc=a.nproc, threads=a.threads, tensorboard=False)
    return dumps(r)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--model", type=Path, required=True, help="SmolLM2 HF folder (bench/results/convert_smollm2.py)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pool-chars", type=int, default=110_000, help="candidate pool size (~0.18 SmolLM2 tokens per character)")
    ap.add_argument("--general-chars", type=int, default=300_000)
    ap.add_argument("--valid", type=float, default=0.1, help="[mix] valid_fraction")
    ap.add_argument("--lr", type=float, default=5e-4, help="peak LR of naive, guo-40, replay-25")
    ap.add_argument("--lr-high", type=float, default=3e-3,
                    help="peak LR of the lr-high run (3e-3: the published pre-training peak of SmolLM-135M)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--num-evals", type=int, default=10)
    ap.add_argument("--eval-batches", type=int, default=2)
    ap.add_argument("--bench-items", type=int, default=0,
                    help="MMLU-medical and PubMedQA items scored at every evaluation of --bench-runs (0 = none)")
    ap.add_argument("--bench-runs", default="naive,lr-high", help="runs scoring benchmarks at every evaluation")
    ap.add_argument("--extra-runs", default="", help="more repository recipes at --lr, e.g. infinite,warmup-0")
    ap.add_argument("--nproc", type=int, default=1, help="[train] nproc")
    ap.add_argument("--threads", type=int, default=0, help="[train] threads (0 = torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    out, model = a.out.resolve(), a.model.resolve()
    rng = random.Random(a.seed)

    bench = benchmark_shingles(a.data / "benchmarks")
    med = read(a.data / "medical" / "medical.jsonl")
    rng.shuffle(med)
    ref_all = [d for d in med if family(d["source"]) == "bc5cdr"]
    clean = [d for d in ref_all if not (shingles(d["text"]) & bench)]
    n_hold = len(clean) // 10
    ref, ref_hold = clean[n_hold:], clean[:n_hold]
    cands = [d for d in med if family(d["source"]) != "bc5cdr"]
    pool = take_chars(cands, a.pool_chars)
    contaminated = [d["id"] for d in pool if shingles(d["text"]) & bench]
    pool = [d for d in pool if d["id"] not in set(contaminated)]

    dump(out / "data" / "reference.jsonl", ref)
    dump(out / "data" / "reference_heldout.jsonl", ref_hold)
    by_family: dict[str, list[dict]] = {}
    for d in pool:
        by_family.setdefault(family(d["source"]), []).append(d)
    for fam, docs in by_family.items():
        dump(out / "data" / "medical" / f"{fam}.jsonl", docs)
    wiki = read(a.data / "general" / "enwiki.jsonl")
    rng.shuffle(wiki)
    dump(out / "data" / "general.jsonl", take_chars([{"id": d["id"], "text": d["text"]} for d in wiki], a.general_chars))
    pqa = read(a.data / "benchmarks" / "pubmedqa_labeled_1000.jsonl")
    dump(out / "data" / "pubmedqa_test.jsonl", [b for b in pqa if b.get("split") == "test"])

    runs = {"naive": ("naive", a.lr), "guo-40-reference": ("guo-40-reference", a.lr),
            "replay-25": ("replay-25", a.lr), "lr-high": ("lr-high", a.lr_high)}
    runs.update({name: (name, a.lr) for name in a.extra_runs.split(",") if name})
    for name, (base, lr) in runs.items():
        write_text(out / "recipes" / f"{name}.toml", recipe(base, name, out, model, lr, a))
    info = {
        "reference": {"source": "bc5cdr (PubMed titles + abstracts)", "candidates": len(ref_all),
                      "dropped_benchmark_overlap": len(ref_all) - len(clean), "docs": len(ref),
                      "chars": sum(len(d["text"]) for d in ref), "heldout_docs": len(ref_hold)},
        "pool": {"docs": len(pool), "chars": sum(len(d["text"]) for d in pool),
                 "dropped_benchmark_overlap": contaminated,
                 "by_file": {f: len(v) for f, v in sorted(by_family.items())}},
        "runs": {n: {"recipe": f"recipes/{b}.toml", "lr": lr} for n, (b, lr) in runs.items()},
        "seed": a.seed,
    }
    write_json(out / "prepare.json", info)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
