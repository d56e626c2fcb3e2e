"""Planning time and peak memory of `mix plan` on generated score tables, at one or more sizes.

    python bench/bench_mix_plan.py [--rows 10000000 30000000 100000000] [--general-rows 1000000]
                                   [--dir /tmp/bench_mix_plan] [--once]

Targets: < 10 s for 10M domain rows (on an unloaded machine), peak resident memory < 4 GB at every
size, and time growing no faster than the rows (the "s per M rows" column). Planning streams the
tables (mix.stream), so memory follows the selected documents (~17% of the rows here: the top 10%
x 4 epochs of the domain plus LLaMA-1 replay), not the rows read. Each table is generated once (kept in --dir,
about 60 MB of Parquet per million rows: check the disk first); planning runs in a fresh child
process so its peak RSS is its own. --once skips the second (hash-cached) run of each size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

FILES = 10


def generate(root: Path, name: str, rows: int, seed: int, scores: bool) -> None:
    out = root / "out" / "curate" / name / "scores"
    if out.exists() and len(list(out.glob("*.parquet"))) == FILES and (root / name / f"part-{FILES - 1:04d}.jsonl").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per = rows // FILES
    for k in range(FILES):
        n = per if k < FILES - 1 else rows - per * (FILES - 1)
        row = np.arange(n, dtype=np.int64)
        ntok = rng.lognormal(6.0, 0.8, n).astype(np.int64) + 2
        # unique texts, except 2% of rows that copy another row's text (exact duplicates)
        h = np.arange(k * per, k * per + n, dtype=np.int64)
        dup = rng.random(n) < 0.02
        h[dup] = rng.integers(0, rows, int(dup.sum()))
        # the source file the table names, one short line per row: `mix plan` reads its band's examples there
        data = root / name / f"part-{k:04d}.jsonl"
        data.parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"text": pl.Series(row).cast(pl.String).str.pad_start(8, "0")}).with_columns(
            text=pl.lit(f"{name} document {k}-") + pl.col("text")).write_ndjson(data)
        cols = {
            "doc_id": pl.concat_str([pl.lit(f"{name}/{name}/part-{k:04d}.jsonl#"), pl.Series(row).cast(pl.String)]),
            "source": pl.lit(name), "path": pl.lit(str(data)), "row": pl.Series(row),
            "n_chars": pl.Series(ntok * 4), "n_tokens": pl.Series(ntok),
            "text_hash": pl.Series(h).cast(pl.String).str.zfill(16),
        }
        df = pl.DataFrame({"i": row}).select(**cols)
        if scores:
            df = df.with_columns(fasttext_q=pl.Series(rng.random(n)), ppl_ngram_med=pl.Series(rng.normal(100, 20, n)),
                                 heur_ok=pl.Series(rng.random(n) > 0.1))
        df.write_parquet(out / f"{k:05d}.parquet")


def write_recipe(root: Path) -> Path:
    recipe = root / "recipe.toml"
    recipe.write_text(f"""
[run]
out_dir = "{root / "out"}"
[data.sources.web]
paths = ["web/"]
role = "domain"
[data.sources.wiki]
paths = ["wiki/"]
role = "general"
group = "Wikipedia"
[mix]
budget = "40%"
top = "10%"
score = "0.5*fasttext_q - 0.005*ppl_ngram_med"
preset = "llama1"
[train]
seq_len = 2048
batch_size = 64
""")
    return recipe


CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from continua.recipe import load_recipe
from mix.planner import plan_recipe
t1, c1 = time.perf_counter(), time.process_time()
path, res = plan_recipe(load_recipe(sys.argv[1]), log=lambda m: None)
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"import_s": t1 - t0, "plan_s": t2 - t1, "cpu_s": c2 - c1, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "selected": res.selection.height, "budget": res.plan["budget"]["tokens"],
                  "domain_epochs": res.plan["sources"]["web"]["epochs"]}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000_000])
    ap.add_argument("--once", action="store_true", help="plan each size once (skip the hash-cached re-run)")
    ap.add_argument("--general-rows", type=int, default=1_000_000)
    ap.add_argument("--dir", default="/tmp/bench_mix_plan")
    args = ap.parse_args()
    print("| run | domain rows | general rows | parquet size | plan wall (s) | s per M rows | plan CPU (s) | "
          "peak RSS (MB) | selected docs | domain epochs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    failed = False
    for rows in args.rows:
        root = Path(args.dir) / f"r{rows}"
        root.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        generate(root, "web", rows, 0, scores=True)
        generate(root, "wiki", args.general_rows, 1, scores=False)
        gen_s = time.perf_counter() - t
        recipe = write_recipe(root)
        size = sum(f.stat().st_size for f in (root / "out" / "curate").rglob("*.parquet"))
        r = {"import_s": float("nan")}
        for run in ("first (hashes inputs)",) + (() if args.once else ("again (input sha256 cached)",)):
            if run.startswith("first"):
                (root / "out" / "mix" / ".input_hashes.json").unlink(missing_ok=True)
            proc = subprocess.run([sys.executable, "-c", CHILD, str(recipe)], capture_output=True, text=True)
            if proc.returncode:
                print(proc.stderr[-3000:], file=sys.stderr)
                print(f"| {run} | {rows:,} | {args.general_rows:,} | {size / 2**20:,.0f} MB | failed "
                      f"(exit {proc.returncode}) | | | | | |")
                failed = True
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"| {run} | {rows:,} | {args.general_rows:,} | {size / 2**20:,.0f} MB | {r['plan_s']:.2f} | "
                  f"{r['plan_s'] / (rows / 1e6):.2f} | {r['cpu_s']:.2f} | {r['maxrss_mb']:,.0f} | {r['selected']:,} | "
                  f"{r['domain_epochs']:.2f} |", flush=True)
        notes.append(f"{rows:,} rows: imports {r['import_s']:.2f} s not counted, table generation {gen_s:.1f} s")
    print(f"({'; '.join(notes)}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; CPU = all "
          f"threads; targets < 10 s at 10M rows, < 4096 MB at every size)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
