"""`continua sweep RECIPE --grid replay=0,0.1,0.25 --grid lr=1e-3,3e-3 --fraction 10% --out DIR`:
short proxy runs of one recipe across a grid, and one table of their curves for the law fitter.

Each grid point is the recipe with a few keys overridden, run by `continua compare` (scores once,
plans shared where the mixture is the same, finished runs skipped, interrupted ones resumed, 1..N
processes per run from [train] nproc). Grid keys:

    replay=0,0.1          [mix] replay (share of the budget from general sources)
    lr=1e-3,3e-3          [optim] lr (peak)
    schedule=cosine,wsd   [schedule] name
    model=PATH,PATH       [model] path: smaller sibling bases give the model-size axis
    fraction=10%,30%      share of the recipe's [mix] budget each run spends (also --fraction)
    SECTION.KEY=V1,V2     any other recipe key

Writes DIR/sweep.json (one row per run and evaluation: run, N, D tokens, replay share, LR,
schedule, step, loss per validation set; each run's LR trace for the curve law) and DIR/sweep.csv.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path

from continua.io import atomic_open, read_json, write_json
from continua.recipe import RecipeError, load_recipe, toml_value

__all__ = ["parse_grid", "grid_points", "sweep", "sweep_table", "unequal_steps"]

ALIASES = {"replay": "mix.replay", "lr": "optim.lr", "schedule": "schedule.name", "model": "model.path"}


def _fraction(text: str) -> float:
    t = text.strip()
    try:
        f = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise RecipeError(f"--fraction/--grid fraction: {text!r} is not a share such as 10% or 0.1") from None
    if not 0 < f <= 1:
        raise RecipeError(f"--fraction/--grid fraction: {text!r} must be in (0, 100%]")
    return f


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """`--grid KEY=V1,V2` arguments -> {key: [values]} in the order given; a key may appear once."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not vals:
            raise RecipeError(f"--grid {item!r}: expected KEY=V1,V2,... (e.g. replay=0,0.25)")
        if key in grid:
            raise RecipeError(f"--grid {key}: given twice; list all its values in one --grid")
        if key not in ALIASES and key != "fraction" and "." not in key:
            raise RecipeError(f"--grid {key}: unknown key; use replay, lr, schedule, model, fraction or SECTION.KEY")
        grid[key] = vals
    return grid


def _scaled_budget(budget: str, fraction: float) -> str:
    """The recipe's [mix] budget times `fraction`: "100%" x 0.1 -> "10%", "2M" x 0.5 -> 1000000."""
    b = budget.strip()
    if b.endswith("%"):
        return f"{float(b[:-1]) * fraction:g}%"
    m = re.fullmatch(r"([0-9.]+)\s*([kKmMbBgG]?)", b)
    if not m:
        raise RecipeError(f"[mix] budget {budget!r}: a sweep scales a budget given as a percent or a token count")
    mult = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}[m.group(2).lower()]
    return str(int(float(m.group(1)) * mult * fraction))


def _value(v: str) -> str:
    """A grid value as TOML: numbers and booleans as they are, anything else as a string."""
    try:
        float(v)
        return v
    except ValueError:
        return v if v in ("true", "false") or v.startswith(("[", "{", '"')) else toml_value(v)


def _label(key: str, v: str) -> str:
    short = {"replay": "r", "lr": "lr", "schedule": "", "model": "", "fraction": "f"}.get(key, key.split(".")[-1])
    if key == "model":
        v = Path(v).name if Path(v).name not in ("export", "") else Path(v).parent.parent.name
    v = v.rstrip("%")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{short}{v}")


def grid_points(recipe_path: Path, grid: dict[str, list[str]], fraction: float | None,
                overrides: list[str]) -> list[tuple[str, list[str], dict]]:
    """(run name, overrides, grid values) per point of the grid (a product of all keys)."""
    base = load_recipe(recipe_path, overrides)
    if base.stages:
        raise RecipeError(f"{recipe_path}: has [[stages]]: a sweep varies one stage's recipe; sweep a single-stage "
                          "recipe of the stage in question")
    keys = list(grid)
    named = {"replay"} | ({"fraction"} if fraction is not None or "fraction" in grid else set())
    if "fraction" not in grid:
        keys.append("fraction")
        grid = {**grid, "fraction": [f"{(fraction or 1.0) * 100:g}%"]}
    points = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        f = _fraction(values["fraction"])
        sets = [f"mix.budget={toml_value(_scaled_budget(base.mix.budget, f))}"]
        for k, v in values.items():
            if k != "fraction":
                sets.append(f"{ALIASES.get(k, k)}={_value(v)}")
        name = "-".join([base.run.name] + [_label(k, v) for k, v in values.items()
                                           if len(grid[k]) > 1 or k in named])
        points.append((name, sets + [f"run.name={toml_value(name)}"], {**values, "fraction": f}))
    return points


def _params(train_dir: Path) -> int:
    """Parameters of the run's model, from its config.json (built on the meta device: no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(train_dir / "export" if (train_dir / "export").is_dir() else train_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return int(sum(p.numel() for p in model.parameters()))


def _pt_lrs(model_path: Path | None) -> list[float]:
    """The LR of every step of the base model's own continua run (its metrics.jsonl beside the export):
    the curve law's pre-training areas and the LR the re-warmup starts from; [] if unknown."""
    if model_path is None:
        return []
    metrics = Path(model_path).parent / "metrics.jsonl"
    if not metrics.is_file():
        return []
    lrs: dict[int, float] = {}
    for line in open(metrics, encoding="utf-8"):
        row = json.loads(line)
        if row.get("kind") == "train" and isinstance(row.get("lr"), (int, float)):
            lrs[int(row["step"])] = float(row["lr"])  # a resumed run logs some steps twice: the last wins
    if not lrs or sorted(lrs) != list(range(1, max(lrs) + 1)):
        return []  # a gap in the trace: the areas would be wrong, so the law fits them instead
    return [lrs[s] for s in range(1, max(lrs) + 1)]


def sweep_table(specs, points: list[tuple[str, list[str], dict]]) -> dict:
    """Rows (run, N, D, replay, lr, schedule, step, loss per set) and per-run curves from the runs' metrics."""
    from train.report import load_run

    by_name = {p[0]: p[2] for p in points}
    runs, rows = [], []
    for spec in specs:
        r = spec.recipe
        data = load_run(spec.train_dir)
        roles = {f"loss/{n}": s.role for n, s in r.data.sources.items()}
        lrs: dict[int, float] = {}
        for t in data.trains:
            lrs[int(t["step"])] = float(t["lr"])
        steps = max(lrs) if lrs else 0
        if sorted(lrs) != list(range(1, steps + 1)):
            raise RuntimeError(f"{spec.train_dir}/metrics.jsonl: the LR of some steps is missing; re-run the sweep")
        evals: dict[int, dict] = {}
        for e in data.evals:
            evals[int(e["step"])] = {k: float(v) for k, v in e["metrics"].items() if k in roles}
        n = _params(spec.train_dir)
        pt_lrs = _pt_lrs(r.model.path)
        tokens_per_step = r.train.batch_size * r.train.seq_len
        values = by_name[spec.name]
        run = {"run": spec.name, "N": n, "replay": r.mix.replay, "lr": r.optim.lr, "schedule": r.schedule.name,
               "model": str(r.model.path) if r.model.path else None, "fraction": values["fraction"],
               "steps": steps, "tokens_per_step": tokens_per_step, "roles": roles,
               "grid": {k: v for k, v in values.items()}, "lrs": [lrs[s] for s in range(1, steps + 1)],
               "lr_before": pt_lrs[-1] if pt_lrs else 0.0, "pt_lrs": pt_lrs, "eval_steps": sorted(evals),
               "losses": {k: [evals[s].get(k) for s in sorted(evals)] for k in roles}}
        runs.append(run)
        for s in sorted(evals):
            rows.append({"run": spec.name, "N": n, "D": s * tokens_per_step, "replay": r.mix.replay, "lr": r.optim.lr,
                         "schedule": r.schedule.name, "fraction": values["fraction"], "step": s, **evals[s]})
    return {"runs": runs, "rows": rows}


def unequal_steps(runs: list[dict]) -> list[str]:
    """One line per group of runs that differ only in replay, LR, schedule or base model (so share one
    budget) but trained different numbers of steps: their D differs, and the fit must use each run's own."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        key = tuple(sorted((k, str(v)) for k, v in r["grid"].items() if k not in ("replay", "lr", "schedule", "model")))
        groups.setdefault(key, []).append(r)
    out = []
    for key, mine in groups.items():
        if len({r["steps"] for r in mine}) > 1:
            shown = ", ".join(f"{r['run']} {r['steps']}" for r in mine)
            out.append(f"runs of one budget ({', '.join(f'{k}={v}' for k, v in key) or 'the recipe budget'}) trained "
                       f"different numbers of steps: {shown}; each run's D is its own steps x tokens per step")
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    with atomic_open(path) as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def sweep(recipe_path: Path, out: Path, grid: dict[str, list[str]], fraction: float | None = None,
          overrides: list[str] | None = None) -> Path:
    """Run every grid point through `continua compare` under `out`, then write out/sweep.json and .csv."""
    from workflow.compare import compare, plan_runs

    out = Path(out).resolve()
    overrides = list(overrides or [])
    points = grid_points(recipe_path, grid, fraction, overrides)
    if len(points) < 2:
        raise RecipeError("continua sweep: the grid has one point; give at least one key two values (--grid replay=0,0.25)")
    paths = [Path(recipe_path)] * len(points)
    per_run = [p[1] for p in points]
    compare(paths, out, overrides, log_x=True, per_run=per_run)
    specs = plan_runs(paths, out, overrides, per_run)
    table = sweep_table(specs, points)
    table["warnings"] = unequal_steps(table["runs"])
    write_json(out / "sweep.json", {"recipe": str(Path(recipe_path).resolve()), "overrides": overrides, **table})
    _write_csv(out / "sweep.csv", table["rows"])
    return out / "sweep.json"


def load_sweeps(paths: list[Path]) -> dict:
    """One or more sweep.json files (or their folders) merged: runs of several sweeps fit one law."""
    runs = []
    for p in paths:
        p = Path(p)
        f = p / "sweep.json" if p.is_dir() else p
        if not f.is_file():
            raise RecipeError(f"{p}: no sweep.json (run `continua sweep ... --out {p}` first)")
        runs += read_json(f)["runs"]
    names = [r["run"] for r in runs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise RecipeError(f"run(s) {sorted(dup)} appear in more than one sweep: give the recipes different [run] names")
    return {"runs": runs}


def _command(args) -> int:
    from continua.console import make_console

    grid = parse_grid(args.grid)
    path = sweep(args.recipe, args.out, grid, _fraction(args.fraction) if args.fraction else None, args.set)
    data = read_json(path)
    console = make_console(stderr=True)
    for w in data.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}", markup=True)
    console.print(f"continua sweep: {len(data['runs'])} runs, {len(data['rows'])} evaluations -> "
                  f"{path} and {path.with_suffix('.csv')}")
    return 0


def add_sweep_command(sub) -> None:
    """Register `continua sweep`."""
    p = sub.add_parser("sweep", help="short proxy runs of one recipe over a grid (replay, LR, schedule, model size)",
                       description=__doc__.split("\n\n")[0] + " Finished runs are skipped on re-run, interrupted "
                       "ones resume.")
    p.add_argument("recipe", type=Path, metavar="RECIPE")
    p.add_argument("--out", type=Path, required=True, help="sweep folder")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a grid axis (repeatable): replay=, lr=, schedule=, model=, fraction= or SECTION.KEY=")
    p.add_argument("--fraction", help="share of the recipe's budget each run spends, e.g. 10%% (default: all)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a key in every run (repeatable)")
    p.set_defaults(func=_command)
