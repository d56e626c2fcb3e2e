"""Evaluation cadence (dense early, sparse late), fixed validation windows, per-set losses."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from mix.shards import ShardSet, ShardWriter
from train.config import EvalConfig
from train.evaluate import eval_steps, evaluate_losses, validation_windows


def test_log_spaced_cadence_is_dense_early():
    steps = eval_steps(EvalConfig(every=0, num_evals=20), 1000)
    assert steps[0] == 0 and steps[-1] == 1000 and steps == sorted(set(steps))
    assert {1, 2, 5, 10, 22, 46, 100} <= set(steps)  # geometric: the gap happens early
    early = [s for s in steps if s <= 50]
    late = [s for s in steps if s > 500]
    assert len(early) >= 6 and len(late) <= 6
    assert eval_steps(EvalConfig(every=30), 100) == [0, 30, 60, 90, 100]
    assert eval_steps(EvalConfig(num_evals=20), 5) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("n", [2, 3, 5, 12, 20])
@pytest.mark.parametrize("steps", [1, 7, 51, 1000])
def test_num_evals_is_the_number_of_evaluations(n, steps):
    got = eval_steps(EvalConfig(num_evals=n), steps)
    assert len(got) == min(n, steps + 1) and got[0] == 0 and got[-1] == steps and got == sorted(set(got))


def test_before_and_after_only_is_a_plain_setting():
    from continua.schema import RecipeError
    from continua.recipe import recipe_from_dict

    assert eval_steps(EvalConfig(num_evals=2), 51) == [0, 51]
    assert eval_steps(EvalConfig(before_after_only=True), 51) == [0, 51]
    assert recipe_from_dict({"eval": {"before_after_only": True}}).eval.before_after_only
    with pytest.raises(RecipeError, match="before_after_only = true evaluates at step 0 and the last step"):
        recipe_from_dict({"eval": {"before_after_only": True, "every": 10}})
    with pytest.raises(RecipeError, match=r"num_evals must be >= 2 \(2 = before and after training only\)"):
        recipe_from_dict({"eval": {"num_evals": 1}})


def test_validation_windows_fixed(tmp_path):
    with ShardWriter(tmp_path / "valid" / "00000.ds", np.uint16) as w:
        for n in (5, 7, 11):
            w.write(np.arange(n) + n * 100)
    valid = ShardSet.open(tmp_path / "valid")
    win = validation_windows(valid, seq_len=4, max_windows=3)
    flat = np.concatenate([np.arange(n) + n * 100 for n in (5, 7, 11)])
    assert win.shape == (3, 5) and (win.reshape(-1) == flat[:15]).all()
    assert validation_windows(valid, 4, 100).shape == (4, 5)  # as many as the tokens allow
    with pytest.raises(ValueError, match="fewer than 31 tokens"):
        validation_windows(valid, 30, 2)


class TinyLM(torch.nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, 8)
        self.out = torch.nn.Linear(8, vocab)

    def forward(self, input_ids: torch.Tensor):
        return types.SimpleNamespace(logits=self.out(self.emb(input_ids).cumsum(1)))


def test_losses_match_hand_computation():
    rng = np.random.default_rng(0)
    windows = {"a": rng.integers(0, 50, (5, 9)), "b": rng.integers(0, 50, (2, 9))}
    model = TinyLM(50).train()
    got = evaluate_losses(model, windows, batch_size=2, device=torch.device("cpu"))
    assert model.training  # restored
    for name, win in windows.items():
        x = torch.as_tensor(win)
        with torch.no_grad():
            logp = model(x[:, :-1]).logits.double().log_softmax(-1)
        want = -logp.gather(-1, x[:, 1:, None]).mean().item()
        assert got[name] == pytest.approx(want, rel=1e-5)


def test_an_evaluation_reports_its_progress_set_by_set():
    rng = np.random.default_rng(0)
    windows = {"a": rng.integers(0, 50, (5, 9)), "b": rng.integers(0, 50, (2, 9))}
    seen: list[tuple[str, int, int]] = []
    evaluate_losses(TinyLM(50), windows, batch_size=2, device=torch.device("cpu"),
                    on_batch=lambda *a: seen.append(a))
    assert seen == [("a", 1, 3), ("a", 2, 3), ("a", 3, 3), ("b", 1, 1)]
