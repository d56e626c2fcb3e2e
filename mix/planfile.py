"""Reading plan.json back (`mix build`, `mix show`): its shape is checked first, so a hand-edited or
half-written plan is one line naming the file and the key (exit 1), not a KeyError inside the build."""

from __future__ import annotations

from pathlib import Path

from continua.fingerprint import RECORD_SHAPE
from continua.io import read_json
from continua.shape import check_shape

_COUNT = {"docs": int, "tokens": int}
_SOURCE = {"role": str, "group?": (str, None), "method": str, "selected": _COUNT, "valid": _COUNT,
           "epochs": float, "epoch_tokens": int, "target_tokens": int, "resample": str, "expected_steps": float,
           "share": float}
# every key `mix build` and `mix show` read, with its type (source_files is optional here: a plan of an older
# `mix plan` without it gets its own message from `mix build`)
PLAN_SHAPE = {"name?": str, "seed?": int, "budget": {"given": str, "tokens": int, "human": str},
              "train": {"expected_steps": float, "tokens_per_step": int}, "inputs": [RECORD_SHAPE],
              "warnings?": [str], "band?": (dict, None), "sources": {"*": _SOURCE}, "selection": str,
              "selection_hash?": str, "source_files?": {"*": [RECORD_SHAPE]}}


def read_plan(path: str | Path) -> dict:
    """The plan in `path`; a DamagedFileError naming the file and the key when its shape is not a plan's."""
    return check_shape(read_json(path), PLAN_SHAPE, path, "re-run `mix plan`")
