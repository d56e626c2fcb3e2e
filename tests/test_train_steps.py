"""The step path reads nothing on the host between log steps: figures stay on the device until a flush,
a non-finite step is skipped by the optimizer itself, and evaluation runs compiled blocks eagerly."""

from __future__ import annotations

import math

import pytest
import torch
from train_fixtures import two_source_shards, write_recipe

from continua.recipe import load_recipe
from train import loop
from train.gap import read_metrics
from train.parallel import Dist
from train.stepstats import NonFiniteLoss, StepWindow, skip_non_finite

CPU = Dist(0, 1, 0, torch.device("cpu"))


def test_a_window_reads_its_steps_once_and_logs_one_row_each():
    w = StepWindow(CPU, tokens_per_step=100, flops_per_token=6.0, peaks={"mfu": 1e3}, elapsed0=5.0)
    for step, loss in ((1, 2.5), (2, 2.25), (3, 2.0)):
        w.add(step, 0.1 * step, torch.tensor(loss), torch.tensor(loss / 2))
    rows = w.flush("none")
    assert [r["step"] for r in rows] == [1, 2, 3] and len(w) == 0
    assert [r["loss"] for r in rows] == [2.5, 2.25, 2.0] and [r["grad_norm"] for r in rows] == [1.25, 1.125, 1.0]
    assert [r["tokens"] for r in rows] == [100, 200, 300]
    assert all(r["elapsed_s"] >= 5.0 for r in rows) and rows[0]["elapsed_s"] <= rows[2]["elapsed_s"]
    assert rows[0]["tokens_per_s"] == rows[2]["tokens_per_s"] > 0  # the window's mean
    assert rows[0]["mfu"] == pytest.approx(6.0 * rows[0]["tokens_per_s"] / 1e3)
    assert w.flush("none") == []


def test_a_non_finite_step_is_named_at_the_flush():
    w = StepWindow(CPU, 10, 1.0, {}, 0.0)
    w.add(7, 0.1, torch.tensor(1.0), torch.tensor(1.0))
    w.add(8, 0.1, torch.tensor(float("nan")), torch.tensor(float("inf")))
    w.add(9, 0.1, torch.tensor(1.0), torch.tensor(float("nan")))
    with pytest.raises(NonFiniteLoss, match=r"step 8: loss nan, gradient norm inf.*last good checkpoint: ck/step_5"):
        w.flush("ck/step_5")


@pytest.mark.parametrize("norm", [1.0, float("nan")])
def test_fused_adamw_skips_the_update_of_a_non_finite_step_on_the_device(norm):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 4))
    opt = torch.optim.AdamW([p], lr=0.1, fused=True)
    before = p.detach().clone()
    p.grad = torch.full_like(p, float("nan") if math.isnan(norm) else 0.5)
    assert skip_non_finite(opt, torch.tensor(norm))
    opt.step()
    if math.isnan(norm):
        assert torch.equal(p.detach(), before)  # no update, no NaN in the weights
        assert float(opt.state[p]["step"]) == 0  # nor in the step count
    else:
        assert not torch.equal(p.detach(), before) and float(opt.state[p]["step"]) == 1
    assert not skip_non_finite(torch.optim.AdamW([p], lr=0.1, foreach=True), torch.tensor(norm))


def test_the_loop_reads_figures_every_log_every_steps_and_before_evaluations_and_checkpoints(tmp_path, monkeypatch):
    shards = two_source_shards(tmp_path / "data")
    recipe = write_recipe(tmp_path / "r.toml", tmp_path / "out", shards,
                          train={"steps": 9, "log_every": 3, "checkpoint_every": 5})
    sizes = []

    class Counted(StepWindow):
        def flush(self, last_checkpoint):
            sizes.append([step for step, _ in self.steps])
            return super().flush(last_checkpoint)

    monkeypatch.setattr(loop, "StepWindow", Counted)
    loop.run(load_recipe(recipe))
    flushed = [s for s in sizes if s]
    # [eval] every = 4, checkpoints at 5 and 9 (the end), otherwise every 3 steps
    assert flushed == [[1, 2, 3], [4], [5], [6, 7, 8], [9]]
    rows = [r for r in read_metrics(tmp_path / "out" / "train" / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in rows] == list(range(1, 10))


def test_evaluation_runs_compiled_blocks_eagerly_without_recompiling():
    """A compiled block meets a new input width at every evaluation batch; under `eager` it compiles nothing."""
    compiled = []

    def backend(gm, example_inputs):  # counts what dynamo hands to a compiler
        compiled.append(tuple(example_inputs[-1].shape) if example_inputs else ())
        return gm.forward

    class Block(torch.nn.Module):  # dynamo traces user code (it skips torch.nn's own modules at top level)
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(8, 8)

        def forward(self, x):
            return torch.relu(self.proj(x)) * 2

    torch._dynamo.reset()
    block = Block()
    block.compile(backend=backend, dynamic=False)
    block(torch.randn(2, 5, 8))  # training width: compiled once
    assert len(compiled) == 1
    with loop.eager(True):
        for width in (3, 7, 11):
            block(torch.randn(2, width, 8))
    assert len(compiled) == 1
    block(torch.randn(2, 9, 8))  # without it, a new width compiles again
    assert len(compiled) == 2


def test_the_parallel_section_sets_resharding_reduce_dtype_and_fullgraph(monkeypatch):
    """[parallel] reaches FSDP2 (reshard_after_forward, reduce dtype) and torch.compile (fullgraph)."""
    from train.config import ModelConfig, ParallelConfig
    from train.model import build_model
    from train.parallel import decoder_layers, init_distributed, prepare_model, shard_model, shutdown

    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(kw))
    d = init_distributed("cpu")
    try:
        for reshard in (True, False):
            cfg = ModelConfig(hidden_size=32, intermediate_size=64, num_layers=3, num_heads=4, tie_embeddings=False)
            model, _ = build_model(cfg, {"vocab_size": 300}, 0, None)
            pc = ParallelConfig(reshard_after_forward=reshard, reduce_dtype="bfloat16", compile_fullgraph=True)
            prepare_model(model, d, bf16=False, compile=True, parallel=pc)  # one CPU process: no FSDP
            shard_model(model, torch.bfloat16, pc)
            states = [b._get_fsdp_state()._fsdp_param_group for b in decoder_layers(model)]
            # the last block is kept gathered for backward either way
            assert [g.post_forward_mesh_info is not None for g in states] == [reshard, reshard, False]
            assert all(g.mp_policy.reduce_dtype == torch.bfloat16 for g in states)
        assert compiled == [{"fullgraph": True}] * 6
    finally:
        shutdown()
