"""`continua demo` and `continua compare`: the commands that drive curate -> mix -> train."""

from __future__ import annotations

import argparse
import sys

from continua.exitcodes import run_command
from workflow.compare import add_compare_command
from workflow.lawchoose import add_law_command
from workflow.merge import add_merge_command
from workflow.sweep import add_sweep_command
from continua.version import add_version_argument


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="continua", description="Run the whole workflow: the embedded demo, "
                                     "or a set of strategy recipes compared side by side.")
    add_version_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="the embedded demo: corpora from this machine, pre-training, then CPT "
                                "(`continua demo --help` for its options)")
    add_compare_command(sub)
    add_sweep_command(sub)
    add_law_command(sub)
    add_merge_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:  # the demo owns its whole command line
        from workflow.demo import main as demo_main

        return run_command("continua demo", lambda: demo_main(argv[1:]))
    args = build_parser().parse_args(argv)
    return run_command(f"continua {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
