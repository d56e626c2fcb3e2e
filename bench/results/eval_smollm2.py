"""Evaluate the SmolLM2 experiment (bench/results/run_smollm2.sh): selector AUC, losses, benchmarks.

    python bench/results/eval_smollm2.py --out OUT [--data /work/shared/data] [--mmlu 30 --medqa 10 --pubmedqa 10]
        [--runs naive,guo-40-reference]   (each model's scores are kept in OUT/eval/NAME.json and reused)

1. the selector: ROC AUC that a held-out reference document (BC5CDR, never in the reference model)
   has a lower reference perplexity than a candidate-pool document, and than an enwiki document;
2. per model (the base and each run's export): WikiText-2 validation loss (nats/token over fixed
   windows), and zero-shot accuracy on evenly spread subsets of MMLU-medical, MedQA and PubMedQA
   (test split) with binomial standard errors sqrt(p(1-p)/n) (PubMedQA: acc, not acc_norm);
3. the runs' validation losses and stability gap from continua compare's comparison.json, and the
   benchmark accuracy (± binomial SE) at every evaluation of the runs that scored benchmarks in the loop,
   plotted in OUT/smollm2-acc.png;
4. with --harness (default on): for each run that scored benchmarks in the loop, lm-evaluation-harness
   (`train lm-eval`) on its export, compared item by item with train.mcq on the same items: how many items
   get the same answer, and the largest log-likelihood difference.
Writes OUT/smollm2.json and OUT/smollm2.md; prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from continua.io import read_json, write_json, write_text
from train.gap import gap_metrics

BENCH = {"mmlu_medical": "benchmarks/mmlu_medical6_test.jsonl", "medqa": "benchmarks/medqa_usmle_4opt_test.jsonl"}


def read_texts(paths: list[Path]) -> list[str]:
    return [json.loads(line)["text"] for p in paths for line in open(p, encoding="utf-8") if line.strip()]


def selector_auc(out: Path, data: Path) -> dict:
    """AUC of held-out reference text ranked above the pool (and enwiki) by reference perplexity."""
    from curate.ngram import NgramModel

    model = NgramModel.load(out / "reference" / "bc5cdr.ngram.npz")
    held = read_texts([out / "data" / "reference_heldout.jsonl"])
    pool = read_texts(sorted((out / "data" / "medical").glob("*.jsonl")))
    wiki = read_texts([out / "data" / "general.jsonl"])
    return {"heldout_reference_docs": len(held), "pool_docs": len(pool), "enwiki_docs": len(wiki),
            "auc_vs_pool": model.ranking_auc(held, pool), "auc_vs_enwiki": model.ranking_auc(held, wiki),
            "median_ppl": {name: float(np.median(model.perplexity(t)))
                           for name, t in (("heldout_reference", held), ("pool", pool), ("enwiki", wiki))}}


@torch.no_grad()
def text_loss(model, tok, text: str, seq_len: int, windows: int) -> float:
    """Mean token loss over the first `windows` windows of seq_len+1 tokens of `text`."""
    ids = np.asarray(tok.backend.encode(text[: windows * (seq_len + 1) * 8], add_special_tokens=False).ids)
    n = min(windows, ids.size // (seq_len + 1))
    x = torch.as_tensor(ids[: n * (seq_len + 1)].reshape(n, seq_len + 1), dtype=torch.long)
    total = 0.0
    for i in range(0, n, 4):
        b = x[i: i + 4]
        logits = model(input_ids=b[:, :-1]).logits.float()
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), b[:, 1:].flatten(), reduction="sum").item()
    return total / (n * seq_len)


def se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="the OUT folder of run_smollm2.sh")
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--mmlu", type=int, default=30, help="MMLU-medical items (evenly spread, fixed)")
    ap.add_argument("--medqa", type=int, default=10)
    ap.add_argument("--pubmedqa", type=int, default=10)
    ap.add_argument("--wikitext-windows", type=int, default=8)
    ap.add_argument("--runs", default="naive,guo-40-reference",
                    help="runs to score on the benchmarks (comma-separated)")
    ap.add_argument("--harness", action=argparse.BooleanOptionalAction, default=True,
                    help="check train.mcq against lm-evaluation-harness item by item (needs lm_eval)")
    ap.add_argument("--base", action=argparse.BooleanOptionalAction, default=True,
                    help="score the base model too (default; --no-base for a parallel call on runs only)")
    a = ap.parse_args(argv)
    from transformers import AutoModelForCausalLM

    from continua.tokenizer import load_tokenizer
    from train.mcq import evaluate_mcq, load_benchmark

    torch.set_num_threads(2)
    out = a.out.resolve()
    t0 = time.perf_counter()
    result: dict = {"selector": selector_auc(out, a.data)}
    s = result["selector"]
    print(f"selector: held-out reference vs pool ROC AUC {s['auc_vs_pool']:.3f}, vs enwiki {s['auc_vs_enwiki']:.3f} "
          f"({s['heldout_reference_docs']} / {s['pool_docs']} / {s['enwiki_docs']} documents; median perplexity "
          + ", ".join(f"{k} {v:.0f}" for k, v in s["median_ppl"].items()) + ")")

    band = out / "guo-band" / "plan.json"
    result["band"] = read_json(band).get("band") if band.exists() else None
    cmp_path = out / "compare" / "comparison.json"
    result["comparison"] = read_json(cmp_path)["runs"] if cmp_path.exists() else None

    items = {"mmlu_medical": load_benchmark(a.data / BENCH["mmlu_medical"], a.mmlu),
             "medqa": load_benchmark(a.data / BENCH["medqa"], a.medqa),
             "pubmedqa": load_benchmark(out / "data" / "pubmedqa_test.jsonl", a.pubmedqa)}
    wikitext = (a.data / "general" / "wikitext2-valid.txt").read_text(encoding="utf-8")
    models = {"base": out / "smollm2-hf"} if a.base else {}
    for name in [r for r in a.runs.split(",") if r]:
        models[name] = out / "compare" / name / "train" / "export"
        if not (models[name] / "config.json").exists():
            raise SystemExit(f"eval_smollm2: run {name!r} has no exported model at {models[name]}")
    tok = load_tokenizer(out / "smollm2-hf")
    settings = {"mmlu_items": a.mmlu, "medqa_items": a.medqa, "pubmedqa_items": a.pubmedqa,
                "wikitext_windows": a.wikitext_windows, "seq_len": 256}
    result["models"] = {}
    for name, path in models.items():
        cache = out / "eval" / f"{name}.json"  # one file per model: a re-run (or a later call) reuses it
        if cache.exists() and read_json(cache)["settings"] == settings:
            result["models"][name] = row = read_json(cache)["row"]
        else:
            t1 = time.perf_counter()
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
            row = {"wikitext2_loss": text_loss(model, tok, wikitext, 256, a.wikitext_windows)}
            for bench, its in items.items():
                r = evaluate_mcq(model, tok, its, torch.device("cpu"), batch_size=4)
                row[bench] = {"n": r["count"], "acc": r["acc"], "acc_se": se(r["acc"], r["count"]),
                              "acc_norm": r["acc_norm"]}
            row["seconds"] = round(time.perf_counter() - t1, 1)
            write_json(cache, {"settings": settings, "model": str(path), "row": row})
            del model
        row["pubmedqa_answers"] = answer_shares(out / "eval" / f"{name}-pubmedqa-answers.json", path, tok,
                                                items["pubmedqa"])
        result["models"][name] = row
        print(f"{name}: wikitext-2 {row['wikitext2_loss']:.3f}; " + "; ".join(
            f"{b} {row[b]['acc']:.3f} +- {row[b]['acc_se']:.3f} (n={row[b]['n']})" for b in items)
            + f"  [{row['seconds']} s]", flush=True)
    result["curves"] = curves(out)
    plot_accuracy(result["curves"], out / "smollm2-acc.png")
    if a.harness:
        result["harness"] = {}
        for run in result["curves"]:
            if any(k.startswith("acc/") for k in result["curves"][run]["acc"]):
                result["harness"][run] = harness_agreement(out / "compare" / run / "train", tok)
                print(f"{run}: lm-evaluation-harness vs train.mcq: " + "; ".join(
                    f"{b} {h['same_answer']}/{h['n']} same answer, acc {h['acc_harness']:.3f} vs {h['acc_mcq']:.3f}, "
                    f"max |loglik diff| {h['max_abs_diff']:.2e}" for b, h in result["harness"][run].items()), flush=True)
    result["settings"] = {**settings, "seconds": round(time.perf_counter() - t0, 1)}
    write_json(out / "smollm2.json", result)
    write_text(out / "smollm2.md", render(result))
    print(render(result))
    return 0


def curves(out: Path) -> dict:
    """Per run: validation losses at every evaluation step (metrics.jsonl) and the gap metrics (gap.json)."""
    runs = {}
    for run in sorted((out / "compare").glob("*/train/metrics.jsonl")):
        evals = [json.loads(line) for line in open(run, encoding="utf-8") if line.strip()]
        evals = [e for e in evals if e.get("kind") == "eval"]
        gap = run.parent / "gap.json"
        runs[run.parent.parent.name] = {
            "steps": [e["step"] for e in evals],
            "loss": {k: [e["metrics"].get(k) for e in evals] for k in evals[0]["metrics"] if k.startswith("loss/")},
            "acc": {k: [e["metrics"].get(k) for e in evals] for k in evals[0]["metrics"] if k.startswith("acc/")},
            "gap": read_json(gap)["sets"] if gap.exists() else None}
        c = runs[run.parent.parent.name]
        if c["acc"]:  # items per benchmark, for the standard errors and the gap metrics' noise bound
            c["bench_n"] = {f"acc/{k}": len(v) for k, v in bench_items(run.parent).items()}
            counts = {"items/" + k.split("/", 1)[1]: n for k, n in c["bench_n"].items()}
            # runs trained before the loop logged items/BENCH: add the counts, then the same gap metrics
            c["acc_gap"] = {k: v for k, v in gap_metrics([{**e, "metrics": {**counts, **e["metrics"]}} for e in evals])
                            ["sets"].items() if k in c["acc"]}
    return runs


def answer_shares(cache: Path, model_dir: Path, tok, items: list) -> dict:
    """How often the model answers each option (PubMedQA: yes / no / maybe) and the labels' own shares:
    a model that always says "no" scores the share of "no" labels, whatever it knows."""
    if cache.exists() and read_json(cache)["items"] == len(items):
        return read_json(cache)["shares"]
    from transformers import AutoModelForCausalLM

    from train.mcq import evaluate_mcq

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    scores = evaluate_mcq(model, tok, items, torch.device("cpu"), batch_size=8, return_scores=True)["scores"]
    options = items[0].options
    picked = [int(np.argmax(sc)) for sc in scores]
    shares = {"answered": {o: picked.count(i) / len(items) for i, o in enumerate(options)},
              "labels": {o: sum(it.answer == i for it in items) / len(items) for i, o in enumerate(options)}}
    write_json(cache, {"items": len(items), "shares": shares})
    return shares


def bench_items(run_dir: Path) -> dict:
    """benchmark -> the items the run scored in its loop (its recipe's [eval] benchmarks and subset)."""
    from continua.recipe import load_recipe
    from train.mcq import load_benchmarks

    recipe = load_recipe(run_dir / "recipe.toml")
    return load_benchmarks(recipe.eval.benchmarks, recipe.eval.mcq_max_items)


def harness_agreement(run_dir: Path, tok) -> dict:
    """`train lm-eval` on the run's export, then train.mcq on the same items: per benchmark, items with the
    same answer, both accuracies and the largest difference of any option's log-likelihood."""
    from transformers import AutoModelForCausalLM

    from train.harness import lm_eval_command
    from train.mcq import evaluate_mcq

    cache = run_dir.parents[2] / "eval" / f"harness-{run_dir.parent.name}.json"
    if cache.exists():
        return read_json(cache)
    if lm_eval_command(run_dir, "cpu", 8, "float32") != 0:
        raise SystemExit(f"eval_smollm2: train lm-eval failed on {run_dir}")
    model = AutoModelForCausalLM.from_pretrained(str(run_dir / "export"), dtype=torch.float32).eval()
    out = {}
    for name, items in bench_items(run_dir).items():
        ours = evaluate_mcq(model, tok, items, torch.device("cpu"), batch_size=8, return_scores=True)["scores"]
        theirs = [json.loads(line)["loglikelihoods"] for line in open(run_dir / "lm_eval" / f"items_{name}.jsonl")]
        same = sum(int(np.argmax(o) == np.argmax(t)) for o, t in zip(ours, theirs))
        diff = max(float(np.max(np.abs(np.asarray(o) - np.asarray(t)))) for o, t in zip(ours, theirs))
        out[name] = {"n": len(items), "same_answer": same, "max_abs_diff": diff,
                     "acc_mcq": float(np.mean([np.argmax(o) == it.answer for o, it in zip(ours, items)])),
                     "acc_harness": float(np.mean([np.argmax(t) == it.answer for t, it in zip(theirs, items)]))}
    write_json(cache, out)
    return out


def plot_accuracy(curves: dict, png: Path) -> None:
    """Benchmark accuracy at every evaluation step with ±1 binomial SE bars, one panel per benchmark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = sorted({k for c in curves.values() for k in c["acc"]})
    if not benches:
        return
    fig, axes = plt.subplots(1, len(benches), figsize=(5.5 * len(benches), 4), squeeze=False)
    for ax, bench in zip(axes[0], benches):
        for name, c in curves.items():
            acc = c["acc"].get(bench)
            if not acc:
                continue
            n = c.get("bench_n", {}).get(bench, 0)
            steps = np.array(c["steps"], dtype=float)
            yerr = [se(p, n) for p in acc] if n else None
            ax.errorbar(np.maximum(steps, 0.5), acc, yerr=yerr, marker="o", ms=3, capsize=2, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("step (log; step 0 drawn at 0.5)")
        ax.set_ylabel("zero-shot accuracy ± 1 SE")
        ax.set_title(bench.split("/", 1)[1])
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def render(r: dict) -> str:
    lines = []
    for name, c in r.get("curves", {}).items():
        for key, vals in c["acc"].items():
            n = c.get("bench_n", {}).get(key, 0)
            g = c.get("acc_gap", {}).get(key, {})
            lines.append(f"- {name} {key} (n={n}) at each evaluation step: " + ", ".join(
                f"{s}: {v:.3f} ± {se(v, n):.3f}" for s, v in zip(c["steps"], vals))
                + (f"; worst {g['worst']:.3f} at step {g['worst_step']} (dip {g['gap_depth']:.3f}), final change "
                   f"{g['final_change']:+.3f}, noise bound (2 SE of a difference) {g['noise']:.3f}: {g['outcome']}"
                   if g else ""))
    if lines:
        lines.append("")
    for key in ("loss/medical", "loss/general"):
        lines += [f"{key} (nats/token) at each evaluation step", ""]
        for name, c in r.get("curves", {}).items():
            vals = c["loss"].get(key) or []
            lines.append(f"- {name}: " + ", ".join(f"{s}: {v:.3f}" for s, v in zip(c["steps"], vals)))
        lines.append("")
    lines += ["| model | WikiText-2 loss | MMLU-medical acc | MedQA acc | PubMedQA acc |", "|---|---|---|---|---|"]
    for name, m in r["models"].items():
        lines.append(f"| {name} | {m['wikitext2_loss']:.3f} | " + " | ".join(
            f"{m[b]['acc']:.3f} ± {m[b]['acc_se']:.3f} (n={m[b]['n']})" for b in ("mmlu_medical", "medqa", "pubmedqa"))
            + " |")
    shares = {name: m["pubmedqa_answers"] for name, m in r["models"].items() if m.get("pubmedqa_answers")}
    if shares:
        labels = next(iter(shares.values()))["labels"]
        lines += ["", "PubMedQA answers given (share of items; labels: " + ", ".join(f"{k} {v:.2f}" for k, v in labels.items())
                  + ")", "", "| model | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        lines += [f"| {name} | " + " | ".join(f"{sh['answered'][k]:.2f}" for k in labels) + " |" for name, sh in shares.items()]
    for run, h in (r.get("harness") or {}).items():
        lines.append(f"\nlm-evaluation-harness vs train.mcq on {run}'s export: " + "; ".join(
            f"{b}: {x['same_answer']}/{x['n']} items same answer, acc {x['acc_harness']:.3f} (harness) vs "
            f"{x['acc_mcq']:.3f} (train.mcq), largest log-likelihood difference {x['max_abs_diff']:.2e}"
            for b, x in h.items()))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
