"""`curate score`: one datatrove pipeline per source, from reader to score table.

reader -> token count -> fastText scores -> perplexity scores -> heuristic signals -> score writer.
The executor's logging dir (curate/SOURCE/logs) holds datatrove's per-task completion markers, so
a re-run skips finished tasks; every task output is renamed into place only when complete, so a
killed run leaves nothing half-written behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
from datatrove.executor.base import PipelineExecutor
from datatrove.pipeline.base import PipelineStep

from continua.fingerprint import SCORED, finish_scoring, start_scoring
from continua.documents import InputError, expand_inputs
from continua.io import read_json, write_json
from continua.recipe import Recipe, RecipeError
from continua.schema import to_dict
from continua.tokenizer import load_tokenizer
from curate.duplicate_ids import DROPPED, dropped_count, resolve_duplicate_ids
from curate.fasttext_scorer import FastTextScorer
from curate.heuristics import HeuristicSignals
from curate.steps import ScoreWriter, SourceReader, TokenCounter, task_name
from curate.table import dedup_path, source_dir as _source_dir


class ScoreRunError(ValueError):
    """Outputs on disk that do not fit this run (changed settings, broken counts)."""


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
    """datatrove executor named by [curate] executor, with [curate.slurm] / [curate.ray] options."""
    cur = recipe.curate
    if cur.executor == "local":
        from curate.logs import QuietLocalExecutor  # datatrove's, its console output cut unless verbose

        # never "fork": polars' and tokenizers' thread pools in this process deadlock forked children
        return QuietLocalExecutor(pipeline=steps, tasks=tasks, workers=workers, logging_dir=str(logging_dir),
                                  start_method="forkserver", verbose=verbose)
    if cur.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        s = cur.slurm
        if not s.partition:
            raise RecipeError("[curate.slurm] partition is required when [curate] executor = \"slurm\"")
        return SlurmPipelineExecutor(
            pipeline=steps, tasks=tasks, workers=workers, logging_dir=str(logging_dir), time=s.time,
            partition=s.partition, cpus_per_task=s.cpus_per_task, mem_per_cpu_gb=s.mem_per_cpu_gb, qos=s.qos,
            job_name=job_name or s.job_name, sbatch_args=dict(s.sbatch_args), venv_path=s.venv_path,
            max_array_launch_parallel=s.max_array_launch_parallel)
    if cur.executor == "ray":
        from datatrove.executor import RayPipelineExecutor

        r = cur.ray
        return RayPipelineExecutor(
            pipeline=steps, tasks=tasks, workers=workers, logging_dir=str(logging_dir),
            cpus_per_task=r.cpus_per_task, mem_per_cpu_gb=r.mem_per_cpu_gb, nodes_per_task=r.nodes_per_task,
            tasks_per_job=r.tasks_per_job, time=r.timeout)
    raise RecipeError(f"[curate] executor: unknown executor {cur.executor!r}")


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
        for sub in ("scores", "rejects", "tasks", "logs", "dedup", "dedup.parquet", "stats.json", "run.json",
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
        raise ScoreRunError(f"{folder}: tasks {missing} have not finished; re-run `curate score` to complete them")
    rejected["duplicate_id"] += dropped_count(folder)  # later copies of repeated ids (keep-first)
    rejected += Counter()  # drops zero counts
    n_rejected = sum(rejected.values())
    if documents_in != scored + n_rejected:
        raise ScoreRunError(f"{folder}: documents_in {documents_in} != scored {scored} + rejected {n_rejected}")
    stats = {"source": source, "tasks": tasks, "documents_in": documents_in, "scored": scored,
             "rejected": n_rejected, "rejected_by_reason": dict(sorted(rejected.items()))}
    write_json(folder / "stats.json", stats)
    return stats


def score_source(recipe: Recipe, source: str, curate_dir: Path, tasks: int, workers: int,
                 restart: bool = False, show_progress: bool = True, verbose: bool = False) -> dict[str, Any] | None:
    """Score one source; returns its stats (None when a cluster executor only submitted the jobs)."""
    if source not in recipe.data.sources:
        raise RecipeError(f"no source '{source}' in [data.sources] (known: {', '.join(recipe.data.sources)})")
    preflight(source, recipe)
    folder = _source_dir(curate_dir, source)
    steps = build_steps(recipe, source, folder, show_progress=show_progress)
    prepare_folder(folder, fingerprint(recipe, source, tasks), restart)
    inputs = start_scoring(folder, [p for p, _, _ in expand_inputs(recipe.data.sources[source])])
    executor = build_executor(recipe, steps, folder / "logs", tasks, workers, job_name=f"curate-{source}",
                              verbose=verbose)
    executor.run()
    if recipe.curate.executor != "local":
        return None
    resolve_duplicate_ids(recipe, source, folder, tasks)
    stats = collect_stats(folder, source, tasks)
    if recipe.curate.dedup:
        from curate.dedup import mark_duplicates

        mark_duplicates(recipe, source, curate_dir, tasks, workers)
    outputs = [folder / "scores" / f"{task_name(r)}.parquet" for r in range(tasks)]
    finish_scoring(folder, inputs, outputs + [dedup_path(curate_dir, source)] * bool(recipe.curate.dedup),
                   {"dedup": list(recipe.curate.dedup)})
    return stats
