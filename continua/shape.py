"""The shape of a JSON artifact (manifest, plan), checked when it is read: valid JSON written by hand, by
an older version or half-edited would otherwise meet a reader as a KeyError or TypeError traceback
far from the file. A mismatch is one `DamagedFileError` (exit 1) naming the file and the key path.

A shape is
- a type, or a tuple of types (`None` allowed in it): the value's type (`int` never accepts a bool,
  `float` also accepts an int);
- a dict `{key: shape}`: a JSON object holding each key (`"key?"`: optional); `"*"` gives the shape of
  every value (objects keyed by name, such as sources); other keys are not checked;
- a list `[shape]`: a JSON array, each item of that shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from continua.io import DamagedFileError

Shape = Any  # type | tuple | dict | list, as above

_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
          bool: "true or false", type(None): "null"}


def _type_ok(value: Any, tp: type) -> bool:
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def _wanted(types: tuple) -> str:
    return " or ".join(_NAMES.get(t, t.__name__) for t in types)


def mismatch(value: Any, shape: Shape, key: str = "") -> str | None:
    """Where and how `value` differs from `shape` (`key 'a.b[2].c' ...`), or None when it fits."""
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{_at(key)} must be an object, got {_got(value)}"
        for name, sub in shape.items():
            if name == "*":
                for k, v in value.items():
                    if (why := mismatch(v, sub, _join(key, k))) is not None:
                        return why
                continue
            optional = name.endswith("?")
            name = name.rstrip("?")
            if name not in value:
                if optional:
                    continue
                return f"missing key '{_join(key, name)}'"
            if (why := mismatch(value[name], sub, _join(key, name))) is not None:
                return why
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{_at(key)} must be an array, got {_got(value)}"
        for i, item in enumerate(value):
            if (why := mismatch(item, shape[0], f"{key}[{i}]")) is not None:
                return why
        return None
    types = tuple(type(None) if t is None else t for t in (shape if isinstance(shape, tuple) else (shape,)))
    if any(_type_ok(value, t) for t in types):
        return None
    return f"{_at(key)} must be {_wanted(types)}, got {_got(value)}"


def check_shape(value: Any, shape: Shape, path: str | Path, rerun: str) -> Any:
    """`value` (read from `path`) when it has `shape`; otherwise a DamagedFileError naming the file, the key
    path and what to re-run."""
    why = mismatch(value, shape)
    if why is not None:
        raise DamagedFileError(f"{path}: {why}; the file is damaged or was not written by this version of "
                               f"continua: {rerun}")
    return value


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else str(name)


def _at(key: str) -> str:
    return f"key '{key}'" if key else "the top level"


def _got(value: Any) -> str:
    text = repr(value)
    return f"{_NAMES.get(type(value), type(value).__name__)} {text if len(text) <= 40 else text[:37] + '...'}"
