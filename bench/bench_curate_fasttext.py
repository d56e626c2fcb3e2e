"""fastText scoring throughput: `curate score` (fastText column only, 1 worker) vs a bare predict loop.

Usage: python bench/bench_curate_fasttext.py [--data /work/shared/data/general/enwiki.jsonl]
           [--limit 10000] [--model MODEL.bin]

Without --model a medical-vs-enwiki classifier is trained first (curate's trainer). Three timings
over the same documents with the same model, all on one core:
  bare predict      texts already in memory, one `model.predict(text, k=-1)` call per document
  bare read+predict the same loop plus reading and parsing the JSON Lines file
  curate score      the whole `curate score` run: read, fastText column, hash, Parquet write,
                    stats (no tokenizer, no heuristics), in-process with tasks=1 and workers=1
Prints documents/second per core and the ratio to the bare loops (target: curate score >= 1.0x the bare
read + predict loop). Timings are medians of --repeats interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from curate.classifier import TrainParams, read_texts, train_classifier
from curate.fasttext_scorer import load_fasttext, prepare


def _slice(data: Path, limit: int | None, folder: Path) -> Path:
    out = folder / f"{data.stem}.slice.jsonl"
    with open(data, "rb") as src, open(out, "wb") as dst:
        for i, line in enumerate(src):
            if limit is not None and i >= limit:
                break
            dst.write(line)
    return out


def bare_predict(model, texts: list[str]) -> float:
    t0 = time.perf_counter()
    for text in texts:
        model.predict(prepare(text), k=-1)
    return time.perf_counter() - t0


def bare_read_predict(model, path: Path) -> float:
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        for line in f:
            model.predict(prepare(json.loads(line)["text"]), k=-1)
    return time.perf_counter() - t0


def curate_score(path: Path, model: Path, folder: Path, batch_size: int) -> float:
    from curate.cli import main as curate_main

    recipe = folder / "bench.toml"
    recipe.write_text(f'[run]\nout_dir = "{folder / "out"}"\n[data.sources.bench]\npaths = ["{path}"]\n'
                      f'[curate]\nheuristics = []\nbatch_size = {batch_size}\n[curate.classifiers]\nq = "{model}"\n')
    shutil.rmtree(folder / "out", ignore_errors=True)
    t0 = time.perf_counter()
    rc = curate_main(["score", str(recipe), "--tasks", "1", "--workers", "1"])
    elapsed = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"curate score failed with exit code {rc}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/general/enwiki.jsonl"))
    ap.add_argument("--limit", type=int, default=10000, help="documents to score (0: all)")
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; each timing is their median")
    ap.add_argument("--small-model", action="store_true", help="train a 1-epoch, 10k x 8 classifier (a quick check)")
    ap.add_argument("--train-data", type=Path, default=Path("/work/shared/data"),
                    help="shared data folder (medical/medical.jsonl, general/enwiki.jsonl) the classifier is trained on")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    folder = Path(tempfile.mkdtemp(prefix="bench-ft-"))
    model_path = args.model
    if model_path is None:
        model_path = folder / "med_vs_wiki.bin"
        pos = read_texts([args.train_data / "medical" / "medical.jsonl"], limit=5000)
        neg = read_texts([args.train_data / "general" / "enwiki.jsonl"], limit=5000)
        small = {"epochs": 1, "dim": 8, "bucket": 10_000} if args.small_model else {}
        train_classifier(pos, neg, model_path, TrainParams(valid_fraction=0.1, **small))
    data = _slice(args.data, args.limit or None, folder)
    texts = read_texts([data])
    model = load_fasttext(model_path)
    n = len(texts)
    curate_score(data, model_path, folder, args.batch_size)  # warm-up: imports, model into the cache
    runs: dict[str, list[float]] = {"bare": [], "bare_rp": [], "curate": []}
    for _ in range(args.repeats):  # interleaved, medians: a busy shared machine hits all three alike
        runs["bare"].append(bare_predict(model, texts))
        runs["bare_rp"].append(bare_read_predict(model, data))
        runs["curate"].append(curate_score(data, model_path, folder, args.batch_size))
    bare, bare_rp, cur = (statistics.median(runs[k]) for k in ("bare", "bare_rp", "curate"))

    t = Table(title=f"fastText scoring, {n:,} documents of {args.data.name}, model {model_path.name} "
                    f"({model_path.stat().st_size / 2**20:.0f} MiB), 1 core")
    for col in ("method", "seconds", "docs/s/core", "curate vs this"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for name, s in (("bare predict (in memory)", bare), ("bare read + predict", bare_rp), ("curate score", cur)):
        t.add_row(name, f"{s:.2f}", f"{n / s:,.0f}", f"{(n / cur) / (n / s):.2f}x" if name != "curate score" else "-")
    Console().print(t)
    Console().print(f"load average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
                    "model loading is excluded from all three (warm-up run first)")
    ratio = bare_rp / cur
    Console().print(f"curate score / bare read + predict = {ratio:.2f}x (target >= 1.00x): "
                    f"{'met' if ratio >= 1.0 else 'NOT met'}; / bare predict = {bare / cur:.2f}x")
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
