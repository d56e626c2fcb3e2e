"""The score table, the contract between curate and mix: `curate score` writes it, `mix plan` reads it.

One Parquet file per piece of the input (curate.pieces) under curate/SOURCE/scores/, read back as one lazy polars frame;
the columns and the files beside it are described in docs/formats.md ("Score table").
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from continua.io import check_parquet

BASE_COLUMNS = ("doc_id", "source", "path", "row", "n_chars", "n_tokens", "text_hash")
# their types; each scorer adds columns of its own (fasttext_NAME, ppl_ngram_NAME, heur_GROUP_pass, ...)
BASE_SCHEMA = dict(zip(BASE_COLUMNS, (pl.String, pl.String, pl.String, pl.Int64, pl.Int64, pl.Int64, pl.String)))
# later copies of repeated id_field values, left out of the score files (`duplicate_ids = "keep-first"`)
DROPPED = "duplicate_ids.parquet"


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


def dropped_path(folder: Path) -> Path:
    return Path(folder) / DROPPED


def dropped_rows(folder: Path) -> set[tuple[str, int]]:
    """(path, row) of the dropped copies of repeated ids, for readers that must skip them."""
    f = dropped_path(folder)
    if not f.exists():
        return set()
    frame = pl.read_parquet(f, columns=["path", "row"])
    return set(zip(frame["path"].to_list(), frame["row"].to_list()))


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
