"""bench/bench_load_memory.py's small mode: it runs, and its accounting holds (state, gradients held)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_small_mode_accounts_for_the_state_and_the_gradients_held_in_both_sync_modes(tmp_path):
    out = tmp_path / "mem.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_load_memory.py"), "--small",
                           "--modes", "after", "nosync", "--json", str(out)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "peak / (state + acts)" in proc.stdout
    res = json.loads(out.read_text())
    rows = {(r["mode"], r["rank"]): r for r in res["rows"]}
    assert sorted(rows) == [("after", 0), ("after", 1), ("nosync", 0), ("nosync", 1)]
    n = res["params"]
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_load_memory import SMALL

    in_flight = 4 * SMALL["vocab_size"] * SMALL["hidden_size"]  # the input embeddings' reduce-scatter input
    for (mode, rank), r in rows.items():
        assert abs(r["sharded_state"] - 16 * n / 2) <= 16 * 64  # each rank holds half of every tensor
        assert r["activations"] > 0 and r["whole_x_state_acts"] > 1
        held = r["held_between_microbatches"]
        if mode == "nosync":
            assert held >= 4 * n  # FSDP's unsharded accumulator: every parameter on every rank
        else:  # the rank's gradient shard and the reduce-scatter input still in flight
            assert abs(held - (4 * n / 2 + in_flight)) <= 1024, (held, n)
            assert held < rows[("nosync", rank)]["held_between_microbatches"]
