"""`curate score`: one datatrove pipeline per source, from reader to score table, then dedup and stats.

reader -> token count -> fastText scores -> perplexity scores -> heuristic signals -> score writer,
then the MinHash stages when enabled, then stats.json and dedup.parquet; every stage runs on the
recipe's executor (curate.executors). The logging dirs (curate/SOURCE/logs, ...) hold datatrove's
per-task completion markers, so a re-run skips finished tasks; every task output is renamed into
place only when complete, so a killed run leaves nothing half-written behind. One run at a time
writes a source folder (continua.lock).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from datatrove.executor.base import PipelineExecutor
from datatrove.pipeline.base import PipelineStep

from continua.documents import InputError, expand_inputs
from continua.exitcodes import RunFailure
from continua.fingerprint import SCORED, finish_scoring, start_scoring
from continua.io import read_json, write_json
from continua.lock import locked
from continua.recipe import Recipe, RecipeError
from continua.schema import to_dict
from continua.score_table import DROPPED, dedup_path, source_dir as _source_dir
from continua.tokenizer import load_tokenizer
from curate.duplicate_ids import dropped_count, resolve_duplicate_ids
from curate.executors import CallStep, Stage, Submission, lm_gpus, make_executor, run_stages
from curate.fasttext_scorer import FastTextScorer
from curate.heuristics import HeuristicSignals
from curate.rejects import fill_reject_lines
from curate.steps import ScoreWriter, SourceReader, TokenCounter, task_name


FINISH_LOGS = "logs-finish"  # completion marker of the Slurm finish job (stats + dup marks)


class ScoreRunError(ValueError):
    """Outputs on disk that do not fit this run's settings: found before any work starts."""


class ScoreCountsError(RunFailure):
    """Task outputs missing or not adding up once the stages have run."""


def preflight(source: str, recipe: Recipe) -> None:
    """Fail in the main process, naming the file, before any worker starts."""
    cfg = recipe.data.sources[source]
    for path, fmt, _ in expand_inputs(cfg):
        if fmt == "jsonl" and path.stat().st_size == 0:
            raise InputError(f"{path}: input file is empty (no lines)")


def perplexity_steps(recipe: Recipe) -> list[PipelineStep]:
    """ppl_ngram_* / ppl_lm_* scorers of [curate] ngram_references and lm_scorers (curate.perplexity)."""
    cur = recipe.curate
    if not getattr(cur, "ngram_references", None) and not getattr(cur, "lm_scorers", None):
        return []  # skip importing torch/transformers when no perplexity scorer is configured
    from curate.perplexity import perplexity_steps as build

    return build(cur)


def build_steps(recipe: Recipe, source: str, folder: Path, show_progress: bool = True) -> list[PipelineStep]:
    """The score pipeline of one source; models are checked here and loaded lazily in the workers."""
    cur = recipe.curate
    steps: list[PipelineStep] = [SourceReader(source, recipe.data.sources[source], folder)]
    if recipe.data.tokenizer is not None:
        steps.append(TokenCounter(load_tokenizer(recipe.data.tokenizer), cur.batch_size))
    for name, model in sorted(cur.classifiers.items()):
        scorer = FastTextScorer(name, model, cur.positive_label, cur.batch_size)
        scorer.check()
        steps.append(scorer)
    steps.extend(perplexity_steps(recipe))
    for group in cur.heuristics:
        steps.append(HeuristicSignals(group, cur.word_tokenizer))
    steps.append(ScoreWriter(folder, show_progress=show_progress))
    return steps


def build_executor(recipe: Recipe, steps: list[PipelineStep], logging_dir: Path, tasks: int, workers: int,
                   job_name: str | None = None, verbose: bool = False) -> PipelineExecutor:
    """datatrove executor named by [curate] executor for the score stage (curate.executors.make_executor)."""
    stage = Stage("score", steps, tasks, workers, Path(logging_dir), gpus_per_task=lm_gpus(recipe), verbose=verbose)
    return make_executor(recipe, stage, job_name or recipe.curate.slurm.job_name)


# [curate] keys that change how the work runs, not what the score table holds
_NOT_CONTENT = {"tasks", "workers", "executor", "slurm", "ray", "out", "dedup", "minhash", "batch_size", "buckets",
                "lm_device"}


def _file_stamp(path: Path) -> str:
    st = Path(path).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def fingerprint(recipe: Recipe, source: str, tasks: int) -> dict[str, Any]:
    """Everything that changes a score table's content: a re-run may only resume on an equal one."""
    cur = recipe.curate
    cfg = recipe.data.sources[source]
    inputs = {str(p): _file_stamp(p) if p.is_file() else "dir" for p, _, _ in expand_inputs(cfg)}
    return {
        "source": to_dict(cfg),
        "inputs": inputs,
        "tasks": tasks,
        "tokenizer": str(recipe.data.tokenizer) if recipe.data.tokenizer else None,
        "classifier_files": {k: _file_stamp(v) for k, v in sorted(cur.classifiers.items())},
        "curate": {k: v for k, v in to_dict(cur).items() if k not in _NOT_CONTENT},
    }


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_folder(folder: Path, fp: dict, restart: bool) -> None:
    """Start afresh on --restart; refuse to mix outputs of different settings into one table."""
    run_file = folder / "run.json"
    if restart and folder.exists():
        for sub in ("scores", "rejects", "tasks", "logs", FINISH_LOGS, "dedup", "dedup.parquet", "stats.json", "run.json",
                    "selection.parquet", SCORED, DROPPED):
            p = folder / sub
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    if run_file.exists():
        old = read_json(run_file)
        if old.get("digest") != _digest(fp):
            changed = sorted(k for k in fp if old.get("settings", {}).get(k) != json.loads(json.dumps(fp[k], default=str)))
            raise ScoreRunError(f"{folder}: existing scores were made with other settings (changed: "
                                f"{', '.join(changed) or 'unknown'}); re-run with --restart to score afresh")
    else:
        write_json(run_file, {"digest": _digest(fp), "settings": fp})


def collect_stats(folder: Path, source: str, tasks: int) -> dict[str, Any]:
    """Sum per-task counts into stats.json and check documents_in == scored + rejected."""
    documents_in = 0
    rejected: Counter[str] = Counter()
    scored = 0
    missing = []
    for rank in range(tasks):
        counts = folder / "tasks" / f"{task_name(rank)}.json"
        table = folder / "scores" / f"{task_name(rank)}.parquet"
        if not counts.exists() or not table.exists():
            missing.append(rank)
            continue
        c = read_json(counts)
        documents_in += c["documents_in"]
        rejected.update(c["rejected"])
        scored += pl.scan_parquet(table).select(pl.len()).collect().item()
    if missing:
        raise ScoreCountsError(f"{folder}: tasks {missing} have not finished; re-run `curate score` to complete them")
    rejected["duplicate_id"] += dropped_count(folder)  # later copies of repeated ids (keep-first)
    rejected += Counter()  # drops zero counts
    n_rejected = sum(rejected.values())
    if documents_in != scored + n_rejected:
        raise ScoreCountsError(f"{folder}: documents_in {documents_in} != scored {scored} + rejected {n_rejected}")
    stats = {"source": source, "tasks": tasks, "documents_in": documents_in, "scored": scored,
             "rejected": n_rejected, "rejected_by_reason": dict(sorted(rejected.items()))}
    write_json(folder / "stats.json", stats)
    return stats


def score_stages(recipe: Recipe, source: str, curate_dir: Path, tasks: int, workers: int,
                 show_progress: bool = True, verbose: bool = False) -> list[Stage]:
    """score (N tasks) -> MinHash signatures -> buckets -> clusters: the datatrove stages of one source."""
    folder = _source_dir(curate_dir, source)
    steps = build_steps(recipe, source, folder, show_progress=show_progress)
    stages = [Stage("score", steps, tasks, workers, folder / "logs", gpus_per_task=lm_gpus(recipe), verbose=verbose)]
    if "minhash" in recipe.curate.dedup:
        from curate.dedup import minhash_stages

        stages += minhash_stages(recipe, source, curate_dir, tasks, workers, verbose=verbose)
    return stages


def finish_source(recipe: Recipe, source: str, curate_dir: Path, tasks: int, inputs: list[dict]) -> dict[str, Any]:
    """The last stage: repeated ids resolved, stats.json (checked counts), the duplicate marks
    (dedup.parquet), then fingerprint.json, written last so it exists only after a complete run.
    `inputs` are the source files' fingerprints taken when scoring started."""
    folder = _source_dir(curate_dir, source)
    resolve_duplicate_ids(recipe, source, folder, tasks)
    stats = collect_stats(folder, source, tasks)
    fill_reject_lines(folder)
    if recipe.curate.dedup:
        from curate.dedup import write_marks

        write_marks(recipe, source, curate_dir, tasks)
    outputs = [folder / "scores" / f"{task_name(r)}.parquet" for r in range(tasks)]
    finish_scoring(folder, inputs, outputs + [dedup_path(curate_dir, source)] * bool(recipe.curate.dedup),
                   {"dedup": list(recipe.curate.dedup)})
    return stats


@dataclass
class SourceRun:
    """What `curate score` did for one source: its stats (run to the end) or the Slurm jobs submitted."""

    stats: dict[str, Any] | None
    submissions: list[Submission] = field(default_factory=list)


def run_source(recipe: Recipe, source: str, curate_dir: Path, tasks: int, workers: int, restart: bool = False,
               show_progress: bool = True, dry_run: Path | None = None, verbose: bool = False) -> SourceRun:
    """Score, dedup and stats of one source on the recipe's executor, holding the source folder's lock.

    local and ray run every stage to the end here; slurm submits them as dependent jobs (the last
    one writes stats.json and dedup.parquet), or with `dry_run` only writes the scripts."""
    if source not in recipe.data.sources:
        raise RecipeError(f"no source '{source}' in [data.sources] (known: {', '.join(recipe.data.sources)})")
    preflight(source, recipe)
    folder = _source_dir(curate_dir, source)
    if recipe.curate.executor == "slurm":  # before the lock writes there: a clear error for unwritable folders
        from curate.slurm import check_shared

        check_shared([folder], lambda m: None)
    with locked(folder, f"curate score {source}"):
        stages = score_stages(recipe, source, curate_dir, tasks, workers, show_progress, verbose)
        prepare_folder(folder, fingerprint(recipe, source, tasks), restart)
        inputs = start_scoring(folder, [p for p, _, _ in expand_inputs(recipe.data.sources[source])])
        if recipe.curate.executor == "slurm":
            # the finish job always runs again (one cheap task): dedup settings may have changed since
            shutil.rmtree(folder / FINISH_LOGS / "completions", ignore_errors=True)
            stages.append(Stage("finish", [CallStep(finish_source, recipe, source, curate_dir, tasks, inputs)], 1, 1,
                                folder / FINISH_LOGS))
            target = None if dry_run is None else Path(dry_run) / source
            from curate.slurm import submit_chain

            return SourceRun(None, submit_chain(recipe, stages, f"curate-{source}", target))
        run_stages(recipe, stages, f"curate-{source}", dry_run)
        return SourceRun(finish_source(recipe, source, curate_dir, tasks, inputs))


def score_source(recipe: Recipe, source: str, curate_dir: Path, tasks: int, workers: int,
                 restart: bool = False, show_progress: bool = True, verbose: bool = False) -> dict[str, Any] | None:
    """Score one source; returns its stats (None when Slurm jobs were only submitted)."""
    return run_source(recipe, source, curate_dir, tasks, workers, restart, show_progress, verbose=verbose).stats
