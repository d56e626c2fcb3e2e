"""`mix build` on a cluster: one datatrove task per piece of the plan, then one merge task.

The stages run on the executor curation uses (curate.executors): Ray runs both to the end from
this command; Slurm gets two job arrays, the merge waiting for every tokenize task
(`--dependency=afterok`), or with `dry_run` only their scripts and a `submit.sh`. Each task
tokenizes its piece into the piece's work folder (mix.build.Builder.tokenize_piece); the merge
writes the shards and the manifest exactly as a build on one machine would.

Resume is by the pieces' own `done.json` markers (they name the plan), not by datatrove's
completion markers, which count task numbers: a new plan renumbers the pieces, so those are
cleared before every launch.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from datatrove.pipeline.base import PipelineStep

from continua.recipe import Recipe, RecipeError
from curate.executors import CallStep, Stage, Submission, run_stages
from mix.build import Builder, PieceJob

LOGS = "build-logs"  # mix/build-logs/{tokenize,merge}: datatrove's logs of the two stages


class TokenizePieces(PipelineStep):
    """Task `rank` tokenizes the pieces rank, rank + world_size, ... of the jobs (one each when tasks = pieces)."""

    name = "🔤 tokenize pieces"
    type = "🔢 - TOKENIZER"

    def __init__(self, builder: Builder, jobs: list[PieceJob], threads: bool):
        super().__init__()
        self.builder = builder
        self.jobs = jobs
        self.threads = threads  # False: a task has one CPU, so the tokenizer must not start a thread per core

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if data:
            yield from data
        if not self.threads:
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        for job in self.jobs[rank::world_size]:
            self.builder.tokenize_piece(job, workers=1)
            self.stat_update("pieces")


def _merge(builder: Builder) -> None:
    builder.finish()


def on_executor(recipe: Recipe, executor: str) -> Recipe:
    """The recipe with [curate] executor set to the one `mix build` runs on (its [curate.ray]/[curate.slurm] apply)."""
    return recipe.replace(curate=dataclasses.replace(recipe.curate, executor=executor))


def build_stages(builder: Builder, jobs: list[PieceJob], workers: int, cpus_per_task: int) -> list[Stage]:
    """tokenize (one task per piece still to do; none when all are done) -> merge (one task)."""
    logs = builder.mix_dir / LOGS
    for stage in ("tokenize", "merge"):  # task numbers mean other pieces under another plan: never skip by them
        shutil.rmtree(logs / stage / "completions", ignore_errors=True)
    stages = []
    if jobs:
        stages.append(Stage("tokenize", [TokenizePieces(builder, jobs, threads=cpus_per_task > 1)], len(jobs),
                            max(1, min(workers, len(jobs))), logs / "tokenize"))
    stages.append(Stage("merge", [CallStep(_merge, builder)], 1, 1, logs / "merge"))
    return stages


def build_on_executor(recipe: Recipe, executor: str, workers: int | None = None, dry_run: Path | None = None,
                      log=print) -> tuple[Path | None, list[Submission]]:
    """Build the plan's shards on `executor` ("ray" or "slurm"). Returns the manifest path (Ray: built
    to the end) or None and the Slurm submissions (the manifest appears when the merge job ends)."""
    if executor == "slurm" and not recipe.curate.slurm.partition:  # before anything on disk is touched
        raise RecipeError("[curate.slurm] partition is required when `mix build` runs on Slurm")
    recipe = on_executor(recipe, executor)
    builder = Builder(recipe, workers, log)
    jobs = builder.prepare()
    log(f"{len(jobs)} piece(s) to tokenize on {executor}")
    cpus = recipe.curate.ray.cpus_per_task if executor == "ray" else recipe.curate.slurm.cpus_per_task
    stages = build_stages(builder, jobs, workers or recipe.mix.workers or len(jobs) or 1, cpus)
    if executor == "slurm":
        from curate.slurm import submit_chain

        return None, submit_chain(recipe, stages, "mix-build", dry_run)
    run_stages(recipe, stages, "mix-build", dry_run)
    return builder.out / "manifest.json", []
