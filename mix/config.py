"""The [mix] recipe section: the budget and the strategies of the plan, and the shard layout.

Defaults follow /work/shared/docs/strategies.md: 4 epochs is where repetition stops being
(nearly) free (Muennighoff et al. 2023) and where Guo et al. 2024 found the best subset; 16 is
a hard cap beyond which repeated data is worth almost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from continua.schema import at_least, path_field


def recipe_sections() -> dict[str, type]:
    """This stage's recipe section (pyproject.toml's continua.recipe_sections entry points)."""
    return {"mix": MixConfig}


@dataclass
class MixConfig:
    budget: str = "100%"  # percent of one epoch over the (filtered) domain corpus, or tokens: 500M, 2B, 123456
    # what the budget counts: "all" training tokens (replay shares come out of it), or the "domain" tokens only
    # (replay is added on top so the domain keeps its share: 40% + top 10% stays 4 epochs under a preset)
    budget_covers: Literal["all", "domain"] = "all"
    # quality subset of the domain data
    score: str | None = None  # score column or expression ("0.5*fasttext_q - 0.5*ppl_ngram_med") ranking domain docs
    prefer: Literal["high", "low"] = "high"  # which end of `score` is better ("low" for perplexities)
    top: str | None = None  # size of the quality subset: "10%" of domain tokens, or a token count
    epochs: float | None = None  # fix the number of epochs over the subset (else chosen by the planner)
    auto_epochs: float = 4.0  # epochs the planner aims for when a score ranks quality and neither top nor epochs is set
    max_epochs: float = 16.0  # refuse plans that repeat any source more often than this
    warn_epochs: float = 4.0  # warn above this many epochs
    min_subset_docs: int = 100  # warn when the subset has fewer documents than this ...
    min_subset_fraction: float = 0.01  # ... or fewer tokens than this fraction of the domain corpus
    dedup: bool = True  # drop exact duplicates (text_hash; dup_exact / dup_minhash_keep columns) before selection
    resample: Literal["fixed", "dynamic"] = "dynamic"  # domain share of an epoch: fresh draw from the subset each epoch (Guo et al.), or one sample
    # replay of general data
    replay: float = 0.0  # compute-equivalent replay (Ibrahim et al.): this fraction of the budget from general sources
    # how `replay` is split among the general sources: source -> weight (normalized); default: by pool size
    replay_weights: dict[str, float] = field(default_factory=dict)
    preset: str | None = None  # pre-training mixture to imitate: "llama1", "redpajama", or "custom"
    preset_weights: dict[str, float] = field(default_factory=dict)  # custom preset: group -> proportion (sum 1)
    preset_web: list[str] = field(default_factory=list)  # custom preset: the web groups domain data replaces
    replay_select: Literal["random", "dsir"] = "random"  # how replay documents are drawn from a general source
    dsir_target: str | None = None  # DSIR reference sample: a recipe source name or a .jsonl/.parquet file
    dsir_text_field: str = "text"  # text field of a dsir_target file
    dsir_buckets: int = 10000  # hashed unigram+bigram feature buckets (Xie et al. 2023)
    # validation split, held out per source before any selection
    valid_fraction: float = 0.02  # share of each source's documents held out for validation
    valid_max_docs: int = 2000
    min_valid_docs: int = 1
    # shards
    shard_tokens: int = 100_000_000  # at most this many tokens per .ds file
    workers: int = 0  # tokenizer processes for `mix build`: 0 = one per CPU core; 1 = in-process, threaded tokenizer
    # (on ray/slurm: tasks at once; 0 = one per piece)
    # where `mix build` tokenizes: this machine, or one task per piece on Ray / Slurm ([curate.ray] / [curate.slurm]
    # settings); unset: the [curate] executor
    executor: Literal["local", "ray", "slurm"] | None = None
    out: Path | None = path_field(None, must_exist=False)  # default: <run.out_dir>/mix

    def validate(self) -> None:
        if not 0.0 <= self.replay < 1.0:
            raise ValueError(f"replay must be in [0, 1), got {self.replay}")
        if not 0.0 < self.valid_fraction < 0.5:
            raise ValueError(f"valid_fraction must be in (0, 0.5), got {self.valid_fraction}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        at_least("max_epochs", self.max_epochs, 1)
        at_least("auto_epochs", self.auto_epochs, 1)
        if self.warn_epochs <= 0:
            raise ValueError(f"warn_epochs must be > 0, got {self.warn_epochs}")
        at_least("valid_max_docs", self.valid_max_docs, 0)
        at_least("min_valid_docs", self.min_valid_docs, 0)
        at_least("min_subset_docs", self.min_subset_docs, 0)
        if not 0.0 <= self.min_subset_fraction < 1.0:
            raise ValueError(f"min_subset_fraction must be in [0, 1), got {self.min_subset_fraction}")
        at_least("shard_tokens", self.shard_tokens, 1)
        at_least("workers", self.workers, 0, " (0 = one per core)")
        at_least("dsir_buckets", self.dsir_buckets, 2)
        if self.replay > 0 and (self.preset or self.preset_weights):
            raise ValueError("replay and preset are two ways to set the replay share: choose one")
        for name, w in self.replay_weights.items():
            if w < 0:
                raise ValueError(f"replay_weights.{name} must be >= 0, got {w}")
        if self.replay_weights and sum(self.replay_weights.values()) <= 0:
            raise ValueError("replay_weights must give some source a weight > 0")
        if self.replay_weights and (self.preset or self.preset_weights):
            raise ValueError("replay_weights split `replay`; a preset splits replay by its groups: choose one")
        if self.replay_select == "dsir" and not self.dsir_target:
            raise ValueError("replay_select = \"dsir\" needs dsir_target (a recipe source or a file of reference text)")
