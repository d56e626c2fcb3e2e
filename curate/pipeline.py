"""`curate score`: one datatrove pipeline per source, from reader to score table, then dedup and stats.

reader -> token count -> fastText scores -> perplexity scores -> heuristic signals -> score writer,
then the MinHash stages when enabled, then stats.json and dedup.parquet; every stage runs on the
recipe's executor (curate.executors). The logging dirs (curate/SOURCE/logs, ...) hold datatrove's
outputs are kept per piece of the source (curate.pieces), so a re-run scores only the pieces not
scored yet: those of an interrupted run, and those of files added or edited since (removed files'
outputs are dropped); MinHash, duplicate ids, stats and the marks are then made again over all
pieces, equal to a fresh run's. Every output is renamed into place only when complete, so a killed
run leaves nothing half-written behind. One run at a time writes a source folder (continua.lock).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from datatrove.executor.base import PipelineExecutor
from datatrove.pipeline.base import PipelineStep

from continua import fingerprint as fp
from continua.documents import InputError, expand_inputs
from continua.exitcodes import RunFailure
from continua.fingerprint import SCORED, finish_scoring
from continua.io import read_json, write_json
from continua.lock import locked
from continua.recipe import Recipe, RecipeError
from continua.schema import to_dict
from continua.score_table import DROPPED, dedup_path, dropped_path, source_dir as _source_dir
from continua.tokenizer import load_tokenizer
from curate.duplicate_ids import dropped_count, dropped_files, resolve_duplicate_ids
from curate.executors import CallStep, Stage, Submission, lm_gpus, make_executor, run_stages
from curate.fasttext_scorer import FastTextScorer
from curate.heuristics import HeuristicSignals
from curate.pieces import (COUNTS, INDEX, REJECTS, SCORES, Work, clear, counts_path, fresh_work, last_inputs,
                           plan_work, table_path)
from curate.rejects import fill_reject_lines
from curate.steps import ScoreWriter, SourceReader, TokenCounter


FINISH_LOGS = "logs-finish"  # completion marker of the Slurm finish job (stats + dup marks)
IDS_LOGS = "logs-ids"  # completion marker of the repeated-ids stage


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


def build_steps(recipe: Recipe, source: str, folder: Path, work: Work | None = None, show_progress: bool = True
                ) -> list[PipelineStep]:
    """The score pipeline of the pieces `work.todo` of one source (default: all of them); models are
    checked here and loaded lazily in the workers."""
    cur = recipe.curate
    work = work or fresh_work(recipe.data.sources[source])
    steps: list[PipelineStep] = [SourceReader(source, recipe.data.sources[source], folder, work.todo)]
    if recipe.data.tokenizer is not None:
        steps.append(TokenCounter(load_tokenizer(recipe.data.tokenizer), cur.batch_size))
    for name, model in sorted(cur.classifiers.items()):
        scorer = FastTextScorer(name, model, cur.positive_label, cur.batch_size)
        scorer.check()
        steps.append(scorer)
    steps.extend(perplexity_steps(recipe))
    for group in cur.heuristics:
        steps.append(HeuristicSignals(group, cur.word_tokenizer))
    steps.append(ScoreWriter(folder, work.todo, show_progress=show_progress))
    return steps


def build_executor(recipe: Recipe, steps: list[PipelineStep], logging_dir: Path, tasks: int, workers: int,
                   job_name: str | None = None, verbose: bool = False) -> PipelineExecutor:
    """datatrove executor named by [curate] executor for the score stage (curate.executors.make_executor)."""
    stage = Stage("score", steps, tasks, workers, Path(logging_dir), gpus_per_task=lm_gpus(recipe), verbose=verbose)
    return make_executor(recipe, stage, job_name or recipe.curate.slurm.job_name)


# [curate] keys that change how the work runs, not what the score table holds
_NOT_CONTENT = {"tasks", "workers", "executor", "slurm", "ray", "out", "dedup", "minhash", "batch_size", "buckets",
                "lm_device"}


def settings(recipe: Recipe, source: str) -> dict[str, Any]:
    """Everything that changes every score of a source: a re-run may only add to a table made with equal
    settings. The source's files are not here (they are kept track of per piece), nor the task count,
    executor or piece size."""
    cur = recipe.curate
    # paths and piece_bytes only decide which pieces there are: pieces are kept, added and dropped by key
    cfg = {k: v for k, v in to_dict(recipe.data.sources[source]).items() if k not in ("paths", "piece_bytes")}
    return {
        "source": cfg,
        "tokenizer": str(recipe.data.tokenizer) if recipe.data.tokenizer else None,
        # by content: a model file copied or restored unchanged is the same model (missing: named by its check)
        "classifier_files": {k: fp.hash_file(v) if Path(v).exists() else "missing"
                             for k, v in sorted(cur.classifiers.items())},
        "curate": {k: v for k, v in to_dict(cur).items() if k not in _NOT_CONTENT},
    }


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flat(val, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): obj}


def changed_settings(old: dict, new: dict) -> list[str]:
    """Dotted names of the settings that differ (`curate.heuristics`, `source.text_field`, ...)."""
    a, b = _flat(json.loads(json.dumps(old, default=str))), _flat(json.loads(json.dumps(new, default=str)))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def prepare_folder(folder: Path, fp_settings: dict, restart: bool) -> None:
    """Start afresh on --restart; refuse to mix outputs of different settings into one table."""
    run_file = folder / "run.json"
    if restart and folder.exists():
        for sub in (SCORES, REJECTS, COUNTS, "tasks", "logs", FINISH_LOGS, IDS_LOGS, "dedup", "dedup.parquet",
                    "stats.json", "run.json", "selection.parquet", SCORED, DROPPED, INDEX):
            clear(folder / sub)
    if run_file.exists() and (folder / "tasks").is_dir() and not (folder / COUNTS).is_dir():
        raise ScoreRunError(f"{folder}: scores made by an older `curate score` (one table per task, not per piece); "
                            f"re-run with --restart to score afresh")
    if run_file.exists():
        old = read_json(run_file)
        if old.get("digest") != _digest(fp_settings):
            changed = changed_settings(old.get("settings", {}), fp_settings)
            raise ScoreRunError(f"{folder}: existing scores were made with other settings (changed: "
                                f"{', '.join(changed) or 'unknown'}); every score depends on them: re-run with "
                                f"--restart to score afresh")
    else:
        write_json(run_file, {"digest": _digest(fp_settings), "settings": fp_settings})


def collect_stats(folder: Path, source: str, keys: list[str]) -> dict[str, Any]:
    """Sum per-piece counts into stats.json and check documents_in == scored + rejected."""
    documents_in = 0
    rejected: Counter[str] = Counter()
    scored = 0
    missing = []
    for key in keys:
        counts = counts_path(folder, key)
        table = table_path(folder, key)
        if not counts.exists() or not table.exists():
            missing.append(key)
            continue
        c = read_json(counts)
        documents_in += c["documents_in"]
        rejected.update(c["rejected"])
        scored += pl.scan_parquet(table).select(pl.len()).collect().item()
    if missing:
        raise ScoreCountsError(f"{folder}: {len(missing)} piece(s) were not scored (first: {missing[0]}); re-run "
                            f"`curate score` to complete them")
    rejected["duplicate_id"] += dropped_count(folder)  # later copies of repeated ids (keep-first)
    rejected += Counter()  # drops zero counts
    n_rejected = sum(rejected.values())
    if documents_in != scored + n_rejected:
        raise ScoreCountsError(f"{folder}: documents_in {documents_in} != scored {scored} + rejected {n_rejected}")
    stats = {"source": source, "pieces": len(keys), "documents_in": documents_in, "scored": scored,
             "rejected": n_rejected, "rejected_by_reason": dict(sorted(rejected.items()))}
    write_json(folder / "stats.json", stats)
    return stats


def score_stages(recipe: Recipe, source: str, curate_dir: Path, tasks: int, workers: int, work: Work,
                 show_progress: bool = True, verbose: bool = False) -> list[Stage]:
    """score (N tasks, over the pieces to score) -> repeated ids -> MinHash signatures -> buckets ->
    clusters: the datatrove stages of one source."""
    folder = _source_dir(curate_dir, source)
    stages = []
    if work.todo:
        steps = build_steps(recipe, source, folder, work, show_progress=show_progress)
        stages.append(Stage("score", steps, tasks, workers, folder / "logs", gpus_per_task=lm_gpus(recipe),
                            verbose=verbose))
    if recipe.data.sources[source].id_field is not None:  # before MinHash: it re-reads what the tables keep
        stages.append(Stage("ids", [CallStep(resolve_duplicate_ids, recipe, source, folder, work.keys)], 1, 1,
                            folder / IDS_LOGS, inline=True))
    if "minhash" in recipe.curate.dedup:
        from curate.dedup import minhash_stages, prepare_minhash

        prepare_minhash(recipe, curate_dir, source, work)
        stages += minhash_stages(recipe, source, curate_dir, tasks, workers, work, verbose=verbose)
    return stages


def finish_source(recipe: Recipe, source: str, curate_dir: Path, work: Work) -> dict[str, Any]:
    """The last stage: repeated ids resolved, stats.json (checked counts), the duplicate marks
    (dedup.parquet), then fingerprint.json, written last so it exists only after a complete run.
    `work.inputs` are the source files' fingerprints taken when the run started."""
    folder = _source_dir(curate_dir, source)
    resolve_duplicate_ids(recipe, source, folder, work.keys)
    stats = collect_stats(folder, source, work.keys)
    fill_reject_lines(folder)
    if recipe.curate.dedup:
        from curate.dedup import write_marks

        write_marks(recipe, source, curate_dir, work.keys)
    outputs = [table_path(folder, k) for k in work.keys]
    finish_scoring(folder, work.inputs, outputs + [dedup_path(curate_dir, source)] * bool(recipe.curate.dedup),
                   {"dedup": list(recipe.curate.dedup)}, work.records())
    return stats


def start_work(recipe: Recipe, source: str, folder: Path) -> Work:
    """Fingerprint the source's files (hashes reused while a file's stat is unchanged) and find the pieces
    to score. Pieces whose table lost a repeated id's copy are scored again when the source changed:
    which copy comes first may have changed with it."""
    (folder / SCORED).unlink(missing_ok=True)  # the old record goes until this run completes
    cfg = recipe.data.sources[source]
    inputs = fp.fingerprints([p for p, _, _ in expand_inputs(cfg)], last_inputs(folder))
    work = plan_work(folder, cfg, inputs)
    if work.changed and dropped_path(folder).exists():
        files = dropped_files(folder)
        dropped_path(folder).unlink()
        (folder / REJECTS / "duplicate_ids.jsonl").unlink(missing_ok=True)
        work = plan_work(folder, cfg, inputs, rescore_files=files)
    for sub in ("logs", IDS_LOGS, FINISH_LOGS):  # tasks find their own pieces to do: none is "complete" by rank
        clear(folder / sub / "completions")
    return work


@dataclass
class SourceRun:
    """What `curate score` did for one source: its stats (run to the end) or the Slurm jobs submitted."""

    stats: dict[str, Any] | None
    submissions: list[Submission] = field(default_factory=list)
    scored_pieces: list[str] = field(default_factory=list)  # keys of the pieces this run read and scored


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
        prepare_folder(folder, settings(recipe, source), restart)
        work = start_work(recipe, source, folder)
        stages = score_stages(recipe, source, curate_dir, tasks, workers, work, show_progress, verbose)
        if recipe.curate.executor == "slurm":
            # the finish job always runs again (one cheap task): dedup settings may have changed since
            stages.append(Stage("finish", [CallStep(finish_source, recipe, source, curate_dir, work)], 1, 1,
                                folder / FINISH_LOGS))
            target = None if dry_run is None else Path(dry_run) / source
            from curate.slurm import submit_chain

            return SourceRun(None, submit_chain(recipe, stages, f"curate-{source}", target))
        run_stages(recipe, stages, f"curate-{source}", dry_run)
        return SourceRun(finish_source(recipe, source, curate_dir, work), scored_pieces=[k for k, _ in work.todo])


def score_source(recipe: Recipe, source: str, curate_dir: Path, tasks: int, workers: int,
                 restart: bool = False, show_progress: bool = True, verbose: bool = False) -> dict[str, Any] | None:
    """Score one source; returns its stats (None when Slurm jobs were only submitted)."""
    return run_source(recipe, source, curate_dir, tasks, workers, restart, show_progress, verbose=verbose).stats
