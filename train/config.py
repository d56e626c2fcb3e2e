"""The training sections of a recipe: [model] [optim] [schedule] [eval] [train]."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from continua.schema import path_field

__all__ = ["ModelConfig", "OptimConfig", "ScheduleConfig", "EvalConfig", "TrainConfig"]


@dataclass
class ModelConfig:
    """A local Hugging Face model (`path`), or a fresh Llama of the given shape."""

    path: Path | None = path_field(None, must_exist=True)
    gguf_file: str | None = None
    hidden_size: int = 256
    intermediate_size: int = 688
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    tie_embeddings: bool = True


@dataclass
class OptimConfig:
    lr: float = 3e-4
    betas: list[float] = None  # type: ignore[assignment]
    weight_decay: float = 0.1
    eps: float = 1e-8
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.betas is None:
            self.betas = [0.9, 0.95]

    def validate(self) -> None:
        if len(self.betas) != 2:
            raise ValueError(f"betas must have two values, got {self.betas}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@dataclass
class ScheduleConfig:
    name: Literal["cosine", "constant"] = "cosine"
    warmup: float = 0.01  # fraction of the steps if < 1, else a number of steps
    min_lr_ratio: float = 0.1  # eta_min = min_lr_ratio * peak lr (Ibrahim et al.: 0.1)

    def validate(self) -> None:
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class EvalConfig:
    every: int = 0  # evaluate every N steps; 0 = log-spaced cadence with `num_evals` points
    num_evals: int = 20
    max_batches: int = 8  # batches per validation set (fixed, the same at every evaluation)
    batch_size: int = 8

    def validate(self) -> None:
        if self.every < 0 or self.num_evals < 2 or self.max_batches < 1 or self.batch_size < 1:
            raise ValueError("every >= 0, num_evals >= 2, max_batches >= 1, batch_size >= 1")


@dataclass
class TrainConfig:
    steps: int = 100
    seq_len: int = 256
    batch_size: int = 8  # sequences per optimizer step, over all processes
    micro_batch_size: int | None = None  # sequences per forward pass per process (default: all)
    nproc: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    shards: Path | None = path_field(None, must_exist=False)  # default: <run.out_dir>/mix/shards
    out: Path | None = path_field(None, must_exist=False)  # default: <run.out_dir>/train

    def validate(self) -> None:
        if self.steps < 1 or self.seq_len < 8 or self.batch_size < 1 or self.nproc < 1:
            raise ValueError("steps, batch_size and nproc must be >= 1 and seq_len >= 8")
