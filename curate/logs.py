"""datatrove's console output cut to one summary per source; the full logs stay in files.

datatrove's loguru logger prints every task's pipeline, progress and stats to stderr (hundreds of
lines a source). `QuietLocalExecutor` keeps them out of the terminal unless `verbose` (`curate score
-v`): tasks still log in full to SOURCE/logs/logs/task_NNNNN.log and their stats to SOURCE/logs/stats,
errors still reach the terminal (a task's warnings are in its log file), and `curate score` prints one
summary table per run.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from datatrove.executor import LocalPipelineExecutor


@contextmanager
def console_warnings_only() -> Iterator[None]:
    """This process's loguru console sink at WARNING while the block runs; datatrove resets the logger
    after each in-process task (`close_task_logger`), so that reset is made quiet too, then undone."""
    import datatrove.utils.logging as dt_logging
    from loguru import logger

    default = dt_logging.setup_default_logger

    def quiet() -> None:
        logger.remove()
        logger.add(sys.stderr, level="WARNING", colorize=dt_logging.DATATROVE_COLORIZE_LOGS)

    dt_logging.setup_default_logger = quiet
    quiet()
    try:
        yield
    finally:
        dt_logging.setup_default_logger = default
        default()


class QuietLocalExecutor(LocalPipelineExecutor):
    """datatrove's LocalPipelineExecutor; without `verbose` its console shows errors only."""

    def __init__(self, *args, verbose: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.verbose = verbose

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        # datatrove prints INFO to the console for local_rank 0 only (its other workers log errors
        # there); local_rank serves nothing but that choice, so every task is made a quiet one
        return super()._run_for_rank(rank, local_rank if self.verbose else local_rank + 1, node_rank)

    def _launch_run_for_rank(self, rank: int, ranks_q, completed=None, completed_lock=None):
        # runs in the worker process: its "N/M tasks completed" lines go through the logger that
        # datatrove resets after each task, so that reset is made quiet there too
        if self.verbose:
            return super()._launch_run_for_rank(rank, ranks_q, completed, completed_lock)
        with console_warnings_only():
            return super()._launch_run_for_rank(rank, ranks_q, completed, completed_lock)

    def run(self):
        if self.verbose:
            return super().run()
        with console_warnings_only():
            return super().run()
