"""Imported by the forkserver that `curate score` starts (its preload list, see continua.procs): the
forkserver and every worker it forks end themselves once the main process is gone, so a `kill -9`
of the command leaves no process behind."""

from __future__ import annotations

import os

from continua.procs import WATCH_ENV, exit_with

_main = os.environ.get(WATCH_ENV, "")
if _main.isdigit() and int(_main) != os.getpid():
    exit_with(int(_main))
    os.register_at_fork(after_in_child=lambda: exit_with(int(_main)))
