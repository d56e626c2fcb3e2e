"""The shard manifest: what `mix build` wrote and what `train run` reads (docs/formats.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from continua.fingerprint import RECORD_SHAPE
from continua.io import read_json, write_json
from continua.shape import check_shape

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


_SPLIT_SHAPE = {"docs": int, "tokens": int, "shards": [str]}
_SOURCE_SHAPE = {"role": str, "epochs": float, "target_tokens": int, "share": float, "train": _SPLIT_SHAPE,
                 "valid": _SPLIT_SHAPE, "resample?": str, "group?": (str, None), "epoch_tokens?": int}
# what `Manifest.load` checks (continua.shape): every field the readers use, with its type
MANIFEST_SHAPE = {"tokenizer": dict, "seed": int, "sources": {"*": _SOURCE_SHAPE},
                  "plan?": {"path?": str, "hash?": str, "size?": int, "mtime_ns?": int, "inode?": int},
                  "inputs?": [RECORD_SHAPE | {"source?": str, "kind?": str}], "total_target_tokens?": int,
                  "warnings?": [str]}


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
        """The manifest in `folder`; one of another shape is a DamagedFileError naming the file and the key."""
        path = Path(folder) / MANIFEST_NAME
        if not path.exists():
            raise FileNotFoundError(f"{path}: no shard manifest; run `mix build` first")
        raw = check_shape(read_json(path), MANIFEST_SHAPE, path, "re-run `mix build`")
        raw = _known(cls, raw)
        raw["sources"] = {name: SourceEntry(**_known(SourceEntry, s) | {
            "train": SplitEntry(**_known(SplitEntry, s["train"])), "valid": SplitEntry(**_known(SplitEntry, s["valid"]))})
            for name, s in raw["sources"].items()}
        return cls(**raw)


def _known(cls: type, raw: dict) -> dict:
    """The keys of `raw` that `cls` has (a later version may add some)."""
    return {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
