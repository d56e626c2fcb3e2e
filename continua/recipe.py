"""One TOML recipe describes an experiment; loading it validates every section before any work.

Sections: [run] and [data] are defined here; [curate] by `curate.config`, [mix] by `mix.config`,
[model] [optim] [schedule] [eval] [train] [parallel] by `train.config`. Command lines override any key with
`--set section.key=value` (value parsed as TOML, else taken as a string).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from continua.schema import RecipeError, build, path_field, to_dict

__all__ = ["Recipe", "RecipeError", "RunConfig", "DataConfig", "SourceConfig", "load_recipe", "parse_overrides",
           "add_recipe_arguments", "overrides_argv", "toml_text", "toml_value"]


@dataclass
class RunConfig:
    """Where every artifact of the experiment goes, and the seed all stages derive theirs from."""

    out_dir: Path = path_field("out", must_exist=False, from_cwd=True)
    seed: int = 0
    name: str = "experiment"


@dataclass
class SourceConfig:
    """One input corpus: files or folders of JSON Lines (.jsonl, .jsonl.gz), Parquet, or a saved HF dataset."""

    paths: list[Path] = path_field()
    role: Literal["domain", "general"] = "domain"
    text_field: str = "text"
    id_field: str | None = None
    format: Literal["auto", "jsonl", "parquet", "hf"] = "auto"
    # the pre-training source this corpus stands in for when replayed (a key of the mix preset)
    group: str | None = None
    # the split of a DatasetDict or of a hub-style folder (data/train-*.parquet, train/...); None reads all
    split: str | None = None
    # a JSON Lines line (or inflated .gz line) longer than this is a `line_too_long` reject, never held whole
    max_line_bytes: int = 64 << 20
    # size of the pieces work is cut into: plain JSON Lines files above it are read in line-aligned byte
    # ranges by several tasks (their ids then name byte offsets, FILE@OFFSET), datasets in row ranges
    piece_bytes: int = 256 << 20
    # repeated id_field values: "error" at `curate score` (with examples), or "keep-first" (later copies rejected)
    duplicate_ids: Literal["error", "keep-first"] = "error"

    def validate(self) -> None:
        if not self.paths:
            raise ValueError("a source needs at least one path")
        if self.max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be at least 1, got {self.max_line_bytes}")
        if self.piece_bytes < 1:
            raise ValueError(f"piece_bytes must be at least 1, got {self.piece_bytes}")


@dataclass
class DataConfig:
    """The corpora of the experiment, by name: `[data.sources.NAME]` tables."""

    sources: dict[str, SourceConfig] = field(default_factory=dict)
    tokenizer: Path | None = path_field(None, must_exist=True)

    def validate(self) -> None:
        for name in self.sources:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"source name {name!r} may only hold letters, digits, '-' and '_'")

    def by_role(self, role: str) -> dict[str, SourceConfig]:
        return {n: s for n, s in self.sources.items() if s.role == role}


def _section_types() -> dict[str, type]:
    from curate.config import CurateConfig
    from mix.config import MixConfig
    from train.config import EvalConfig, ModelConfig, OptimConfig, ParallelConfig, ScheduleConfig, TrainConfig

    return {
        "run": RunConfig,
        "data": DataConfig,
        "curate": CurateConfig,
        "mix": MixConfig,
        "model": ModelConfig,
        "optim": OptimConfig,
        "schedule": ScheduleConfig,
        "eval": EvalConfig,
        "train": TrainConfig,
        "parallel": ParallelConfig,
    }


@dataclass
class Recipe:
    """A loaded, validated recipe; `path` is the file it came from (None when built in code)."""

    run: Any
    data: Any
    curate: Any
    mix: Any
    model: Any
    optim: Any
    schedule: Any
    eval: Any
    train: Any
    parallel: Any
    path: Path | None = None

    def to_dict(self) -> dict:
        return {f.name: to_dict(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "path"}

    def to_toml(self) -> str:
        return toml_text(self.to_dict())

    @property
    def out_dir(self) -> Path:
        return Path(self.run.out_dir)


def parse_overrides(items: list[str] | None) -> dict:
    """`["mix.budget=40%", "train.steps=10"]` -> nested dict; values parsed as TOML when they parse."""
    nested: dict = {}
    for item in items or []:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected section.key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        parts = key.split(".")
        if len(parts) < 2:
            raise RecipeError(f"--set {item!r}: the key must name a section, e.g. train.steps")
        node = nested
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise RecipeError(f"--set {item!r}: '{p}' is not a table")
        node[parts[-1]] = value
    return nested


def add_recipe_arguments(parser, example: str) -> None:
    """The recipe positional and the repeatable `--set` every recipe-taking command shares."""
    parser.add_argument("recipe", type=Path, help="recipe TOML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help=f"override a recipe key (repeatable), e.g. --set {example}")


def toml_text(table: dict) -> str:
    """A table as TOML text (tomli-w quotes keys and escapes strings); None values are left out: TOML has no null."""
    import tomli_w

    return tomli_w.dumps(_without_none(table))


def toml_value(value: Any) -> str:
    """One value as TOML, for a `--set section.key=VALUE` override that must read back as this exact value."""
    return toml_text({"v": value})[len("v = "):].rstrip("\n")


def _without_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_without_none(v) for v in obj]
    return obj


def overrides_argv(overrides: list[str]) -> list[str]:
    """`["a.b=1"]` -> `["--set", "a.b=1"]`: for relaunching a command (torchrun) with the same overrides."""
    return [arg for item in overrides for arg in ("--set", item)]


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def recipe_from_dict(table: dict, where: str = "<recipe>", base_dir: Path | None = None) -> Recipe:
    types_ = _section_types()
    for section in table:
        if section not in types_:
            known = ", ".join(types_)
            raise RecipeError(f"{where}: unknown section [{section}] (known sections: {known})")
    sections = {}
    for name, cls in types_.items():
        raw = table.get(name, {})
        if not isinstance(raw, dict):
            raise RecipeError(f"{where}: [{name}] must be a table")
        sections[name] = build(cls, raw, where, base_dir, prefix=name)
    recipe = Recipe(**sections)
    if recipe.data.tokenizer is None:  # the tokenizer comes with the model unless the recipe names one
        recipe.data.tokenizer = _model_tokenizer(recipe.model.path, recipe.model.gguf_file)
    return recipe


def _model_tokenizer(path: Path | None, gguf_file: str | None) -> Path | None:
    """`[model] path` when it carries a tokenizer (a HF folder with tokenizer.json, or a GGUF), else None."""
    if path is None:
        return None
    p = Path(path) / gguf_file if gguf_file else Path(path)
    if p.suffix == ".gguf" and p.is_file():
        return p
    if p.is_dir() and ((p / "tokenizer.json").is_file() or any(p.glob("*.gguf"))):
        return p
    return None


def load_recipe(path: str | Path, overrides: list[str] | dict | None = None) -> Recipe:
    """Read and validate a recipe file; overrides (`--set` strings or a dict) win over the file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML: {e}") from e
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not valid UTF-8: {e}") from e
    over = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    table = _merge(table, over)
    recipe = recipe_from_dict(table, where=str(path), base_dir=path.parent.resolve())
    recipe.path = path
    return recipe
