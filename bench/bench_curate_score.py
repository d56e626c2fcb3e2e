"""Documents/s of `curate score` with the local executor (1 and 2 workers) and a local Ray cluster (2 workers).

    python bench/bench_curate_score.py [--corpus /work/shared/data/medical/medical.jsonl] [--docs 8000]

The first --docs documents of the corpus are split into 4 JSONL files and scored with 4 tasks:
heuristics gopher_quality + gopher_repetition + c4, exact dedup, stats (no tokenizer or fastText
model, so the figure is the pipeline's own cost). Each run is a fresh process started with
--restart; wall time covers the whole command (imports, workers, the stats and dedup marks). For
Ray, `ray.init(num_cpus=2)` is timed apart: the overhead of Ray is its start-up plus the
difference in the scoring time against the local executor at the same worker count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import json, sys, time
t0 = time.perf_counter()
init = 0.0
if sys.argv[1] == "ray":
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    init = time.perf_counter() - t0
from curate.cli import main
t1 = time.perf_counter()
rc = main(sys.argv[2:])
t2 = time.perf_counter()
if sys.argv[1] == "ray":
    ray.shutdown()
print(json.dumps({"rc": rc, "init_s": init, "score_s": t2 - t1}))
"""


def prepare(corpus: Path, root: Path, docs: int) -> Path:
    lines = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            lines.append(line)
            if len(lines) >= docs:
                break
    paths = []
    for k in range(4):
        p = root / f"part{k}.jsonl"
        p.write_text("".join(lines[k::4]), encoding="utf-8")
        paths.append(p)
    recipe = root / "recipe.toml"
    recipe.write_text(f"""[run]
out_dir = "{root / 'out'}"
[data.sources.med]
paths = [{', '.join(f'"{p}"' for p in paths)}]
[curate]
heuristics = ["gopher_quality", "gopher_repetition", "c4"]
dedup = ["exact"]
tasks = 4
""")
    return recipe


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="/work/shared/data/medical/medical.jsonl")
    ap.add_argument("--docs", type=int, default=8000)
    ap.add_argument("--dir", default="/tmp/bench_curate_score")
    ap.add_argument("--local-only", action="store_true", help="skip the Ray run (no cluster start-up)")
    args = ap.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    recipe = prepare(Path(args.corpus), root, args.docs)
    runs = [("local, 1 worker", "local", 1), ("local, 2 workers", "local", 2), ("ray (local cluster), 2 workers", "ray", 2)]
    if args.local_only:
        runs = runs[:2]
    print(f"{args.docs:,} documents of {args.corpus} in 4 files, 4 tasks; heuristics gopher_quality, "
          f"gopher_repetition, c4; exact dedup; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print("| executor | wall incl. start (s) | Ray start (s) | scoring command (s) | documents/s (command) |")
    print("|---|---|---|---|---|")
    for name, executor, workers in runs:
        cmd = [sys.executable, "-c", CHILD, executor, "score", str(recipe), "--restart", "--workers", str(workers),
               "--set", f"curate.executor={executor}"]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"| {name} | {wall:.1f} | {r['init_s']:.1f} | {r['score_s']:.1f} | {args.docs / r['score_s']:,.0f} |")
    print(f"(load average after: {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
