"""`curate score` on cluster executors: a real local Ray cluster against the local executor, Slurm
scripts (dry run and a stand-in `sbatch`), the out-dir lock, and SIGTERM ending every worker."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psutil
import pytest

from continua.recipe import load_recipe
from continua.score_table import scan_scores
from curate.cli import main
from curate.executors import lm_gpus
from curate.pipeline import build_executor
from helpers_curate import make_tokenizer, styled_texts, write_jsonl, write_recipe

DEDUP = 'dedup = ["exact", "minhash"]\n[curate.minhash]\nnum_buckets = 4\nhashes_per_bucket = 4\n'


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two files with exact and near duplicates, a tokenizer, and a recipe scoring and deduplicating them."""
    tmp = tmp_path_factory.mktemp("cluster")
    texts = styled_texts("med", 24, 5)
    near = [t.replace(".", "!", 1) for t in texts[:4]]  # one character changed: MinHash near-duplicates
    a = write_jsonl(tmp / "data" / "a.jsonl", texts[:14] + texts[:3])
    b = write_jsonl(tmp / "data" / "b.jsonl", texts[14:] + near)
    recipe = write_recipe(tmp / "r.toml", {"med": [a, b]}, make_tokenizer(tmp / "tok"), None, ["c4"], extra=DEDUP)
    return {"tmp": tmp, "recipe": recipe}


def _outputs(cdir: Path) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    scores = scan_scores(cdir, "med").collect().sort("doc_id")
    marks = pl.read_parquet(cdir / "med" / "dedup.parquet").sort("doc_id")
    stats = json.loads((cdir / "med" / "stats.json").read_text())
    return scores, marks, stats


def test_ray_cluster_runs_score_dedup_and_stats_like_local(corpus):
    import ray

    tmp, recipe = corpus["tmp"], str(corpus["recipe"])
    assert main(["score", recipe, "--tasks", "3", "--workers", "1", "--out", str(tmp / "local")]) == 0
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["score", recipe, "--tasks", "3", "--workers", "2", "--out", str(tmp / "ray"),
                     "--set", "curate.executor=ray"]) == 0
    finally:
        ray.shutdown()
    local, ray_out = _outputs(tmp / "local"), _outputs(tmp / "ray")
    assert local[0].equals(ray_out[0]) and local[1].equals(ray_out[1]) and local[2] == ray_out[2]
    scores, marks, stats = ray_out
    assert stats["documents_in"] == stats["scored"] == 31 and stats["pieces"] >= 1
    assert marks["dup_exact"].sum() == 3  # three texts written twice
    assert marks.filter(~pl.col("dup_minhash_keep")).height >= 6  # the 3 exact + 3-4 near copies
    assert scores["n_tokens"].null_count() == 0


def _slurm_recipe(corpus, extra: list[str]) -> list[str]:
    return [str(corpus["recipe"]), "--set", "curate.executor=slurm", "--set", 'curate.slurm.partition="gpu"',
            "--set", 'curate.slurm.venv_path="/opt/env/bin/activate"', *extra]


def test_slurm_dry_run_writes_a_dependent_chain_and_submits_nothing(corpus, tmp_path):
    out, dry = tmp_path / "shared" / "curate", tmp_path / "scripts"
    args = _slurm_recipe(corpus, ["--set", "curate.gpus_per_task=2", "--tasks", "3", "--out", str(out),
                                  "--dry-run", str(dry)])
    assert main(["score", *args]) == 0
    folder = dry / "med"
    scripts = sorted(folder.glob("*.sbatch"))
    # score, signatures, buckets, clusters, finish: each a job array plus datatrove's merge_stats job
    stages = ("score", "signatures", "buckets", "clusters", "finish")
    assert [s.name.split("-", 1)[1] for s in scripts] == [
        f"curate-med-{n}{m}.sbatch" for n in stages for m in ("", "-merge_stats")]
    for s in [*scripts, folder / "submit.sh"]:
        assert subprocess.run(["bash", "-n", str(s)]).returncode == 0, s
    submit = (folder / "submit.sh").read_text().splitlines()
    calls = [ln for ln in submit if "sbatch --parsable" in ln]
    assert len(calls) == 10
    for i in range(2, 10, 2):  # every stage waits for the previous stage's array job, succeeded
        assert f"--dependency=afterok:${{JOB_{i - 2}}}" in calls[i], calls[i]
        assert f"--dependency=afterok:${{JOB_{i}}}" in calls[i + 1], calls[i + 1]  # stats merge of the stage
    assert "--dependency" not in calls[0] and "DRYRUN" not in "".join(p.read_text() for p in folder.iterdir())
    score = scripts[0].read_text()
    assert "#SBATCH --gpus=2" in score and "#SBATCH --array=0-2" in score and "#SBATCH --partition=gpu" in score
    assert "source /opt/env/bin/activate" in score
    assert all("--gpus" not in s.read_text() for s in scripts[1:])  # only scoring runs the LM scorers
    pik = out / "med" / "logs" / "executor.pik"
    assert f"launch_pickled_pipeline {pik}" in score and pik.exists()
    assert f"#SBATCH --output={out / 'med' / 'logs' / 'slurm_logs'}/%A_%a.out" in score
    assert not (out / "med" / "scores").exists() and not (out / "med" / "stats.json").exists()


def test_slurm_submission_uses_job_ids_and_gpu_default(corpus, tmp_path, monkeypatch, capsys):
    """A stand-in `sbatch` records what datatrove submits: the chain carries the real job ids."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "sbatch.log"
    fake = bindir / "sbatch"
    fake.write_text(f'#!/bin/bash\nn=$(( $(wc -l < {log} 2>/dev/null || echo 0) + 100 ))\n'
                    f'echo "$n $*" >> {log}\necho "Submitted batch job $n"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    assert main(["score", *_slurm_recipe(corpus, ["--tasks", "2", "--out", str(tmp_path / "c")])]) == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 10
    ids = [ln.split()[0] for ln in lines]
    for i in range(2, 10, 2):
        assert f"--dependency=afterok:{ids[i - 2]}" in lines[i]
    # a second submission while those jobs are queued is refused, naming them
    squeue = bindir / "squeue"
    squeue.write_text("#!/bin/bash\necho 100_0\necho 102\n")
    squeue.chmod(squeue.stat().st_mode | stat.S_IEXEC)
    assert main(["score", *_slurm_recipe(corpus, ["--tasks", "2", "--out", str(tmp_path / "c")])]) == 1
    assert len(log.read_text().splitlines()) == 10
    assert "Slurm jobs 100, 102 of the previous" in capsys.readouterr().err
    r = load_recipe(corpus["recipe"])
    assert lm_gpus(r) == 0
    r.curate.lm_scorers = {"m": Path("model")}
    assert lm_gpus(r) == 1  # an LM scorer asks for a GPU unless it runs on the CPU
    ray_score = build_executor(load_recipe(corpus["recipe"], ["curate.executor=ray", "curate.gpus_per_task=2"]),
                               [], tmp_path / "logs", tasks=4, workers=2)
    assert (ray_score.gpus_per_task, ray_score.workers) == (2, 2)  # Ray reserves num_gpus per score task
    r.curate.lm_device = "cpu"
    assert lm_gpus(r) == 0


def test_slurm_unwritable_output_folder_is_a_clear_error(corpus, capsys):
    rc = main(["score", *_slurm_recipe(corpus, ["--out", "/sys/continua-curate", "--dry-run", "/sys/x"])])
    assert rc == 1
    err = capsys.readouterr().err
    assert "/sys/continua-curate" in err and "not writable" in err and "shared filesystem" in err


def test_dry_run_needs_slurm(corpus, tmp_path, capsys):
    assert main(["score", str(corpus["recipe"]), "--out", str(tmp_path / "c"), "--dry-run", str(tmp_path)]) == 2
    assert "--dry-run" in capsys.readouterr().err


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_locked_out_dir_refuses_a_second_writer_and_stale_locks_are_taken_over(corpus, tmp_path, capsys):
    cdir = tmp_path / "c"
    folder = cdir / "med"
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                  "started": "2026-01-01T00:00:00+00:00", "command": "curate score med"}))
        before = _snapshot(folder)
        assert main(["score", str(corpus["recipe"]), "--out", str(cdir)]) == 1
        err = capsys.readouterr().err
        assert f"PID {holder.pid}" in err and socket.gethostname() in err and "2026-01-01T00:00:00" in err
        assert f"delete {folder / '.lock'}" in err
        assert _snapshot(folder) == before  # nothing written
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and the next run takes it over and finishes
    assert main(["score", str(corpus["recipe"]), "--out", str(cdir)]) == 0
    assert "stale lock" in capsys.readouterr().err
    assert (folder / "stats.json").exists() and not (folder / ".lock").exists()


def test_sigterm_ends_every_worker_and_a_rerun_resumes(tmp_path):
    data = [write_jsonl(tmp_path / "data" / f"p{i}.jsonl", styled_texts("gen", 800, i)) for i in range(4)]
    recipe = write_recipe(tmp_path / "r.toml", {"g": data}, None, None, ["gopher_quality", "gopher_repetition"])
    cmd = [sys.executable, "-m", "curate", "score", str(recipe), "--tasks", "4", "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    main_ps = psutil.Process(proc.pid)
    seen: set[int] = set()
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until the pool's workers are scoring
        kids = main_ps.children(recursive=True)
        seen |= {k.pid for k in kids}
        if len(kids) >= 4 and (tmp_path / "out" / "curate" / "g" / "logs").exists():
            break
        time.sleep(0.2)
    seen |= {k.pid for k in main_ps.children(recursive=True)}
    assert len(seen) >= 3, "workers never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err.decode()[-2000:]
    time.sleep(0.5)
    alive = [p for p in seen if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"workers still running after SIGTERM: {alive}"
    folder = tmp_path / "out" / "curate" / "g"
    assert not (folder / ".lock").exists()
    assert not (folder / "stats.json").exists()
    assert main(["score", str(recipe), "--tasks", "4", "--workers", "1"]) == 0  # resumes the unfinished tasks
    table = scan_scores(folder.parent, "g").collect()
    assert table.height == 3200 and table["doc_id"].n_unique() == 3200
    assert json.loads((folder / "stats.json").read_text())["scored"] == 3200
