"""Tokenization throughput of `mix build` against datatrove's DocumentTokenizer, same corpus and tokenizer.

    python bench/bench_mix_tokenize.py [--corpus /work/shared/data/medical/medical.jsonl] [--repeats 3]
                                       [--pieces 8] [--no-ray]

Both read the JSON Lines corpus, tokenize every document with the same local tokenizer.json
(a byte-level BPE trained on the corpus itself, so nothing is downloaded), append EOS, write
.ds shards and shuffle the documents. `mix build` runs on a plan that keeps every document
(budget 100%, no score; 2% held out as validation, also tokenized), with the corpus cut into
--pieces pieces: in this process with 1 and 2 tokenizer workers, and on a local Ray cluster of 1
and 2 CPUs (one task per piece, then the merge; the cluster's start-up is not timed). CPU seconds
are this process's and its children's (pool workers); Ray's workers are not this process's
children, so the Ray rows have wall time only. Best of
--repeats runs each, alternating, so load from other processes hurts all alike. Target: mix
build >= 1.0x datatrove in tokens per CPU-second.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import polars as pl
import psutil


def train_tokenizer(corpus: Path, folder: Path, vocab: int) -> Path:
    """A byte-level BPE trained on the corpus; cached in `folder`."""
    if (folder / "tokenizer.json").exists():
        return folder
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    def texts():
        with open(corpus, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts(), trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<s>", "</s>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                              "add_bos_token": False}))
    return folder


def prepare_mix(root: Path, corpus: Path, tokdir: Path, pieces: int):
    """Score table (doc ids, token counts, text hashes as `curate score` takes them) and recipe for a plan
    that keeps every document; the corpus is read in `pieces` byte ranges."""
    from continua.documents import iter_documents
    from continua.recipe import SourceConfig, load_recipe
    from continua.tokenizer import load_tokenizer
    from continua.score_table import text_hash
    from mix.planner import plan_recipe

    piece_bytes = -(-corpus.stat().st_size // pieces)
    table = root / "out" / "curate" / "medical" / "scores" / "00000.parquet"
    recs = list(iter_documents("medical", SourceConfig(paths=[corpus], piece_bytes=piece_bytes)))
    n_tokens = load_tokenizer(tokdir).count_batch([r.text for r in recs])
    table.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"doc_id": [r.doc_id for r in recs], "source": "medical", "path": [r.path for r in recs],
                  "row": [r.row for r in recs], "n_chars": [len(r.text) for r in recs], "n_tokens": n_tokens,
                  "text_hash": [text_hash(r.text) for r in recs]}).write_parquet(table)
    recipe = root / "recipe.toml"
    recipe.write_text(f"""
[run]
out_dir = "{root / 'out'}"
[data]
tokenizer = "{tokdir}"
[data.sources.medical]
paths = ["{corpus}"]
role = "domain"
piece_bytes = {piece_bytes}
[mix]
budget = "100%"
""")
    r = load_recipe(recipe)
    plan_recipe(r, log=lambda m: None)
    return r


def cpu_now() -> float:
    """CPU seconds of this process (all threads), its finished children (pool workers) and its live
    descendants. Not Ray's workers: Ray daemonizes them and ends each task's actor, so their CPU time is
    nowhere to be read afterwards (the Ray rows show wall time only)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run_mix(recipe, workers: int, executor: str = "local") -> tuple[float, float, int, int]:
    from mix.build import build_recipe
    from mix.build_stages import build_on_executor
    from mix.manifest import Manifest

    shards = recipe.out_dir / "mix" / "shards"
    shutil.rmtree(shards, ignore_errors=True)
    if executor == "ray":
        import ray

        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        t, c = time.perf_counter(), cpu_now()
        if executor == "ray":
            build_on_executor(recipe, "ray", workers=workers, log=lambda m: None)
        else:
            build_recipe(recipe, workers=workers, log=lambda m: None)
        wall = time.perf_counter() - t
        cpu = cpu_now() - c if executor != "ray" else float("nan")
    finally:
        if executor == "ray":
            ray.shutdown()
    m = Manifest.load(shards)
    return wall, cpu, sum(s.train.tokens + s.valid.tokens for s in m.sources.values()), \
        sum(s.train.docs + s.valid.docs for s in m.sources.values())


def run_datatrove(corpus: Path, tokdir: Path, out: Path) -> tuple[float, float, int, int]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer

    shutil.rmtree(out, ignore_errors=True)
    pipe = [JsonlReader(str(corpus.parent), glob_pattern=corpus.name, text_key="text", id_key="id"),
            DocumentTokenizer(output_folder=str(out / "tok"), tokenizer_name_or_path=str(tokdir / "tokenizer.json"),
                              eos_token="</s>", local_working_dir=str(out / "work"), seed=0)]
    t, c = time.perf_counter(), cpu_now()
    LocalPipelineExecutor(pipe, tasks=1, workers=1, logging_dir=str(out / "logs"), skip_completed=False).run()
    wall, cpu = time.perf_counter() - t, cpu_now() - c
    tokens = docs = 0
    for idx in (out / "tok").glob("*.ds.index"):
        import numpy as np

        ends = np.fromfile(idx, dtype="<u8")
        docs += ends.size
        tokens += int(ends[-1]) if ends.size else 0
    return wall, cpu, tokens, docs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="/work/shared/data/medical/medical.jsonl")
    ap.add_argument("--dir", default="/tmp/bench_mix_tokenize")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pieces", type=int, default=8, help="byte ranges the corpus is read in (Ray: one task each)")
    ap.add_argument("--no-ray", action="store_true", help="skip the local Ray cluster runs")
    args = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")  # keep the output to the table
    corpus, root = Path(args.corpus), Path(args.dir)
    if not corpus.exists():
        print(f"{corpus}: corpus not found", file=sys.stderr)
        return 1
    tokdir = train_tokenizer(corpus, root / "tokenizer", args.vocab)
    recipe = prepare_mix(root, corpus, tokdir, args.pieces)
    runs: dict[str, list[tuple[float, float, int, int]]] = {"datatrove DocumentTokenizer": [], "mix build --workers 1": [],
                                                     "mix build --workers 2": []}
    if not args.no_ray:
        runs |= {"mix build, Ray 1 worker": [], "mix build, Ray 2 workers": []}
    for _ in range(args.repeats):
        runs["datatrove DocumentTokenizer"].append(run_datatrove(corpus, tokdir, root / "datatrove"))
        runs["mix build --workers 1"].append(run_mix(recipe, 1))
        runs["mix build --workers 2"].append(run_mix(recipe, 2))
        if not args.no_ray:
            runs["mix build, Ray 1 worker"].append(run_mix(recipe, 1, "ray"))
            runs["mix build, Ray 2 workers"].append(run_mix(recipe, 2, "ray"))
    base = min(r[0] for r in runs["datatrove DocumentTokenizer"])
    base_cpu = min(r[1] for r in runs["datatrove DocumentTokenizer"])
    print(f"corpus {corpus} ({corpus.stat().st_size / 2**20:.1f} MB, {args.pieces} pieces), tokenizer BPE vocab {args.vocab}, "
          f"best of {args.repeats}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| tokenizer run | docs | tokens | wall (s) | tokens/s | vs datatrove (wall) | CPU (s) | tokens/CPU-s | "
          "vs datatrove (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rs in runs.items():
        wall = min(r[0] for r in rs)
        cpu = min(r[1] for r in rs)
        tokens, docs = rs[0][2], rs[0][3]
        print(f"| {name} | {docs:,} | {tokens:,} | {wall:.2f} | {tokens / wall:,.0f} | {base / wall:.2f}x | "
              f"{cpu:.2f} | {tokens / cpu:,.0f} | {base_cpu / cpu:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
