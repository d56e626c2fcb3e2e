"""The `train schedule`, `train report` and `train lm-eval` subcommands, registered into train's CLI by `add_eval_commands`.

Kept apart from train/cli.py so the loop's CLI and these read-only tools can change independently.
Each subcommand sets `func`: the CLI calls `args.func(args)` and returns its int exit code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from continua.recipe import add_recipe_arguments


def schedule_command(args: argparse.Namespace) -> int:
    from continua.recipe import load_recipe
    from train.schedules import schedule_main

    recipe = load_recipe(args.recipe, args.overrides)
    out = Path(args.out) if args.out else recipe.out_dir / "lr_schedule.png"
    from continua.stages import is_staged

    if is_staged(recipe):
        from train.timeline import sequence_schedule_main

        sequence_schedule_main(recipe, out, stage_steps=args.steps)
    else:
        schedule_main(recipe, out, total_steps=args.steps)
    return 0


def report_command(args: argparse.Namespace) -> int:
    from train.report import print_report, write_report

    run_dirs = [Path(d) for d in args.run_dirs]
    out = Path(args.out) if args.out else (run_dirs[0] if len(run_dirs) == 1 else Path("report"))
    path = write_report(run_dirs, out, x=args.x, log_x=args.log_x)
    print_report(path)
    print(f"wrote {path} and its plots in {path.parent}")
    return 0


def lm_eval_command(args: argparse.Namespace) -> int:
    import sys

    from train.harness import HarnessError, lm_eval_command as run

    try:
        device = args.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        return run(Path(args.run_dir), device, args.batch_size, args.dtype, base=args.base,
                   score_base=not args.no_base)
    except HarnessError as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 1


def add_eval_commands(subparsers) -> None:
    """Register `schedule`, `report` and `lm-eval` on the `train` command's subparsers."""
    p = subparsers.add_parser(
        "schedule", help="plot a recipe's learning-rate schedule (PNG) and print the LR at phase boundaries",
        description="Plot the [schedule] of RECIPE over [train] steps with [optim] lr as the peak, and print "
                    "the learning rate where each phase starts.")
    add_recipe_arguments(p, "schedule.name=wsd")
    p.add_argument("--out", type=Path, default=None, help="PNG to write (default: OUT_DIR/lr_schedule.png, OUT_DIR = [run] out_dir)")
    p.add_argument("--steps", type=int, default=None,
                   help="total optimizer steps (default: [train] steps; needed when that is 0 = auto)")
    p.set_defaults(func=schedule_command)

    p = subparsers.add_parser(
        "report", help="compare run dirs: per-set curves with the stability gap marked, LR curves, report.md",
        description="Read each RUN_DIR's metrics.jsonl (and gap.json, else computed) and write one PNG per "
                    "evaluation set, lr.png and report.md with a table comparing the runs.")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="a `train run` output folder")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for report.md and PNGs (default: the run dir if one, else ./report)")
    p.add_argument("--x", choices=["auto", "tokens", "step"], default="auto",
                   help="x axis of the evaluation curves (auto: tokens when every eval line has them)")
    p.add_argument("--log-x", action="store_true",
                   help="symmetric-log x axis: spreads out the dense early evaluations where the gap happens")
    p.set_defaults(func=report_command)

    p = subparsers.add_parser(
        "lm-eval", help="score a run's export/ with lm-evaluation-harness on the recipe's [eval] benchmarks (offline)",
        description="Write local harness tasks (YAML + JSONL under RUN_DIR/lm_eval/tasks) for the [eval] benchmarks "
                    "of RUN_DIR/recipe.toml, run lm_eval zero-shot on RUN_DIR/export with the same prompts, "
                    "options, subset and BOS policy as the in-loop scores, and write RUN_DIR/lm_eval/results.json. "
                    "The base model (the run's [model] path, or --base) is scored the same way and printed beside "
                    "it: before and after CPT through one harness. Needs pip install 'continua[lm-eval]'.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished `train run` output folder")
    p.add_argument("--base", type=Path, default=None, metavar="MODEL_DIR",
                   help="Hugging Face folder to score as 'before' (default: the run's [model] path; a GGUF base "
                        "is read from RUN_DIR/base_model)")
    p.add_argument("--no-base", action="store_true", help="score only the run's export")
    p.add_argument("--device", default="auto", help="torch device for the harness (default auto: cuda when "
                   "torch sees a GPU, else cpu; or e.g. cuda:1)")
    p.add_argument("--batch-size", type=int, default=8, help="harness batch size (default 8)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="weights dtype for the harness (default float32, as train.mcq on CPU)")
    p.set_defaults(func=lm_eval_command)
