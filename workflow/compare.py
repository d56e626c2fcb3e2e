"""`continua compare RECIPE... --out DIR`: run a set of strategy recipes and compare them in one place.

Each recipe runs curate -> mix -> train as `curate score`, `mix plan`, `mix build`, `train run` would,
but the work the recipes have in common is done once:

* scoring: one `DIR/curate/<key>` per distinct set of sources + [curate] settings (+ tokenizer);
* mixing: `DIR/RUN/mix` per recipe, unless an earlier recipe of the set has the same plan inputs
  (sources, scores, [mix], seed): then its plan and shards are reused;
* training: `DIR/RUN/train`; a run finished with the same resolved recipe is skipped on re-run, an
  interrupted one resumes from its checkpoint, a changed one starts over. Two recipes that would
  train identically (same data, plan, model, optimizer, schedule, seed: e.g. `naive`, `lr-mid` and
  `warmup-1`, the centre points of the sweeps) are trained once and reported under each name.

Then it writes DIR/report.md with one curve plot per evaluation set (train.report.write_report)
and DIR/comparison.md / comparison.json: final general and domain losses, benchmark accuracies,
stability-gap depth and recovery step (train.gap), tokens and wall time of every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from continua.exitcodes import FAILED, INTERRUPTED, OK
from continua.io import read_json, write_json, write_text
from continua.layout import curate_dir, mix_dir, train_dir
from continua.recipe import Recipe, RecipeError, load_recipe, overrides_argv, toml_value

__all__ = ["RunSpec", "plan_runs", "compare", "comparison_rows", "render_comparison"]


def _key(obj: Any) -> str:
    """A stable short hash of JSON-able settings (paths as strings)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _toml_str(value: Path | str) -> str:
    return toml_value(str(value))


def _without(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def explicit(obj: Any) -> Any:
    """A recipe section as plain data, without the fields left at their defaults.

    The keys below hash this, so a field added to a section later (with a default) does not make
    finished scores, plans or runs look stale; any value that differs from a default still counts.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = dataclasses.MISSING
            if default is not dataclasses.MISSING and value == default:
                continue
            out[f.name] = explicit(value)
        return out
    if isinstance(obj, dict):
        return {str(k): explicit(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [explicit(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def curate_key(recipe: Recipe) -> str:
    """What decides the score tables: the sources, the tokenizer (n_tokens) and the [curate] settings."""
    data, cur = explicit(recipe.data), explicit(recipe.curate)
    return _key({"sources": data.get("sources"), "tokenizer": data.get("tokenizer"),
                 "curate": _without(cur, "out", "executor", "workers")})


def mix_key(recipe: Recipe, ckey: str) -> str:
    """What decides the plan and the shards: the scores, the [mix] settings and the seed."""
    return _key({"curate": ckey, "data": explicit(recipe.data), "mix": _without(explicit(recipe.mix), "out", "workers"),
                 "seed": recipe.run.seed})


def train_key(recipe: Recipe) -> str:
    """The resolved recipe minus its name and where things are written: equal keys train identically,
    and a changed key means the old run is stale."""
    d = {name: explicit(getattr(recipe, name)) for name in ("run", "data", "curate", "mix", "model", "optim",
                                                            "schedule", "eval", "train")}
    d["run"] = _without(d["run"], "out_dir", "name")
    for section, keys in (("curate", ("out",)), ("mix", ("out", "workers")), ("train", ("out", "shards"))):
        d[section] = _without(d[section], *keys)
    return _key(d)


@dataclass
class RunSpec:
    """One recipe of the set, with the folders `compare` gives it."""

    name: str
    recipe_path: Path
    overrides: list[str]
    recipe: Recipe
    curate_key: str
    mix_key: str
    mix_owner: str  # the run whose DIR/RUN/mix holds this plan (itself unless shared)
    train_key: str = ""
    train_owner: str = ""  # the run whose DIR/RUN/train holds this training (itself unless identical to one)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def train_dir(self) -> Path:
        return train_dir(self.recipe)


def plan_runs(recipe_paths: list[Path], out: Path, overrides: list[str],
              per_run: list[list[str]] | None = None) -> list[RunSpec]:
    """Load every recipe (with `overrides`, then its own `per_run` overrides, which a sweep uses to run
    one recipe at several settings), give it its folders under `out`, and find what is shared.

    Every recipe is validated before anything runs, so a typo in the fifth recipe fails at once.
    """
    out = Path(out).resolve()
    specs: list[RunSpec] = []
    names: dict[str, Path] = {}
    mix_owner: dict[str, str] = {}
    train_owner: dict[str, str] = {}
    for i, path in enumerate(recipe_paths):
        own = list(overrides) + (list(per_run[i]) if per_run else [])
        first = load_recipe(path, own)
        if first.stages:
            raise RecipeError(f"{path}: has [[stages]]: `continua compare` runs single-stage recipes side by side; run a "
                              "sequence with `curate score`, `mix plan`, `mix build` and `train run` (each takes it whole)")
        name = first.run.name
        if not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise RecipeError(f"{path}: [run] name {name!r} must be a folder name (letters, digits, '-', '_', '.')")
        if name in names:
            raise RecipeError(f"{path}: [run] name {name!r} is also the name of {names[name]}; "
                              f"give each recipe of a comparison its own name (--set run.name=... applies to all)")
        names[name] = Path(path)
        ckey = curate_key(first)
        mkey = mix_key(first, ckey)
        owner = mix_owner.setdefault(mkey, name)
        trainer = train_owner.setdefault(train_key(first), name)
        run_dir = out / name
        placed = own + [
            f"run.out_dir={_toml_str(run_dir)}",
            f"curate.out={_toml_str(out / 'curate' / ckey)}",
            f"mix.out={_toml_str(out / owner / 'mix')}",
            f"train.out={_toml_str(out / trainer / 'train')}",
        ]
        if first.train.shards is not None:  # an explicit shards folder would bypass the shared mix: drop it
            placed.append(f"train.shards={_toml_str(out / owner / 'mix' / 'shards')}")
        recipe = load_recipe(path, placed)
        specs.append(RunSpec(name, Path(path), placed, recipe, ckey, mkey, owner, train_key(recipe), trainer))
    return specs


def _curate(spec: RunSpec, done: set[str], say: Callable[[str], None]) -> None:
    from curate.cores import parallelism
    from curate.pipeline import score_source

    if spec.curate_key in done:
        say(f"curate: shared scores {curate_dir(spec.recipe)}")
        return
    r = spec.recipe
    for source in r.data.sources:
        say(f"curate score {source} -> {curate_dir(r) / source}")
        stats = score_source(r, source, curate_dir(r), *parallelism(r.curate))
        if stats is None:
            raise RecipeError(f"{spec.recipe_path}: [curate] executor {r.curate.executor!r} only submits jobs; "
                              "run `continua compare` again once they finish (or use executor = \"local\")")
    done.add(spec.curate_key)


def _mix(spec: RunSpec, say: Callable[[str], None]) -> None:
    from mix.build import build_recipe
    from mix.planner import plan_recipe

    folder = mix_dir(spec.recipe)
    if spec.mix_owner != spec.name:
        say(f"mix: same plan as {spec.mix_owner}, reusing {folder}")
        return
    marker = folder / "compare.json"
    if marker.exists() and read_json(marker).get("mix_key") == spec.mix_key and (folder / "shards" / "manifest.json").exists():
        say(f"mix: plan and shards already built in {folder}")
        return
    say(f"mix plan -> {folder / 'plan.json'}")
    plan_recipe(spec.recipe, log=say)
    say(f"mix build -> {folder / 'shards'}")
    build_recipe(spec.recipe, log=say)
    write_json(marker, {"mix_key": spec.mix_key, "recipe": str(spec.recipe_path)})


def _finished(spec: RunSpec) -> bool:
    marker = spec.train_dir / "compare.json"
    return (marker.exists() and read_json(marker).get("train_key") == spec.train_key
            and (spec.train_dir / "gap.json").exists() and (spec.train_dir / "export").is_dir())


def _train(spec: RunSpec, say: Callable[[str], None]) -> None:
    """Train (resuming an interrupted run of the same recipe, restarting a stale one), then mark it finished."""
    t0 = time.perf_counter()
    started = spec.train_dir / "compare-started.json"
    resume = True
    if (spec.train_dir / "metrics.jsonl").exists():
        same = started.exists() and read_json(started).get("train_key") == spec.train_key
        if same:
            say("train: resuming the interrupted run")
        else:
            say("train: the folder holds a run of other settings; starting it over")
            resume = False
    write_json(started, {"train_key": spec.train_key})
    from train.preflight import check_inputs

    check_inputs(spec.recipe)
    nproc = spec.recipe.train.nproc
    if nproc > 1:
        from train.parallel import relaunch_with_torchrun, under_torchrun

        if under_torchrun():
            raise RecipeError("continua compare launches torchrun itself: run it without torchrun")
        argv = ["run", str(spec.recipe_path), *overrides_argv(spec.overrides)]
        if not resume:
            argv.append("--no-resume")
        code = relaunch_with_torchrun(nproc, argv)
        status = "finished" if code == 0 and (spec.train_dir / "gap.json").exists() else f"exit {code}"
    else:
        from train.loop import run

        status = run(spec.recipe, resume=resume)["status"]
    if status in ("stopped", "interrupted", f"exit {INTERRUPTED}"):
        raise TrainingInterrupted(f"{spec.name}: training was interrupted; run `continua compare` again to resume")
    if status != "finished":
        raise RuntimeError(f"{spec.name}: training ended with status {status!r}; run `continua compare` again to resume")
    spec.timings["train"] = round(time.perf_counter() - t0, 3)
    write_json(spec.train_dir / "compare.json",
               {"train_key": spec.train_key, "recipe": str(spec.recipe_path), "timings_s": spec.timings})


def comparison_rows(specs: list[RunSpec]) -> list[dict]:
    """One row per run: role of each evaluation set, its gap metrics, tokens and wall time."""
    from train.report import load_run

    rows = []
    for spec in specs:
        data = load_run(spec.train_dir)
        roles = {f"loss/{n}": s.role for n, s in spec.recipe.data.sources.items()}
        marker = spec.train_dir / "compare.json"
        timings = read_json(marker).get("timings_s", {}) if marker.exists() else spec.timings
        sets = {}
        for key, g in data.gap.get("sets", {}).items():
            sets[key] = {"role": roles.get(key, "benchmark" if key.startswith("acc") else "other"),
                         **{k: g.get(k) for k in ("start", "worst", "worst_step", "gap", "gap_depth", "recovered",
                                                  "recovery_step", "recovery_tokens", "final", "final_change",
                                                  "outcome", "noise")}}
        rows.append({"run": spec.name, "recipe": str(spec.recipe_path), "steps": data.final_step,
                     "tokens": data.tokens, "train_wall_s": data.wall_s, "stage_wall_s": timings,
                     "shared_mix_with": None if spec.mix_owner == spec.name else spec.mix_owner,
                     "same_training_as": None if spec.train_owner == spec.name else spec.train_owner, "sets": sets})
    return rows


def _f(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _tok(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def _recovery(s: dict) -> str:
    if not s.get("gap"):
        return "no gap"
    return "not recovered" if s.get("recovery_step") is None else str(s["recovery_step"])


def render_comparison(rows: list[dict]) -> str:
    """Markdown: headline table (finals per set, tokens, wall time), then a gap table per evaluation set."""
    order = {"general": 0, "domain": 1, "benchmark": 2, "other": 3}
    keys = sorted({k for r in rows for k in r["sets"]},
                  key=lambda k: (order.get(next(r["sets"][k]["role"] for r in rows if k in r["sets"]), 3), k))
    role = {k: next(r["sets"][k]["role"] for r in rows if k in r["sets"]) for k in keys}
    lines = ["# Strategy comparison", "",
             "Final value of every evaluation set (loss: nats/token, lower is better; acc: higher is better), "
             "training tokens and wall time. Curves with the gap marked: [report.md](report.md).", ""]
    head = ["run", "steps", "tokens", "train wall"] + [f"{k} ({role[k]})" for k in keys]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        wall = r["train_wall_s"]
        cells = [r["run"], _f(r["steps"]), _tok(r["tokens"]), "-" if wall is None else f"{wall:.0f} s"]
        cells += [_f(r["sets"].get(k, {}).get("final")) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for k in keys:
        lines += [f"## {k} ({role[k]})", "",
                  "| run | start | worst (step) | gap depth | recovery step | final | final change | outcome |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            s = r["sets"].get(k)
            if not s:
                lines.append(f"| {r['run']} | - | - | - | - | - | - | not evaluated |")
                continue
            worst = "-" if s["worst"] is None else f"{_f(s['worst'])} ({s['worst_step']})"
            depth = _f(s["gap_depth"]) + (f" (noise {_f(s['noise'], 3)})" if s.get("noise") else "")
            lines.append(f"| {r['run']} | {_f(s['start'])} | {worst} | {depth} | {_recovery(s)} | "
                         f"{_f(s['final'])} | {s['final_change']:+.4f} | {s['outcome']} |")
        lines.append("")
    same = [r for r in rows if r.get("same_training_as")]
    if same:
        lines += ["Trained once: " + ", ".join(f"{r['run']} has the same settings as {r['same_training_as']}"
                                              for r in same) + " (one run, reported under each name)", ""]
    shared = [r for r in rows if r["shared_mix_with"] and not r.get("same_training_as")]
    if shared:
        lines += ["Plans shared: " + ", ".join(f"{r['run']} used {r['shared_mix_with']}'s shards" for r in shared), ""]
    return "\n".join(lines)


def _print_table(rows: list[dict], console) -> None:
    from rich.table import Table

    keys = sorted({k for r in rows for k in r["sets"]})
    table = Table(title="continua compare: final values (gap depth, recovery step)")
    for col in ["run", "tokens", "train wall"] + keys:
        table.add_column(col, justify="left" if col == "run" else "right")
    for r in rows:
        cells = [r["run"], _tok(r["tokens"]), "-" if r["train_wall_s"] is None else f"{r['train_wall_s']:.0f} s"]
        for k in keys:
            s = r["sets"].get(k)
            cells.append("-" if not s else f"{_f(s['final'], 3)} ({_f(s['gap_depth'], 3)}, {_recovery(s)})")
        table.add_row(*cells)
    console.print(table)


def compare(recipe_paths: list[Path], out: Path, overrides: list[str] | None = None, log_x: bool = False,
            per_run: list[list[str]] | None = None) -> Path:
    """Run every recipe (sharing scores and plans), then write the comparison; returns DIR/comparison.md.
    `per_run[i]` are overrides of recipe i alone (after `overrides`)."""
    from continua.console import make_console
    from train.report import write_report

    if not recipe_paths:
        raise RecipeError("continua compare needs at least one recipe")
    console = make_console(stderr=True)
    out = Path(out).resolve()
    specs = plan_runs(recipe_paths, out, list(overrides or []), per_run)
    curated: set[str] = set()
    t_all = time.perf_counter()
    for i, spec in enumerate(specs, 1):
        def say(msg: str, _n=spec.name, _i=i) -> None:
            console.print(f"[bold cyan][{_i}/{len(specs)}] {_n}[/]: {msg}", highlight=False)

        if spec.train_owner != spec.name:
            say(f"same training settings as {spec.train_owner}: its run is reported under this name too")
            continue
        if _finished(spec):
            say(f"finished earlier, skipped ({spec.train_dir})")
            continue
        for stage, fn in (("curate", lambda: _curate(spec, curated, say)), ("mix", lambda: _mix(spec, say))):
            t0 = time.perf_counter()
            fn()
            spec.timings[stage] = round(time.perf_counter() - t0, 3)
        say(f"train -> {spec.train_dir}")
        _train(spec, say)
        say(f"done in {sum(spec.timings.values()):.0f} s")
    owners = [s for s in specs if s.train_owner == s.name]
    labels = [" = ".join(t.name for t in specs if t.train_owner == s.name) for s in owners]
    write_report([s.train_dir for s in owners], out, log_x=log_x, labels=labels)
    rows = comparison_rows(specs)
    write_json(out / "comparison.json", {"runs": rows, "wall_s_this_invocation": round(time.perf_counter() - t_all, 3)})
    md = out / "comparison.md"
    write_text(md, render_comparison(rows))
    _print_table(rows, console)
    console.print(f"wrote {md}, {out / 'comparison.json'} and {out / 'report.md'} (+ PNG curves)")
    return md



class TrainingInterrupted(RuntimeError):
    """A run stopped by a signal: its checkpoint is kept and a re-run of the comparison resumes it."""


def _command(args) -> int:
    import sys

    try:
        compare(args.recipes, args.out, args.set, log_x=args.log_x)
    except RuntimeError as e:  # a run that did not finish: the others are kept, a re-run resumes it
        print(f"continua compare: error: {e}", file=sys.stderr)
        return INTERRUPTED if isinstance(e, TrainingInterrupted) else FAILED
    return OK


def add_compare_command(sub) -> None:
    """Register `continua compare` on the `continua` command line's subparsers."""
    p = sub.add_parser(
        "compare", help="run several recipes (sharing scores and shards) and compare them: table, curves, gap",
        description="Run every RECIPE through curate score, mix plan/build and train run, in order, under "
                    "--out DIR: scores once per distinct sources + [curate] settings (DIR/curate/KEY), plans and "
                    "shards per recipe (DIR/RUN/mix, shared when two recipes would plan the same mixture), "
                    "training in DIR/RUN/train. Finished runs are skipped on re-run, interrupted ones resume. "
                    "Writes DIR/comparison.md and .json (final losses per evaluation set, benchmark accuracy, "
                    "gap depth, recovery step, tokens, wall time) and DIR/report.md with one PNG per set.")
    p.add_argument("recipes", type=Path, nargs="+", metavar="RECIPE", help="recipe TOML files (each needs its own [run] name)")
    p.add_argument("--out", type=Path, required=True, help="comparison folder")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a key in every recipe (repeatable), e.g. --set train.steps=100")
    p.add_argument("--log-x", action="store_true", help="symlog x axis on the curve plots (dense early evaluations)")
    p.set_defaults(func=_command)
