"""What adding a file to a scored source costs: `curate score` fresh on N files, then again after one more
file is added (no --restart), against a fresh run on all N+1 files.

    python bench/bench_curate_incremental.py [--corpus /work/shared/data/medical/medical.jsonl] [--docs 20000] [--files 8]
    python bench/bench_curate_incremental.py --small     # synthetic texts, seconds: the test suite runs this

The first --docs documents are split into --files JSON Lines files plus one more file of the same
size, added after the first run. Heuristics gopher_quality + c4, exact and MinHash dedup, stats (no
tokenizer or fastText model: the figure is the pipeline's own cost). Each run is `curate score` in
this process, 2 tasks, 2 workers. Prints the seconds of each run and checks that the incremental
result equals the fresh one (tables, marks, stats) and that it scored only the new file's piece.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl

from curate.cli import main as curate_main
from continua.score_table import scan_scores

WORDS = ("patient clinical trial dose lesion biopsy cohort therapy outcome risk study the of and with in a "
         "to was were for on by at as is").split()


def synthetic(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 120))).capitalize() + "." for _ in range(n)]


def corpus_texts(path: Path, n: int) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) >= n:
                break
    return texts


def write_parts(folder: Path, parts: list[list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(parts):
        (folder / f"part{i:03d}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in part))


def recipe(root: Path, data: Path) -> Path:
    path = root / "recipe.toml"
    path.write_text(f"""[run]
out_dir = "{root / 'out'}"
[data.sources.med]
paths = ["{data}"]
[curate]
heuristics = ["gopher_quality", "c4"]
dedup = ["exact", "minhash"]
""")
    return path


def score(path: Path) -> float:
    t = time.perf_counter()
    rc = curate_main(["score", str(path), "--tasks", "2", "--workers", "2"])
    if rc != 0:
        raise SystemExit(f"curate score exited {rc}")
    return time.perf_counter() - t


def outputs(root: Path) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    cdir = root / "out" / "curate"
    return (scan_scores(cdir, "med").collect().sort("doc_id").drop("path"),
            pl.read_parquet(cdir / "med" / "dedup.parquet").sort("doc_id"),
            json.loads((cdir / "med" / "stats.json").read_text()))


def run(texts: list[str], files: int, work: Path) -> dict:
    parts = [texts[k::files + 1] for k in range(files + 1)]
    inc, fresh = work / "inc", work / "fresh"
    write_parts(inc / "data", parts[:files])
    first = score(recipe(inc, inc / "data"))
    before = {p.name for p in (inc / "out" / "curate" / "med" / "scores").glob("*.parquet")}
    write_parts(inc / "data", parts)  # the earlier files are rewritten with equal bytes: hashed, not re-scored
    again = score(recipe(inc, inc / "data"))
    after = {p.name for p in (inc / "out" / "curate" / "med" / "scores").glob("*.parquet")}
    shutil.copytree(inc / "data", fresh / "data")
    full = score(recipe(fresh, fresh / "data"))
    a, b = outputs(inc), outputs(fresh)
    equal = a[0].equals(b[0]) and a[1].equals(b[1]) and a[2] == b[2]
    return {"docs": len(texts), "files": files, "first_s": round(first, 2), "add_one_file_s": round(again, 2),
            "fresh_all_s": round(full, 2), "new_pieces": len(after - before), "kept_pieces": len(after & before),
            "equal_to_fresh": equal}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("/work/shared/data/medical/medical.jsonl"))
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--small", action="store_true", help="300 synthetic documents in 3 + 1 files")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.small:
            result = run(synthetic(300, 0), 3, Path(tmp))
        else:
            result = run(corpus_texts(args.corpus, args.docs), args.files, Path(tmp))
    print(json.dumps(result))
    if not result["equal_to_fresh"] or result["new_pieces"] != 1:
        raise SystemExit("incremental run differs from a fresh one, or re-scored more than the new file")


if __name__ == "__main__":
    main()
