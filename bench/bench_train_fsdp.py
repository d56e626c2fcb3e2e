"""`train run` throughput with 1 process vs N torchrun processes (FSDP2 over gloo/nccl) on the same data.

Uses the synthetic shards and model of bench_train_loop; each run is a real `train run` command.
Prints median step time, tokens/s and MFU from each run's metrics.jsonl.
Run: python bench/bench_train_fsdp.py [--nproc 2] [--steps 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_loop import make_shards, recipe_for  # noqa: E402

from continua.recipe import recipe_from_dict  # noqa: E402
from train.gap import read_metrics  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--peak-flops", type=float, default=0.0)
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_shards(folder / "shards", args.vocab, args.steps * args.batch * args.seq * 2)
        for n in (1, args.nproc):
            recipe = recipe_from_dict(recipe_for(folder, args))
            recipe.train.out = folder / f"run{n}"
            path = folder / f"r{n}.toml"
            path.write_text(recipe.to_toml())
            subprocess.run([sys.executable, "-m", "train.cli", "run", str(path), "--nproc", str(n)], check=True,
                           stderr=subprocess.DEVNULL)
            rows = [r for r in read_metrics(folder / f"run{n}" / "metrics.jsonl") if r["kind"] == "train"][args.warmup:]
            results[n] = {"step_s": statistics.median(args.batch * args.seq / r["tokens_per_s"] for r in rows),
                          # metrics hold mfu only where a peak is known (on CPU: --peak-flops)
                          "mfu": statistics.median(r.get("mfu", float("nan")) for r in rows), "loss": rows[-1]["loss"]}
    print(f"\nbatch {args.batch} x seq {args.seq}, hidden {args.hidden}, {args.layers} layers, {args.steps} steps\n")
    print(f"{'processes':<12}{'step s (median)':>16}{'tokens/s':>12}{'MFU':>8}{'final loss':>12}")
    for n, r in results.items():
        print(f"{n:<12}{r['step_s']:>16.4f}{args.batch * args.seq / r['step_s']:>12,.0f}{100 * r['mfu']:>7.1f}%"
              f"{r['loss']:>12.4f}")


if __name__ == "__main__":
    main()
