"""`--version` for the four commands: continua's version and the libraries that decide the numbers."""

from __future__ import annotations

import argparse
import platform
from importlib.metadata import PackageNotFoundError, version

from continua import __version__

LIBRARIES = ("torch", "datatrove", "transformers", "tokenizers", "polars", "kenlm", "spacy", "lm_eval")


def version_text(prog: str) -> str:
    """`PROG: continua X, python Y, torch Z, ...`, libraries read from their metadata (nothing imported)."""
    libs = []
    for name in LIBRARIES:
        try:
            libs.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return f"{prog}: continua {__version__}, python {platform.python_version()}, " + ", ".join(libs)


class _Version(argparse.Action):
    """Like argparse's "version" action, without re-wrapping the line to the terminal width."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text(parser.prog))
        parser.exit()


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action=_Version,
                        help="print the versions of continua and of the libraries it runs on, then exit")
