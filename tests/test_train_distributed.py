"""Two torchrun processes (gloo, FSDP2) train to the same losses as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_fixtures import make_shards, make_tokenizer, write_recipe

from continua.recipe import load_recipe
from train import loop
from train.gap import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def rows(run_dir: Path, kind: str) -> dict[int, dict]:
    return {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == kind}


def test_two_processes_match_one_and_resume_with_one(tmp_path):
    tok = make_tokenizer(tmp_path / "tok")
    shards = tmp_path / "shards"
    make_shards(shards, tok, {"med": {"docs": 30, "epochs": 2.0},
                              "web": {"docs": 30, "role": "general", "target_tokens": 600}})
    # untied embeddings: embeddings and head become FSDP units of their own
    train = {"steps": 5, "batch_size": 4, "micro_batch_size": 1}
    one = write_recipe(tmp_path / "one.toml", tmp_path / "one", shards, train=train, model={"tie_embeddings": False})
    two = write_recipe(tmp_path / "two.toml", tmp_path / "two", shards, train=train, model={"tie_embeddings": False})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "train.cli", "run", str(two), "--nproc", "2", "--stop-at", "3"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 75, proc.stderr[-3000:]  # stopped at 3 of 5: resumable, not finished
    assert (tmp_path / "two" / "train" / "checkpoints" / "step_0000003").is_dir()
    # the 2-process checkpoint (sharded DCP) resumes in a single process
    assert loop.run(load_recipe(two))["status"] == "finished"
    assert loop.run(load_recipe(one))["status"] == "finished"

    a, b = rows(tmp_path / "one" / "train", "train"), rows(tmp_path / "two" / "train", "train")
    assert sorted(b) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([b[s]["loss"] for s in a], [a[s]["loss"] for s in a], rtol=1e-4)
    np.testing.assert_allclose([b[s]["grad_norm"] for s in a], [a[s]["grad_norm"] for s in a], rtol=1e-3)
    ea, eb = rows(tmp_path / "one" / "train", "eval"), rows(tmp_path / "two" / "train", "eval")
    assert sorted(ea) == sorted(eb) == [0, 4, 5]
    for step in ea:
        for key, value in ea[step]["metrics"].items():
            assert eb[step]["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), (step, key)


def test_bf16_mixed_precision_under_fsdp_keeps_fp32_master_weights(tmp_path):
    """The GPU path's policy, run on CPU: FSDP2 gathers bf16 parameters for compute, reduces gradients
    in fp32 and keeps fp32 master weights, so losses stay close to fp32 but not bit-equal, and the
    exported checkpoint is fp32."""
    from safetensors.torch import load_file

    tok = make_tokenizer(tmp_path / "tok")
    shards = tmp_path / "shards"
    make_shards(shards, tok, {"med": {"docs": 30, "epochs": 2.0}})
    fp32 = write_recipe(tmp_path / "fp32.toml", tmp_path / "fp32", shards, train={"steps": 3})
    bf16 = write_recipe(tmp_path / "bf16.toml", tmp_path / "bf16", shards, train={"steps": 3, "dtype": "bfloat16"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "train.cli", "run", str(bf16), "--nproc", "2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert loop.run(load_recipe(fp32))["status"] == "finished"

    a, b = rows(tmp_path / "fp32" / "train", "train"), rows(tmp_path / "bf16" / "train", "train")
    losses_a, losses_b = np.array([a[s]["loss"] for s in (1, 2, 3)]), np.array([b[s]["loss"] for s in (1, 2, 3)])
    np.testing.assert_allclose(losses_b, losses_a, rtol=2e-2)  # bf16 compute: close ...
    assert np.abs(losses_b / losses_a - 1).max() > 1e-6  # ... but not fp32 (that matches to ~1e-7)
    weights = load_file(tmp_path / "bf16" / "train" / "export" / "model.safetensors")
    assert {str(t.dtype) for t in weights.values()} == {"torch.float32"}


def test_bf16_on_a_single_cpu_process_is_a_clear_error(tmp_path):
    tok = make_tokenizer(tmp_path / "tok")
    shards = tmp_path / "shards"
    make_shards(shards, tok, {"med": {"docs": 10}})
    recipe = write_recipe(tmp_path / "r.toml", tmp_path / "r", shards, train={"steps": 4, "dtype": "bfloat16"})
    with pytest.raises(ValueError, match="bfloat16.*GPU or nproc > 1"):
        loop.run(load_recipe(recipe))


def test_micro_batched_gradients_equal_the_whole_batch_and_stay_sharded_between_micro_batches(tmp_path):
    """2 ranks x 4 sequences as 1 micro-batch, as 4 reduce-scattered each time ([parallel]
    sync_grads_every_microbatch, the default) and as 4 synced on the last only: the gathered gradients agree
    to 1e-6 of their largest entry (fp32 sums in another order). Between micro-batches a rank holds its
    gradient shard (4 bytes x params / 2) and the input buffer of the reduce-scatter still in flight (the
    input embeddings', the last unit backward reaches: FSDP overlaps it with the next micro-batch); without
    per-micro-batch sync it holds the unsharded accumulator (4 bytes x every parameter)."""
    import json

    out = tmp_path / "grads.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(ROOT / "tests" / "fsdp_grad_worker.py"), str(out)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["diff"]["every"] <= 1e-6 * r["scale"] and r["diff"]["last"] <= 1e-6 * r["scale"], r
    full, in_flight = 4 * r["params"], 4 * r["embedding_params"]
    for rank in r["ranks"]:
        every, last = rank["held"]["every"], rank["held"]["last"]
        assert len(every) == len(last) == 4 and every[0] == last[0] == 0
        assert all(abs(b - (full / 2 + in_flight)) <= 64 for b in every[1:]), (rank, full, in_flight)
        assert all(b >= full for b in last[1:]), (rank, full)
