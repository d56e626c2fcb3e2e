"""`train report`: two fake runs -> report.md table numbers and the PNGs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from train.commands import add_eval_commands
from train.report import write_report


def fake_run(folder: Path, name: str, med: list[float], gen: list[float], acc: list[float], lr: float,
             elapsed: float, gap_json: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "recipe.toml").write_text(f'[run]\nname = "{name}"\n')
    lines = []
    for i in range(len(med)):
        step = i * 10
        lines.append({"kind": "train", "step": step, "tokens": step * 512, "loss": med[i], "lr": lr * (1 - i / 10),
                      "elapsed_s": elapsed * i / (len(med) - 1)})
        lines.append({"kind": "eval", "step": step, "tokens": step * 512,
                      "metrics": {"loss/medical": med[i], "loss/general": gen[i], "acc/medqa": acc[i]}})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if gap_json is not None:
        (folder / "gap.json").write_text(json.dumps(gap_json))
    return folder


def test_report_two_runs(tmp_path):
    a = fake_run(tmp_path / "a" / "train", "rewarm", [3.0, 3.3, 2.9, 2.6], [2.0, 2.5, 2.3, 2.2],
                 [0.30, 0.25, 0.31, 0.33], 3e-4, 3725.0)
    b = fake_run(tmp_path / "b" / "train", "replay", [3.0, 3.1, 2.8, 2.7], [2.0, 2.1, 1.95, 1.9],
                 [0.30, 0.29, 0.28, 0.27], 1e-4, 95.0)
    report = write_report([a, b], tmp_path / "out")
    text = report.read_text()
    overview = text.split("## Overview")[1].split("##")[0]
    assert "| run | steps | tokens | wall time | final loss/general | final loss/medical | final acc/medqa |" in overview
    assert "| rewarm | 30 | 15.36k | 1h02m05s | 2.2000 | 2.6000 | 0.3300 |" in overview
    assert "| replay | 30 | 15.36k | 1m35s | 1.9000 | 2.7000 | 0.2700 |" in overview
    general = text.split("## loss/general (lower is better)")[1].split("##")[0]
    assert "| rewarm | 2.0000 | 2.5000 (10) | 0.5000 | not recovered | 2.2000 | +0.2000 | forgetting |" in general
    assert "| replay | 2.0000 | 2.1000 (10) | 0.1000 | 20 (10.24k) | 1.9000 | -0.1000 | gain |" in general
    acc = text.split("## acc/medqa (higher is better)")[1].split("##")[0]
    assert "| rewarm | 0.3000 | 0.2500 (10) | 0.0500 | 20 (10.24k) | 0.3300 | +0.0300 | gain |" in acc
    assert "| replay | 0.3000 | 0.2700 (30) | 0.0300 | not recovered | 0.2700 | -0.0300 | forgetting |" in acc
    for png in ("eval_loss_medical.png", "eval_loss_general.png", "eval_acc_medqa.png", "lr.png"):
        path = tmp_path / "out" / png
        assert path.read_bytes()[:4] == b"\x89PNG" and f"]({png})" in text


def test_report_uses_gap_json_and_cli(tmp_path, capsys):
    gap = {"sets": {"loss/medical": {"direction": "lower", "evals": 2, "start_step": 0, "start": 9.0, "worst": 9.5,
                                     "worst_step": 10, "worst_tokens": 5120, "gap": True, "gap_depth": 0.5,
                                     "recovered": False, "recovery_step": None, "recovery_tokens": None,
                                     "final": 9.25, "final_step": 10, "final_change": 0.25, "outcome": "forgetting"}},
           "weight_change": {"key": "weight_change/bottom_top_ratio", "first_step": 10, "first": 1.5, "max": 1.5,
                             "max_step": 10, "final_step": 10, "final": 1.5}}
    run = fake_run(tmp_path / "run", "one", [3.0, 3.1], [2.0, 2.1], [0.3, 0.3], 1e-4, 10.0, gap_json=gap)
    parser = argparse.ArgumentParser(prog="train")
    add_eval_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(run)])
    assert args.func(args) == 0
    text = (run / "report.md").read_text()  # one run dir: the report goes into it
    assert "| one | 10 | 5.12k | 0m10s | 9.2500 |" in text  # the numbers come from gap.json
    assert "| one | 1.500 (10) | 1.500 (10) | 1.500 (10) |" in text
    assert str(run / "report.md") in capsys.readouterr().out


def test_report_steps_axis_log_x_and_errors(tmp_path):
    import pytest

    run = tmp_path / "r"
    run.mkdir()
    rows = [{"kind": "eval", "step": s, "metrics": {"loss/x": v}} for s, v in [(0, 2.0), (1, 2.2), (10, 1.9)]]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # no tokens, no train lines
    text = write_report([run], tmp_path / "out", log_x=True).read_text()
    assert "| r | 10 | - | - | 1.9000 |" in text and "No `lr` in the train lines" in text
    assert "| r | 2.0000 | 2.2000 (1) | 0.2000 | 10 (-) | 1.9000 | -0.1000 | gain |" in text
    assert (tmp_path / "out" / "eval_loss_x.png").stat().st_size > 1000 and not (tmp_path / "out" / "lr.png").exists()
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        write_report([tmp_path / "missing"], tmp_path / "out")


def test_a_run_that_continues_another_is_drawn_where_it_ended_and_zoomed(tmp_path, monkeypatch):
    from train import report as rep

    pre = fake_run(tmp_path / "pre" / "train", "pretrain", [5.0, 4.0, 3.5, 3.0], [5.0, 4.0, 3.5, 3.0],
                   [0.2, 0.25, 0.3, 0.3], 3e-4, 100.0)
    cpt = fake_run(tmp_path / "cpt" / "train", "cpt", [3.0, 3.3, 2.9, 2.6], [3.0, 3.4, 3.3, 3.2],
                   [0.3, 0.25, 0.31, 0.33], 3e-4, 10.0)
    (cpt / "recipe.toml").write_text(f'[run]\nname = "cpt"\n\n[model]\npath = "{pre / "export"}"\n')
    figures = {}

    def keep(fig, path):
        figures[path.name] = fig
        return path

    monkeypatch.setattr(rep, "_save", keep)
    write_report([pre, cpt], tmp_path / "out")
    fig = figures["eval_loss_general.png"]
    whole, zoom = fig.axes
    lines = {line.get_label(): line for line in whole.get_lines() if not line.get_label().startswith("_")}
    assert list(lines["pretrain"].get_xdata()) == [0, 5120, 10240, 15360]
    assert list(lines["cpt"].get_xdata()) == [15360, 20480, 25600, 30720]  # from where pre-training ended
    assert [v for v in whole.get_lines() if v.get_xdata()[0] == v.get_xdata()[-1] == 15360]  # the hand-over line
    zoomed = [line for line in zoom.get_lines() if line.get_label() == "cpt"]
    assert len(zoomed) == 1 and list(zoomed[0].get_xdata()) == [0, 5120, 10240, 15360]
    assert "pretrain" not in {line.get_label() for line in zoom.get_lines()}
    assert zoom.get_ylim()[0] > 2.8  # zoomed to the CPT's own range, not pre-training's 5.0 start
    assert any(line.get_marker() == "v" for line in zoom.get_lines())  # the worst point of the gap is marked
    assert [t.get_text().strip() for t in zoom.texts] == ["gap 0.400 at step 10"]
    assert len(figures["eval_loss_medical.png"].axes) == 2
    rows = [json.loads(x) for x in (cpt / "metrics.jsonl").read_text().splitlines()]
    for r in rows:  # a set only the continuing run evaluates: nothing to continue from, one panel
        r.get("metrics", {})["loss/code"] = 2.0
    (cpt / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report([pre, cpt], tmp_path / "out2")
    assert len(figures["eval_loss_code.png"].axes) == 1 and len(figures["eval_loss_general.png"].axes) == 2
    solo = write_report([cpt], tmp_path / "solo")  # without its base in the report: one panel, as before
    assert solo.is_file() and len(figures["eval_loss_general.png"].axes) == 1
