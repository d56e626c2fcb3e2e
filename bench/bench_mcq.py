"""Zero-shot MCQ accuracy and throughput of a local model on local JSONL benchmarks (prints a table).

    python bench/bench_mcq.py --model DIR [--gguf-file F.gguf] --bench medqa=PATH --bench pubmedqa=PATH \
        [--max-items 100] [--batch-size 8] [--device cpu]

Why: checks that train.mcq reproduces sensible accuracies for a real model (near chance for a 135M
model, as the studies report at that scale) and measures how much an evaluation costs per item.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from continua.tokenizer import load_tokenizer
from train.mcq import evaluate_mcq, load_benchmark


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a Hugging Face model folder")
    p.add_argument("--gguf-file", default=None, help="GGUF file name inside --model")
    p.add_argument("--bench", action="append", required=True, metavar="NAME=PATH", help="benchmark JSONL (repeat)")
    p.add_argument("--max-items", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)

    from transformers import AutoModelForCausalLM

    kwargs = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(str(args.model), torch_dtype=torch.float32, **kwargs)
    device = torch.device(args.device)
    model.to(device).eval()
    tok = load_tokenizer(args.model / args.gguf_file if args.gguf_file else args.model)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    print(f"model {args.model} ({sum(x.numel() for x in model.parameters()) / 1e6:.1f}M params), device {device}, "
          f"batch {args.batch_size}, BOS {tok.bos_token if tok.add_bos else 'none'}")
    print(f"| benchmark | items | options | acc | acc_norm | chance | seconds | items/s |")
    print(f"|---|---|---|---|---|---|---|---|")
    for spec in args.bench:
        name, path = spec.split("=", 1)
        items = load_benchmark(path, args.max_items)
        n_opt = len(items[0].options)
        t0 = time.perf_counter()
        r = evaluate_mcq(model, tok, items, device, batch_size=args.batch_size, autocast_dtype=autocast)
        dt = time.perf_counter() - t0
        print(f"| {name} | {r['count']} | {n_opt} | {r['acc']:.3f} | {r['acc_norm']:.3f} | {1 / n_opt:.3f} | "
              f"{dt:.1f} | {r['count'] / dt:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
