"""Run a chain of datatrove stages (score -> MinHash stages -> finish) on the recipe's executor.

Every stage is a datatrove executor with per-task completion markers in its logging folder, so a
re-run resumes on any executor:

- local: stages run one after the other in this process (forkserver worker pools);
- ray: the same, each stage on the Ray cluster ([curate.ray] address, else RAY_ADDRESS, else a
  local cluster started here and shut down at the end); datatrove's Ray executor blocks until the
  stage is done, so one command runs the whole chain;
- slurm: one job array per stage, each submitted with `--dependency=afterok:<previous>`, through
  datatrove's SlurmPipelineExecutor (it writes the sbatch script and pickles the pipeline), submitted by
  curate.slurm.submit_chain. With `dry_run` the scripts are written but nothing is submitted
  (`submit.sh` submits them later).

A stage whose tasks did not all complete stops the chain with `StageFailed` naming its logs.
"""

from __future__ import annotations

import os
import shlex
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from datatrove.executor.base import PipelineExecutor
from datatrove.pipeline.base import PipelineStep

from continua.io import atomic_open
from continua.recipe import Recipe, RecipeError


class StageFailed(RuntimeError):
    """A stage ended with unfinished tasks; its logs say why. Re-running resumes at the failed tasks."""


@dataclass
class Stage:
    """One datatrove stage: its steps, how many tasks, and what each task needs."""

    name: str
    steps: list[PipelineStep | Callable]
    tasks: int
    workers: int
    logging_dir: Path
    gpus_per_task: int = 0
    verbose: bool = False  # local executor: datatrove's full console output (else in the logs folder only)
    inline: bool = False  # CallSteps run in this process (local, ray); on Slurm still a job of the chain


@dataclass
class Submission:
    """One `sbatch` call: the job, its script and the jobs it waits for."""

    job_name: str
    job_id: str
    script: str
    args: list[str] = field(default_factory=list)


class CallStep(PipelineStep):
    """A stage of one task that calls a module-level function (pickles for Slurm jobs)."""

    name = "🏁 finish"
    type = "🏁 - FINISH"

    def __init__(self, fn: Callable[..., Any], *args: Any):
        super().__init__()
        self.fn = fn
        self.args = args

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if data:
            yield from data
        self.fn(*self.args)


def lm_gpus(recipe: Recipe) -> int:
    """GPUs a score task asks for: [curate] gpus_per_task, else 1 when an LM scorer runs off the CPU."""
    cur = recipe.curate
    if cur.gpus_per_task is not None:
        return cur.gpus_per_task
    return 1 if cur.lm_scorers and cur.lm_device != "cpu" else 0


def make_executor(recipe: Recipe, stage: Stage, job_name: str, depends: PipelineExecutor | None = None
                  ) -> PipelineExecutor:
    """The datatrove executor named by [curate] executor for one stage."""
    cur = recipe.curate
    workers = max(1, min(stage.workers, stage.tasks))
    if cur.executor == "local":
        from curate.logs import QuietLocalExecutor  # datatrove's, its console output cut unless verbose

        # never "fork": polars' and tokenizers' thread pools in this process deadlock forked children
        return QuietLocalExecutor(pipeline=stage.steps, tasks=stage.tasks, workers=workers,
                                  logging_dir=str(stage.logging_dir), start_method="forkserver",
                                  verbose=stage.verbose)
    if cur.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        s = cur.slurm
        if not s.partition:
            raise RecipeError("[curate.slurm] partition is required when [curate] executor = \"slurm\"")
        return SlurmPipelineExecutor(
            pipeline=stage.steps, tasks=stage.tasks, workers=workers, logging_dir=str(stage.logging_dir),
            time=s.time, partition=s.partition, cpus_per_task=s.cpus_per_task, mem_per_cpu_gb=s.mem_per_cpu_gb,
            gpus_per_task=stage.gpus_per_task, qos=s.qos, job_name=job_name, sbatch_args=dict(s.sbatch_args),
            venv_path=s.venv_path, env_command=s.env_command,
            max_array_launch_parallel=s.max_array_launch_parallel, depends=depends)
    if cur.executor == "ray":
        from datatrove.executor import RayPipelineExecutor

        r = cur.ray
        return RayPipelineExecutor(
            pipeline=stage.steps, tasks=stage.tasks, workers=workers, logging_dir=str(stage.logging_dir),
            cpus_per_task=r.cpus_per_task, mem_per_cpu_gb=r.mem_per_cpu_gb, gpus_per_task=stage.gpus_per_task,
            nodes_per_task=r.nodes_per_task, tasks_per_job=r.tasks_per_job, time=r.timeout)
    raise RecipeError(f"[curate] executor: unknown executor {cur.executor!r}")


def _check_done(executor: PipelineExecutor, stage: Stage) -> None:
    missing = executor.get_incomplete_ranks(skip_completed=True)
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise StageFailed(f"stage '{stage.name}': {len(missing)} of {stage.tasks} task(s) did not finish "
                          f"({shown}); see {stage.logging_dir / 'logs'}; run the same command again to resume them")


@contextmanager
def ray_cluster(address: str | None) -> Iterator[None]:
    """Connect to [curate.ray] address or RAY_ADDRESS, else start a local cluster (shut down on exit).

    A cluster this process is already connected to (ray.init before) is used as it is."""
    try:
        import ray
    except ImportError as e:
        raise RecipeError("[curate] executor = \"ray\" needs Ray: pip install 'continua[ray]'") from e
    if ray.is_initialized():
        yield
        return
    addr = address or os.environ.get("RAY_ADDRESS") or None
    # a local cluster started here needs no dashboard; options of a running cluster are its own
    ray.init(address=addr, log_to_driver=False, **({} if addr else {"include_dashboard": False}))
    try:
        yield
    finally:
        ray.shutdown()


def run_stages(recipe: Recipe, stages: list[Stage], job_prefix: str, dry_run: Path | None = None) -> None:
    """Run `stages` in order to the end (local, ray); Slurm chains are submitted by curate.slurm.submit_chain."""
    executor = recipe.curate.executor
    if dry_run is not None and executor != "slurm":
        raise RecipeError(f"--dry-run writes Slurm scripts: it needs [curate] executor = \"slurm\" (not {executor!r})")
    if executor == "slurm":
        raise ValueError("run_stages runs stages in this process; submit Slurm stages with curate.slurm.submit_chain")
    with ray_cluster(recipe.curate.ray.address) if executor == "ray" else _nothing():
        for stage in stages:
            if stage.inline:  # a cheap step: here, so its errors reach the user as they are
                for step in stage.steps:
                    step.fn(*step.args)
                continue
            ex = make_executor(recipe, stage, f"{job_prefix}-{stage.name}")
            ex.run()
            _check_done(ex, stage)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def write_submit_script(path: Path, submissions: list[Submission]) -> None:
    """submit.sh: the sbatch calls of a dry run in order, each dependency the job id the earlier call printed."""
    lines = ["#!/bin/bash", "# written by `curate score --dry-run`: submits the jobs below in order", "set -euo pipefail",
             'cd "$(dirname "$0")"']
    ids: dict[str, str] = {}
    for i, sub in enumerate(submissions):
        var = f"JOB_{i}"
        args = []
        for a in sub.args:
            for fake, real in ids.items():
                a = a.replace(fake, "${" + real + "}")
            args.append(a if "${" in a else shlex.quote(a))
        lines.append(f"{var}=$(sbatch --parsable {' '.join(args)} {shlex.quote(sub.script)})")
        lines.append(f"{var}=${{{var}%%;*}}")
        lines.append(f'echo "{sub.job_name}: job ${var}"')
        ids[sub.job_id] = var
    with atomic_open(path) as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o755)
