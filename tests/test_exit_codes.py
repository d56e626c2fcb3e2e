"""README's exit-code promises, checked against what the code does where the two could drift apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from continua import exitcodes
from continua.cores import available_cores
from continua.io import DamagedFileError, read_json
from continua.recipe import load_recipe
from train.preflight import check_processes
from train_fixtures import write_recipe

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme() -> str:
    return " ".join(README.read_text(encoding="utf-8").split())


def test_more_processes_than_cores_warns_as_readme_says_and_more_than_gpus_would_stop(tmp_path, monkeypatch):
    recipe = load_recipe(write_recipe(tmp_path / "r.toml", tmp_path / "out", tmp_path, train={"batch_size": 64}))
    said: list[str] = []
    nproc = 2 * available_cores()
    check_processes(recipe, nproc, 1, said.append)  # goes on: ranks can share cores
    assert len(said) == 1 and said[0].startswith("warning:") and "share cores" in said[0]
    text = _readme()
    assert "`nproc` against GPUs: a mistake is one line and exit code 2" in text
    assert "more processes than CPU cores is only a warning" in text
    assert "against GPUs or cores: a mistake is one line and exit code 2" not in text


def test_failures_found_while_working_exit_1_and_readme_lists_them(tmp_path, capsys):
    def found_late() -> int:
        raise exitcodes.RunFailure("x.jsonl: 2 uid value(s) repeat")

    assert exitcodes.run_command("curate score", found_late) == exitcodes.FAILED
    assert capsys.readouterr().err == "curate score: error: x.jsonl: 2 uid value(s) repeat\n"
    text = _readme()
    assert "| 1 | runtime failure: a step failed, an input changed or is damaged, bad data found while working " \
           "(repeated `id_field` values)" in text
    assert "full disk, file-size limit: one line naming the path" in text


def test_damaged_json_artifacts_name_their_file_and_exit_1(tmp_path, capsys):
    broken = tmp_path / "plan.json"
    broken.write_text('{"sources": {"med": ')
    with pytest.raises(DamagedFileError, match=f"{broken}: not readable JSON"):
        read_json(broken)
    assert isinstance(DamagedFileError("x"), ValueError)  # callers that catch value errors still do
    assert exitcodes.run_command("mix build", lambda: read_json(broken)) == exitcodes.FAILED
    err = capsys.readouterr().err
    assert err.startswith(f"mix build: error: {broken}: not readable JSON") and err.count("\n") == 1


def test_a_training_log_that_cannot_grow_names_its_file(tmp_path):
    import subprocess
    import sys

    log = tmp_path / "metrics.jsonl"
    code = ("import resource\nfrom pathlib import Path\nfrom train.metrics import MetricsLog\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))\n"
            f"m = MetricsLog(Path({str(log)!r}), True)\n"
            "try:\n    [m.write({'step': i, 'loss': 1.0}) for i in range(1000)]\nfinally:\n    m.close()\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stderr.strip().splitlines()[-1] == f"OSError: [Errno 27] File too large: '{log}'"
