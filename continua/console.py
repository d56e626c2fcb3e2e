"""The rich Console every command prints tables with: the terminal's width on a terminal, and in a log
file or a pipe wide enough that no table is clipped ("forgetti...", "demo-pre...").

rich sizes a Console that is not on a terminal to 80 columns and squeezes tables into it, cutting
names and numbers; a table is as wide as its content needs, so a large width costs nothing.
"""

from __future__ import annotations

import sys

from rich.console import Console

from continua.progress import is_terminal

LOG_WIDTH = 400  # columns when not on a terminal: room for any table the commands print, no wrapped lines


def make_console(stderr: bool = False) -> Console:
    """A Console on stdout (or stderr) that never clips a table when the stream is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    if is_terminal(stream):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=LOG_WIDTH)
