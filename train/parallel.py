"""Processes and sharding: one code path for 1 process, torchrun, CPU (gloo) and GPU (nccl).

A single process still gets a world-size-1 process group, so collectives and checkpoints use one
code path. FSDP2 wraps the model whenever there is something to shard or a GPU to run bf16 mixed
precision on; a lone CPU process trains the plain module (FSDP would only add ~10% of copies there).
torch.distributed.checkpoint reshards between the two forms, so a run can resume on any world size.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from continua.procs import end_with_parent
from train.config import ParallelConfig
from train.loss import CausalLMLoss
from train.preflight import PreflightError

T = TypeVar("T")


@dataclass
class Dist:
    """Where this process stands (rank, world size, device) and the collectives between its ranks.

    Modules take a Dist instead of asking torch.distributed again; without a process group (or with
    one rank) every collective is the identity.
    """

    rank: int
    world: int
    local_rank: int
    device: torch.device
    collective_timeout: float | None = None  # seconds a collective waits (None: the process group's own)
    control: object = None  # a gloo group for host-side votes when the default group is NCCL (None: the default)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def _grouped(self) -> bool:
        return self.world > 1 and dist.is_initialized()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum `t` over the ranks, in place (returns it)."""
        if self._grouped:
            dist.all_reduce(t)
        return t

    def barrier(self) -> None:
        if self._grouped:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True when `flag` is true on any rank: a host-side vote (gloo, CPU) that never waits for the GPU."""
        if not self._grouped:
            return flag
        t = torch.tensor([int(flag)], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return bool(t.item())

    def gather_object(self, obj: object) -> list:
        """Every rank's `obj`, in rank order (pickled between this run's own ranks, never read from a file)."""
        if not self._grouped:
            return [obj]
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def agree(self, fn: Callable[[], T], what: str) -> T | None:
        """Run `fn` (on every rank, or work one rank does alone) and let a failure on any rank reach every rank.

        A rank that raises while the others wait in the next collective would leave them waiting until
        the timeout; here each rank reports success or its error, and all raise the first one.
        """
        try:
            result, problem = fn(), None
        except Exception as e:  # noqa: BLE001 - any failure must reach the other ranks before being raised
            result, problem = None, f"{what} failed on rank {self.rank}: {type(e).__name__}: {e}"
            if not self._grouped:
                raise
        failed = [p for p in self.gather_object(problem) if p is not None]
        if failed:
            raise RankFailure(failed[0])
        return result

    @contextmanager
    def timeout(self, seconds: float) -> Iterator[None]:
        """Collectives started inside wait at most `seconds` (long work of one rank: export, conversion)."""
        before = self.collective_timeout
        set_collective_timeout(self, seconds)
        try:
            yield
        finally:
            set_collective_timeout(self, before)


class RankFailure(RuntimeError):
    """Work on one rank failed; every rank raises this with that rank's message."""


def set_collective_timeout(d: Dist, seconds: float | None) -> None:
    """How long any later collective of the default group waits for the other ranks before failing."""
    d.collective_timeout = seconds
    if seconds is not None and dist.is_initialized():
        from torch.distributed.distributed_c10d import _set_pg_timeout

        _set_pg_timeout(timedelta(seconds=seconds))
        if d.control is not None:
            _set_pg_timeout(timedelta(seconds=seconds), d.control)


def current_dist(device: torch.device) -> Dist:
    """The Dist of an already joined process group (world 1 without one): for callers handed no Dist."""
    if dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), device)
    return Dist(0, 1, 0, device)


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def pick_device(pref: str, local_rank: int) -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("[train] device = 'cuda' but torch sees no CUDA device")
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_pref: str = "auto", parallel: ParallelConfig | None = None) -> Dist:
    """Join torchrun's process group, or make a world-size-1 group (in-process store) when run directly.

    Rendezvous and every collective until `training_started` wait at most [parallel] init_timeout_s: a
    rank that never arrives (a crashed node, a wrong address) fails the run in minutes, not half an hour.
    """
    pc = parallel or ParallelConfig()
    alone = not under_torchrun()
    rank = 0 if alone else int(os.environ["RANK"])
    world = 1 if alone else int(os.environ["WORLD_SIZE"])
    local_rank = 0 if alone else int(os.environ["LOCAL_RANK"])
    device = pick_device(device_pref, local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"store": dist.HashStore()} if alone else {}
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=pc.init_timeout_s),
                                device_id=device if device.type == "cuda" else None, **kwargs)
    control = None
    if world > 1 and dist.get_backend() != "gloo":  # votes on host flags must not queue behind GPU work
        control = dist.new_group(backend="gloo", timeout=timedelta(seconds=pc.init_timeout_s))
    return Dist(rank, world, local_rank, device, collective_timeout=pc.init_timeout_s, control=control)


class SharedFolderError(PreflightError):
    """The ranks do not see one run folder (a node-local disk on a multi-node run)."""


def check_shared_folder(folder: Path, d: Dist) -> None:
    """Rank 0 writes a random nonce under `folder`; every rank must read it back, else every rank raises.

    Checkpoints and the export are written by all ranks into one folder and read back by all at
    resume: on a node-local disk each node would see only its own part, and the failure would come
    at the first resume, as a damaged or missing checkpoint. Found here, before training, it is one
    clear message.
    """
    if d.world == 1:
        return
    nonce = secrets.token_hex(16)
    probe = Path(folder) / f".shared_probe_{d.gather_object(nonce)[0]}"

    def write() -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe.write_text(probe.name)

    d.agree(write if d.is_main else lambda: None, f"writing {probe}")
    try:
        seen = probe.read_text() == probe.name
    except OSError:
        seen = False
    views = d.gather_object((seen, socket.gethostname()))
    blind = [(r, host) for r, (ok, host) in enumerate(views) if not ok]
    if d.is_main:
        probe.unlink(missing_ok=True)
    if blind:
        who = ", ".join(f"rank {r} on {host}" for r, host in blind[:4]) + (" ..." if len(blind) > 4 else "")
        raise SharedFolderError(
            f"{folder}: {who} cannot read the file rank 0 (on {views[0][1]}) just wrote there: the run folder "
            "must be one folder shared by every node (a network file system), not a node-local disk; set "
            "[run] out_dir (or [train] out) to a shared path")


def training_started(d: Dist, parallel: ParallelConfig) -> None:
    """After the first step: collectives wait [parallel] step_timeout_s (a step's work is known by now)."""
    set_collective_timeout(d, parallel.step_timeout_s)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


STATUS_ENV = "CONTINUA_TRAIN_STATUS"  # file where rank 0 leaves the run's exit code (train.cli.report_status)


def relaunch_with_torchrun(nproc: int, argv: list[str], nnodes: int = 1, rdzv_endpoint: str | None = None,
                           rdzv_id: str | None = None) -> int:
    """Run `train` again as `nproc` torchrun workers on this machine; returns the run's exit code
    (torchrun itself only says 0 or 1, so an interrupted run's 75 comes back through a status file).

    With `rdzv_endpoint` the workers join a c10d rendezvous there: every node of a multi-node job runs
    the same command (srun starts it once per node) and torchrun forms one world of nnodes x nproc.
    """
    if rdzv_endpoint:
        rid = rdzv_id or os.environ.get("SLURM_JOB_ID") or "continua"
        launch = [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={rid}"]
    else:
        launch = ["--standalone"]
    cmd = [sys.executable, "-m", "torch.distributed.run", *launch, f"--nproc-per-node={nproc}",
           "-m", "train.cli", *argv]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    with tempfile.TemporaryDirectory() as tmp:
        env[STATUS_ENV] = status = os.path.join(tmp, "status")
        # killed outright (kill -9, the OOM killer), this process cannot stop torchrun: the kernel sends it
        # SIGTERM, and torchrun stops its ranks (each saves its state as for any SIGTERM)
        code = subprocess.call(cmd, env=env, preexec_fn=end_with_parent())
        if code == 0 and os.path.exists(status):
            return int(open(status).read().strip() or 0)
    return code


def use_fsdp(d: Dist) -> bool:
    return d.world > 1 or d.device.type == "cuda"


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a Hugging Face causal LM (model.model.layers for Llama-likes)."""
    base = getattr(model, model.base_model_prefix, model) if hasattr(model, "base_model_prefix") else model
    for attr in ("layers", "h", "blocks"):
        layers = getattr(base, attr, None)
        if isinstance(layers, nn.ModuleList):
            return list(layers)
    raise ValueError(f"{type(model).__name__}: cannot find its decoder layers (looked for .layers, .h, .blocks)")


def shard_model(model: nn.Module, mp_dtype: torch.dtype | None, parallel: ParallelConfig | None = None,
                root: nn.Module | None = None) -> nn.Module:
    """FSDP2: each decoder block is one unit, untied input embeddings their own, the rest (norm, head) the root.

    `root` (train.loss.CausalLMLoss, which holds `model`) becomes the root unit when given, so the output
    head is gathered around the loss it computes. With `mp_dtype` (bf16 on GPU) parameters are gathered in
    that dtype and gradients reduced in [parallel] reduce_dtype (fp32 by default). [parallel]
    reshard_after_forward = false keeps every block gathered from its forward to its backward (ZeRO-2: less
    communication, more memory).
    """
    pc = parallel or ParallelConfig()
    reduce = getattr(torch, pc.reduce_dtype)
    mp = MixedPrecisionPolicy(param_dtype=mp_dtype, reduce_dtype=reduce) if mp_dtype else MixedPrecisionPolicy()
    layers = decoder_layers(model)
    for i, block in enumerate(layers):
        # the last block is needed again at once by backward: keep it gathered
        fully_shard(block, mp_policy=mp, reshard_after_forward=pc.reshard_after_forward and i < len(layers) - 1)
    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    if not tied and model.get_input_embeddings() is not None:
        fully_shard(model.get_input_embeddings(), mp_policy=mp, reshard_after_forward=pc.reshard_after_forward)
    # the output head stays in the root unit: train.loss reads its weight inside the root's forward
    fully_shard(root if root is not None else model, mp_policy=mp, reshard_after_forward=pc.reshard_after_forward)
    return model


def is_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def materialize(model: nn.Module, device: torch.device) -> None:
    """Give a (sharded) meta model uninitialized storage on `device`; buffers keep their computed values."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    model.to_empty(device=device)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()  # to_empty gives each module a new parameter: tie the head to the embeddings again
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name in buffers:
                b.copy_(buffers[name])


def prepare_model(model: nn.Module, d: Dist, bf16: bool, activation_checkpointing: bool = False,
                  compile: bool = False, parallel: ParallelConfig | None = None) -> CausalLMLoss:
    """Activation checkpointing, torch.compile per block, device placement and FSDP2, in that order; returns
    the model with its loss (train.loss.CausalLMLoss, the FSDP root): call that one, and give `model`
    itself to load_weights, checkpoints and export (the state dict keeps the model's own names).

    A model built on the meta device is sharded first and then given (uninitialized) storage, so each
    rank allocates only its shards; train.weights.load_weights fills them.
    """

    pc = parallel or ParallelConfig()
    meta = is_meta(model)
    if activation_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if compile:
        for block in decoder_layers(model):
            block.compile(fullgraph=pc.compile_fullgraph)
    if not use_fsdp(d) and bf16:
        raise ValueError("[train] dtype = 'bfloat16' needs FSDP mixed precision: use a GPU or nproc > 1")
    if not meta:
        model.to(d.device)
    net = CausalLMLoss(model)
    if use_fsdp(d):
        shard_model(model, torch.bfloat16 if bf16 else None, pc, root=net)
    if meta:
        materialize(model, d.device)
    return net


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over the default group's ranks (for callers without a Dist; prefer Dist.all_reduce_sum)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def barrier() -> None:
    """A barrier of the default group (for callers without a Dist; prefer Dist.barrier)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
