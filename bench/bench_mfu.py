"""MFU of `train run` for a fresh Llama of a given size on a GPU (~1B, seq 2048, bf16).

Writes synthetic shards, runs the real `train run` command (dtype auto = bf16 mixed precision on a
GPU, FSDP2 per block), and reports the median tokens/s and MFU of the steps after warm-up against
the GPU datasheet bf16 peak and the measured peak of a large bf16 matmul (no MFU on CPU), next to the
model's size. `--preset 1b` is a TinyLlama-1.1B-shaped model; `--preset tiny` checks the script
on CPU in a minute. Run: python bench/bench_mfu.py --preset 1b [--batch 8 --micro 4 --compile --ac]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_loop import make_shards  # noqa: E402

from train.gap import read_metrics  # noqa: E402

PRESETS = {  # shape of the model; vocab is also the synthetic data's
    "1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_layers": 22, "num_heads": 32, "num_kv_heads": 4,
           "vocab": 32000, "tie_embeddings": False},
    "135m": {"hidden_size": 576, "intermediate_size": 1536, "num_layers": 30, "num_heads": 9, "num_kv_heads": 3,
             "vocab": 49152, "tie_embeddings": True},  # SmolLM2-135M's shape
    "tiny": {"hidden_size": 128, "intermediate_size": 384, "num_layers": 2, "num_heads": 4, "num_kv_heads": 4,
             "vocab": 4096, "tie_embeddings": True},
}


def recipe(folder: Path, args, shape: dict) -> dict:
    model = {k: v for k, v in shape.items() if k != "vocab"}
    model["max_position_embeddings"] = args.seq
    train = {"steps": args.steps, "seq_len": args.seq, "batch_size": args.batch, "tensorboard": False,
             "shards": str(folder / "shards"), "out": str(folder / "run"), "compile": args.compile,
             "activation_checkpointing": args.ac, "checkpoint_every": 0, "keep_checkpoints": 1,
             "device": args.device, "save_final": False,  # a timing run: no final checkpoint, no export
             # the first window (the warm-up steps) is read on its own, so steady steps have their own tokens/s
             "log_every": args.log_every or args.warmup}
    if args.micro:
        train["micro_batch_size"] = args.micro
    return {"run": {"out_dir": str(folder / "out"), "seed": 0}, "model": model,
            "optim": {"lr": 3e-4}, "schedule": {"name": "constant", "warmup": 0},
            "eval": {"every": 10 ** 9, "max_batches": 1, "batch_size": 1}, "train": train}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8, help="sequences per optimizer step (all processes)")
    p.add_argument("--micro", type=int, default=0, help="sequences per forward per process (0 = batch / nproc)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of the medians (compile, allocator)")
    p.add_argument("--nproc", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="torch.compile each decoder block")
    p.add_argument("--ac", action="store_true", help="activation checkpointing")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--log-every", type=int, default=0, help="[train] log_every (0 = --warmup)")
    p.add_argument("--work", type=Path, default=None,
                   help="keep shards and run here (metrics.jsonl grows as the run goes); default: a temporary folder")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    if args.steps <= args.warmup:
        p.error("--steps must be larger than --warmup")
    shape = PRESETS[args.preset]
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.work or Path(tmp)
        make_shards(folder / "shards", shape["vocab"], args.steps * args.batch * (args.seq + 1) * 2)
        from continua.recipe import recipe_from_dict, toml_text

        table = recipe(folder, args, shape)
        r = recipe_from_dict(table)  # validated before the (long) run
        path = folder / "mfu.toml"
        path.write_text(toml_text(table))
        cmd = [sys.executable, "-m", "train.cli", "run", str(path), "--nproc", str(args.nproc)]
        subprocess.run(cmd, check=True)
        rows = [row for row in read_metrics(Path(r.train.out) / "metrics.jsonl") if row["kind"] == "train"]
    steady = rows[args.warmup:]
    tps = statistics.median(row["tokens_per_s"] for row in steady)
    mfu = statistics.median(row["mfu"] for row in steady) if "mfu" in steady[0] else float("nan")
    measured = statistics.median(row["mfu_measured"] for row in steady) if "mfu_measured" in steady[0] else mfu
    result = {"preset": args.preset, "seq": args.seq, "batch": args.batch, "micro": args.micro, "nproc": args.nproc,
              "compile": args.compile, "activation_checkpointing": args.ac, "tokens_per_s": tps, "mfu": mfu,
              "mfu_measured_peak": measured, "final_loss": rows[-1]["loss"], "steps": len(rows),
              "peak_mem_gib": max((row.get("mem_reserved_gib", float("nan")) for row in rows), default=float("nan"))}
    print(f"\n{'preset':<8}{'seq':>6}{'batch':>7}{'procs':>7}{'compile':>9}{'AC':>5}{'tokens/s':>12}{'MFU':>8}"
          f"{'MFU(meas.)':>11}")
    yes = {True: "yes", False: "no"}
    print(f"{args.preset:<8}{args.seq:>6}{args.batch:>7}{args.nproc:>7}{yes[args.compile]:>9}{yes[args.ac]:>5}"
          f"{tps:>12,.0f}{100 * mfu:>7.1f}%{100 * measured:>10.1f}%")
    print("MFU = 6N + attention FLOPs per token x tokens/s / (processes x datasheet bf16 peak); MFU(meas.) against "
          "the measured bf16 matmul peak; no MFU on CPU (nan); median of the steps after --warmup")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
