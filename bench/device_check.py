"""The GPU checks in one command, sized for ~8 minutes on one H100/H200:

    python bench/device_check.py            (from the repo root; ../shared/ beside it; results in $OUT)

1. MFU of `train run` on a ~1.1B Llama (TinyLlama shape), seq 2048, bf16 mixed precision, without and
   with torch.compile (bench/bench_mfu.py), against the datasheet and the measured bf16 peak.
2. SmolLM2-135M continual pre-training on the whole ../shared/data medical corpus, naive vs guo-40
   (`continua compare`, curate -> mix -> train), tokens/s and final losses. SmolLM2 comes from $SMOLLM2
   (a .gguf), else ../shared/tools/get-smollm2.sh; without either, a SmolLM2-shaped random Llama on the
   pipeline's own tokenizer stands in (same cost per token, meaningless losses; the table says so).
3. LM-perplexity scoring throughput on GPU (bench/bench_perplexity.py --lm-only).

Each part runs under its own timeout and its log goes to $OUT/logs/; a part that fails or times out is
a row saying so, and the others still run. Prints a table and writes $OUT/device_check.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = {"mfu": 100, "mfu_compile": 150, "cpt": 190, "perplexity": 40}  # 480 s = 8 min


def shared_data() -> Path:
    for cand in (ROOT.parent / "shared" / "data", Path("/work/shared/data")):
        if cand.is_dir():
            return cand
    raise SystemExit("device_check: no ../shared/data beside the repo (nor /work/shared/data)")


def call(cmd: list[str], log: Path, timeout: float, cwd: Path = ROOT) -> tuple[str, float]:
    """('ok' | 'timeout' | 'exit N', seconds); stdout and stderr appended to `log`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(map(str, cmd))}\n")
        f.flush()
        try:
            code = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=max(1.0, timeout)).returncode
        except subprocess.TimeoutExpired:
            return "timeout", time.perf_counter() - t0
    return ("ok" if code == 0 else f"exit {code}"), time.perf_counter() - t0


def part_mfu(out: Path, compile: bool) -> dict:
    name = "mfu_compile" if compile else "mfu"
    res = out / f"{name}.json"
    cmd = [sys.executable, "bench/bench_mfu.py", "--preset", "1b", "--seq", "2048", "--batch", "8", "--micro", "4",
           "--steps", "14" if compile else "12", "--warmup", "6" if compile else "4", "--json", res]
    if compile:
        cmd.append("--compile")
    status, secs = call(cmd, out / "logs" / f"{name}.log", BUDGET_S[name])
    row = {"part": f"MFU 1.1B Llama seq 2048 bf16{' + compile' if compile else ''}", "status": status, "seconds": secs}
    if status == "ok":
        r = json.loads(res.read_text())
        row["figures"] = (f"{r['tokens_per_s']:,.0f} tok/s, MFU {100 * r['mfu']:.1f}% (datasheet peak), "
                          f"{100 * r['mfu_measured_peak']:.1f}% (measured bf16 peak)")
    return row


def _smollm2(work: Path, log: Path, deadline: float) -> Path | None:
    if os.environ.get("SMOLLM2") and Path(os.environ["SMOLLM2"]).is_file():
        return Path(os.environ["SMOLLM2"])
    tool = ROOT.parent / "shared" / "tools" / "get-smollm2.sh"
    if tool.is_file():
        status, _ = call(["bash", tool, work / "smollm2"], log, min(60, deadline - time.perf_counter()))
        found = sorted((work / "smollm2").glob("*.gguf"))
        if status == "ok" and found:
            return found[0]
    return None


def part_cpt(out: Path, data: Path) -> dict:
    work, log = out / "cpt", out / "logs" / "cpt.log"
    work.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + BUDGET_S["cpt"]
    row = {"part": "SmolLM2-135M CPT, medical, naive vs guo-40", "status": "ok", "seconds": 0.0}

    def step(cmd: list) -> bool:
        status, secs = call(cmd, log, deadline - time.perf_counter())
        row["seconds"] += secs
        if status != "ok":
            row["status"] = f"{status} at {Path(str(cmd[1])).name}"
        return status == "ok"

    gguf = _smollm2(work, log, deadline)
    if not step([sys.executable, "bench/results/prepare_medical.py", "--data", data, "--out", work,
                 "--medical-chars", str(10 ** 12), "--general-chars", "20000000"]):
        return row
    if not step([sys.executable, "-m", "curate.cli", "train-classifier", "--pos", work / "data/clf_pos.jsonl",
                 "--neg", work / "data/clf_neg.jsonl", "--balance", "--seed", "0",
                 "--out", work / "classifier/medical_quality.bin"]):
        return row
    if gguf is None:  # stand-in: SmolLM2-135M's shape on the pipeline's 8k tokenizer
        model, tokenizer = work / "smollm2-shaped", work / "tokenizer"
        if not step([sys.executable, "-c", _SMOLLM2_SHAPED, tokenizer, model]):
            return row
        row["part"] += " (SmolLM2-shaped random init: no SmolLM2 GGUF offline)"
    else:
        model, tokenizer = gguf, gguf
    sets = {"data.tokenizer": tokenizer, "data.sources.domain.paths": [str(work / "data/medical.jsonl")],
            "data.sources.domain.id_field": "id", "data.sources.general.paths": [str(work / "data/general.jsonl")],
            "data.sources.general.id_field": "id", "curate.classifiers.quality": work / "classifier/medical_quality.bin",
            "curate.workers": 8, "curate.tasks": 8, "model.path": model, "optim.lr": 1e-4, "train.nproc": 1,
            "train.device": "cuda", "train.seq_len": 2048, "train.batch_size": 16, "train.tensorboard": False,
            "mix.valid_fraction": 0.01, "eval.num_evals": 6, "eval.max_batches": 2, "eval.batch_size": 8}
    cmd = [sys.executable, "-m", "workflow.cli", "compare", "recipes/naive.toml", "recipes/guo-40.toml",
           "--out", work / "compare"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={json.dumps(value if isinstance(value, (int, float, list)) else str(value))}"]
    ok = step(cmd)
    figures = []
    for metrics in sorted((work / "compare").glob("*/train/metrics.jsonl")):
        rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
        train = [r for r in rows if r.get("kind") == "train"]
        evals = [r for r in rows if r.get("kind") == "eval"]
        if train:
            tps = statistics.median(r["tokens_per_s"] for r in train[2:] or train)
            last = {k: round(v, 3) for k, v in (evals[-1]["metrics"] if evals else {}).items() if k.startswith("loss/")}
            figures.append(f"{metrics.parents[1].name}: {len(train)} steps, {train[-1]['tokens']:,} tokens, "
                           f"{tps:,.0f} tok/s, final {last}")
    row["figures"] = "; ".join(figures) or "no training steps"
    if ok and not figures:
        row["status"] = "no metrics"
    return row


_SMOLLM2_SHAPED = """
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
from continua.tokenizer import load_tokenizer
tok = load_tokenizer(sys.argv[1])
cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                  num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
                  tie_word_embeddings=True, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
torch.manual_seed(0)
LlamaForCausalLM(cfg).save_pretrained(sys.argv[2])
"""


def part_perplexity(out: Path, data: Path) -> dict:
    gguf = sorted((out / "cpt" / "smollm2").glob("*.gguf")) if (out / "cpt" / "smollm2").is_dir() else []
    cmd = [sys.executable, "bench/bench_perplexity.py", "--lm-only", "--data", data, "--lm-docs", "2000",
           "--docs", "1000", "--out", out / "perplexity"]
    if gguf:
        cmd += ["--model", gguf[0].parent]
    status, secs = call(cmd, out / "logs" / "perplexity.log", BUDGET_S["perplexity"])
    row = {"part": f"LM perplexity scoring ({'SmolLM2' if gguf else 'random 12M Llama'})", "status": status,
           "seconds": secs}
    res = out / "perplexity" / "bench_perplexity.json"
    if status == "ok" and res.is_file():
        rows = json.loads(res.read_text())["rows"]
        row["figures"] = "; ".join(f"{r['setting']}: {r['tokens_per_s']:,.0f} tok/s" for r in rows)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", choices=["mfu", "mfu_compile", "cpt", "perplexity"], default=None)
    args = p.parse_args()
    out = Path(os.environ.get("OUT") or ROOT / "bench_out" / "device_check")
    (out / "logs").mkdir(parents=True, exist_ok=True)
    data = shared_data()
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (CPU only: figures are not the check)"
    parts = {"mfu": lambda: part_mfu(out, False), "mfu_compile": lambda: part_mfu(out, True),
             "cpt": lambda: part_cpt(out, data), "perplexity": lambda: part_perplexity(out, data)}
    rows = []
    for name, fn in parts.items():
        if args.only is None or name in args.only:
            try:
                rows.append(fn())
            except Exception as e:  # noqa: BLE001 - one broken part must not hide the others' figures
                rows.append({"part": name, "status": f"error: {type(e).__name__}: {e}", "seconds": 0.0})
            print(f"[device_check] {rows[-1]['part']}: {rows[-1]['status']} ({rows[-1]['seconds']:.0f} s)", flush=True)
    lines = [f"device: {gpu}; torch {torch.__version__}", "",
             "| part | status | s | figures |", "| --- | --- | ---: | --- |"]
    lines += [f"| {r['part']} | {r['status']} | {r['seconds']:.0f} | {r.get('figures', '')} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    (out / "device_check.md").write_text(text)
    (out / "device_check.json").write_text(json.dumps({"device": gpu, "rows": rows}, indent=2) + "\n")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
