"""`mix plan | build | show`: plan a token-budgeted mixture, build its shards, look at it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from rich.markup import escape

from continua.console import make_console
from continua.exitcodes import run_command
from continua.recipe import add_recipe_arguments, load_recipe, toml_value
from continua.version import add_version_argument

_console = make_console(stderr=True)


def _log(message: str) -> None:
    _console.print(f"[dim]{escape(message)}[/dim]")


def _recipe(args: argparse.Namespace):
    overrides = list(args.overrides or [])
    for flag, key in (("budget", "budget"), ("top", "top"), ("epochs", "epochs"), ("score", "score"),
                      ("replay", "replay"), ("preset", "preset"), ("resample", "resample"), ("workers", "workers"),
                      ("executor", "executor")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"mix.{key}={value}" if not isinstance(value, str) else f"mix.{key}={toml_value(value)}")
    return load_recipe(args.recipe, overrides)


def _blends(recipe) -> Iterator:
    """The recipe's blends in order (one for a recipe without [[stages]]), each announced when there are several."""
    from continua.stages import is_staged, stage_blends

    blends = [b for stage in stage_blends(recipe) for b in stage]
    for b in blends:
        if is_staged(recipe):
            doms = [n for n, s in b.recipe.data.sources.items() if s.role == "domain"]
            _console.print(f"[bold]stage {b.stage + 1} of {len(recipe.stages)}: {escape(b.label)}[/bold] "
                           f"(domains {', '.join(doms)})")
        yield b


def cmd_plan(args: argparse.Namespace) -> int:
    from mix.planner import plan_recipe
    from mix.show import plot_plan, print_plan

    for blend in _blends(_recipe(args)):
        path, result = plan_recipe(blend.recipe, log=_log)
        print_plan(result.plan)
        png = plot_plan(result.plan, path.with_suffix(".png"))
        _log(f"wrote {path}, {path.parent / result.plan['selection']} and {png}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    for blend in _blends(_recipe(args)):
        code = _build_one(args, blend.recipe)
        if code:
            return code
    return 0


def _build_one(args: argparse.Namespace, recipe) -> int:
    from continua.recipe import RecipeError

    executor = recipe.mix.executor or recipe.curate.executor
    if args.dry_run is not None and executor != "slurm":
        raise RecipeError(f"--dry-run writes Slurm scripts: it needs [mix] executor = \"slurm\" (not {executor!r})")
    if executor == "local":
        from mix.build import build_recipe

        manifest = build_recipe(recipe, workers=args.workers, log=_log)
        _log(f"wrote {manifest}")
        return 0
    from mix.build_stages import build_on_executor

    manifest, subs = build_on_executor(recipe, executor, workers=args.workers, dry_run=args.dry_run, log=_log)
    if manifest is not None:
        _log(f"wrote {manifest}")
        return 0
    for sub in subs:
        _console.print(f"{sub.job_name} -> {args.dry_run / sub.script if args.dry_run else 'job ' + sub.job_id}")
    if args.dry_run:
        _console.print(f"nothing submitted (--dry-run); submit with {args.dry_run / 'submit.sh'}")
    else:
        _console.print(f"{len(subs)} Slurm job(s) submitted; the manifest appears when the merge job ends")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from mix.show import load_plan, plot_plan, print_plan

    plan, path = load_plan(args.plan)
    print_plan(plan)
    png = plot_plan(plan, Path(args.out) if args.out else path.with_suffix(".png"))
    _log(f"wrote {png}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mix", description=__doc__)
    add_version_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    def recipe_args(p: argparse.ArgumentParser) -> None:
        add_recipe_arguments(p, "mix.top=10%%")

    p = sub.add_parser("plan", help="choose documents, epochs and shares for a token budget; writes mix/plan.json",
                       description="Read the score tables of the recipe's sources, hold out validation documents, "
                       "apply the [mix] strategies and write mix/plan.json (every decision with its reason), "
                       "mix/selection.parquet and mix/plan.png.")
    recipe_args(p)
    p.add_argument("--budget", help="training tokens: '40%%' of one epoch over the domain corpus, or 500M, 2B, 123456")
    p.add_argument("--top", help="quality subset size: '10%%' of the domain tokens or a token count")
    p.add_argument("--epochs", type=float, help="fix the epochs over the domain subset")
    p.add_argument("--score", help="score column or expression ranking domain documents, e.g. fasttext_q")
    p.add_argument("--replay", type=float, help="compute-equivalent replay fraction, e.g. 0.05")
    p.add_argument("--preset", help="pre-training mixture to imitate: llama1, redpajama")
    p.add_argument("--resample", choices=["fixed", "dynamic"], help="domain data per epoch: fixed or dynamic")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("build", help="tokenize the planned documents into shards and write the manifest",
                       description="Tokenize the documents of mix/plan.json with the recipe's tokenizer into "
                       "mix/shards/SOURCE/{train,valid}/NNNNN.ds and write mix/shards/manifest.json. Re-running "
                       "skips sources already complete for the same plan.")
    recipe_args(p)
    p.add_argument("--workers", type=int, help="tokenizer processes (default [mix] workers; 0 = one per core; 1 = "
                   "in-process, threaded); on ray/slurm: tasks at once")
    p.add_argument("--executor", choices=["local", "ray", "slurm"],
                   help="where to tokenize (default [mix] executor, else [curate] executor): this machine, or one "
                   "task per piece of the plan on Ray / Slurm, then a merge task writing the shards and manifest")
    p.add_argument("--dry-run", type=Path, default=None, metavar="FOLDER",
                   help="executor = slurm: write the sbatch scripts and a submit.sh to FOLDER, submit nothing")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("show", help="print a plan's table and plot its mixture",
                       description="Print the per-source table of a plan and write a PNG of the mixture.")
    p.add_argument("plan", help="mix/plan.json or the folder holding it")
    p.add_argument("--out", help="PNG path (default: beside the plan, plan.png)")
    p.set_defaults(func=cmd_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    failures: tuple[type[BaseException], ...] = ()
    if args.command == "build":  # a cluster build's failures are runtime failures, named in one line
        from continua.lock import LockHeld
        from curate.executors import StageFailed
        from curate.slurm import SharedFolderError

        failures = (StageFailed, SharedFolderError, LockHeld)
    return run_command(f"mix {args.command}", lambda: args.func(args), failures=failures)


if __name__ == "__main__":
    sys.exit(main())
