"""The score table: one Parquet file per curate task, read back as one lazy polars frame."""

from __future__ import annotations

from pathlib import Path

import polars as pl

BASE_COLUMNS = ("doc_id", "source", "path", "row", "n_chars", "n_tokens", "text_hash")


def scores_folder(curate_dir: Path, source: str) -> Path:
    return Path(curate_dir) / source / "scores"


def score_files(curate_dir: Path, source: str) -> list[Path]:
    return sorted(scores_folder(curate_dir, source).glob("*.parquet"))


def scan_scores(curate_dir: Path, source: str) -> pl.LazyFrame:
    """All scored documents of a source; a clear error when `curate score` has not run for it."""
    files = score_files(curate_dir, source)
    if not files:
        raise FileNotFoundError(f"no score table for source '{source}' under {scores_folder(curate_dir, source)}: "
                                f"run `curate score` first")
    return pl.scan_parquet(files)
