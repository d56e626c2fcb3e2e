"""Every script in bench/ runs to the end in a small mode, so a change that breaks a benchmark fails here.

Inputs are generated (bench/_smoke.py: the shared data folder's shape with a few hundred documents,
a tiny tokenizer and Llama); sizes are the smallest each script accepts. A new bench script fails
`test_every_bench_script_has_a_smoke_run` until it is given a row in SMOKE.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))
import _smoke  # noqa: E402

# script -> (arguments, text its output must contain); {data}: a tiny shared-data folder, {tmp}: a scratch
# folder, {model}: a tiny Llama folder with its tokenizer, {mcq}: a 4-item multiple-choice file
SMOKE: dict[str, tuple[list[str], str]] = {
    "bench_checkpoint.py": (["--mb", "2", "--json", "{tmp}/ckpt.json"], "verify_vs_load"),
    "bench_curate_fasttext.py": (["--data", "{data}/general/enwiki.jsonl", "--train-data", "{data}", "--limit", "200",
                                  "--repeats", "1", "--small-model"], "curate score"),
    "bench_curate_score.py": (["--corpus", "{data}/medical/medical.jsonl", "--docs", "200", "--dir", "{tmp}/cs",
                               "--local-only"], "local, 2 workers"),
    "bench_kenlm.py": (["--data", "{data}", "--train-docs", "100", "--docs", "50", "--order", "3"], "tokens/s"),
    "bench_load_memory.py": (["--modes", "after", "--json", "{tmp}/mem.json"], "whole run"),
    "bench_mcq.py": (["--model", "{model}", "--bench", "toy={mcq}", "--max-items", "4", "--batch-size", "2",
                      "--device", "cpu"], "| toy | 4 |"),
    "bench_mfu.py": (["--preset", "tiny", "--seq", "32", "--batch", "2", "--steps", "3", "--warmup", "1",
                      "--json", "{tmp}/mfu.json"], "tokens"),
    "bench_mix_plan.py": (["--rows", "20000", "--general-rows", "5000", "--once", "--dir", "{tmp}/mp"], "20,000"),
    "bench_mix_tokenize.py": (["--corpus", "{data}/medical/medical.jsonl", "--dir", "{tmp}/mt", "--vocab", "300",
                               "--repeats", "1", "--pieces", "2", "--no-ray"], "mix build --workers 2"),
    "bench_perplexity.py": (["--data", "{data}", "--docs", "40", "--ref-docs", "100", "--lm-docs", "4",
                             "--out", "{tmp}/ppl", "--small"], "n-gram score"),
    "bench_train_fsdp.py": (["--steps", "3", "--warmup", "1", "--seq", "32", "--batch", "2", "--hidden", "64",
                             "--layers", "1", "--vocab", "256", "--peak-flops", "1e9"], "final loss"),
    "bench_train_loop.py": (["--steps", "3", "--warmup", "1", "--seq", "32", "--batch", "2", "--hidden", "64",
                             "--layers", "1", "--vocab", "256", "--rounds", "1", "--peak-flops", "1e9"], "HF Trainer"),
    "bench_word_tokenizers.py": (["--data", "{data}", "--docs", "20"], "spaCy"),
    "eval_classifier_auc.py": (["--pos", "{data}/medical/medical.jsonl", "--neg", "{data}/general/enwiki.jsonl",
                                "--epochs", "2", "--dim", "10", "--out", "{tmp}/clf.bin"], "roc_auc"),
    "eval_reference_auc.py": (["--medical", "{data}/medical/medical.jsonl", "--general", "{data}/general/enwiki.jsonl",
                               "--order", "3", "--out", "{tmp}/ref"], "AUC vs enwiki"),
}
# scripts whose small mode is tested elsewhere
ELSEWHERE = {"device_check.py": "its --dry mode runs with the device checks' own tests",
             "bench_curate_incremental.py": "its --small mode runs in tests/test_curate_incremental.py"}
# optional integrations a script needs ([project.optional-dependencies] not in [test])
NEEDS = {"bench_kenlm.py": "kenlm"}
# scripts without a small size yet (a fixed 134M-parameter model on 2 processes: minutes on 2 cores), run only
# with CONTINUA_HEAVY_BENCH=1 until they get one
HEAVY = {"bench_load_memory.py"}


def test_every_bench_script_has_a_smoke_run():
    scripts = {p.name for p in BENCH.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(SMOKE) | set(ELSEWHERE), "give every bench script a row in SMOKE (or ELSEWHERE)"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench-inputs")
    mcq = root / "mcq.jsonl"
    mcq.write_text("".join(json.dumps({"question": f"Which word is medical number {i}?", "answer": "A",
                                       "options": {"A": "patient", "B": "river", "C": "album"}}) + "\n"
                           for i in range(6)))
    return {"data": _smoke.tiny_data(root / "data", 300), "model": _smoke.tiny_llama(root / "model"), "mcq": mcq}


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_bench_script_runs_in_its_small_mode(script, inputs, tmp_path):
    if script in NEEDS and importlib.util.find_spec(NEEDS[script]) is None:
        pytest.skip(f"needs the optional '{NEEDS[script]}' package")
    if script in HEAVY and os.environ.get("CONTINUA_HEAVY_BENCH") != "1":
        pytest.skip("no small size yet: set CONTINUA_HEAVY_BENCH=1 to run it")
    args, expect = SMOKE[script]
    values = {**{k: str(v) for k, v in inputs.items()}, "tmp": str(tmp_path)}
    argv = [a.format(**values) for a in args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(BENCH / script), *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert expect in out, out[-4000:]
