"""The score table: one Parquet file per curate task, read back as one lazy polars frame."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from continua.io import check_parquet

BASE_COLUMNS = ("doc_id", "source", "path", "row", "n_chars", "n_tokens", "text_hash")


def text_hash(text: str) -> str:
    """Hex of a 64-bit BLAKE2b digest of the UTF-8 text: equal texts, equal hashes (exact dedup)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def source_dir(curate_dir: Path, source: str) -> Path:
    return Path(curate_dir) / source


def dedup_path(curate_dir: Path, source: str) -> Path:
    """Sibling of the score table with duplicate marks (doc_id, dup_exact, dup_minhash_*)."""
    return Path(curate_dir) / source / "dedup.parquet"


def selection_path(curate_dir: Path, source: str) -> Path:
    return Path(curate_dir) / source / "selection.parquet"


def scores_folder(curate_dir: Path, source: str) -> Path:
    return Path(curate_dir) / source / "scores"


def score_files(curate_dir: Path, source: str) -> list[Path]:
    return sorted(scores_folder(curate_dir, source).glob("*.parquet"))


def scan_scores(curate_dir: Path, source: str) -> pl.LazyFrame:
    """All scored documents of a source (with duplicate marks joined when `dedup.parquet` exists);
    a clear error when `curate score` has not run for it."""
    files = score_files(curate_dir, source)
    if not files:
        raise FileNotFoundError(f"no score table for source '{source}' under {scores_folder(curate_dir, source)}: "
                                f"run `curate score` first")
    marks = dedup_path(curate_dir, source)
    for f in files + [marks] * marks.exists():
        check_parquet(f, "re-run `curate score --restart`")
    # tasks that saw no documents have only the base columns: concatenate diagonally
    frame = pl.concat([pl.scan_parquet(f) for f in files], how="diagonal_relaxed")
    if marks.exists():
        # the score files' row order is kept: mix numbers rows once and finds them again in later scans
        frame = frame.join(pl.scan_parquet(marks), on="doc_id", how="left", maintain_order="left")
    return frame
