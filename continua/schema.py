"""Typed recipe sections: plain dataclasses checked against TOML before any work starts.

Each package owns the dataclasses of its recipe sections; this module only knows how to turn a
TOML table into one of them, with errors that name the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Union, get_args, get_origin


class RecipeError(ValueError):
    """A recipe that cannot be used: the message names the file and the key."""


def path_field(default: Any = dataclasses.MISSING, *, must_exist: bool = True, from_cwd: bool = False,
               help: str = "") -> Any:
    """A field holding a path: resolved against the recipe's folder (or the working directory, for
    outputs: `out_dir = "runs/x"` should land where the user runs the command), checked to exist if asked."""
    meta = {"path": True, "must_exist": must_exist, "from_cwd": from_cwd, "help": help}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def at_least(key: str, value: float, low: float, note: str = "") -> None:
    """One check, one message naming its key, for a section's `validate` (`steps must be >= 0, got -1`)."""
    if value < low:
        raise ValueError(f"{key} must be >= {low:g}{note}, got {value}")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) < len(get_args(tp)):
            return True, args[0] if len(args) == 1 else Union[tuple(args)]
    return False, tp


def convert(value: Any, tp: Any, key: str, where: str, base_dir: Path | None, meta: dict | None = None) -> Any:
    """Check `value` against type `tp` and convert it (paths, nested dataclasses, lists)."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise RecipeError(f"{where}: key '{key}' must be {_type_name(tp)}, got nothing")
    tp = inner
    meta = meta or {}
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: key '{key}' must be a table, got {type(value).__name__}")
        return build(tp, value, where, base_dir, prefix=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                value = [value]  # a single value where a list is expected: accept it as one item
            else:
                raise RecipeError(f"{where}: key '{key}' must be a list, got {type(value).__name__}")
        (item_tp,) = get_args(tp)[:1] or (Any,)
        return [convert(v, item_tp, f"{key}[{i}]", where, base_dir, meta) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: key '{key}' must be a table, got {type(value).__name__}")
        _, val_tp = get_args(tp)
        return {k: convert(v, val_tp, f"{key}.{k}", where, base_dir, meta) for k, v in value.items()}
    if origin is typing.Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise RecipeError(f"{where}: key '{key}' must be one of {choices}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        for option in get_args(tp):
            try:
                return convert(value, option, key, where, base_dir, meta)
            except RecipeError:
                continue
        raise RecipeError(f"{where}: key '{key}' must be {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: key '{key}' must be a number, got {value!r}")
        if not math.isfinite(value):  # TOML has nan and inf; no setting means either
            raise RecipeError(f"{where}: key '{key}' must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: key '{key}' must be a string, got {value!r}")
        if meta.get("path"):
            return _resolve_path(value, key, where, base_dir, meta)
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise RecipeError(f"{where}: key '{key}' must be a path string, got {value!r}")
        return _resolve_path(str(value), key, where, base_dir, meta)
    raise RecipeError(f"{where}: key '{key}' has unsupported type {_type_name(tp)}")


def _resolve_path(value: str, key: str, where: str, base_dir: Path | None, meta: dict) -> Any:
    path = Path(value).expanduser()
    if meta.get("from_cwd"):
        path = path.resolve()
    elif not path.is_absolute() and base_dir is not None:
        path = (base_dir / path).resolve()
    if meta.get("must_exist") and not path.exists():
        raise RecipeError(f"{where}: key '{key}' names a path that does not exist: {path}")
    return path


def build(cls: type, table: dict, where: str, base_dir: Path | None, prefix: str) -> Any:
    """Instantiate dataclass `cls` from a TOML table, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise RecipeError(f"{where}: unknown key '{prefix}.{key}' (known keys in [{prefix}]: {known})")
    kwargs = {}
    for name, f in fields.items():
        dotted = f"{prefix}.{name}"
        if name in table:
            kwargs[name] = convert(table[name], hints[name], dotted, where, base_dir, dict(f.metadata))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecipeError(f"{where}: missing required key '{dotted}'")
        elif f.metadata.get("path") and isinstance(f.default, str):
            kwargs[name] = _resolve_path(f.default, dotted, where, base_dir, dict(f.metadata))
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except (ValueError, TypeError) as e:
            raise RecipeError(f"{where}: [{prefix}] {e}") from e
    return obj


def to_dict(obj: Any) -> Any:
    """Plain TOML/JSON-friendly form of a section (paths as strings)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
