"""`curate score` stopped from outside: kill -9 leaves no worker behind, SIGTERM ends in one resume line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from helpers_curate import make_tokenizer, styled_texts, write_jsonl, write_recipe


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """A source that keeps two workers busy for a while (4 tasks, every heuristic)."""
    root = tmp_path_factory.mktemp("procs")
    data = write_jsonl(root / "data" / "d.jsonl", styled_texts("med", 2000, 1) * 4)
    return write_recipe(root / "r.toml", {"d": [data]}, make_tokenizer(root / "tok"), None,
                        ["gopher_quality", "gopher_repetition", "c4", "fineweb"])


def _start_with_workers(recipe: Path, tmp: Path, out: str) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """`curate score` in a subprocess, once its pool workers (children of the forkserver) run; every descendant."""
    log = open(tmp / out, "w")
    main = subprocess.Popen([sys.executable, "-m", "curate", "score", str(recipe), "--tasks", "4", "--workers", "2",
                             "--out", str(tmp / out.replace(".log", ""))], stdout=log, stderr=subprocess.STDOUT)
    me = psutil.Process(main.pid)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        kids = me.children(recursive=True)
        if any(k.ppid() != main.pid for k in kids if k.is_running()):  # a worker forked by the forkserver
            return main, me.children(recursive=True)
        assert main.poll() is None, f"curate score ended before its workers were seen: {(tmp / out).read_text()}"
        time.sleep(0.2)
    main.kill()
    raise AssertionError("no worker process appeared within 180 s")


def _alive_after(procs: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return []
        time.sleep(0.2)
    return alive


def _end(procs: list[psutil.Process]) -> None:
    for p in procs:  # whatever a failing test left, by PID
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def test_kill_9_of_curate_score_leaves_no_process_behind(recipe, tmp_path):
    main, procs = _start_with_workers(recipe, tmp_path, "kill.log")
    assert len(procs) >= 4  # manager, resource tracker, forkserver, at least one worker
    try:
        main.kill()
        main.wait(timeout=30)
        alive = _alive_after(procs, 20)
        assert not alive, [(p.pid, p.cmdline()[:4]) for p in alive]
    finally:
        _end(procs)


def test_sigterm_ends_curate_score_with_one_resume_line_and_no_tracebacks(recipe, tmp_path):
    main, procs = _start_with_workers(recipe, tmp_path, "term.log")
    try:
        main.send_signal(signal.SIGTERM)
        assert main.wait(timeout=120) == 75
        log = (tmp_path / "term.log").read_text()
        assert "Traceback" not in log and "KeyError" not in log and "leaked" not in log, log[-3000:]
        assert log.rstrip().endswith("finished pieces are kept: run the same command again to resume"), log[-3000:]
        assert not _alive_after(procs, 20)
    finally:
        _end(procs)
