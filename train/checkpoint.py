"""Checkpoints with torch.distributed.checkpoint: sharded model + optimizer, sampler, step, RNG.

A checkpoint is written under a hidden temporary name and renamed to `step_NNNNNNN` only when
every rank has finished, so a folder with the final name is always complete; the last K stay.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from continua.io import write_json
from train.parallel import Dist, barrier

STEP_RE = re.compile(r"^step_(\d{7,})$")
TRAINER_STATE = "trainer.json"


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    folder = checkpoints_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = STEP_RE.match(p.name)
        if m and (p / TRAINER_STATE).exists():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def remove_checkpoints(run_dir: Path) -> None:
    shutil.rmtree(checkpoints_dir(run_dir), ignore_errors=True)


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    trainer_state: dict, keep: int, d: Dist) -> Path:
    """Write step `step` atomically (all ranks call this) and keep the newest `keep` checkpoints."""
    folder = checkpoints_dir(run_dir)
    final = folder / f"step_{step:07d}"
    tmp = folder / f".tmp_step_{step:07d}"
    if d.is_main:
        for stale in folder.glob(".tmp_step_*"):  # left by a crash during an earlier save
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp)
    torch.save(_rng_state(), tmp / f"rng_{d.rank}.pt")
    barrier()
    if d.is_main:
        write_json(tmp / TRAINER_STATE, {**trainer_state, "step": step, "world_size": d.world})
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, d: Dist) -> dict:
    """Restore model, optimizer and this rank's RNG from `path`; returns the trainer state (step, sampler)."""
    state = json.loads((Path(path) / TRAINER_STATE).read_text())
    model_sd, optim_sd = get_state_dict(model, optimizer)
    both = {"model": model_sd, "optim": optim_sd}
    dcp.load(both, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=both["model"], optim_state_dict=both["optim"])
    rng = Path(path) / f"rng_{d.rank}.pt"
    if rng.exists() and state.get("world_size") == d.world:
        _set_rng_state(torch.load(rng, weights_only=False))
    return state


def load_optimizer_only(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """CPT option: keep the freshly loaded weights but restore AdamW moments from an earlier run."""
    if not (Path(path) / ".metadata").exists():
        raise FileNotFoundError(f"[train] optimizer_from: {path} is not a torch.distributed.checkpoint folder "
                                "(no .metadata); name a checkpoints/step_NNNNNNN folder")
    _, optim_sd = get_state_dict(model, optimizer)
    holder = {"optim": optim_sd}
    dcp.load(holder, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict={}, optim_state_dict=holder["optim"],
                   options=StateDictOptions(strict=False))


def _rng_state() -> dict:
    import random

    import numpy as np

    out = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def _set_rng_state(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
