"""The shard manifest: what `mix build` wrote and what `train run` reads (docs/formats.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from continua.io import read_json, write_json

MANIFEST_NAME = "manifest.json"


@dataclass
class SplitEntry:
    docs: int
    tokens: int
    shards: list[str]  # paths relative to the shards folder


@dataclass
class SourceEntry:
    role: str  # "domain" or "general"
    epochs: float  # passes over the unique training tokens the plan asks for
    target_tokens: int  # training tokens to draw from this source over the whole budget
    share: float  # target_tokens / sum of all target_tokens
    train: SplitEntry
    valid: SplitEntry
    resample: str = "fixed"  # "fixed" (same docs each epoch) or "dynamic" (fresh draw per epoch)
    group: str | None = None  # pre-training source it stands for (replay)
    epoch_tokens: int = 0  # tokens one epoch draws: train.tokens when fixed, a fresh sample of that size when dynamic


@dataclass
class Manifest:
    tokenizer: dict
    seed: int
    sources: dict[str, SourceEntry]
    plan: dict = field(default_factory=dict)
    inputs: list[dict] = field(default_factory=list)
    total_target_tokens: int = 0
    warnings: list[str] = field(default_factory=list)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        write_json(path, asdict(self))
        return path

    @classmethod
    def load(cls, folder: Path) -> "Manifest":
        path = Path(folder) / MANIFEST_NAME
        if not path.exists():
            raise FileNotFoundError(f"{path}: no shard manifest; run `mix build` first")
        raw = read_json(path)
        sources = {}
        for name, s in raw["sources"].items():
            s = dict(s)
            s["train"] = SplitEntry(**s["train"])
            s["valid"] = SplitEntry(**s["valid"])
            sources[name] = SourceEntry(**s)
        raw["sources"] = sources
        return cls(**raw)
