"""bench/device_check.py: `--dry` runs every part on CPU and always returns figures; a part that runs out of
time is killed with everything it started, and what it wrote before is still reported."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "device_check.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}


def device_check():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def left_behind(marker: str) -> list[str]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in p.info["cmdline"] or []):
                found.append(" ".join(p.info["cmdline"]))
        except psutil.Error:
            pass
    return found


def test_the_budgets_fit_eight_minutes_on_one_gpu():
    dc = device_check()
    assert sum(dc.BUDGET_S.values()) + 2 * dc.KILL_GRACE_S * len(dc.BUDGET_S) <= 8 * 60
    assert set(dc.BUDGET_S) == set(dc.SUMMARIES)


def test_a_part_that_times_out_is_killed_with_its_children_and_reported(tmp_path):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    cmd = [sys.executable, str(SCRIPT), "--dry", "--only", "mfu", "--budget", "mfu=6", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert time.perf_counter() - t0 < 60
    assert proc.returncode == 1, proc.stderr[-2000:]
    report = json.loads((out / "device_check.json").read_text())
    assert [(r["part"], r["status"]) for r in report["rows"]] == [("mfu", "timeout (6 s)")]
    assert "figures" in report["rows"][0] and "GiB" in report["rows"][0]["peak_memory"]
    assert "| mfu - tiny Llama on CPU | timeout (6 s) |" in (out / "device_check.md").read_text()
    time.sleep(0.5)
    assert left_behind(str(tmp_path)) == []  # neither the part nor bench_mfu nor its `train run`


def test_figures_of_a_killed_training_part_come_from_what_it_wrote(tmp_path):
    dc = device_check()
    part = tmp_path / "mfu"
    (part / "work" / "run").mkdir(parents=True)
    dc.note(part, what="1.1B Llama", warmup=1)
    rows = [{"kind": "train", "step": s, "loss": 5.0, "tokens_per_s": tps, "mfu": 0.4, "elapsed_s": s}
            for s, tps in ((1, 100.0), (2, 1000.0), (3, 1200.0))]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "train", "st'  # cut by the kill
    (part / "work" / "run" / "metrics.jsonl").write_text(text)
    row = dc.summarize_mfu(part)
    assert row == {"what": "1.1B Llama", "figures": "3 steps, 1,100 tok/s, MFU 40.0%"}


def test_dry_runs_every_part_on_cpu_and_returns_figures(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry", "--out", str(out)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=2400)
    report = json.loads((out / "device_check.json").read_text())
    assert proc.returncode == 0, (proc.stdout[-3000:], [(r["part"], r["status"]) for r in report["rows"]])
    rows = {r["part"]: r for r in report["rows"]}
    assert list(rows) == list(device_check().BUDGET_S)
    assert all(r["status"] == "ok" for r in rows.values())
    assert rows["mfu"]["figures"].startswith("6 steps") and rows["mfu_big"]["figures"].startswith("6 steps")
    assert "log_every 1: 8 steps" in rows["step_path"]["figures"]
    assert "log_every 4: 8 steps" in rows["step_path"]["figures"]
    assert "same_as_straight: True" in rows["resume"]["figures"]  # fp32 on CPU: resuming changes nothing
    assert rows["cpt"]["figures"].count("tok/s") == 2  # naive and guo-40
    assert rows["perplexity"]["figures"].count("tok/s") == 3
    assert "One GPU cannot show" in (out / "device_check.md").read_text()
    assert left_behind(str(tmp_path)) == []
