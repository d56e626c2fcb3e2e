"""A tiny TOML writer for resolved recipes (tomllib reads only): tables, scalars, lists."""

from __future__ import annotations

import json
from typing import Any


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_scalar(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def dumps(table: dict, _prefix: str = "") -> str:
    """Write nested dicts as TOML; None values are left out (TOML has no null)."""
    lines: list[str] = []
    subtables = []
    for k, v in table.items():
        if v is None:
            continue
        if isinstance(v, dict):
            subtables.append((k, v))
        else:
            lines.append(f"{_key(k)} = {_scalar(v)}")
    out = ""
    if lines or (_prefix and not subtables):
        out += (f"[{_prefix}]\n" if _prefix else "") + "\n".join(lines) + "\n\n"
    for k, v in subtables:
        out += dumps(v, f"{_prefix}.{_key(k)}" if _prefix else _key(k))
    return out
