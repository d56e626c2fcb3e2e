"""Commands stopped from outside: kill -9 of `curate score`, `mix build --workers 2` or `train run --nproc 2`
leaves no worker behind; SIGTERM ends `curate score` in one resume line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from helpers_curate import make_tokenizer, styled_texts, write_chain_recipe, write_jsonl, write_recipe


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """A source that keeps two workers busy for a while (4 tasks, every heuristic)."""
    root = tmp_path_factory.mktemp("procs")
    data = write_jsonl(root / "data" / "d.jsonl", styled_texts("med", 2000, 1) * 4)
    return write_recipe(root / "r.toml", {"d": [data]}, make_tokenizer(root / "tok"), None,
                        ["gopher_quality", "gopher_repetition", "c4", "fineweb"])


def _start_and_wait_for(cmd: list[str], tmp: Path, out: str, seen, what: str) -> tuple[subprocess.Popen, list]:
    """`cmd` in a subprocess, once `seen(main, descendants)` holds; every descendant then."""
    log = open(tmp / out, "w")
    main = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    me = psutil.Process(main.pid)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            kids = me.children(recursive=True)
            if seen(main, kids):
                return main, kids
        except psutil.NoSuchProcess:
            pass
        assert main.poll() is None, f"{cmd[2:4]} ended before {what} was seen: {(tmp / out).read_text()[-3000:]}"
        time.sleep(0.1)
    main.kill()
    raise AssertionError(f"{what} did not appear within 240 s")


def _kill_9_leaves_nothing(main: subprocess.Popen, procs: list[psutil.Process], seconds: float = 60) -> None:
    """kill -9 of `main`: every one of `procs` must be gone within `seconds` (those left are then killed)."""
    try:
        main.kill()
        main.wait(timeout=30)
        alive = _alive_after(procs, seconds)
        assert not alive, [(p.pid, p.cmdline()[:6]) for p in alive]
    finally:
        _end(procs)


def _start_with_workers(recipe: Path, tmp: Path, out: str) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """`curate score` in a subprocess, once its pool workers (children of the forkserver) run; every descendant."""
    return _start_and_wait_for([sys.executable, "-m", "curate", "score", str(recipe), "--tasks", "4", "--workers", "2",
                                "--out", str(tmp / out.replace(".log", ""))], tmp, out,
                               lambda main, kids: any(k.ppid() != main.pid for k in kids if k.is_running()),
                               "a worker forked by the forkserver")


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
    _kill_9_leaves_nothing(main, procs, 20)


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


def _is_pool_worker(p: psutil.Process) -> bool:
    try:
        return "spawn_main" in " ".join(p.cmdline())
    except psutil.Error:
        return False


def test_kill_9_of_mix_build_leaves_no_tokenizing_worker_behind(tmp_path):
    from mix.cli import main as mix_main
    from mix_fixtures import write_score_table

    texts = [f"{t} {i}" for i, t in enumerate(styled_texts("med", 3000, 3) * 4)]
    data = write_jsonl(tmp_path / "data" / "d.jsonl", texts)
    tok = make_tokenizer(tmp_path / "tok")
    recipe = write_chain_recipe(tmp_path / "r.toml", tmp_path / "out", data, tok)
    write_score_table(tmp_path / "out" / "curate", "med", data, tok)  # as another tool would write it
    assert mix_main(["plan", str(recipe), "--budget", "100%"]) == 0
    main, procs = _start_and_wait_for(
        [sys.executable, "-m", "mix", "build", str(recipe), "--workers", "2"], tmp_path, "build.log",
        lambda main, kids: sum(_is_pool_worker(k) for k in kids) >= 2, "two tokenizing workers")
    _kill_9_leaves_nothing(main, procs)


def _is_rank(p: psutil.Process) -> bool:
    try:
        return "train.cli" in p.cmdline() and "torch.distributed.run" in psutil.Process(p.ppid()).cmdline()
    except psutil.Error:
        return False


def test_kill_9_of_train_run_leaves_no_torchrun_or_rank_behind(tmp_path):
    from mix.cli import main as mix_main
    from mix_fixtures import write_score_table

    data = write_jsonl(tmp_path / "data" / "d.jsonl", styled_texts("med", 200, 4))
    tok = make_tokenizer(tmp_path / "tok")
    recipe = write_chain_recipe(tmp_path / "r.toml", tmp_path / "out", data, tok, extra="steps = 100000\n")
    write_score_table(tmp_path / "out" / "curate", "med", data, tok)
    assert mix_main(["plan", str(recipe), "--budget", "100%"]) == 0
    assert mix_main(["build", str(recipe)]) == 0
    main, procs = _start_and_wait_for(
        [sys.executable, "-m", "train", "run", str(recipe), "--nproc", "2"], tmp_path, "train.log",
        lambda main, kids: sum(_is_rank(k) for k in kids) >= 2, "two ranks under torchrun")
    _kill_9_leaves_nothing(main, procs)
