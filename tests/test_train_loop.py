"""`train run` end to end on a tiny Llama, in this process: logs, export, resume, SIGTERM, NaN guard."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch
from train_fixtures import two_source_shards, write_recipe

from continua.recipe import load_recipe
from train import loop
from train.cli import main
from train.gap import read_metrics


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return two_source_shards(tmp_path_factory.mktemp("data"))


def train_losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"}


def test_run_end_to_end_writes_logs_checkpoint_and_a_loadable_export(tmp_path, shards):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = write_recipe(tmp_path / "r.toml", tmp_path / "out", shards, train={"steps": 0, "batch_size": 8})
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"question": f"which {i}?", "options": {"A": "heart", "B": "river"},
                                         "answer": "AB"[i % 2]}) + "\n" for i in range(4)))
    assert main(["run", str(recipe), "--set", "train.micro_batch_size=2", "--set", f"eval.benchmarks.tiny={bench}"]) == 0
    run_dir = tmp_path / "out" / "train"
    rows = read_metrics(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if r["kind"] == "train"]
    eval_rows = [r for r in rows if r["kind"] == "eval"]
    # steps = 0: the plan's total target tokens / (8 x 32)
    manifest = json.loads((shards / "manifest.json").read_text())
    steps = sum(s["target_tokens"] for s in manifest["sources"].values()) // (8 * 32)
    assert [r["step"] for r in train_rows] == list(range(1, steps + 1))
    assert set(train_rows[0]) == {"kind", "step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "mfu",
                                  "elapsed_s"}
    assert train_rows[-1]["tokens"] == steps * 8 * 32
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]
    assert [r["step"] for r in eval_rows] == sorted({0, steps, *range(0, steps + 1, 4)})
    assert set(eval_rows[-1]["metrics"]) >= {"loss/med", "loss/web", "weight_change/layer_0",
                                             "weight_change/layer_1", "weight_change/bottom_top_ratio",
                                             "acc/tiny", "acc_norm/tiny", "items/tiny", "top_answer/tiny"}
    assert all(r["metrics"]["acc/tiny"] in (0.0, 0.25, 0.5, 0.75, 1.0) for r in eval_rows)
    assert all(r["metrics"]["items/tiny"] == 4 for r in eval_rows)  # the gap metrics' noise bound needs it
    assert all(r["metrics"]["top_answer/tiny"] in (0.25, 0.5, 0.75, 1.0) for r in eval_rows)  # 4 items
    assert "weight_change/bottom_top_ratio" not in eval_rows[0]["metrics"]
    resolved = load_recipe(run_dir / "recipe.toml")
    assert resolved.train.steps == steps and resolved.train.micro_batch_size == 2
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == [f"step_{steps:07d}"]
    gap = json.loads((run_dir / "gap.json").read_text())["sets"]
    assert gap["acc/tiny"]["items"] == 4 and gap["acc/tiny"]["noise"] > 0.5  # 4 items: nearly any change is noise
    assert gap["loss/med"]["items"] is None and "items/tiny" not in gap

    # the export loads with transformers and gives the last evaluation's loss on the same windows
    model = AutoModelForCausalLM.from_pretrained(run_dir / "export")
    tok = AutoTokenizer.from_pretrained(run_dir / "export")
    assert tok.eos_token == "</s>" and model.config.architectures == ["LlamaForCausalLM"]
    assert valid_loss(model, shards) == pytest.approx(eval_rows[-1]["metrics"]["loss/med"], rel=1e-5)


def valid_loss(model, shards) -> float:
    """Mean token loss on the windows `train run` evaluates for source med ([eval] max_batches 2 x batch 4)."""
    from mix.shards import ShardSet
    from train.evaluate import validation_windows

    win = torch.as_tensor(validation_windows(ShardSet.open(shards / "med" / "valid"), 32, 2 * 4))
    with torch.no_grad():
        logits = model(input_ids=win[:, :-1]).logits
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), win[:, 1:].reshape(-1)))


def test_stop_and_resume_matches_an_uninterrupted_run(tmp_path, shards):
    common = {"steps": 6, "checkpoint_every": 2, "keep_checkpoints": 2}
    straight = write_recipe(tmp_path / "a.toml", tmp_path / "a", shards, train=common)
    assert loop.run(load_recipe(straight))["status"] == "finished"
    sliced = write_recipe(tmp_path / "b.toml", tmp_path / "b", shards, train=common)
    assert loop.run(load_recipe(sliced), stop_at=3)["status"] == "stopped"
    ckpts = sorted(p.name for p in (tmp_path / "b" / "train" / "checkpoints").iterdir())
    assert ckpts == ["step_0000002", "step_0000003"]  # keep_checkpoints = 2, no temporary folder left
    with open(tmp_path / "b" / "train" / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 4, "lo')  # a crash mid-write: the torn line is dropped on resume
    assert loop.run(load_recipe(sliced))["status"] == "finished"
    a, b = train_losses(tmp_path / "a" / "train"), train_losses(tmp_path / "b" / "train")
    assert list(b) == list(range(1, 7))  # every step logged once
    np.testing.assert_allclose([b[s] for s in a], list(a.values()), rtol=0, atol=1e-6)
    evals = [r["step"] for r in read_metrics(tmp_path / "b" / "train" / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals == [0, 4, 6]
    # a finished run has nothing left to do; --no-resume starts over without the old checkpoints
    assert loop.run(load_recipe(sliced))["step"] == 6
    assert loop.run(load_recipe(sliced), resume=False, stop_at=1)["status"] == "stopped"
    assert sorted(p.name for p in (tmp_path / "b" / "train" / "checkpoints").iterdir()) == ["step_0000001"]


def test_sigterm_checkpoints_and_exits_cleanly(tmp_path, shards, monkeypatch):
    recipe = write_recipe(tmp_path / "r.toml", tmp_path / "out", shards, train={"steps": 8})
    real = loop.forward_backward
    calls = []

    def forward_backward(model, batch, micro, *sync):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(model, batch, micro, *sync)

    monkeypatch.setattr(loop, "forward_backward", forward_backward)
    summary = loop.run(load_recipe(recipe))
    assert summary["status"] == "interrupted" and summary["step"] == 3
    assert (tmp_path / "out" / "train" / "checkpoints" / "step_0000003" / "trainer.json").exists()
    assert not (tmp_path / "out" / "train" / "export").exists()
    assert signal.getsignal(signal.SIGTERM) is not None


def test_non_finite_loss_stops_before_the_update_and_saves_nothing(tmp_path, shards, monkeypatch):
    recipe = write_recipe(tmp_path / "r.toml", tmp_path / "out", shards, train={"steps": 4})
    real = loop.build_model

    def poisoned(*args, **kwargs):
        model, weights = real(*args, **kwargs)
        with torch.no_grad():
            model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
        return model, weights

    monkeypatch.setattr(loop, "build_model", poisoned)
    with pytest.raises(loop.NonFiniteLoss, match="step 1: loss nan.*before the optimizer update"):
        loop.run(load_recipe(recipe))
    assert not (tmp_path / "out" / "train" / "checkpoints").exists()
    monkeypatch.setattr(loop, "build_model", poisoned)
    assert main(["run", str(recipe), "--no-resume"]) == 1  # the CLI reports it as an error


def test_cpt_from_a_local_hf_model_with_optional_optimizer_restore(tmp_path, shards):
    from transformers import LlamaConfig, LlamaForCausalLM

    base = tmp_path / "base"
    torch.manual_seed(1)
    LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, max_position_embeddings=64)).save_pretrained(base)
    first = write_recipe(tmp_path / "a.toml", tmp_path / "a", shards, train={"steps": 3}, model={"path": str(base)})
    loop.run(load_recipe(first))
    evals = [r for r in read_metrics(tmp_path / "a" / "train" / "metrics.jsonl") if r["kind"] == "eval"]
    # step 0 evaluates the loaded weights, not a freshly built model's
    assert evals[0]["metrics"]["loss/med"] == pytest.approx(valid_loss(LlamaForCausalLM.from_pretrained(base), shards),
                                                            rel=1e-5)

    # stage 2 from stage 1's export: fresh AdamW by default, or the moments of stage 1's checkpoint
    ckpt = tmp_path / "a" / "train" / "checkpoints" / "step_0000003"
    model = {"path": str(tmp_path / "a" / "train" / "export")}
    plain = write_recipe(tmp_path / "p.toml", tmp_path / "p", shards, train={"steps": 2}, model=model)
    restored = write_recipe(tmp_path / "r.toml", tmp_path / "r", shards, model=model,
                            train={"steps": 2, "optimizer_from": str(ckpt)})
    loop.run(load_recipe(plain))
    loop.run(load_recipe(restored))
    lp, lr = train_losses(tmp_path / "p" / "train"), train_losses(tmp_path / "r" / "train")
    assert lp[1] == pytest.approx(lr[1], abs=1e-6)  # same weights, same first batch
    assert lp[2] != pytest.approx(lr[2], abs=1e-5)  # the first update differs: Adam moments were restored


def test_activation_checkpointing_gives_the_same_losses(tmp_path, shards):
    plain = write_recipe(tmp_path / "a.toml", tmp_path / "a", shards, train={"steps": 2})
    ac = write_recipe(tmp_path / "b.toml", tmp_path / "b", shards, train={"steps": 2, "activation_checkpointing": True})
    loop.run(load_recipe(plain))
    loop.run(load_recipe(ac))
    a, b = train_losses(tmp_path / "a" / "train"), train_losses(tmp_path / "b" / "train")
    np.testing.assert_allclose(list(b.values()), list(a.values()), rtol=1e-5)


def test_model_smaller_than_the_tokenizer_is_an_error(tmp_path, shards):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4)).save_pretrained(tmp_path / "small")
    recipe = write_recipe(tmp_path / "r.toml", tmp_path / "out", shards, model={"path": str(tmp_path / "small")})
    with pytest.raises(ValueError, match="100 embeddings but the shards' tokenizer has 300"):
        loop.run(load_recipe(recipe))


def test_resolved_recipe_with_a_non_ascii_source_reads_back_equal(tmp_path, shards):
    from train.report import load_run

    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    extra = f'\n[data.sources."médical"]\npaths = ["{tmp_path / "d.jsonl"}"]\n'
    path = write_recipe(tmp_path / "r.toml", tmp_path / "out", shards, train={"steps": 3}, extra=extra)
    recipe = load_recipe(path, ["run.name=étude"])
    assert loop.run(recipe)["status"] == "finished"
    written = load_recipe(tmp_path / "out" / "train" / "recipe.toml")
    assert written.to_dict() == recipe.to_dict() and "médical" in written.data.sources
    assert load_run(tmp_path / "out" / "train").name == "étude"  # what `train report` and `compare` show
