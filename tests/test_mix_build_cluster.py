"""`mix build` on cluster executors: one task per piece of the plan and a merge, on a real local Ray
cluster and as Slurm job scripts, byte-equal to the build on one machine."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import mix_fixtures  # noqa: E402
from mix_fixtures import build_world, write_recipe  # noqa: E402

from continua.partition import plan_pieces  # noqa: E402
from continua.recipe import SourceConfig, load_recipe  # noqa: E402
from mix.build import Builder  # noqa: E402
from mix.cli import main  # noqa: E402
from mix.planner import plan_recipe  # noqa: E402

PIECE_BYTES = 40_000  # cuts every file into several pieces, read by byte range


@pytest.fixture(scope="module")
def world(tmp_path_factory, monkeypatch_module):
    """Sources cut into pieces (score tables with the matching FILE@OFFSET ids), a plan, and a local build."""
    root = tmp_path_factory.mktemp("buildexec")
    monkeypatch_module.setattr(mix_fixtures, "SourceConfig",
                               lambda paths: SourceConfig(paths=paths, piece_bytes=PIECE_BYTES))
    w = build_world(root, n_domain=600, n_general=200)
    sources = {k: dict(v, piece_bytes=PIECE_BYTES) for k, v in w["sources"].items()}
    path = write_recipe(root / "r.toml", sources, w["tok"],
                        mix={"budget": "100%", "preset": "llama1", "shard_tokens": 2000, "valid_fraction": 0.05})
    recipe = load_recipe(path)
    plan_recipe(recipe, log=lambda m: None)
    assert main(["build", str(path), "--executor", "local"]) == 0
    local = root / "local-shards"
    shutil.copytree(root / "out" / "mix" / "shards", local)
    return {"root": root, "path": path, "recipe": recipe, "local": local}


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under the shards folder (complete.json holds fingerprints with mtimes: left out)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "complete.json"}


def test_sources_are_cut_into_several_pieces(world):
    pieces = {n: len(plan_pieces(s)) for n, s in world["recipe"].data.sources.items()}
    assert pieces["domain"] >= 3 and all(n >= 2 for n in pieces.values()), pieces
    assert len(_digests(world["local"])) >= 4 * 2 * 3 + 1  # train + valid shards of 4 sources, and the manifest


def test_ray_build_with_two_workers_equals_the_local_build(world):
    import ray

    shards = world["root"] / "out" / "mix" / "shards"
    shutil.rmtree(shards)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["build", str(world["path"]), "--executor", "ray", "--workers", "2"]) == 0
    finally:
        ray.shutdown()
    assert _digests(shards) == _digests(world["local"])  # the same tokens, in the same order, in the same shards
    assert not any(p.name == ".work" for p in shards.rglob("*"))  # the pieces' work folders are merged away
    done = sorted((world["root"] / "out" / "mix" / "build-logs" / "tokenize" / "completions").iterdir())
    assert len(done) == sum(len(plan_pieces(s)) for s in world["recipe"].data.sources.values())  # one task a piece


def _slurm(world, dry: Path) -> list[str]:
    return ["build", str(world["path"]), "--executor", "slurm", "--set", 'curate.slurm.partition="cpu"',
            "--set", 'curate.slurm.venv_path="/opt/env/bin/activate"', "--dry-run", str(dry)]


def test_slurm_dry_run_writes_a_tokenize_array_and_a_merge_waiting_for_it(world, tmp_path):
    shards = world["root"] / "out" / "mix" / "shards"
    shutil.rmtree(shards, ignore_errors=True)
    dry = tmp_path / "scripts"
    assert main(_slurm(world, dry)) == 0
    n = sum(len(plan_pieces(s)) for s in world["recipe"].data.sources.values())
    scripts = sorted(dry.glob("*.sbatch"))
    assert [s.name.split("-", 1)[1] for s in scripts] == [
        f"mix-build-{stage}{m}.sbatch" for stage in ("tokenize", "merge") for m in ("", "-merge_stats")]
    for s in [*scripts, dry / "submit.sh"]:
        assert subprocess.run(["bash", "-n", str(s)]).returncode == 0, s
    tokenize = scripts[0].read_text()
    assert f"#SBATCH --array=0-{n - 1}" in tokenize and "#SBATCH --partition=cpu" in tokenize
    calls = [ln for ln in (dry / "submit.sh").read_text().splitlines() if "sbatch --parsable" in ln]
    assert "--dependency" not in calls[0] and "--dependency=afterok:${JOB_0}" in calls[2]  # merge waits for all pieces
    assert not (shards / "manifest.json").exists()  # nothing ran


RUN_TASKS = """
import os, sys
import dill
for rank in range(int(sys.argv[2])):
    os.environ["SLURM_ARRAY_TASK_ID"] = str(rank)
    with open(sys.argv[1], "rb") as f:
        dill.load(f).run()  # what `launch_pickled_pipeline executor.pik` does in the job
"""


def test_slurm_job_scripts_run_by_hand_build_what_the_local_build_built(world, tmp_path):
    """Run the pickled pipelines the sbatch scripts launch, task by task, as Slurm would: same shards."""
    shards = world["root"] / "out" / "mix" / "shards"
    shutil.rmtree(shards, ignore_errors=True)
    assert main(_slurm(world, tmp_path / "scripts")) == 0
    logs = world["root"] / "out" / "mix" / "build-logs"
    bin_dir = tmp_path / "bin"  # datatrove asks `scontrol` for the job's hosts: a stand-in answers this one
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho localhost\n")
    (bin_dir / "scontrol").chmod(0o755)
    n = sum(len(plan_pieces(s)) for s in world["recipe"].data.sources.values())
    env = dict(os.environ, SLURM_ARRAY_JOB_ID="1", SLURM_JOB_ID="1", SLURM_NODELIST="localhost",
               PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for stage, tasks in (("tokenize", n), ("merge", 1)):  # each array task as its job would run it
        subprocess.run([sys.executable, "-c", RUN_TASKS, str(logs / stage / "executor.pik"), str(tasks)], env=env,
                       check=True, cwd=world["root"])
    assert _digests(shards) == _digests(world["local"])


def test_an_interrupted_build_keeps_finished_pieces_and_a_new_plan_drops_them(world):
    recipe = world["recipe"]
    shards = world["root"] / "out" / "mix" / "shards"
    shutil.rmtree(shards, ignore_errors=True)
    b = Builder(recipe, 1, log=lambda m: None)
    jobs = b.prepare()
    b.tokenize_piece(jobs[0])  # as if the build stopped after one piece
    first = shards / jobs[0].source / ".work" / jobs[0].key / "train.ds"
    before = first.stat().st_mtime_ns
    again = Builder(recipe, 1, log=lambda m: None).prepare()
    assert again == jobs[1:] and first.stat().st_mtime_ns == before
    # a piece marked for another plan is tokenized again
    marker = json.loads((first.parent / "done.json").read_text())
    (first.parent / "done.json").write_text(json.dumps(marker | {"plan_hash": "other"}))
    assert Builder(recipe, 1, log=lambda m: None).prepare() == jobs
    assert not first.exists()


def test_dry_run_needs_slurm_and_slurm_needs_a_partition(world, tmp_path, capsys):
    assert main(["build", str(world["path"]), "--executor", "ray", "--dry-run", str(tmp_path)]) == 2
    assert "--dry-run writes Slurm scripts" in capsys.readouterr().err
    assert main(["build", str(world["path"]), "--executor", "slurm", "--dry-run", str(tmp_path)]) == 2
    assert "[curate.slurm] partition is required" in capsys.readouterr().err
