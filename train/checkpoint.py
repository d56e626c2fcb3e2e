"""Checkpoints with torch.distributed.checkpoint: sharded model + optimizer, sampler, step, RNG.

A checkpoint is written under a hidden temporary name, checksummed (`checksums.json`, written last)
and renamed to `step_NNNNNNN` only when every rank has finished, so a folder with the final name is
always complete; the last K stay. Nothing in a checkpoint is unpickled with Python's full pickle:
model and optimizer go through `train.dcp_safe`, RNG states are tensors in `rng_RANK.safetensors`,
the trainer state (step, sampler) is JSON. At resume the newest checkpoint whose files match their
checksums is used; a damaged one (or one without checksums, from an earlier version, that fails to
load) is named in one line and moved aside to `damaged_step_NNNNNNN`. A save that fails (a full
disk, a file-size limit) removes its temporary folder and raises one line naming the file.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from continua import checksums
from continua.exitcodes import RunFailure
from continua.io import write_json
from train import dcp_safe
from train.parallel import Dist

STEP_RE = re.compile(r"^step_(\d{7,})$")
TRAINER_STATE = "trainer.json"
DAMAGED_PREFIX = "damaged_"
CHECKPOINT_ROOM = 1 << 20  # free bytes under which a failed save is put down to a full disk


class CheckpointError(ValueError):
    """A checkpoint cannot be used: damaged, unsafe to read, or not a checkpoint of this tool."""


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

    def start() -> None:
        for stale in folder.glob(".tmp_step_*"):  # left by a crash during an earlier save
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)

    d.agree(start if d.is_main else lambda: None, f"creating {tmp}")
    model_sd, optim_sd = get_state_dict(model, optimizer)
    problem = None
    try:
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp)
        _save_rng(tmp / f"rng_{d.rank}.safetensors")
    except (CheckpointException, OSError, RuntimeError, SafetensorError) as e:  # a full disk, a size limit
        problem = _save_problem(e, tmp)
    _raise_save_problem(d.gather_object(problem), tmp, step, run_dir, d)
    # every rank hashes a share of the files; the main rank writes the manifest last
    names = sorted(p.name for p in tmp.iterdir() if p.is_file())
    parts = d.gather_object(checksums.describe(tmp, names[d.rank::d.world]))

    def publish() -> str | None:
        try:
            write_json(tmp / TRAINER_STATE, {**trainer_state, "step": step, "world_size": d.world})
            files = {k: v for part in parts for k, v in part.items()}
            files.update(checksums.describe(tmp, [TRAINER_STATE]))
            checksums.write_manifest(tmp, files)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except OSError as e:  # a full disk, a size limit: one line naming the file
            return _save_problem(e, tmp)
        for _, old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return None

    problem = d.agree(publish if d.is_main else lambda: None, f"writing checkpoint {final}")
    _raise_save_problem(d.gather_object(problem), tmp, step, run_dir, d)
    return final


class CheckpointSaveError(RunFailure):
    """A checkpoint could not be written (a full disk, a file-size limit): the half-written folder is
    removed, the earlier checkpoints stay, and the message names the folder and the system's reason."""


def _save_problem(e: BaseException, tmp: Path) -> str:
    """One line for a failed save: the file and the system's reason. DCP wraps each rank's error, and
    torch's zip writer reports a refused write as "unexpected pos": then the folder tells what happened."""
    causes = [f[0] if isinstance(f, tuple) else f for f in e.failures.values()] if isinstance(e, CheckpointException) \
        else [e]
    oserrors = [c for c in causes if isinstance(c, OSError) and c.strerror]
    if oserrors:
        first = oserrors[0]
        return f"{first.filename}: {first.strerror}" if first.filename else f"{first.strerror} (errno {first.errno})"
    found = _full(tmp)
    if found is not None:
        return found
    first = causes[0] if causes else e
    text = " ".join(str(first).split("\n", 1)[0].split())[:200]
    return f"{type(first).__name__}: {text} (a full disk or a file-size limit?)"


def _full(folder: Path) -> str | None:
    """Which limit a write in `folder` met: a file at the process's file-size limit, or a full disk."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    try:
        files = [p for p in folder.iterdir() if p.is_file()]
        if limit != resource.RLIM_INFINITY:
            for p in files:
                if p.stat().st_size >= limit:
                    return f"{p}: File too large (the file-size limit, `ulimit -f`, is {limit:,} bytes)"
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    return f"No space left on device ({free:,} bytes free)" if free < CHECKPOINT_ROOM else None


def _raise_save_problem(problems: list, tmp: Path, step: int, run_dir: Path, d: Dist) -> None:
    """Every rank raises the first rank's problem (none continues into a collective that would hang)."""
    found = [p for p in problems if p is not None]
    if not found:
        return
    if d.is_main:
        shutil.rmtree(tmp, ignore_errors=True)  # frees the space the half-written files took
    d.barrier()
    latest = latest_checkpoint(run_dir)
    raise CheckpointSaveError(f"checkpoint of step {step} could not be written to {tmp.parent}: {found[0]}; the "
                              f"last complete checkpoint is {latest or 'none'}: make room and run the same command "
                              f"to resume from it")


def newest_valid_checkpoint(run_dir: Path, d: Dist, say: Callable[[str], None]) -> Path | None:
    """The newest checkpoint whose files match their checksums (all ranks call this; they share the reading).

    A damaged one is named in one line and renamed `damaged_step_NNNNNNN`, out of the way of resume and
    of the keep-K pruning, but kept for inspection.
    """
    for _, path in reversed(list_checkpoints(run_dir)):
        problem = _check(path, d)
        if problem is None:
            if not (path / checksums.MANIFEST).exists():
                say(f"checkpoint {path} has no {checksums.MANIFEST} (written by an earlier version): not verified")
            return path
        damaged = _move_aside(path, d)
        say(f"checkpoint {path} is damaged, skipped (moved to {damaged.name}): {problem.replace(f'{path}/', '')}")
    return None


def _move_aside(path: Path, d: Dist) -> Path:
    """Rename a damaged checkpoint `damaged_step_NNNNNNN` (all ranks call this): kept for inspection,
    out of the way of resume and of the keep-K pruning."""
    damaged = path.with_name(DAMAGED_PREFIX + path.name)

    def set_aside() -> None:
        shutil.rmtree(damaged, ignore_errors=True)
        path.rename(damaged)

    d.agree(set_aside if d.is_main else lambda: None, f"moving {path} aside")
    return damaged


def resume_newest(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, d: Dist,
                  say: Callable[[str], None]) -> tuple[Path, dict] | None:
    """Load the newest usable checkpoint (all ranks call this); returns its path and trainer state, or None.

    A checkpoint without checksums (written by an earlier version) can only show damage by failing to
    load: it is then named, moved aside like any damaged one, and the one before is tried. A failed
    load may have overwritten part of the model, so when no earlier checkpoint loads the run stops
    rather than train from those weights."""
    failed = None
    while (path := newest_valid_checkpoint(run_dir, d, say)) is not None:
        problem = state = None
        try:
            state = load_checkpoint(path, model, optimizer, d)
        except CheckpointError as e:
            problem = str(e)
        problems = [p for p in _gather(problem, d) if p is not None]  # one rank's RNG file fails on that rank only
        if not problems:
            return path, state
        failed = problems[0]
        if checksums.read_manifest(path) is not None:  # its files are as saved: not damage, another model or setup
            raise CheckpointError(failed)
        say(f"{failed}; skipped (moved to {_move_aside(path, d).name})")
    if failed is not None:
        raise CheckpointError(f"{failed}; no earlier checkpoint of {checkpoints_dir(run_dir)} loads: run "
                              f"`train run --no-resume` to start over")
    return None


def verify_checkpoint(path: Path, d: Dist | None = None) -> None:
    """Raise CheckpointError naming the file when `path` does not match its checksums (collective under torchrun)."""
    problem = _check(Path(path), d)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: {problem}")


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, d: Dist) -> dict:
    """Restore model, optimizer and this rank's RNG from `path`; returns the trainer state (step, sampler)."""
    path = Path(path)
    try:
        state = json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
        step = int(state["step"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path / TRAINER_STATE}: unreadable trainer state ({e})") from None
    model_sd, optim_sd = get_state_dict(model, optimizer)
    both = {"model": model_sd, "optim": optim_sd}
    _dcp_load(both, path)
    set_state_dict(model, optimizer, model_state_dict=both["model"], optim_state_dict=both["optim"])
    if state.get("world_size") == d.world:  # RNG streams are per rank: they only carry over to the same world
        rng = _read_rng(path, d.rank)
        if rng is not None:
            _set_rng_state(rng)
    state["step"] = step
    return state


def load_optimizer_only(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                        d: Dist | None = None) -> None:
    """CPT option: keep the freshly loaded weights but restore AdamW moments from an earlier run."""
    path = Path(path)
    if not (path / dcp_safe.METADATA).exists():
        raise FileNotFoundError(f"[train] optimizer_from: {path} is not a torch.distributed.checkpoint folder "
                                "(no .metadata); name a checkpoints/step_NNNNNNN folder")
    verify_checkpoint(path, d)
    _, optim_sd = get_state_dict(model, optimizer)
    holder = {"optim": optim_sd}
    _dcp_load(holder, path)
    set_state_dict(model, optimizer, model_state_dict={}, optim_state_dict=holder["optim"],
                   options=StateDictOptions(strict=False))


def _check(path: Path, d: Dist | None) -> str | None:
    """None when `path` matches its manifest (or has none: written before checksums); else the first problem."""
    problem = None
    try:
        files = checksums.read_manifest(path)
        if files is not None:
            missing = [n for n in (dcp_safe.METADATA, TRAINER_STATE) if n not in files]
            if missing:
                raise checksums.ChecksumError(f"{path / checksums.MANIFEST}: does not list {', '.join(missing)}")
            names = sorted(files)
            rank, world = (d.rank, d.world) if d is not None else (0, 1)
            checksums.verify(path, files, names[rank::world])
    except (checksums.ChecksumError, OSError) as e:
        problem = str(e)
    except Exception as e:  # noqa: BLE001 - whatever one rank meets, every rank must hear before going on
        problem = f"{path}: cannot be checked ({type(e).__name__}: {e})"
    found = [p for p in _gather(problem, d) if p is not None]
    return found[0] if found else None


def _dcp_load(state_dict: dict, path: Path) -> None:
    """dcp_safe.load, with any failure (on any rank) raised as one CheckpointError naming the checkpoint."""
    files = checksums.read_manifest(path)
    try:
        dcp_safe.load(state_dict, path, allowed_files=set(files) if files is not None else None)
    except (dcp_safe.CheckpointReadError, FileNotFoundError) as e:
        raise CheckpointError(f"checkpoint {e}") from None


def _gather(obj: object, d: Dist | None) -> list:
    """Every rank's `obj` (a list of one without a Dist: a check outside a run)."""
    return d.gather_object(obj) if d is not None else [obj]


# RNG: tensors in safetensors, the few scalars as JSON in its header

def _save_rng(path: Path) -> None:
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "python_mt": torch.tensor(mt, dtype=torch.int64),
               "numpy_mt": torch.from_numpy(np.asarray(keys, dtype=np.int64))}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    meta = {"python_version": version, "python_gauss": gauss, "numpy_kind": kind, "numpy_pos": int(pos),
            "numpy_has_gauss": int(has_gauss), "numpy_cached_gaussian": float(cached)}
    save_file(tensors, str(path), metadata={"state": json.dumps(meta)})


def _read_rng(path: Path, rank: int) -> dict | None:
    """This rank's RNG state from rng_RANK.safetensors, or from a pre-safetensors rng_RANK.pt read weights-only."""
    new, old = path / f"rng_{rank}.safetensors", path / f"rng_{rank}.pt"
    if new.exists():
        try:
            from safetensors import safe_open

            with safe_open(str(new), "pt") as f:
                meta = json.loads(f.metadata()["state"])
            t = load_file(str(new))
            return {"torch": t["torch"], "cuda": t.get("cuda"),
                    "python": (meta["python_version"], tuple(t["python_mt"].tolist()), meta["python_gauss"]),
                    "numpy": (meta["numpy_kind"], t["numpy_mt"].numpy().astype(np.uint32), meta["numpy_pos"],
                              meta["numpy_has_gauss"], meta["numpy_cached_gaussian"])}
        except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{new}: unreadable RNG state ({e})") from None
    if old.exists():
        return _read_legacy_rng(old)
    return None


def _read_legacy_rng(path: Path) -> dict:
    """RNG files of earlier versions (torch.save of a dict): loaded with torch's weights-only unpickler,
    which admits tensors, plain containers and numpy arrays only, so no code in the file can run."""
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 / numpy 1.26
    numpy_globals = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    try:
        with torch.serialization.safe_globals(numpy_globals):
            state = torch.load(path, weights_only=True)
        if not isinstance(state, dict) or not {"torch", "python", "numpy"} <= set(state):
            raise ValueError("not an RNG state dict")
    except Exception as e:  # noqa: BLE001 - whatever the file holds, it is refused with its name
        first = dcp_safe.weights_only_reason(e)
        raise CheckpointError(f"{path}: refused: an RNG file must hold plain tensors and numbers, and this one "
                              f"does not ({first[:200]}); it was not run. Delete the file to resume without its "
                              "RNG state, or start over with --no-resume") from None
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    np.random.set_state(state["numpy"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
