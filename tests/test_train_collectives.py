"""Collectives that fail fast and clearly, on two torchrun processes (gloo, CPU): an error one rank meets
reaches every rank, a node-local run folder is refused before training, a missing rank times out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_fixtures import two_source_shards, write_recipe

from continua.recipe import load_recipe
from train import loop

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}


def two_ranks(scenario: str, base: Path, timeout: float = 120) -> tuple[list[dict], float]:
    out = base / "result"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(ROOT / "tests" / "collective_worker.py"), scenario, str(base), str(out)],
                          env=ENV, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(Path(f"{out}.{r}.json").read_text()) for r in (0, 1)], seconds


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory) -> Path:
    """A tiny run stopped at step 2: its run folder, with checkpoints/step_0000002."""
    root = tmp_path_factory.mktemp("run")
    recipe = write_recipe(root / "r.toml", root / "out", two_source_shards(root), train={"steps": 4})
    assert loop.run(load_recipe(recipe), stop_at=2)["status"] == "stopped"
    return root / "out" / "train"


def per_rank_copies(run: Path, base: Path) -> Path:
    for r in (0, 1):
        shutil.copytree(run, base / f"rank_{r}")
    return base / "rank_1" / "checkpoints" / "step_0000002" / "checksums.json"


def test_a_damaged_checksum_manifest_seen_by_one_rank_stops_every_rank_with_one_message(tmp_path, checkpointed_run):
    manifest = per_rank_copies(checkpointed_run, tmp_path)
    data = json.loads(manifest.read_text())
    name = sorted(data["files"])[0]
    text = manifest.read_text().replace(f'"size": {data["files"][name]["size"]}', '"size": 1e999', 1)
    assert text != manifest.read_text()
    manifest.write_text(text)  # valid JSON, an impossible size (float inf)
    ranks, seconds = two_ranks("damaged", tmp_path)
    assert seconds < 60
    assert [r["outcome"] for r in ranks] == ["CheckpointError", "CheckpointError"]
    # each names its own copy (in a run: the same folder), then the same problem: rank 1's file
    problems = [r["message"].split(" is damaged: ")[1] for r in ranks]
    assert problems[0] == problems[1]
    assert "rank_1/checkpoints/step_0000002/checksums.json: unreadable checksum manifest" in problems[0]


def test_an_unexpected_error_on_one_rank_while_checking_reaches_every_rank(tmp_path, checkpointed_run):
    per_rank_copies(checkpointed_run, tmp_path)
    ranks, seconds = two_ranks("raises", tmp_path)
    assert seconds < 60
    # both ranks skip the checkpoint (neither waits for the other) and move it aside
    assert [r["outcome"] for r in ranks] == ["ok", "ok"]
    assert ranks[0]["message"] == ranks[1]["message"] == "None"
    assert (tmp_path / "rank_0" / "checkpoints" / "damaged_step_0000002").is_dir()


def test_a_node_local_run_folder_is_refused_before_training(tmp_path):
    ranks, _ = two_ranks("shared", tmp_path)
    assert [r["outcome"] for r in ranks] == ["SharedFolderError", "SharedFolderError"]
    assert [r["message"].split(": ", 1)[0] for r in ranks] == [str(tmp_path / f"rank_{r}") for r in (0, 1)]
    assert ranks[0]["message"].split(": ", 1)[1] == ranks[1]["message"].split(": ", 1)[1]
    assert "rank 1 on" in ranks[0]["message"] and "shared by every node" in ranks[0]["message"]
    assert "rank 0 on" not in ranks[0]["message"]


def test_a_shared_run_folder_passes_and_the_probe_leaves_nothing(tmp_path):
    ranks, _ = two_ranks("shared_ok", tmp_path)
    assert [r["outcome"] for r in ranks] == ["ok", "ok"]
    assert list((tmp_path / "same").iterdir()) == []


def test_work_failing_on_one_rank_raises_on_every_rank(tmp_path):
    ranks, _ = two_ranks("agree", tmp_path)
    assert [r["outcome"] for r in ranks] == ["RankFailure", "RankFailure"]
    assert ranks[0]["message"] == ranks[1]["message"]
    assert ranks[0]["message"].startswith("writing x failed on rank 1: OSError")
    assert "No space left on device" in ranks[0]["message"]


def test_a_rank_that_never_arrives_fails_the_others_within_the_step_timeout(tmp_path):
    ranks, _ = two_ranks("timeout", tmp_path)
    assert ranks[0]["outcome"] != "ok"
    assert 2.5 < ranks[0]["seconds"] < 12  # step_timeout_s = 3, not the process group's default of minutes


def test_a_gguf_base_is_dequantized_before_the_ranks_start(tmp_path):
    """`train run --nproc N` converts the GGUF in the launching process; rank 0 then reuses the folder
    instead of de-quantizing while the other ranks wait in a collective."""
    from gguf_fixture import write_llama_gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    from train import cli
    from train.model import build_model

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    gguf = write_llama_gguf(LlamaForCausalLM(cfg), tmp_path / "gguf" / "tiny.gguf")
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", tmp_path / "out", two_source_shards(tmp_path),
                                      model={"path": str(gguf)}))
    cli.convert_gguf_before_launch(recipe)
    folder = tmp_path / "out" / "train" / "base_model"
    assert (folder / "model.safetensors").is_file() and (folder / "continua_source.json").is_file()
    written = (folder / "model.safetensors").stat().st_ino
    _, source = build_model(recipe.model, {"vocab_size": 300}, 0, tmp_path / "out" / "train")
    assert source == (folder, "hf")
    assert (folder / "model.safetensors").stat().st_ino == written  # reused, not written again
