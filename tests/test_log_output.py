"""Output that reads well in a log: full-width tables, plain progress lines, no messages that look like problems."""

from __future__ import annotations

import io
import re
import sys

from rich.table import Table

from continua.console import make_console
from continua.progress import LineProgress, progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_in_a_log_is_plain_lines_at_an_interval(monkeypatch):
    log = io.StringIO()
    clock = iter(range(0, 1000, 4))  # each update 4 s later
    monkeypatch.setattr("continua.progress.time.monotonic", lambda: float(next(clock)))
    bar = progress(total=10, desc="tokenize code", unit="doc", file=log, interval=10.0, leave=False)
    assert isinstance(bar, LineProgress)
    for _ in range(10):
        bar.update(1)
    bar.set_postfix({"loss": "2.31"})
    bar.close()
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 4  # every 10 s of 40 s, plus the final count once
    assert re.fullmatch(r"tokenize code: 3/10 doc \(30%\), [\d.]+ doc/s, 12s", lines[0])
    assert lines[-1].startswith("tokenize code: 10/10 doc (100%)") and lines[-1].endswith("loss=2.31")


def test_progress_on_a_terminal_is_tqdm_and_iterates_the_same():
    from tqdm import tqdm

    assert isinstance(progress(total=3, file=Tty()), tqdm)
    log = io.StringIO()
    assert list(progress(iter(range(5)), desc="x", file=log, interval=1e9)) == list(range(5))
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("x: 5 it, ")  # one final line
    quiet = io.StringIO()
    for _ in progress(range(3), file=quiet, disable=True):
        pass
    assert quiet.getvalue() == ""


def test_tables_in_a_log_are_never_clipped(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    table = Table(title="t")
    for col in ("evaluation set", "forgetting (final - start) of the general validation set", "note"):
        table.add_column(col)
    table.add_row("demo-pretrain-general-validation", "0.1234", "not recovered by the end of the run")
    make_console().print(table)
    text = out.getvalue()
    assert "forgetting (final - start) of the general validation set" in text
    assert "demo-pretrain-general-validation" in text and "not recovered by the end of the run" in text
    assert "…" not in text and "..." not in text


def test_report_in_a_log_is_the_markdown_itself(tmp_path, monkeypatch):
    from train.report import print_report

    report = tmp_path / "report.md"
    wide = "| run | " + " | ".join(f"final loss/general-validation-set-{i}" for i in range(6)) + " |"
    report.write_text(f"# Training report\n\n{wide}\n![curve](eval.png)\n")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    print_report(report)
    assert out.getvalue() == f"# Training report\n\n{wide}\n"


def test_train_says_nothing_about_optional_extras_or_cpu_mfu(tmp_path, monkeypatch):
    import builtins

    import torch

    from train.metrics import TensorBoard, peak_flops

    said: list[str] = []
    assert peak_flops(torch.device("cpu"), 0.0, said.append) == {}
    real_import = builtins.__import__

    def no_tensorboard(name, *a, **k):
        if name == "torch.utils.tensorboard":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    board = TensorBoard(tmp_path / "tb", True, said.append)
    assert board.writer is None and said == []
    assert peak_flops(torch.device("cpu"), 5e12, said.append) == {"mfu": 5e12}


def test_curate_summary_names_the_real_log_folders(tmp_path, capsys):
    from curate.stats import print_source_stats

    logs = tmp_path / "code" / "logs" / "logs"
    logs.mkdir(parents=True)
    for i in range(2):
        (logs / f"task_0000{i}.log").write_text("x")
    stats = {"code": {"documents_in": 3, "scored": 3, "rejected": 0, "rejected_by_reason": {}},
             "general": {"documents_in": 1, "scored": 1, "rejected": 0, "rejected_by_reason": {}}}
    print_source_stats(stats, tmp_path)
    out = capsys.readouterr().out
    assert "SOURCE" not in out
    assert f"code: datatrove's task logs in {logs}/ (2 files;" in out
    assert "general: datatrove" not in out  # no logs there: nothing to point at

