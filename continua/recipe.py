"""One TOML recipe describes an experiment; loading it validates every section before any work.

Sections: [run] and [data] are defined here; every other section by the stage that owns it, which
declares its section dataclasses as an entry point of the `continua.recipe_sections` group
(pyproject.toml): [curate] in `curate.config`, [mix] in `mix.config`, [model] [optim] [schedule]
[eval] [train] [parallel] in `train.config`; `[[stages]]` (a sequence of CPT stages) in
`continua.stages`. So the base knows every section without importing a
stage, and every command validates the whole recipe. Command lines override any key with
`--set section.key=value` (value parsed as TOML, else taken as a string).
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Literal

from continua.schema import RecipeError, build, convert, path_field, to_dict
from continua.stages import StageConfig, check_stages

__all__ = ["Recipe", "RecipeError", "RunConfig", "DataConfig", "SourceConfig", "load_recipe", "parse_overrides",
           "add_recipe_arguments", "overrides_argv", "toml_text", "toml_value", "section_types", "SECTIONS_GROUP"]

SECTIONS_GROUP = "continua.recipe_sections"  # entry points: NAME = "module:FUNCTION" returning {section: dataclass}


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


BASE_SECTIONS: dict[str, Any] = {"run": RunConfig, "data": DataConfig}


def declared_sections() -> list[EntryPoint]:
    """The `continua.recipe_sections` entry points: from pyproject.toml when running from a source checkout
    (installed metadata can be stale there: an old continua.egg-info in the checkout shadows a fresh
    install), else from the installed package's metadata."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        table = project.get("entry-points", {}).get(SECTIONS_GROUP)
        if table:
            return [EntryPoint(name, value, SECTIONS_GROUP) for name, value in table.items()]
    return list(entry_points(group=SECTIONS_GROUP))


@functools.cache
def section_types() -> dict[str, type]:
    """Section name -> dataclass: [run] and [data], then the sections each stage declares."""
    types_ = dict(BASE_SECTIONS)
    for ep in declared_sections():
        for name, cls in ep.load()().items():
            if name in types_ and types_[name] is not cls:
                raise RecipeError(f"recipe section [{name}] is declared twice: by {types_[name].__module__} "
                                  f"and by the entry point {ep.name} = {ep.value!r}")
            types_[name] = cls
    return types_


class Recipe:
    """A loaded, validated recipe: one attribute per section (`recipe.mix`, `recipe.train`, ...);
    `path` is the file it came from (None when built in code)."""

    def __init__(self, sections: dict[str, Any], path: Path | None = None):
        self._names = list(sections)
        for name, value in sections.items():
            setattr(self, name, value)
        self.path = path

    def sections(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._names}

    def replace(self, **sections: Any) -> "Recipe":
        """A copy with some sections swapped (`recipe.replace(curate=...)`), like `dataclasses.replace`."""
        unknown = set(sections) - set(self._names)
        if unknown:
            raise TypeError(f"Recipe has no section(s) {sorted(unknown)}")
        return Recipe({**self.sections(), **sections}, self.path)

    def to_dict(self) -> dict:
        """Every section as plain tables; `stages` only when there are some (an array of tables, [[stages]])."""
        return {name: to_dict(value) for name, value in self.sections().items() if name != "stages" or value}

    def to_toml(self) -> str:
        return toml_text(self.to_dict())

    @property
    def out_dir(self) -> Path:
        return Path(self.run.out_dir)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Recipe) and (self.sections(), self.path) == (other.sections(), other.path)

    def __repr__(self) -> str:
        return f"Recipe(path={self.path!r}, sections={', '.join(self._names)})"


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
                        help=f"override a recipe key (repeatable), e.g. --set {example}; a relative input path "
                             "resolves against the recipe's folder, as in the file ([run] out_dir: the current one)")


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
    types_ = section_types()
    for section in table:
        if section == "stages":
            if not isinstance(table[section], list):
                raise RecipeError(f"{where}: stages must be an array of tables ([[stages]]), got "
                                  f"{type(table[section]).__name__}")
            continue
        if section not in types_:
            known = ", ".join(types_)
            hint = "" if len(types_) > len(BASE_SECTIONS) else (
                f"; no stage declared its sections: pyproject.toml's [project.entry-points.\"{SECTIONS_GROUP}\"] "
                "or the installed package's entry points (pip install -e .)")
            raise RecipeError(f"{where}: unknown section [{section}] (known sections: {known}){hint}")
    sections = {}
    for name, cls in types_.items():
        raw = table.get(name, {})
        if not isinstance(raw, dict):
            raise RecipeError(f"{where}: [{name}] must be a table")
        sections[name] = build(cls, raw, where, base_dir, prefix=name)
    sections["stages"] = convert(table.get("stages", []), list[StageConfig], "stages", where, base_dir)
    recipe = Recipe(sections)
    if recipe.data.tokenizer is None:  # the tokenizer comes with the model unless the recipe names one
        recipe.data.tokenizer = _carried_tokenizer(sections)
    check_stages(recipe, where)
    return recipe


def _carried_tokenizer(sections: dict[str, Any]) -> Path | None:
    """The tokenizer a section carries (`[model] path`: a HF folder with tokenizer.json, or a GGUF), else None."""
    for section in sections.values():
        carried = getattr(section, "carried_tokenizer", None)
        if callable(carried) and (found := carried()) is not None:
            return found
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
