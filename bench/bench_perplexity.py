"""Throughput of both perplexity scorers, tokens per second, on this machine.

* n-gram: train a reference model on a slice of medical.jsonl (orders 3-5), score an enwiki slice.
* causal LM: a randomly initialised Llama (~12M parameters: no pretrained model ships offline) with
  a byte-level BPE tokenizer trained here, scored on CPU (or GPU if torch sees one) at a few
  max_length / batch_tokens settings. Random weights cost exactly what trained ones do.

    python bench/bench_perplexity.py [--docs 2000] [--lm-docs 200] [--out bench_out/perplexity]
    python bench/bench_perplexity.py --lm-only --model DIR_WITH_GGUF --data ../shared/data   (the GPU check)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import orjson
import torch

from continua.io import write_json
from curate.lm_perplexity import LMScorer
from curate.ngram import train_ngram

DATA = Path("/work/shared/data")


def read(path: Path, n: int, skip: int = 0) -> list[str]:
    out = []
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            if i < skip:
                continue
            if len(out) >= n:
                break
            out.append(orjson.loads(line)["text"])
    return out


def tiny_llama(folder: Path, texts: list[str], vocab: int, hidden: int, layers: int) -> int:
    """Save a random Llama + BPE tokenizer (trained on `texts`) as a local model folder; return #params."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<s>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, intermediate_size=4 * hidden,
                      num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64,
                      max_position_embeddings=4096, bos_token_id=0, eos_token_id=1)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=3000, help="enwiki documents scored by the n-gram model")
    ap.add_argument("--ref-docs", type=int, default=10000, help="medical documents the n-gram model is trained on")
    ap.add_argument("--lm-docs", type=int, default=200, help="enwiki documents scored by the LM")
    ap.add_argument("--out", type=Path, default=Path("bench_out/perplexity"))
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder (general/, medical/)")
    ap.add_argument("--lm-only", action="store_true", help="skip the n-gram scorer")
    ap.add_argument("--model", type=Path, default=None,
                    help="score with this model folder (HF or GGUF, e.g. SmolLM2) instead of a random 12M Llama")
    ap.add_argument("--small", action="store_true", help="a 1-layer LM and one LM setting (a quick check that it runs)")
    args = ap.parse_args(argv)
    rows = []
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}"
    data = args.data

    texts = read(data / "general/enwiki.jsonl", args.docs)
    for order in () if args.lm_only else (3, 4, 5):
        ref = read(data / "medical/medical.jsonl", args.ref_docs)
        t0, c0 = time.perf_counter(), time.process_time()
        model = train_ngram(ref, order=order)
        t_train, c_train = time.perf_counter() - t0, time.process_time() - c0
        model.perplexity(texts[:50])  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        model.perplexity(texts)
        t_score, c_score = time.perf_counter() - t0, time.process_time() - c0
        n_tok = sum(len(x) + 1 for x in model.encoder.encode(texts))
        rows.append({"scorer": "n-gram train", "setting": f"order {order}", "docs": len(ref),
                     "tokens": model.info["n_tokens"], "seconds": t_train, "cpu_seconds": c_train})
        rows.append({"scorer": "n-gram score", "setting": f"order {order}, batch {len(texts)} docs",
                     "docs": len(texts), "tokens": n_tok, "seconds": t_score, "cpu_seconds": c_score})

    lm_texts = read(data / "general/enwiki.jsonl", args.lm_docs, skip=args.docs)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            n_params = tiny_llama(Path(tmp), texts[:1000], vocab=512 if args.small else 8192,
                                  hidden=64 if args.small else 256, layers=1 if args.small else 6)
        model_dir = str(args.model or tmp)
        settings = ((256, 4096), (512, 8192), (1024, 8192)) + (((1024, 65536),) if device == "cuda" else ())
        settings = settings[:1] if args.small else settings
        for max_length, batch_tokens in settings:
            scorer = LMScorer(model_dir, batch_tokens=batch_tokens, max_length=max_length, device=device)
            if args.model is not None:
                n_params = sum(p.numel() for p in scorer.model.parameters())
            scorer.perplexity(lm_texts[:4])  # load + warm-up
            ids = scorer.encode(lm_texts)
            t0, c0 = time.perf_counter(), time.process_time()
            scorer.score_ids(ids)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            rows.append({"scorer": f"LM ({n_params / 1e6:.1f}M Llama, {device})",
                         "setting": f"max_length {max_length}, batch_tokens {batch_tokens}",
                         "docs": len(lm_texts), "tokens": sum(len(x) - 1 for x in ids), "seconds": dt,
                         "cpu_seconds": cpu})
            args.out.mkdir(parents=True, exist_ok=True)
            write_json(args.out / "bench_perplexity.json", {"machine": machine, "rows": rows})  # so far

    print(f"machine: {machine}; load average {os.getloadavg()[0]:.1f} (other work on the machine slows wall "
          "time; tokens per CPU-second is the per-core rate, summed over torch's threads for the LM)")
    print(f"{'scorer':<30}{'setting':<40}{'docs':>7}{'tokens':>11}{'wall s':>8}{'tokens/s':>11}{'tok/CPU-s':>11}")
    for r in rows:
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
        r["tokens_per_cpu_s"] = r["tokens"] / r["cpu_seconds"]
        print(f"{r['scorer']:<30}{r['setting']:<40}{r['docs']:>7,}{r['tokens']:>11,}{r['seconds']:>8.2f}"
              f"{r['tokens_per_s']:>11,.0f}{r['tokens_per_cpu_s']:>11,.0f}")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "bench_perplexity.json", {"machine": machine, "rows": rows})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    labels = [f"{r['scorer']}\n{r['setting']}" for r in rows]
    ax.barh(labels, [r["tokens_per_s"] for r in rows])
    ax.set_xscale("log")
    ax.set_xlabel("tokens / second (log scale)")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "bench_perplexity.png", dpi=120)
    print(f"wrote {args.out / 'bench_perplexity.json'} and {args.out / 'bench_perplexity.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
