"""datatrove's console output cut to one summary per source; the full logs stay in files.

datatrove's loguru logger prints every task's pipeline, progress and stats to stderr (hundreds of
lines a source). `QuietLocalExecutor` keeps them out of the terminal unless `verbose` (`curate score
-v`): tasks still log in full to SOURCE/logs/logs/task_NNNNN.log and their stats to SOURCE/logs/stats,
errors still reach the terminal (a task's warnings are in its log file), and `curate score` prints one
summary table per run.
"""

from __future__ import annotations

import functools
import queue
import sys
from contextlib import contextmanager, nullcontext
from copy import deepcopy
from typing import Iterator

from datatrove.executor import LocalPipelineExecutor
from datatrove.utils.stats import PipelineStats


def _cache_loguru_lib_dirs() -> None:
    """loguru asks sysconfig for every install scheme's library folders each time a sink is added
    (~20 ms, several times a task as datatrove swaps its sinks); they do not change within a process."""
    try:
        from loguru._better_exceptions import ExceptionFormatter
    except ImportError:  # another loguru layout: only slower
        return
    lib_dirs = getattr(ExceptionFormatter, "_get_lib_dirs", None)
    if lib_dirs is not None and not hasattr(lib_dirs, "cache_info"):
        ExceptionFormatter._get_lib_dirs = staticmethod(functools.cache(lib_dirs))


_cache_loguru_lib_dirs()


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
        with nullcontext() if self.verbose else console_warnings_only():
            if self.workers == 1 and not self.depends:
                return self._run_here()
            return super().run()

    def _run_here(self) -> PipelineStats | None:
        """datatrove's one-worker path (tasks one after the other in this process) without the
        multiprocess Manager it starts for any worker count: a forked server process and its
        shutdown cost more than scoring a few thousand documents."""
        self._launched = True
        ranks = range(self.local_rank_offset, self.local_rank_offset + self.local_tasks)
        todo = self.get_incomplete_ranks(ranks)
        if not todo:
            return None
        self.save_executor_as_json()
        local_ranks: queue.SimpleQueue[int] = queue.SimpleQueue()
        local_ranks.put(0)
        pipeline = self.pipeline
        stats = []
        for rank in todo:
            self.pipeline = deepcopy(pipeline)  # each task starts from the pipeline as built, as datatrove does
            stats.append(self._launch_run_for_rank(rank, local_ranks))
        total = sum(stats, start=PipelineStats())
        with self.logging_dir.open("stats.json", "wt") as f:
            total.save_to_disk(f)
        return total
