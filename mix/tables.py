"""Score tables as the planner needs them: lazily scanned, validation held out first, duplicates gone.

Everything here stays a polars LazyFrame until a small result is needed (counts, the validation
documents, the candidate pool with only the columns the plan uses), so a 10-million-row table
plans in seconds and a bounded amount of memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from continua.io import file_sha256
from continua.recipe import SourceConfig
from continua.schema import RecipeError
from curate.table import dedup_path, scan_scores, score_files

KEY = "_key"  # seeded per-document hash: the order of every random choice in the plan
REQUIRED = ("doc_id", "n_tokens", "text_hash")


class PlanError(RecipeError):
    """A plan that cannot be made from these inputs; the message says which source and why."""


@dataclass
class SourceTable:
    """One source's score table, not yet read."""

    name: str
    cfg: SourceConfig
    files: list[Path]
    frame: pl.LazyFrame
    schema: dict[str, pl.DataType]

    @property
    def role(self) -> str:
        return self.cfg.role


def open_table(curate_dir: Path, name: str, cfg: SourceConfig) -> SourceTable:
    """Scan a source's score table; a clear error when it is missing or lacks the contract's columns."""
    try:
        frame = scan_scores(curate_dir, name)
    except FileNotFoundError as e:
        raise PlanError(str(e)) from e
    files = score_files(curate_dir, name)
    marks = dedup_path(curate_dir, name)
    if marks.exists():
        files = files + [marks]
    schema = dict(frame.collect_schema())
    missing = [c for c in REQUIRED if c not in schema]
    if missing:
        raise PlanError(f"source '{name}': score table {files[0].parent} lacks column(s) {', '.join(missing)} "
                        f"(has: {', '.join(schema)})")
    return SourceTable(name, cfg, files, frame, schema)


def describe_inputs(table: SourceTable) -> list[dict]:
    """Provenance of a table: each file with its size and sha256."""
    return [{"source": table.name, "path": str(f), "bytes": f.stat().st_size, "sha256": file_sha256(f)}
            for f in table.files]


def with_key(frame: pl.LazyFrame, seed: int) -> pl.LazyFrame:
    return frame.with_columns(pl.col("doc_id").hash(seed).alias(KEY))


def hold_out(table: SourceTable, seed: int, fraction: float, max_docs: int, min_docs: int
             ) -> tuple[pl.DataFrame, int, int]:
    """(validation docs, documents in the table, tokens in the table): the docs with the smallest
    seeded hash of doc_id, so the split depends only on the ids and the seed, never on the scores."""
    stats = table.frame.select(pl.len().alias("n"), pl.col("n_tokens").sum().alias("t")).collect()
    n, tokens = int(stats["n"][0]), int(stats["t"][0] or 0)
    if n == 0:
        raise PlanError(f"source '{table.name}': the score table has no documents ({table.files[0].parent})")
    k = min(math.ceil(n * fraction), max_docs)
    k = max(k, min_docs)
    if k >= n:
        k = n - 1
        if k < min_docs:
            raise PlanError(f"source '{table.name}': {n} document(s) cannot give {min_docs} validation document(s) "
                            f"and still leave documents to train on")
    valid = (with_key(table.frame.select("doc_id", "n_tokens", "text_hash"), seed)
             .sort([KEY, "doc_id"]).head(k).collect())
    return valid, n, tokens


def eligible(table: SourceTable, valid_ids: pl.Series, valid_hashes: pl.Series, use_marks: bool,
             columns: list[str]) -> tuple[pl.LazyFrame, list[str]]:
    """Training candidates: not held out, not an exact copy of any validation document (in any
    source), and not marked as a duplicate by `curate` (dup_exact true / dup_minhash_keep false)."""
    notes: list[str] = []
    frame = table.frame.filter(~pl.col("doc_id").is_in(valid_ids.implode())
                               & ~pl.col("text_hash").is_in(valid_hashes.implode()))
    if use_marks:
        for col, drop_when in (("dup_exact", True), ("dup_minhash_keep", False)):
            if col not in table.schema:
                continue
            if table.schema[col] != pl.Boolean:
                notes.append(f"column {col} is {table.schema[col]}, not boolean: ignored (exact duplicates are "
                             f"still removed by text_hash)")
                continue
            frame = frame.filter(pl.col(col).fill_null(not drop_when) != drop_when)
            notes.append(f"dropped documents marked {col} = {str(drop_when).lower()}")
    return frame.select(columns), notes


def dedup_pool(frame: pl.LazyFrame, seed: int, dedup: bool) -> pl.LazyFrame:
    """One copy per text_hash (the one with the smallest seeded key), in key order."""
    frame = with_key(frame, seed).sort([KEY, "doc_id"])
    if dedup:
        frame = frame.filter(pl.col("text_hash").is_first_distinct())
    return frame
