"""`train run RECIPE`: the training stage's command line (plus `train schedule` and `train report`)."""

from __future__ import annotations

import argparse
import sys

from continua.recipe import add_recipe_arguments, overrides_argv
from continua.version import add_version_argument


def run_command(args: argparse.Namespace) -> int:
    from continua.recipe import load_recipe
    from train.parallel import relaunch_with_torchrun, under_torchrun

    from train.preflight import check_inputs

    recipe = load_recipe(args.recipe, args.overrides)
    check_inputs(recipe)  # before torchrun starts N processes
    nproc = args.nproc or recipe.train.nproc
    if nproc > 1 and not under_torchrun():
        argv = ["run", str(args.recipe), *overrides_argv(args.overrides)]
        if args.no_resume:
            argv.append("--no-resume")
        if args.stop_at is not None:
            argv += ["--stop-at", str(args.stop_at)]
        return relaunch_with_torchrun(nproc, argv)
    from train.loop import run

    summary = run(recipe, resume=not args.no_resume, stop_at=args.stop_at)
    return 0 if summary["status"] in ("finished", "stopped", "interrupted") else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train", description="Continual pre-training on the shards of `mix build`.")
    add_version_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "run", help="train the recipe's model on its shards (resumes from the latest checkpoint)",
        description="Load [model] (a local Hugging Face folder, GGUF, or a fresh Llama), train it with FSDP2 on "
                    "the shards and plan of `mix build`, evaluate every validation set on the [eval] cadence, "
                    "checkpoint, and export with save_pretrained. Writes [train] out (default <out_dir>/train).")
    add_recipe_arguments(p, "train.steps=100")
    p.add_argument("--nproc", type=int, default=None,
                   help="processes on this machine (default [train] nproc); > 1 relaunches under torchrun")
    p.add_argument("--no-resume", action="store_true",
                   help="start from step 0, deleting the run dir's checkpoints from an earlier run")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="checkpoint after STEP and exit; a later `train run` continues (time-sliced jobs)")
    p.set_defaults(func=run_command)
    try:
        from train.commands import add_eval_commands
    except ImportError:
        pass
    else:
        add_eval_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from continua.recipe import RecipeError
    from train.loop import NonFiniteLoss

    try:
        return args.func(args)
    except (RecipeError, NonFiniteLoss, FileNotFoundError, ValueError) as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("train: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
