"""`train run RECIPE`: the training stage's command line (plus `train schedule` and `train report`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from continua import exitcodes
from continua.exitcodes import FAILED, INTERRUPTED, OK
from continua.recipe import add_recipe_arguments, overrides_argv
from continua.version import add_version_argument


def run_command(args: argparse.Namespace) -> int:
    import os

    from continua.recipe import load_recipe
    from train.parallel import relaunch_with_torchrun, under_torchrun
    from train.preflight import preflight

    recipe = load_recipe(args.recipe, args.overrides)
    nproc = args.nproc or recipe.train.nproc
    if under_torchrun():  # started by torchrun directly: check once per rank, print on rank 0 only
        quiet = os.environ.get("RANK", "0") != "0"
        preflight(recipe, int(os.environ.get("LOCAL_WORLD_SIZE", nproc)),
                  int(os.environ["WORLD_SIZE"]) // int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
                  say=(lambda m: None) if quiet else _warn)
    else:
        preflight(recipe, nproc, args.nnodes, say=_warn)
    if (nproc > 1 or args.nnodes > 1 or args.rdzv_endpoint) and not under_torchrun():
        if args.nnodes == 1:
            convert_gguf_before_launch(recipe)
        argv = ["run", str(args.recipe), *overrides_argv(args.overrides)]
        if args.no_resume:
            argv.append("--no-resume")
        if args.stop_at is not None:
            argv += ["--stop-at", str(args.stop_at)]
        return relaunch_with_torchrun(nproc, argv, nnodes=args.nnodes, rdzv_endpoint=args.rdzv_endpoint,
                                      rdzv_id=args.rdzv_id)
    from train.loop import run

    summary = run(recipe, resume=not args.no_resume, stop_at=args.stop_at)
    return report_status(summary["status"])


def convert_gguf_before_launch(recipe) -> None:
    """De-quantize a GGUF base model here, before the ranks start: inside the run, rank 0 would do it while
    the other ranks wait in a collective (minutes for a large model). Rank 0 then finds it done."""
    from continua.layout import train_dir
    from train.weights import gguf_to_folder, resolve_source

    if recipe.model.path is None:
        return
    source = resolve_source(recipe.model.path, recipe.model.gguf_file)
    if source.kind == "gguf":
        _warn(f"de-quantizing {source.path} into {train_dir(recipe) / 'base_model'} before starting the processes")
        gguf_to_folder(source.path, train_dir(recipe) / "base_model")


def report_status(status: str) -> int:
    """0 only when the run finished; 75 when stopped (--stop-at, SIGTERM) with a checkpoint to resume from.

    Under torchrun a rank's non-zero exit reads as a crash, so rank 0 hands the code to the launching
    process through the file named by CONTINUA_TRAIN_STATUS (see train.parallel.relaunch_with_torchrun)."""
    from train.parallel import STATUS_ENV

    code = OK if status == "finished" else INTERRUPTED if status in ("stopped", "interrupted") else FAILED
    status_file = os.environ.get(STATUS_ENV)
    if status_file and os.environ.get("RANK") is not None:
        if os.environ["RANK"] == "0":
            Path(status_file).write_text(str(code))
        return OK if code == INTERRUPTED else code
    return code


def _warn(msg: str) -> None:
    print(f"train: {msg}", file=sys.stderr, flush=True)


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
    p.add_argument("--nnodes", type=int, default=1,
                   help="machines in the job; run the same command on each (e.g. under srun) with --rdzv-endpoint")
    p.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT",
                   help="torchrun c10d rendezvous on HOST:PORT (the first node); needed when --nnodes > 1")
    p.add_argument("--rdzv-id", default=None,
                   help="rendezvous id shared by the nodes of one job (default: $SLURM_JOB_ID, else 'continua')")
    p.add_argument("--no-resume", action="store_true",
                   help="start from step 0, deleting the run dir's checkpoints from an earlier run")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="checkpoint after STEP and exit; a later `train run` continues (time-sliced jobs); in a "
                        "sequence of stages, the first step numbered STEP, trunk or branch (branch steps are numbered "
                        "on from their stage's last trunk step)")
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
    from train.checkpoint import CheckpointError
    from train.loop import NonFiniteLoss
    from train.parallel import RankFailure
    from train.preflight import PreflightError

    if getattr(args, "nnodes", 1) > 1 and not args.rdzv_endpoint:
        print("train: error: --nnodes > 1 needs --rdzv-endpoint HOST:PORT (the first node)", file=sys.stderr)
        return exitcodes.USAGE

    def body() -> int:
        try:
            return args.func(args)
        except (PreflightError, RankFailure, NonFiniteLoss) as e:  # raised alike by every rank
            if os.environ.get("RANK", "0") != "0":  # rank 0 alone says it
                return exitcodes.USAGE if isinstance(e, PreflightError) else exitcodes.FAILED
            raise

    return exitcodes.run_command(f"train {args.command}", body, failures=(NonFiniteLoss, CheckpointError, RankFailure),
                                 usage=(PreflightError,))


if __name__ == "__main__":
    sys.exit(main())
