"""Stability-gap metrics on hand-made curves whose answers are known."""

from __future__ import annotations

import json

import pytest

from train.gap import gap_metrics, read_metrics, write_gap


def rows(key: str, values: list[float], steps: list[int] | None = None, tokens_per_step: int = 100) -> list[dict]:
    steps = steps or list(range(0, 10 * len(values), 10))
    return [{"kind": "eval", "step": s, "tokens": s * tokens_per_step, "metrics": {key: v}}
            for s, v in zip(steps, values)]


def test_loss_v_shape():
    g = gap_metrics(rows("loss/med", [3.0, 3.4, 3.6, 3.1, 3.0, 2.5]))["sets"]["loss/med"]
    assert g["direction"] == "lower" and g["start"] == 3.0 and g["start_step"] == 0
    assert g["worst"] == 3.6 and g["worst_step"] == 20 and g["worst_tokens"] == 2000
    assert g["gap"] is True and g["gap_depth"] == pytest.approx(0.6)
    assert g["recovery_step"] == 40 and g["recovery_tokens"] == 4000 and g["recovered"] is True  # 3.0 <= start
    assert g["final"] == 2.5 and g["final_change"] == pytest.approx(-0.5) and g["outcome"] == "gain"


def test_accuracy_dip_never_recovered_is_forgetting():
    g = gap_metrics(rows("acc/medqa", [0.40, 0.30, 0.25, 0.32, 0.35]))["sets"]["acc/medqa"]
    assert g["direction"] == "higher" and g["worst"] == 0.25 and g["worst_step"] == 20
    assert g["gap_depth"] == pytest.approx(0.15)
    assert g["recovery_step"] is None and g["recovered"] is False
    assert g["final_change"] == pytest.approx(-0.05) and g["outcome"] == "forgetting"


def test_monotone_improvement_has_no_gap():
    g = gap_metrics(rows("loss/gen", [3.0, 2.9, 2.8, 2.7]))["sets"]["loss/gen"]
    assert g["gap"] is False and g["gap_depth"] == 0.0 and g["worst"] == 2.9 and g["worst_step"] == 10
    assert g["recovered"] is True and g["recovery_step"] is None and g["outcome"] == "gain"


def test_ties_missing_points_and_repeated_steps():
    r = rows("loss/a", [2.0, 2.5, 2.5, 2.0])  # first of two equal worst points; recovery at equality
    r += [{"kind": "eval", "step": 30, "tokens": 3000, "metrics": {"loss/a": 1.9}}]  # resumed run re-evaluated step 30
    r += [{"kind": "train", "step": 5, "loss": 99.0}, {"kind": "eval", "step": 5, "tokens": 500, "metrics": {}}]
    g = gap_metrics(r)["sets"]["loss/a"]
    assert g["worst_step"] == 10 and g["recovery_step"] == 30 and g["final"] == 1.9 and g["evals"] == 4
    only_start = gap_metrics(rows("acc/x", [0.3]))["sets"]["acc/x"]
    assert only_start["worst"] is None and only_start["gap"] is False and only_start["final"] == 0.3


def test_several_sets_and_weight_change_ratio():
    r = [{"kind": "eval", "step": s, "tokens": s, "metrics": {"loss/med": lm, "acc/q": a,
                                                              "weight_change/bottom_top_ratio": w}}
         for s, lm, a, w in [(0, 3.0, 0.3, 0.0), (10, 3.2, 0.31, 1.6), (20, 2.9, 0.29, 1.4), (30, 2.8, 0.33, 1.2)]]
    out = gap_metrics(r)
    assert set(out["sets"]) == {"loss/med", "acc/q"}  # weight change is not a curve with a start value
    assert out["sets"]["acc/q"]["worst_step"] == 20 and out["sets"]["acc/q"]["recovery_step"] == 30
    assert out["weight_change"] == {"key": "weight_change/bottom_top_ratio", "first_step": 10, "first": 1.6,
                                    "max": 1.6, "max_step": 10, "final_step": 30, "final": 1.2}
    assert gap_metrics(rows("loss/a", [1.0, 2.0]))["weight_change"] is None


def test_read_metrics_errors_and_write_gap(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps(x) for x in rows("loss/a", [2.0, 2.4, 1.9])]
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"kind": "ev')  # torn last line: skipped
    path = write_gap(run)
    assert json.loads(path.read_text())["sets"]["loss/a"]["recovery_step"] == 20
    (run / "metrics.jsonl").write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not valid JSON"):
        read_metrics(run / "metrics.jsonl")
    (run / "metrics.jsonl").write_text('{"kind": "eval", "metrics": {}}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:1: an eval line needs 'step'"):
        read_metrics(run / "metrics.jsonl")


def with_items(key: str, values: list[float], items: int) -> list[dict]:
    out = rows(key, values)
    for r in out:
        r["metrics"]["items/" + key.split("/", 1)[1]] = items
    return out


def test_accuracy_changes_within_two_standard_errors_are_noise():
    """The same dip of 0.06 on 50 items is noise (2 SE of a difference at p = 0.28: 0.18); on 5,000 it is a gap."""
    values = [0.28, 0.22, 0.24, 0.30, 0.34]
    small = gap_metrics(with_items("acc/mmlu", values, 50))["sets"]["acc/mmlu"]
    assert small["items"] == 50 and small["noise"] == pytest.approx(2 * (2 * 0.28 * 0.72 / 50) ** 0.5)
    assert small["gap"] is False and small["gap_depth"] == pytest.approx(0.06) and small["recovery_step"] is None
    assert small["outcome"] == "within noise"  # +0.06 final change, also inside the noise
    large = gap_metrics(with_items("acc/mmlu", values, 5000))["sets"]["acc/mmlu"]
    assert large["noise"] == pytest.approx(0.018, abs=1e-3)
    assert large["gap"] is True and large["recovery_step"] == 30 and large["outcome"] == "gain"
    unknown = gap_metrics(rows("acc/mmlu", values))["sets"]["acc/mmlu"]  # no item count: no noise bound
    assert unknown["noise"] == 0.0 and unknown["gap"] is True and unknown["outcome"] == "gain"
    loss = gap_metrics(with_items("loss/mmlu", [3.0, 3.1, 2.9], 50))["sets"]["loss/mmlu"]
    assert loss["items"] is None and loss["gap"] is True  # losses carry no binomial bound
