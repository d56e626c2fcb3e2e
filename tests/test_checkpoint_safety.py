"""Checkpoints: a damaged newest one is named and the one before used; nothing in one can run code."""

from __future__ import annotations

import os
import pickle
import random
import shutil

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
from train_fixtures import two_source_shards, write_recipe

from continua import checksums
from continua.recipe import load_recipe
from train import checkpoint as ckpt
from train import dcp_safe, loop
from train.gap import read_metrics


class Payload:
    """Unpickling this writes `marker`: what a hostile checkpoint would do with full pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 6-step run with checkpoints at steps 2, 4, 6, and its losses."""
    root = tmp_path_factory.mktemp("ckpt")
    two_source_shards(root, docs=30, general_tokens=600)
    train = {"steps": 6, "checkpoint_every": 2, "keep_checkpoints": 3}
    recipe = write_recipe(root / "r.toml", root / "out", root / "shards", train=train)
    assert loop.run(load_recipe(recipe))["status"] == "finished"
    return root, losses(root / "out" / "train")


def losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"}


def copy_run(trained, tmp_path):
    """A copy of the trained run and a recipe pointing at it."""
    root, _ = trained
    shutil.copytree(root / "out", tmp_path / "out")
    train = {"steps": 6, "checkpoint_every": 2, "keep_checkpoints": 3}
    recipe = write_recipe(tmp_path / "r.toml", tmp_path / "out", root / "shards", train=train)
    return tmp_path / "out" / "train", load_recipe(recipe)


def rewrite_manifest(folder):
    """What someone crafting a checkpoint would do: make checksums.json match the altered files."""
    names = [p.name for p in folder.iterdir() if p.is_file() and p.name != checksums.MANIFEST]
    checksums.write_manifest(folder, checksums.describe(folder, names))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_latest_checkpoint_is_named_and_the_one_before_resumes_exactly(trained, tmp_path, capsys, damage):
    run_dir, recipe = copy_run(trained, tmp_path)
    latest = run_dir / "checkpoints" / "step_0000006"
    data = sorted(latest.glob("*.distcp"))[0]
    size = data.stat().st_size
    if damage == "garbage":  # 4 KiB overwritten in place: the size is unchanged, only the hash can tell
        with open(data, "r+b") as f:
            f.seek(size // 2)
            f.write(np.random.default_rng(0).bytes(4096))
        assert data.stat().st_size == size
    else:
        os.truncate(data, size // 3)
    capsys.readouterr()
    assert loop.run(recipe)["status"] == "finished"
    err = capsys.readouterr().err
    named = [line for line in err.splitlines() if "is damaged" in line]
    assert len(named) == 1 and "step_0000006" in named[0] and data.name in named[0], err
    assert ("corrupted" if damage == "garbage" else "truncated") in named[0]
    assert "resumed from" in err and "step_0000004" in err
    assert (run_dir / "checkpoints" / "damaged_step_0000006" / data.name).exists()  # kept for inspection
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("step_")) == \
        ["step_0000002", "step_0000004", "step_0000006"]
    # steps 5 and 6 are trained again from step 4's state: the same losses as the uninterrupted run
    again, first = losses(run_dir), trained[1]
    assert list(again) == list(range(1, 7))
    np.testing.assert_allclose([again[s] for s in first], list(first.values()), rtol=0, atol=1e-6)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_checkpoint_without_checksums_falls_back_to_the_one_before(trained, tmp_path, capsys, damage):
    run_dir, recipe = copy_run(trained, tmp_path)
    for step in (4, 6):  # both written by a version before checksums
        (run_dir / "checkpoints" / f"step_{step:07d}" / checksums.MANIFEST).unlink()
    data = sorted((run_dir / "checkpoints" / "step_0000006").glob("*.distcp"))[0]
    if damage == "truncated":
        os.truncate(data, data.stat().st_size // 3)
    else:  # the pickled stream's start overwritten: what torch's weights-only loader refuses
        with open(data, "r+b") as f:
            f.write(np.random.default_rng(1).bytes(data.stat().st_size))
    capsys.readouterr()
    assert loop.run(recipe)["status"] == "finished"
    err = capsys.readouterr().err
    named = [line for line in err.splitlines() if "moved to damaged_step_0000006" in line]
    assert len(named) == 1 and "step_0000006" in named[0], err
    assert "weights_only" not in err and "resumed from" in err and "step_0000004" in err
    again, first = losses(run_dir), trained[1]
    np.testing.assert_allclose([again[s] for s in first], list(first.values()), rtol=0, atol=1e-6)


def test_when_no_checkpoint_without_checksums_loads_the_run_stops_rather_than_train_half_loaded_weights(
        trained, tmp_path):
    run_dir, recipe = copy_run(trained, tmp_path)
    for step in (2, 4, 6):
        folder = run_dir / "checkpoints" / f"step_{step:07d}"
        (folder / checksums.MANIFEST).unlink()
        data = sorted(folder.glob("*.distcp"))[0]
        os.truncate(data, data.stat().st_size // 3)
    with pytest.raises(ckpt.CheckpointError, match=r"step_0000002: cannot be read .*no earlier checkpoint of .* "
                                                    r"loads: run `train run --no-resume`"):
        loop.run(recipe)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == \
        ["damaged_step_0000002", "damaged_step_0000004", "damaged_step_0000006"]


def _file_size_limit(limit: int):
    """preexec_fn: files of this process may not grow beyond `limit` bytes (what a full disk does to a write)."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_checkpoint_that_cannot_be_written_is_one_line_naming_the_folder_and_resumes_later(trained, tmp_path):
    import subprocess
    import sys

    root, _ = trained
    recipe = write_recipe(tmp_path / "r.toml", tmp_path / "out", root / "shards", train={"steps": 2})
    folder = tmp_path / "out" / "train" / "checkpoints"
    # a checkpoint's data file is ~560 KB, everything else the run writes before it far less
    run = subprocess.run([sys.executable, "-m", "train", "run", str(recipe)], capture_output=True, text=True,
                         preexec_fn=_file_size_limit(300_000), timeout=600)
    errors = [line for line in run.stderr.splitlines() if "error" in line.lower()]
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith("train run: error: checkpoint of step 2 could not be written to "
                                                     f"{folder}: "), run.stderr[-3000:]
    assert "File too large" in errors[0] and "the last complete checkpoint is none" in errors[0]
    assert not list(folder.glob(".tmp_step_*")) and not list(folder.glob("step_*"))  # nothing half-written left
    assert loop.run(load_recipe(recipe))["status"] == "finished"  # with room again, the same command completes


def test_checkpoints_hold_checksums_and_no_pickled_rng(trained):
    root, _ = trained
    latest = root / "out" / "train" / "checkpoints" / "step_0000006"
    files = checksums.read_manifest(latest)
    on_disk = {p.name for p in latest.iterdir()} - {checksums.MANIFEST}
    assert set(files) == on_disk and {".metadata", "trainer.json", "rng_0.safetensors"} <= on_disk
    assert not list(latest.glob("*.pt"))
    checksums.verify(latest, files)


def test_rng_state_round_trips_through_safetensors(tmp_path):
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    random.gauss(0, 1)  # a cached gaussian is part of Python's state
    expected = torch.get_rng_state(), random.getstate(), np.random.get_state()
    ckpt._save_rng(tmp_path / "rng_0.safetensors")
    torch.rand(5), random.random(), np.random.rand(5), random.gauss(0, 1)
    ckpt._set_rng_state(ckpt._read_rng(tmp_path, 0))
    assert torch.equal(torch.get_rng_state(), expected[0]) and random.getstate() == expected[1]
    got = np.random.get_state()
    assert got[0] == expected[2][0] and np.array_equal(got[1], expected[2][1]) and got[2:] == expected[2][2:]


def test_a_pickled_rng_file_that_runs_code_is_refused_and_never_run(trained, tmp_path, capsys):
    run_dir, recipe = copy_run(trained, tmp_path)
    latest = run_dir / "checkpoints" / "step_0000006"
    marker = tmp_path / "MARKER"
    (latest / "rng_0.safetensors").unlink()
    torch.save({"torch": torch.get_rng_state(), "python": Payload(marker), "numpy": 0}, latest / "rng_0.pt")
    rewrite_manifest(latest)
    with pytest.raises(ckpt.CheckpointError, match=r"rng_0\.pt: refused.*it was not run"):
        loop.run(recipe)
    assert not marker.exists()
    # the same file as an old checkpoint without checksums: refused the same way, moved aside like any
    # damaged checkpoint, and the run resumes from the one before
    (latest / checksums.MANIFEST).unlink()
    capsys.readouterr()
    assert loop.run(recipe)["status"] == "finished"
    err = capsys.readouterr().err
    assert "rng_0.pt: refused" in err and "moved to damaged_step_0000006" in err and "weights_only=False" not in err
    assert "resumed from" in err and "step_0000004" in err
    assert not marker.exists()
    torch.load(run_dir / "checkpoints" / "damaged_step_0000006" / "rng_0.pt", weights_only=False)  # full pickle runs it
    assert marker.read_text() == "ran"


def test_an_rng_file_of_earlier_versions_is_converted_weights_only(trained, tmp_path):
    run_dir, recipe = copy_run(trained, tmp_path)
    latest = run_dir / "checkpoints" / "step_0000006"
    (latest / "rng_0.safetensors").unlink()
    (latest / checksums.MANIFEST).unlink()  # written before checksums existed
    torch.manual_seed(11), random.seed(11), np.random.seed(11)
    old = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    torch.save(old, latest / "rng_0.pt")
    torch.manual_seed(0)
    assert loop.run(recipe)["step"] == 6  # loaded, nothing left to train
    assert torch.equal(torch.get_rng_state(), old["torch"]) and random.getstate() == old["python"]


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_stock_dcp_would_run_code_from_metadata_and_values_the_safe_loader_does_not(tmp_path):
    marker = tmp_path / "MARKER"
    folder = tmp_path / "ck"
    dcp.save({"w": torch.arange(4.0), "lr": Payload(marker)}, checkpoint_id=folder, no_dist=True)
    assert not marker.exists()
    with pytest.raises(dcp_safe.UnsafeCheckpointError, match=r"value 'lr' is not plain data"):
        dcp_safe.load({"w": torch.zeros(4), "lr": 0.0}, folder)
    assert not marker.exists()
    dcp.load({"w": torch.zeros(4), "lr": 0.0}, checkpoint_id=folder, no_dist=True)  # stock DCP runs it
    assert marker.exists()
    marker.unlink()

    (folder / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(dcp_safe.UnsafeCheckpointError, match=r"\.metadata: not a checkpoint metadata file.*builtins\.exec"):
        dcp_safe.load({"w": torch.zeros(4)}, folder)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_metadata_pointing_outside_the_checkpoint_is_refused(tmp_path):
    folder = tmp_path / "ck"
    dcp.save({"w": torch.arange(4.0)}, checkpoint_id=folder, no_dist=True)
    meta = dcp_safe.read_metadata(folder)
    for info in meta.storage_data.values():
        info.relative_path = "../elsewhere.distcp"
    (folder / ".metadata").write_bytes(pickle.dumps(meta))
    with pytest.raises(dcp_safe.UnsafeCheckpointError, match=r"points at '\.\./elsewhere\.distcp'"):
        dcp_safe.load({"w": torch.zeros(4)}, folder)


def test_a_crafted_optimizer_from_checkpoint_is_refused_and_never_run(trained, tmp_path):
    root, _ = trained
    source = tmp_path / "given"
    shutil.copytree(root / "out" / "train" / "checkpoints" / "step_0000004", source)
    marker = tmp_path / "MARKER"
    (source / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    rewrite_manifest(source)  # checksums only catch damage: the crafted file must be refused on its own
    recipe = write_recipe(tmp_path / "r.toml", tmp_path / "out", root / "shards",
                          train={"steps": 2, "optimizer_from": str(source)})
    with pytest.raises(ckpt.CheckpointError, match=r"given.*\.metadata: not a checkpoint metadata file"):
        loop.run(load_recipe(recipe))
    assert not marker.exists()
    # and a damaged one (checksums not rewritten) is named as such, with the file
    shutil.rmtree(source)
    shutil.copytree(root / "out" / "train" / "checkpoints" / "step_0000004", source)
    with open(source / "trainer.json", "a") as f:
        f.write(" ")
    with pytest.raises(ckpt.CheckpointError, match=r"given is damaged: .*trainer\.json: .*bytes"):
        loop.run(load_recipe(recipe))
