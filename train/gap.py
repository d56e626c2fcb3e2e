"""Stability-gap metrics: the V-shaped dip and recovery of each evaluation curve, as numbers.

Guo et al. show that CPT first hurts, then helps; a final number hides that, so per evaluation set
we report the start (step 0, before training), the worst point after it (depth and when), when the
start value was regained (recovery), and the final change (forgetting or gain).
Input: the `kind == "eval"` lines of metrics.jsonl,
`{"kind": "eval", "step": int, "tokens": int, "metrics": {"loss/SOURCE": float, "acc/BENCH": float,
"items/BENCH": int}}`.

An accuracy on n items moves by chance: with `items/BENCH` known, a dip or a final change of at most two
standard errors of a difference of two accuracies, 2 * sqrt(2 p (1 - p) / n) at the start's p, is not called
a gap, forgetting or gain but "within noise" (50 items at p = 0.3: 0.18). Losses over thousands of tokens
carry no such bound here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

WEIGHT_CHANGE_KEY = "weight_change/bottom_top_ratio"


def direction(key: str) -> str | None:
    """'lower' or 'higher' is better for a metric key; None for keys that are not an evaluation curve."""
    head = key.split("/", 1)[0]
    if head in ("loss", "ppl", "perplexity"):
        return "lower"
    if head in ("acc", "acc_norm", "accuracy"):
        return "higher"
    return None


def _series(rows: list[dict], key: str) -> list[tuple[int, int | None, float]]:
    """(step, tokens, value) sorted by step; a step evaluated twice (a resumed run) keeps its last value."""
    by_step: dict[int, tuple[int | None, float]] = {}
    for row in rows:
        value = row.get("metrics", {}).get(key)
        if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        by_step[int(row["step"])] = (row.get("tokens"), float(value))
    return [(s, t, v) for s, (t, v) in sorted(by_step.items())]


def accuracy_noise(p: float, items: int) -> float:
    """Two standard errors of the difference of two accuracies at p on `items` items each."""
    p = min(max(p, 1.0 / items), 1.0 - 1.0 / items)  # p = 0 or 1 would claim no noise at all
    return 2.0 * math.sqrt(2.0 * p * (1.0 - p) / items)


def curve_metrics(series: list[tuple[int, int | None, float]], lower_is_better: bool,
                  items: int | None = None) -> dict[str, Any]:
    """Gap metrics of one curve; `series` is (step, tokens, value) sorted by step, first point = start.
    `items` (accuracy curves): changes within `accuracy_noise` are reported as noise, not as effects."""
    sign = 1.0 if lower_is_better else -1.0  # sign * (a - b) > 0 means a is worse than b
    s0, t0, start = series[0]
    noise = accuracy_noise(start, items) if items else 0.0
    out: dict[str, Any] = {"direction": "lower" if lower_is_better else "higher", "evals": len(series),
                           "start_step": s0, "start": start, "items": items, "noise": noise}
    after = series[1:]
    if not after:
        out.update(worst=None, worst_step=None, worst_tokens=None, gap=False, gap_depth=0.0, recovered=None,
                   recovery_step=None, recovery_tokens=None, final=start, final_step=s0, final_change=0.0,
                   outcome="unchanged")
        return out
    worst_i = max(range(len(after)), key=lambda i: (sign * after[i][2], -i))  # first of equal worst
    ws, wt, worst = after[worst_i]
    depth = sign * (worst - start)
    out.update(worst=worst, worst_step=ws, worst_tokens=wt, gap=depth > noise, gap_depth=max(0.0, depth))
    if depth > noise:
        back = next(((s, t) for s, t, v in after[worst_i + 1:] if sign * (v - start) <= 0), None)
        out.update(recovered=back is not None, recovery_step=back[0] if back else None,
                   recovery_tokens=back[1] if back else None)
    else:  # never worse than the start (beyond the noise): nothing to recover from
        out.update(recovered=True, recovery_step=None, recovery_tokens=None)
    fs, _, final = series[-1]
    change = final - start
    worse = sign * change
    out.update(final=final, final_step=fs, final_change=change,
               outcome="forgetting" if worse > noise else "gain" if worse < -noise
               else "within noise" if noise else "unchanged")
    return out


def gap_metrics(eval_rows: list[dict]) -> dict:
    """Per evaluation set (every loss/* and acc/* key): the metrics of `curve_metrics`.

    Returns {"sets": {key: {...}}, "weight_change": {...} or None}. Rows of other kinds are ignored.
    """
    rows = [r for r in eval_rows if r.get("kind", "eval") == "eval"]
    keys = sorted({k for r in rows for k in r.get("metrics", {}) if direction(k)})
    sets = {}
    for key in keys:
        series = _series(rows, key)
        if series:
            sets[key] = curve_metrics(series, direction(key) == "lower", _items(rows, key))
    out = {"sets": sets, "weight_change": _weight_change(rows)}
    if any("stage" in r for r in rows):
        out["stages"] = stage_gaps(rows, [r for r in eval_rows if r.get("kind") == "branch_eval"], keys)
    return out


def stage_gaps(rows: list[dict], branch_rows: list[dict], keys: list[str]) -> list[dict]:
    """Per stage of a sequence, in order: each curve from the stage's boundary (the evaluation before its first
    step: the previous stage's last) to its end, as `curve_metrics` (so a re-warm's spike is the stage's gap,
    and an earlier domain's rise is its forgetting), and its branch's final values beside the trunk's."""
    order = list(dict.fromkeys(r["stage"] for r in rows if "stage" in r))
    out, before = [], None
    for name in order:
        mine = [r for r in rows if r.get("stage") == name]
        first_step = min(int(r["step"]) for r in mine)
        boundary = [before] if before is not None and int(before["step"]) < first_step else []
        span = boundary + mine
        entry = {"stage": name, "first_step": int(span[0]["step"]), "last_step": int(mine[-1]["step"]), "sets": {}}
        for key in keys:
            series = _series(span, key)
            if series:
                entry["sets"][key] = curve_metrics(series, direction(key) == "lower", _items(rows, key))
        branch = [r for r in branch_rows if r.get("branch") == name]
        if branch:
            entry["branch"] = {"step": int(branch[-1]["step"]),
                               "metrics": {k: v for k, v in branch[-1].get("metrics", {}).items() if direction(k)}}
        out.append(entry)
        before = max(mine, key=lambda r: int(r["step"]))
    return out


def _items(rows: list[dict], key: str) -> int | None:
    """Items behind an accuracy curve (`items/BENCH`, written by the loop), None for losses or when unknown."""
    if direction(key) != "higher":
        return None
    counts = {r["metrics"].get("items/" + key.split("/", 1)[1]) for r in rows} - {None}
    return int(min(counts)) if counts else None


def _weight_change(rows: list[dict]) -> dict | None:
    """Guo et al.'s bottom/top relative weight change ratio (> 1: lower layers move more): max and final."""
    series = [p for p in _series(rows, WEIGHT_CHANGE_KEY) if p[0] > 0]
    if not series:
        return None
    ms, _, mv = max(series, key=lambda p: p[2])
    return {"key": WEIGHT_CHANGE_KEY, "first_step": series[0][0], "first": series[0][2], "max": mv, "max_step": ms,
            "final_step": series[-1][0], "final": series[-1][2]}


def read_metrics(path: Path) -> list[dict]:
    """All lines of a metrics.jsonl; a bad line is an error naming file and line (a torn last line is skipped)."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):  # a run killed mid-write leaves a partial last line: the rest is good
                break
            raise ValueError(f"{path}:{i}: not valid JSON: {e}") from e
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
        if row.get("kind") == "eval" and ("step" not in row or not isinstance(row.get("metrics"), dict)):
            raise ValueError(f"{path}:{i}: an eval line needs 'step' and a 'metrics' object")
        rows.append(row)
    return rows


def write_gap(run_dir: Path) -> Path:
    """Compute gap.json for a run dir from its metrics.jsonl (atomically); returns its path."""
    from continua.io import write_json

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    out = run_dir / "gap.json"
    write_json(out, gap_metrics([r for r in rows if r.get("kind") in ("eval", "branch_eval")]))
    return out
