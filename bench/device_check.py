"""The GPU check in one command, within 8 minutes on one H100/H200 by construction (the budgets below
sum to 420 s, each a hard limit, and no part runs past 470 s):

    python bench/device_check.py          (from the repo root; figures in $OUT, else bench_out/device_check)
    python bench/device_check.py --dry    (every part on CPU with tiny sizes and synthetic data: the suite runs it)

Each part runs as `device_check.py --part NAME` in a process group of its own; when its budget runs out
the whole group is killed (SIGTERM, then SIGKILL), so no `train run` grandchild stays on the GPU. Parts
write their figures as they go (metrics.jsonl, figures.json), so one that times out still reports what
it measured; the table ($OUT/device_check.{md,json}) is rewritten after every part. Peak memory per part
is sampled from nvidia-smi (on CPU: the resident memory of the part's processes).

  peak         measured bf16 matmul peak against the datasheet
  mfu          1.1B Llama (TinyLlama shape), seq 2048, bf16, micro-batch 4: tokens/s, MFU, memory
  mfu_compile  the same with torch.compile per block
  mfu_big      micro-batch 16 with activation checkpointing: the batch an 80-141 GB GPU is for
  step_path    SmolLM2-135M shape: the loss read every step ([train] log_every = 1) vs every 20 steps
  resume       SmolLM2-135M shape: stop at step 3 with a GPU checkpoint, resume, compare with a straight run
  cpt          SmolLM2-135M CPT on the medical corpus, naive vs guo-40 (curate -> mix -> train)
  perplexity   LM-perplexity scoring throughput

No network: SmolLM2 comes from $SMOLLM2 (a .gguf file or a Hugging Face folder), else a SmolLM2-shaped
random Llama stands in (same cost per token, meaningless losses; the table says so). Benchmark runs
write no final checkpoint and no export ([train] save_final = false). The data is ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = {"peak": 10, "mfu": 60, "mfu_compile": 85, "mfu_big": 55, "step_path": 40, "resume": 50, "cpt": 90,
            "perplexity": 30}
TOTAL_S = 8 * 60 - 10  # a part never starts with less than its grace left, nor runs past this
DRY_BUDGET_S = 240  # per part on a (possibly loaded) CPU
KILL_GRACE_S = 3.0
NOT_COVERED = ("One GPU cannot show: FSDP sharding across several NCCL ranks (reduce-scatter and all-gather "
               "cost, per-rank memory at world > 1), collective timeouts between ranks, the multi-node "
               "shared-folder probe, and torchrun's rendezvous; the CPU suite tests their logic on 2 gloo processes.")


# ---------------------------------------------------------------- the parent: parts under budgets

def kill_group(proc: subprocess.Popen) -> None:
    """End every process of the part's group (its pid is the group's id): SIGTERM, a short grace, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader, or its zombie would keep the group alive
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


class MemoryPeak:
    """Samples memory twice a second while a part runs: GPU memory used (nvidia-smi), else the part's RSS."""

    def __init__(self, pgid: int):
        self.pgid, self.peak_gib, self.kind = pgid, 0.0, "GPU" if shutil.which("nvidia-smi") else "RSS"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> float:
        if self.kind == "GPU":
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                                 capture_output=True, text=True, timeout=5).stdout
            return float(out.split()[0]) / 1024 if out.strip() else 0.0
        import psutil

        total = 0
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(p.pid) == self.pgid:
                    total += p.memory_info().rss
            except (ProcessLookupError, psutil.Error, OSError):
                pass
        return total / 2 ** 30

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_gib = max(self.peak_gib, self._sample())
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self._stop.wait(0.5)

    def stop(self) -> str:
        self._stop.set()
        self._thread.join(timeout=10)
        return f"{self.peak_gib:.1f} GiB ({self.kind})"


def run_part(name: str, out: Path, dry: bool, budget: float) -> dict:
    """Run one part in its own session under `budget` seconds; its row, from whatever it wrote."""
    part_dir = out / "parts" / name
    shutil.rmtree(part_dir, ignore_errors=True)
    part_dir.mkdir(parents=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--out", str(out)]
    cmd += ["--dry"] if dry else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    with open(out / "logs" / f"{name}.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        memory = MemoryPeak(proc.pid)
        try:
            code = proc.wait(timeout=max(1.0, budget))
            status = "ok" if code == 0 else f"exit {code}"
        except subprocess.TimeoutExpired:
            status = f"timeout ({budget:.0f} s)"
        finally:
            kill_group(proc)  # a timed-out part, or anything a finished one left running
            proc.wait()
            peak = memory.stop()
    row = {"part": name, "status": status, "seconds": round(time.perf_counter() - t0, 1), "peak_memory": peak}
    try:
        row.update(SUMMARIES[name](part_dir))
    except (OSError, ValueError, KeyError, IndexError, statistics.StatisticsError) as e:
        row["figures"] = f"no figures ({type(e).__name__}: {e})"
    return row


def write_report(out: Path, device: str, rows: list[dict], dry: bool) -> str:
    lines = [f"device: {device}{' (--dry: plumbing only, the figures mean nothing)' if dry else ''}", "",
             "| part | status | s | peak memory | figures |", "| --- | --- | ---: | --- | --- |"]
    lines += [f"| {r['part']}{' - ' + r['what'] if r.get('what') else ''} | {r['status']} | {r['seconds']:.0f} | "
              f"{r['peak_memory']} | {r.get('figures', '')} |" for r in rows]
    lines += ["", NOT_COVERED]
    text = "\n".join(lines) + "\n"
    (out / "device_check.md").write_text(text)
    (out / "device_check.json").write_text(json.dumps({"device": device, "dry": dry, "rows": rows,
                                                       "not_covered": NOT_COVERED}, indent=2) + "\n")
    return text


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}"
    return f"CPU ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}); torch {torch.__version__}"


# ---------------------------------------------------------------- figures, read from the parts' files

def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _train_rows(metrics: Path) -> list[dict]:
    if not metrics.is_file():
        return []
    rows = []
    for line in metrics.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut by the kill
            continue
        if row.get("kind") == "train":
            rows.append(row)
    return rows


def _steady(rows: list[dict], warmup: int) -> str:
    """`N steps, T tok/s, MFU m%, memory`: medians of the steps after warm-up (all steps if that is all there is)."""
    if not rows:
        return "no training step finished"
    steady = rows[warmup:] or rows
    text = f"{len(rows)} steps, {statistics.median(r['tokens_per_s'] for r in steady):,.0f} tok/s"
    if "mfu" in steady[0]:
        text += f", MFU {100 * statistics.median(r['mfu'] for r in steady):.1f}%"
    if "mfu_measured" in steady[0]:
        text += f" ({100 * statistics.median(r['mfu_measured'] for r in steady):.1f}% of measured peak)"
    if "mem_reserved_gib" in rows[-1]:
        text += f", torch peak {rows[-1]['mem_gib']:.1f} GiB allocated / {rows[-1]['mem_reserved_gib']:.1f} reserved"
    return text


def summarize_peak(part: Path) -> dict:
    f = _read_json(part / "figures.json")
    sheet = f"{f['datasheet_tflops']:.0f}" if f.get("datasheet_tflops") else "unknown"
    return {"what": f.get("what", ""), "figures": f"{f['measured_tflops']:.1f} TFLOP/s measured; datasheet {sheet}"}


def summarize_mfu(part: Path) -> dict:
    f = _read_json(part / "figures.json")
    return {"what": f.get("what", ""), "figures": _steady(_train_rows(part / "work" / "run" / "metrics.jsonl"),
                                                          int(f.get("warmup", 0)))}


def summarize_step_path(part: Path) -> dict:
    f = _read_json(part / "figures.json")
    found = []
    for every in f.get("log_every", []):
        rows = _train_rows(part / f"every_{every}" / "run" / "metrics.jsonl")
        found.append(f"log_every {every}: {_steady(rows, int(f['warmup']))}")
    return {"what": f.get("what", ""), "figures": "; ".join(found) or "no run started"}


def summarize_resume(part: Path) -> dict:
    f = _read_json(part / "figures.json")
    parts = [f"{k}: {v}" for k, v in f.items() if k not in ("what",)]
    return {"what": f.get("what", ""), "figures": "; ".join(parts) or "no run finished"}


def summarize_cpt(part: Path) -> dict:
    f = _read_json(part / "figures.json")
    figures = []
    for metrics in sorted((part / "compare").glob("*/train/metrics.jsonl")):
        rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip().endswith("}")]
        train = [r for r in rows if r.get("kind") == "train"]
        evals = [r for r in rows if r.get("kind") == "eval"]
        if train:
            last = {k: round(v, 3) for k, v in (evals[-1]["metrics"] if evals else {}).items() if k.startswith("loss/")}
            figures.append(f"{metrics.parents[1].name}: {_steady(train, 2)}, {train[-1]['tokens']:,} tokens, "
                           f"final {last}")
    return {"what": f.get("what", ""), "figures": "; ".join(figures) or f.get("reached", "no training step")}


def summarize_perplexity(part: Path) -> dict:
    f = _read_json(part / "figures.json")
    rows = _read_json(part / "bench_perplexity.json").get("rows", [])
    return {"what": f.get("what", ""),
            "figures": "; ".join(f"{r['setting']}: {r['tokens'] / r['seconds']:,.0f} tok/s" for r in rows) or "none"}


SUMMARIES = {"peak": summarize_peak, "mfu": summarize_mfu, "mfu_compile": summarize_mfu, "mfu_big": summarize_mfu,
             "step_path": summarize_step_path, "resume": summarize_resume, "cpt": summarize_cpt,
             "perplexity": summarize_perplexity}


# ---------------------------------------------------------------- the parts (each in its own process)

def note(part: Path, **figures) -> None:
    """Merge `figures` into the part's figures.json at once (the parent reads it even after a kill)."""
    path = part / "figures.json"
    data = {**_read_json(path), **figures}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def sh(cmd: list, env: dict | None = None, ok: tuple[int, ...] = (0,)) -> None:
    print("$", " ".join(map(str, cmd)), flush=True)
    code = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env).returncode
    if code not in ok:
        raise SystemExit(f"{Path(str(cmd[1])).name if len(cmd) > 1 else cmd[0]} exited with {code}")


def part_peak(part: Path, dry: bool) -> None:
    import torch

    from train.metrics import datasheet_peak, measure_peak_flops

    device = torch.device("cuda" if torch.cuda.is_available() and not dry else "cpu")
    note(part, what="bf16 matmul" if device.type == "cuda" else "fp32 matmul (CPU)")
    measured = measure_peak_flops(device, seconds=0.3 if dry else 2.0)
    sheet = datasheet_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    note(part, measured_tflops=measured / 1e12, datasheet_tflops=(sheet or 0) / 1e12)


def mfu_args(dry: bool, name: str) -> tuple[list[str], str, int]:
    if dry:
        args = ["--preset", "tiny", "--seq", "64", "--batch", "4", "--micro", "2", "--steps", "6", "--warmup", "2",
                "--device", "cpu"]
        return args + (["--ac"] if name == "mfu_big" else []), "tiny Llama on CPU", 2
    if name == "mfu_big":  # 16 x 2048 tokens per forward: fits 80 GB only with activation checkpointing
        return (["--preset", "1b", "--seq", "2048", "--batch", "32", "--micro", "16", "--steps", "10", "--warmup", "3",
                 "--ac"], "1.1B Llama, seq 2048, micro 16 x 2, activation checkpointing", 3)
    steps, warmup = ("14", 6) if name == "mfu_compile" else ("12", 4)
    return (["--preset", "1b", "--seq", "2048", "--batch", "8", "--micro", "4", "--steps", steps, "--warmup",
             str(warmup)], f"1.1B Llama, seq 2048, micro 4 x 2{', compiled' if name == 'mfu_compile' else ''}", warmup)


def part_mfu(part: Path, dry: bool, name: str) -> None:
    args, what, warmup = mfu_args(dry, name)
    env = dict(os.environ)
    if name == "mfu_compile":
        args.append("--compile")
        if dry:  # inductor's C++ build of even a tiny model takes minutes on a loaded CPU: the plumbing only
            env["TORCHDYNAMO_DISABLE"] = "1"
            what += " (dry: dynamo disabled)"
    note(part, what=what, warmup=warmup)
    sh([sys.executable, "bench/bench_mfu.py", *args, "--work", part / "work", "--json", part / "result.json"], env=env)


def _recipe(folder: Path, dry: bool, steps: int, log_every: int, save_final: bool = False) -> Path:
    """A SmolLM2-135M-shaped fresh Llama on synthetic shards (tiny on --dry): bench_mfu's recipe."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_mfu import PRESETS, recipe
    from bench_train_loop import make_shards

    from continua.recipe import recipe_from_dict, toml_text

    preset = "tiny" if dry else "135m"
    seq, batch, micro = (64, 4, 2) if dry else (2048, 8, 8)
    args = argparse.Namespace(seq=seq, batch=batch, micro=micro, steps=steps, compile=False, ac=False, warmup=0,
                              device="cpu" if dry else "auto", log_every=log_every)
    shards = folder.parent / "shards"
    if not (shards / "manifest.json").is_file():
        make_shards(shards, PRESETS[preset]["vocab"], 30 * batch * (seq + 1))
    table = recipe(folder, args, PRESETS[preset])
    table["train"]["shards"] = str(shards)
    table["train"]["save_final"] = save_final
    recipe_from_dict(table)
    path = folder / "recipe.toml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(toml_text(table))
    return path


def part_step_path(part: Path, dry: bool) -> None:
    steps, warmup, everies = (8, 2, [1, 4]) if dry else (30, 5, [1, 20])
    note(part, what=f"{'tiny' if dry else 'SmolLM2-135M-shaped'} Llama, loss read every step vs every "
                    f"{everies[1]} steps", warmup=warmup, log_every=everies)
    for every in everies:
        recipe = _recipe(part / f"every_{every}", dry, steps, every)
        sh([sys.executable, "-m", "train.cli", "run", recipe])


def part_resume(part: Path, dry: bool) -> None:
    """Stop at step 3 (a checkpoint written from the device), resume to 6; a straight run of 6 steps beside it."""
    note(part, what=f"{'tiny' if dry else 'SmolLM2-135M-shaped'} Llama: stop at 3, resume, vs a straight run")
    sliced, straight = _recipe(part / "sliced", dry, 6, 1, save_final=True), _recipe(part / "straight", dry, 6, 1)
    t0 = time.perf_counter()
    sh([sys.executable, "-m", "train.cli", "run", sliced, "--stop-at", "3"], ok=(75,))
    note(part, stopped_at_3_s=round(time.perf_counter() - t0, 1))
    t0 = time.perf_counter()
    sh([sys.executable, "-m", "train.cli", "run", sliced])
    note(part, resumed_to_6_s=round(time.perf_counter() - t0, 1))
    sh([sys.executable, "-m", "train.cli", "run", straight])
    a = {r["step"]: r["loss"] for r in _train_rows(part / "sliced" / "run" / "metrics.jsonl")}
    b = {r["step"]: r["loss"] for r in _train_rows(part / "straight" / "run" / "metrics.jsonl")}
    diff = max(abs(a[s] - b[s]) / abs(b[s]) for s in (4, 5, 6))
    note(part, steps_4_to_6_max_rel_loss_diff=f"{diff:.2e}", same_as_straight=diff < 1e-3)


def synthetic_data(folder: Path) -> Path:
    """A tiny stand-in for ../shared/data (general/enwiki.jsonl, medical/medical.jsonl, a PubMedQA file): --dry."""
    import random

    rng = random.Random(0)
    words = {"general": "the city river music film game team season world history people school market".split(),
             "medical": "patient dose heart renal acute chronic therapy clinical trial cardiac lesion tumor".split()}

    def text(kind: str) -> str:
        return " ".join(" ".join(rng.choices(words[kind], k=rng.randint(8, 30))) + "." for _ in range(6))

    (folder / "general").mkdir(parents=True, exist_ok=True)
    (folder / "medical").mkdir(parents=True, exist_ok=True)
    (folder / "benchmarks").mkdir(parents=True, exist_ok=True)
    with open(folder / "general" / "enwiki.jsonl", "w") as f:
        f.writelines(json.dumps({"id": str(i), "title": f"t{i}", "text": text("general")}) + "\n" for i in range(400))
    with open(folder / "medical" / "medical.jsonl", "w") as f:
        f.writelines(json.dumps({"id": f"m{i}", "source": "pubmedqa/x" if i % 2 else "medquad/y",
                                 "text": text("medical")}) + "\n" for i in range(400))
    with open(folder / "benchmarks" / "pubmedqa_labeled_1000.jsonl", "w") as f:
        f.writelines(json.dumps({"id": str(i), "split": "test", "question": "does the dose matter?",
                                 "context": text("medical"), "long_answer": "yes.", "final_decision": "yes"}) + "\n"
                     for i in range(4))
    return folder


def data_folder(out: Path, dry: bool) -> Path:
    if dry:
        return synthetic_data(out / "synthetic_data")
    for cand in (ROOT.parent / "shared" / "data", Path("/work/shared/data")):
        if cand.is_dir():
            return cand
    raise SystemExit("no ../shared/data beside the repo (nor /work/shared/data): the cpt and perplexity parts need it")


def smollm2() -> Path | None:
    """$SMOLLM2 (a .gguf file or a model folder) when it exists; never a download (the device is offline)."""
    path = Path(os.environ["SMOLLM2"]) if os.environ.get("SMOLLM2") else None
    return path if path is not None and path.exists() else None


_SMOLLM2_SHAPED = """
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
from continua.tokenizer import load_tokenizer
tok = load_tokenizer(sys.argv[1])
big = sys.argv[3] == "full"
cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=576 if big else 64, intermediate_size=1536 if big else 128,
                  num_hidden_layers=30 if big else 2, num_attention_heads=9 if big else 4,
                  num_key_value_heads=3 if big else 2, max_position_embeddings=8192 if big else 256,
                  rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
torch.manual_seed(0)
LlamaForCausalLM(cfg).save_pretrained(sys.argv[2])
"""


def part_cpt(part: Path, dry: bool, out: Path) -> None:
    data, work = data_folder(out, dry), part / "work"
    gguf = None if dry else smollm2()
    note(part, what="SmolLM2-135M CPT, medical, naive vs guo-40" + (" (tiny, synthetic data)" if dry else ""))
    size = ["--medical-chars", "20000", "--general-chars", "20000", "--neg-docs", "100"] if dry else \
        ["--medical-chars", str(10 ** 12), "--general-chars", "20000000"]
    sh([sys.executable, "bench/results/prepare_medical.py", "--data", data, "--out", work, *size])
    note(part, reached="data prepared")
    sh([sys.executable, "-m", "curate.cli", "train-classifier", "--pos", work / "data/clf_pos.jsonl",
        "--neg", work / "data/clf_neg.jsonl", "--balance", "--seed", "0", "--out", work / "classifier/quality.bin"])
    note(part, reached="classifier trained")
    if gguf is None:  # stand-in: SmolLM2-135M's shape on the pipeline's own tokenizer
        model, tokenizer = work / "smollm2-shaped", work / "tokenizer"
        sh([sys.executable, "-c", _SMOLLM2_SHAPED, tokenizer, model, "tiny" if dry else "full"])
        if not dry:
            note(part, what="SmolLM2-135M-shaped random init CPT (no $SMOLLM2), medical, naive vs guo-40")
    else:
        model, tokenizer = gguf, gguf
    seq = 64 if dry else 2048
    sets = {"data.tokenizer": tokenizer, "data.sources.domain.paths": [str(work / "data/medical.jsonl")],
            "data.sources.domain.id_field": "id", "data.sources.general.paths": [str(work / "data/general.jsonl")],
            "data.sources.general.id_field": "id", "curate.classifiers.quality": work / "classifier/quality.bin",
            "curate.workers": 1 if dry else 8, "curate.tasks": 1 if dry else 8, "model.path": model, "optim.lr": 1e-4,
            "train.nproc": 1, "train.device": "cpu" if dry else "cuda", "train.seq_len": seq,
            "train.batch_size": 4 if dry else 16, "train.tensorboard": False, "mix.valid_fraction": 0.01,
            "eval.num_evals": 2 if dry else 6, "eval.max_batches": 1 if dry else 2, "eval.batch_size": 4 if dry else 8}
    if dry:
        sets["train.steps"] = 3
    cmd = [sys.executable, "-m", "workflow.cli", "compare", "recipes/naive.toml", "recipes/guo-40.toml",
           "--out", part / "compare"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={json.dumps(value if isinstance(value, (int, float, list)) else str(value))}"]
    sh(cmd)


def part_perplexity(part: Path, dry: bool, out: Path) -> None:
    data, model = data_folder(out, dry), None if dry else smollm2()
    note(part, what=f"LM perplexity scoring ({'SmolLM2' if model else 'random 12M Llama'})")
    size = ["--lm-docs", "20", "--docs", "60"] if dry else ["--lm-docs", "2000", "--docs", "1000"]
    cmd = [sys.executable, "bench/bench_perplexity.py", "--lm-only", "--data", data, *size, "--out", part]
    if model is not None:
        cmd += ["--model", model.parent if model.is_file() else model]
    sh(cmd)


def run_part_here(name: str, out: Path, dry: bool) -> None:
    part = out / "parts" / name
    part.mkdir(parents=True, exist_ok=True)
    if name == "peak":
        part_peak(part, dry)
    elif name in ("mfu", "mfu_compile", "mfu_big"):
        part_mfu(part, dry, name)
    elif name == "step_path":
        part_step_path(part, dry)
    elif name == "resume":
        part_resume(part, dry)
    elif name == "cpt":
        part_cpt(part, dry, out)
    elif name == "perplexity":
        part_perplexity(part, dry, out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", choices=list(BUDGET_S), default=None)
    p.add_argument("--dry", action="store_true", help="every part on CPU, tiny sizes, synthetic data")
    p.add_argument("--budget", nargs="*", default=[], metavar="PART=SECONDS", help="override a part's budget")
    p.add_argument("--out", type=Path, default=None, help="default: $OUT, else bench_out/device_check")
    p.add_argument("--part", choices=list(BUDGET_S), default=None, help=argparse.SUPPRESS)  # one part, in-process
    args = p.parse_args()
    out = (args.out or Path(os.environ.get("OUT") or ROOT / "bench_out" / "device_check")).resolve()
    if args.part:
        run_part_here(args.part, out, args.dry)
        return 0
    budgets = {name: (DRY_BUDGET_S if args.dry else s) for name, s in BUDGET_S.items()}
    for item in args.budget:
        name, _, seconds = item.partition("=")
        if name not in budgets:
            p.error(f"--budget {item}: no part {name!r}")
        budgets[name] = float(seconds)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    device = device_name() if not args.dry else f"CPU, --dry (load {os.getloadavg()[0]:.1f})"
    rows, t0 = [], time.perf_counter()
    for name in BUDGET_S:
        if args.only is None or name in args.only:
            left = TOTAL_S - (time.perf_counter() - t0) - 2 * KILL_GRACE_S
            if not args.dry and left < 5:
                rows.append({"part": name, "status": "skipped (8-minute limit)", "seconds": 0.0, "peak_memory": "-"})
                continue
            rows.append(run_part(name, out, args.dry, budgets[name] if args.dry else min(budgets[name], left)))
            r = rows[-1]
            print(f"[device_check] {name}: {r['status']} ({r['seconds']:.0f} s) {r.get('figures', '')}", flush=True)
            write_report(out, device, rows, args.dry)  # figures so far, whatever comes next
    print("\n" + write_report(out, device, rows, args.dry))
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
