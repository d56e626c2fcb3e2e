"""Training throughput: continua's loop (`train run`, FSDP2 world 1) vs a plain Hugging Face Trainer.

Same model (a small Llama built from the same config and seed), same windows of tokens, same
batch, AdamW and LR; we compare steady-state tokens/s and MFU. A step's time is measured the same
way for both: from the end of one optimizer step to the end of the next (so it includes fetching
the batch, the update and the logging), median over the steps after warm-up; each loop runs
`--rounds` times, alternating, and its best round is reported.
Prints a table. Needs `accelerate` for the Trainer. Run: python bench/bench_train_loop.py [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from continua.recipe import recipe_from_dict
from mix.manifest import Manifest, SourceEntry, SplitEntry
from mix.shards import ShardWriter


def make_shards(folder: Path, vocab: int, tokens: int, seed: int = 0) -> None:
    """Random documents of 50-400 tokens ending in EOS (id 1): throughput does not depend on content."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n_tok in (("train", tokens), ("valid", 20_000)):
        rel, total, docs = f"web/{split}/00000.ds", 0, 0
        with ShardWriter(folder / rel, np.uint16, "bench") as w:
            while total < n_tok:
                doc = rng.integers(2, vocab, size=int(rng.integers(50, 400)))
                doc[-1] = 1
                w.write(doc)
                total, docs = total + doc.size, docs + 1
        splits[split] = SplitEntry(docs=docs, tokens=total, shards=[rel])
    src = SourceEntry(role="general", epochs=1.0, target_tokens=splits["train"].tokens, share=1.0, **splits)
    Manifest(tokenizer={"path": "", "vocab_size": vocab, "eos_id": 1, "bos_id": 0}, seed=seed,
             sources={"web": src}, total_target_tokens=src.target_tokens).save(folder)


def recipe_for(folder: Path, args) -> dict:
    return {"run": {"out_dir": str(folder / "out"), "seed": 0},
            "model": {"hidden_size": args.hidden, "intermediate_size": args.hidden * 8 // 3 // 64 * 64 or 64,
                      "num_layers": args.layers, "num_heads": args.hidden // 64, "max_position_embeddings": args.seq},
            "optim": {"lr": 3e-4}, "schedule": {"name": "constant", "warmup": 0},
            "eval": {"every": 10_000, "max_batches": 1, "batch_size": 1},
            "train": {"steps": args.steps, "seq_len": args.seq, "batch_size": args.batch, "tensorboard": False,
                      "shards": str(folder / "shards"), "peak_flops": args.peak_flops}}


def bench_continua(folder: Path, args) -> dict:
    from train.loop import run
    from train.gap import read_metrics

    recipe = recipe_from_dict(recipe_for(folder, args))
    t0, c0 = time.perf_counter(), time.process_time()
    run(recipe, resume=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = [r for r in read_metrics(folder / "out" / "train" / "metrics.jsonl") if r["kind"] == "train"]
    ends = [r["elapsed_s"] for r in rows]  # step-end clock: data, update, logging, all of it
    step_s = statistics.median(b - a for a, b in zip(ends[args.warmup:], ends[args.warmup + 1:]))
    return {"step_s": step_s, "wall_s": wall, "cpu_s": cpu, "loss": rows[-1]["loss"]}


def bench_trainer(folder: Path, args) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from continua.recipe import recipe_from_dict
    from train.data import Sampler
    from train.model import build_model

    recipe = recipe_from_dict(recipe_for(folder, args))
    manifest = Manifest.load(folder / "shards")
    sampler = Sampler(folder / "shards", manifest, args.seq, args.batch, seed=0)
    windows = np.concatenate([sampler.next_batch() for _ in range(args.steps)])
    data = [{"input_ids": torch.as_tensor(w[:-1]), "labels": torch.as_tensor(w[:-1])} for w in windows]
    model, _ = build_model(recipe.model, manifest.tokenizer, seed=0, work_dir=folder)
    ends: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, *a, **k):
            ends.append(time.perf_counter())

    targs = TrainingArguments(output_dir=str(folder / "hf"), per_device_train_batch_size=args.batch, max_steps=args.steps,
                              learning_rate=3e-4, lr_scheduler_type="constant", weight_decay=0.1, adam_beta2=0.95,
                              max_grad_norm=1.0, logging_steps=10_000, save_strategy="no", report_to=[],
                              use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=targs, train_dataset=data, callbacks=[Timer()])
    t0, c0 = time.perf_counter(), time.process_time()
    out = trainer.train()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    step_s = statistics.median(b - a for a, b in zip(ends[args.warmup:], ends[args.warmup + 1:]))
    return {"step_s": step_s, "wall_s": wall, "cpu_s": cpu, "loss": out.training_loss}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3, help="first steps left out of the median")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--peak-flops", type=float, default=0.0, help="0 = measure a float32 matmul")
    p.add_argument("--rounds", type=int, default=2, help="alternating runs of each; the best is reported")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    from train.metrics import measure_peak_flops
    from train.model import build_model, flops_per_token

    if not args.peak_flops:
        args.peak_flops = measure_peak_flops(torch.device("cpu"), seconds=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_shards(folder / "shards", args.vocab, args.steps * args.batch * args.seq * 2)
        recipe = recipe_from_dict(recipe_for(folder, args))
        model, _ = build_model(recipe.model, {"vocab_size": args.vocab}, 0, folder)
        fpt = flops_per_token(model, args.seq)
        n_params = sum(p.numel() for p in model.parameters())
        del model
        runs: dict[str, list[dict]] = {"continua train run": [], "HF Trainer": []}
        for _ in range(args.rounds):  # alternate, keep each one's best round: shared machines are noisy
            runs["HF Trainer"].append(bench_trainer(folder, args))
            runs["continua train run"].append(bench_continua(folder, args))
        results = {k: min(v, key=lambda r: r["step_s"]) for k, v in runs.items()}
    tokens = args.batch * args.seq
    print(f"\nmodel: Llama {n_params / 1e6:.2f}M params (hidden {args.hidden}, {args.layers} layers, vocab "
          f"{args.vocab}), batch {args.batch} x seq {args.seq}, {args.steps} steps, {torch.get_num_threads()} threads, "
          f"peak {args.peak_flops / 1e9:.1f} GFLOP/s (measured fp32 matmul), load average {os.getloadavg()[0]:.1f}\n")
    print(f"{'loop':<22}{'step s (median)':>16}{'tokens/s':>12}{'MFU':>8}{'wall s':>9}{'CPU s':>9}{'vs HF':>8}")
    base = tokens / results["HF Trainer"]["step_s"]
    for name, r in results.items():
        tps = tokens / r["step_s"]
        r.update(tokens_per_s=tps, mfu=fpt * tps / args.peak_flops, speedup=tps / base)
        print(f"{name:<22}{r['step_s']:>16.4f}{tps:>12,.0f}{100 * r['mfu']:>7.1f}%{r['wall_s']:>9.1f}{r['cpu_s']:>9.1f}{tps / base:>7.2f}x")
    print("\nwall s / CPU s: the whole call (continua's includes its step-0 and final evaluation, checkpoint and "
          "export; the Trainer here evaluates and saves nothing)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=2))


if __name__ == "__main__":
    main()
