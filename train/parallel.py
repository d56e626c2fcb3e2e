"""Processes and sharding: one code path for 1 process, torchrun, CPU (gloo) and GPU (nccl).

A single process still gets a world-size-1 process group, so collectives and checkpoints use one
code path. FSDP2 wraps the model whenever there is something to shard or a GPU to run bf16 mixed
precision on; a lone CPU process trains the plain module (FSDP would only add ~10% of copies there).
torch.distributed.checkpoint reshards between the two forms, so a run can resume on any world size.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from train.loss import CausalLMLoss


@dataclass
class Dist:
    """Where this process stands: rank, world size, and the device it computes on."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def pick_device(pref: str, local_rank: int) -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("[train] device = 'cuda' but torch sees no CUDA device")
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_pref: str = "auto") -> Dist:
    """Join torchrun's process group, or make a world-size-1 group (in-process store) when run directly."""
    alone = not under_torchrun()
    rank = 0 if alone else int(os.environ["RANK"])
    world = 1 if alone else int(os.environ["WORLD_SIZE"])
    local_rank = 0 if alone else int(os.environ["LOCAL_RANK"])
    device = pick_device(device_pref, local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"store": dist.HashStore()} if alone else {}
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(minutes=30),
                                device_id=device if device.type == "cuda" else None, **kwargs)
    return Dist(rank, world, local_rank, device)


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
        code = subprocess.call(cmd, env=env)
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


def shard_model(model: nn.Module, mp_dtype: torch.dtype | None, root: nn.Module | None = None) -> nn.Module:
    """FSDP2: each decoder block is one unit, untied input embeddings their own, the rest (norm, head) the root.

    `root` (train.loss.CausalLMLoss, which holds `model`) becomes the root unit when given, so the output
    head is gathered around the loss it computes. With `mp_dtype` (bf16 on GPU) parameters are gathered in
    that dtype and gradients reduced in fp32.
    """
    mp = MixedPrecisionPolicy(param_dtype=mp_dtype, reduce_dtype=torch.float32) if mp_dtype else MixedPrecisionPolicy()
    layers = decoder_layers(model)
    for i, block in enumerate(layers):
        # the last block is needed again at once by backward: keep it gathered
        fully_shard(block, mp_policy=mp, reshard_after_forward=i < len(layers) - 1)
    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    if not tied and model.get_input_embeddings() is not None:
        fully_shard(model.get_input_embeddings(), mp_policy=mp)
    fully_shard(root if root is not None else model, mp_policy=mp)
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
                  compile: bool = False) -> CausalLMLoss:
    """Activation checkpointing, torch.compile per block, device placement and FSDP2, in that order; returns
    the model with its loss (train.loss.CausalLMLoss, the FSDP root): call that one, and give `model`
    itself to load_weights, checkpoints and export (the state dict keeps the model's own names).

    A model built on the meta device is sharded first and then given (uninitialized) storage, so each
    rank allocates only its shards; train.weights.load_weights fills them.
    """

    meta = is_meta(model)
    if activation_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if compile:
        for block in decoder_layers(model):
            block.compile()
    if not use_fsdp(d) and bf16:
        raise ValueError("[train] dtype = 'bfloat16' needs FSDP mixed precision: use a GPU or nproc > 1")
    if not meta:
        model.to(d.device)
    net = CausalLMLoss(model)
    if use_fsdp(d):
        shard_model(model, torch.bfloat16 if bf16 else None, root=net)
    if meta:
        materialize(model, d.device)
    return net


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
