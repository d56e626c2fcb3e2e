"""The training sections of a recipe: [model] [optim] [schedule] [eval] [train] [parallel]."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from continua.schema import at_least, path_field

__all__ = ["ModelConfig", "OptimConfig", "ScheduleConfig", "EvalConfig", "TrainConfig", "ParallelConfig"]


def recipe_sections() -> dict[str, type]:
    """This stage's recipe sections, in recipe order (pyproject.toml's continua.recipe_sections entry points)."""
    return {"model": ModelConfig, "optim": OptimConfig, "schedule": ScheduleConfig, "eval": EvalConfig,
            "train": TrainConfig, "parallel": ParallelConfig}


@dataclass
class ModelConfig:
    """A base model (`path`: a Hugging Face folder, a .gguf file or a folder with one, or a DCP checkpoint
    folder of an earlier run), or a fresh Llama of the given shape."""

    path: Path | None = path_field(None, must_exist=False)  # checked by `train run` (train.preflight)
    gguf_file: str | None = None  # older spelling: path = the folder, gguf_file = the file's name in it
    allow_pickle: bool = False  # accept pickled .bin weights (read with torch's weights-only loader)
    hidden_size: int = 256
    intermediate_size: int = 688
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    init_std: float = 0.02  # fresh models only
    # dtype of the exported weights (and config.json's dtype/torch_dtype); auto = the base model's own dtype
    # (its config.json), float32 for a fresh model; training always keeps fp32 master weights
    export_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    def validate(self) -> None:
        if self.path is None and self.gguf_file is not None:
            raise ValueError("gguf_file needs path (the folder that holds the .gguf file)")
        if self.path is None and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")

    def carried_tokenizer(self) -> Path | None:
        """`path` when it carries a tokenizer (a HF folder with tokenizer.json, or a GGUF): the recipe's
        [data] tokenizer unless it names one."""
        if self.path is None:
            return None
        p = Path(self.path) / self.gguf_file if self.gguf_file else Path(self.path)
        if p.suffix == ".gguf" and p.is_file():
            return p
        if p.is_dir() and ((p / "tokenizer.json").is_file() or any(p.glob("*.gguf"))):
            return p
        return None


@dataclass
class OptimConfig:
    """AdamW, fresh when a run starts (or from `[train] optimizer_from`); kept across the stages of a sequence."""

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
    """The learning-rate curve; `train schedule RECIPE` plots it. Fractions are of the total steps.

    cosine: warmup -> cosine to eta_min (re-warm + re-decay, Ibrahim et al.).
    constant: warmup -> peak forever.
    wsd: warmup -> peak -> decay over the last `decay_fraction` (MiniCPM), shape `decay_shape`.
    infinite: warmup -> cooldown to eta_const over `cooldown_fraction` (`cooldown_shape`) -> constant
      -> exponential anneal to eta_min over the last `anneal_fraction` (0 = no anneal; Ibrahim et al.).
    parmar: no warmup; from `start_lr` (0 = the optimizer lr) down to start_lr / 100 (Parmar et al.),
      shape `decay_shape` (warmup is not used).
    """

    name: Literal["cosine", "constant", "wsd", "infinite", "parmar"] = "cosine"
    warmup: float = 0.01  # steps run below the peak: a fraction of the run if < 1 (may be fractional), else a count
    min_lr_ratio: float = 0.1  # eta_min = min_lr_ratio * peak lr (Ibrahim et al.: 0.1)
    decay_fraction: float = 0.1  # wsd: the final share of steps spent decaying
    decay_shape: Literal["linear", "cosine", "1-sqrt"] = "linear"  # wsd and parmar
    eta_const_ratio: float = 0.55  # infinite: eta_const = ratio * peak (405M: 1.65e-4 / 3e-4)
    cooldown_fraction: float = 0.6  # infinite: share of steps for the cooldown to eta_const
    cooldown_shape: Literal["cosine", "inv-sqrt"] = "cosine"  # infinite
    cooldown_alpha: float = 10.0  # infinite, inv-sqrt: a in f(x) = 1/sqrt(1 + a*x) - 1
    anneal_fraction: float = 0.0  # infinite: final share of steps annealed to eta_min; 0 = none
    start_lr: float = 0.0  # parmar: the old run's final LR; 0 = use [optim] lr

    def validate(self) -> None:
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction must be in (0, 1], got {self.decay_fraction}")
        if not 0.0 < self.eta_const_ratio <= 1.0:
            raise ValueError(f"eta_const_ratio must be in (0, 1], got {self.eta_const_ratio}")
        if not 0.0 <= self.cooldown_fraction <= 1.0:
            raise ValueError(f"cooldown_fraction must be in [0, 1], got {self.cooldown_fraction}")
        if not 0.0 <= self.anneal_fraction < 1.0:
            raise ValueError(f"anneal_fraction must be in [0, 1), got {self.anneal_fraction}")
        if self.cooldown_alpha <= 0:
            raise ValueError(f"cooldown_alpha must be > 0, got {self.cooldown_alpha}")
        if self.start_lr < 0:
            raise ValueError(f"start_lr must be >= 0 (0 = use [optim] lr), got {self.start_lr}")
        if self.name == "infinite":
            if self.cooldown_fraction + self.anneal_fraction > 1.0:
                raise ValueError(f"cooldown_fraction + anneal_fraction must be <= 1, got "
                                 f"{self.cooldown_fraction} + {self.anneal_fraction}")
            if self.anneal_fraction > 0 and self.min_lr_ratio <= 0:
                raise ValueError("the exponential anneal needs min_lr_ratio > 0 (eta_min = 0 is unreachable)")
            if self.anneal_fraction > 0 and self.min_lr_ratio > self.eta_const_ratio:
                raise ValueError(f"min_lr_ratio ({self.min_lr_ratio}) must be <= eta_const_ratio "
                                 f"({self.eta_const_ratio}) for the anneal to go down")


@dataclass
class EvalConfig:
    """What to evaluate and when: losses on every validation set, plus optional local MCQ benchmarks."""

    every: int = 0  # evaluate every N steps; 0 = log-spaced cadence with `num_evals` points
    num_evals: int = 20  # evaluations in all, step 0 and the last step included (2 = before and after)
    before_after_only: bool = False  # evaluate at step 0 and the last step only (what the final table compares)
    max_batches: int = 8  # batches per validation set (fixed, the same at every evaluation)
    batch_size: int = 8
    # name -> local JSONL benchmark (MedQA/MMLU style or PubMedQA), scored zero-shot by log-likelihood
    benchmarks: dict[str, Path] = field(default_factory=dict, metadata={"path": True, "must_exist": False})
    mcq_max_items: int = 0  # items per benchmark (an evenly spread, fixed subset); 0 = all

    def validate(self) -> None:
        at_least("every", self.every, 0)
        at_least("num_evals", self.num_evals, 2, " (2 = before and after training only)")
        if self.before_after_only and self.every:
            raise ValueError("before_after_only = true evaluates at step 0 and the last step; remove every")
        at_least("max_batches", self.max_batches, 1)
        at_least("batch_size", self.batch_size, 1)
        if self.mcq_max_items < 0:
            raise ValueError(f"mcq_max_items must be >= 0 (0 = all), got {self.mcq_max_items}")
        for name in self.benchmarks:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"benchmark name {name!r} may only hold letters, digits, '-' and '_'")


@dataclass
class TrainConfig:
    """How to run: steps and batch shape, processes, checkpoints, speed options."""

    steps: int = 0  # optimizer steps; 0 = auto: the plan's total target tokens / (batch_size * seq_len)
    seq_len: int = 256
    batch_size: int = 8  # sequences per optimizer step, over all processes
    micro_batch_size: int | None = None  # sequences per forward pass per process (default: all)
    nproc: int = 1  # processes on this machine; > 1 relaunches `train run` under torchrun
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # CPU threads per process (0 = torch's default). On small models one thread per process and
    # one process per core (nproc) is much faster than one process with many threads: measured
    # 2,810 vs 843 tokens/s for a 1.8M-parameter Llama on a 2-core machine with another job running.
    threads: int = 0
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 mixed precision on GPU, fp32 on CPU
    checkpoint_every: int = 0  # steps between checkpoints; 0 = only at the end (and on SIGTERM)
    # steps between reads of the loss and gradient norm on the host (one row per step is still logged);
    # reading every step makes the host wait for the GPU at every step
    log_every: int = 10
    keep_checkpoints: int = 2
    save_final: bool = True  # false: no checkpoint and no export at the end (timing runs, bench/)
    # CPT starts with a fresh optimizer; name a checkpoint folder (checkpoints/step_N) to restore one instead
    optimizer_from: Path | None = path_field(None, must_exist=False)  # checked by `train run`
    activation_checkpointing: bool = False
    compile: bool = False  # torch.compile each decoder block
    peak_flops: float = 0.0  # peak FLOP/s of one device for MFU; 0 = measure with a short matmul benchmark
    tensorboard: bool = True  # also log to <run dir>/tensorboard when tensorboard is installed
    shards: Path | None = path_field(None, must_exist=False)  # default: <run.out_dir>/mix/shards
    out: Path | None = path_field(None, must_exist=False)  # default: <run.out_dir>/train

    def validate(self) -> None:
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = torch's default), got {self.threads}")
        at_least("steps", self.steps, 0, " (0 = auto: from the plan)")
        at_least("seq_len", self.seq_len, 8)
        at_least("batch_size", self.batch_size, 1)
        at_least("nproc", self.nproc, 1)
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {self.micro_batch_size}")
        at_least("keep_checkpoints", self.keep_checkpoints, 1)
        at_least("checkpoint_every", self.checkpoint_every, 0, " (0 = only at the end)")
        at_least("log_every", self.log_every, 1)
        at_least("peak_flops", self.peak_flops, 0, " (0 = measure)")


@dataclass
class ParallelConfig:
    """How the model is sharded and synchronized across processes (FSDP2), in one place."""

    reshard_after_forward: bool = True  # free the gathered weights of a block after its forward (ZeRO-3)
    # reduce-scatter the gradients of every micro-batch (FSDP keeps only sharded gradients); False = sync only
    # on the last micro-batch, which makes FSDP hold an unsharded fp32 gradient accumulator (4 bytes x params)
    sync_grads_every_microbatch: bool = True
    reduce_dtype: Literal["float32", "bfloat16"] = "float32"  # gradient reduce-scatter dtype under bf16 training
    compile_fullgraph: bool = False  # torch.compile each block with fullgraph=True ([train] compile)
    init_timeout_s: float = 300.0  # process-group rendezvous and the first step's collectives
    step_timeout_s: float = 600.0  # any collective after the first step
    work_timeout_s: float = 1800.0  # collectives around one rank's long work: loading base weights, the export

    def validate(self) -> None:
        at_least("init_timeout_s", self.init_timeout_s, 1)
        at_least("step_timeout_s", self.step_timeout_s, 1)
        at_least("work_timeout_s", self.work_timeout_s, 1)
