"""Repeated `id_field` values, found across every task's score table once all tasks have finished.

Ids a source builds itself (`FILE#ROW`, `FILE@OFFSET`) are unique by construction; ids taken from
the data (`id_field`) may repeat, and a repeated id would make later stages pick texts at random.
`duplicate_ids = "error"` (the default) stops `curate score` with examples; `"keep-first"` keeps
the first copy in input order (file order, then row: the copy `mix build` reads back by that id)
and turns every later copy into a `duplicate_id` reject:

- curate/SOURCE/duplicate_ids.parquet lists the dropped copies (doc_id, path, row); it is written
  first, and the steps after it only follow it, so an interrupted run resumes to the same result;
- the score tables are rewritten without them, rejects/duplicate_ids.jsonl names each one, and
  stats.json counts them as rejected (documents_in = scored + rejected still holds);
- the MinHash re-read skips them too (curate.steps.SourceReader), so its document indices still
  match the score tables' rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from continua.documents import line_numbers
from continua.exitcodes import RunFailure
from continua.io import atomic_open, atomic_path
from continua.partition import plan_pieces
from continua.recipe import Recipe
from continua.score_table import dropped_path, dropped_rows
from curate.dedup import _order_key
from curate.pieces import table_path

EXAMPLES = 3


class DuplicateIdError(RunFailure):
    """id_field values that repeat where the recipe asks for unique ones (found once every task has scored)."""


def dropped_count(folder: Path) -> int:
    """Later copies rejected as duplicate ids (0 when none were, or the source has no id_field)."""
    f = dropped_path(folder)
    return pl.scan_parquet(f).select(pl.len()).collect().item() if f.exists() else 0


def dropped_files(folder: Path) -> set[str]:
    """Files holding a dropped copy: their pieces' tables were rewritten without it."""
    return {path for path, _ in dropped_rows(folder)}


def _repeats(recipe: Recipe, source: str, tables: list[Path]) -> pl.DataFrame:
    """Every copy of each repeated id, with `_order` (input order), first copies first."""
    scores = pl.concat([pl.scan_parquet(t).select("doc_id", "path", "row") for t in tables])
    repeated = scores.group_by("doc_id").agg(pl.len().alias("_n")).filter(pl.col("_n") > 1).select("doc_id")
    return (_order_key(scores.join(repeated, on="doc_id", how="semi"), recipe, source)
            .sort("doc_id", "_order").collect())


def resolve_duplicate_ids(recipe: Recipe, source: str, folder: Path, keys: list[str]) -> int:
    """Check (or, with keep-first, resolve) repeated ids over the tables of the pieces `keys`; returns the
    number of copies dropped."""
    cfg = recipe.data.sources[source]
    folder = Path(folder)
    tables = [table_path(folder, k) for k in keys]
    if cfg.id_field is None or not all(t.exists() for t in tables):
        return 0  # unique by construction / unfinished tasks: collect_stats names those
    if not dropped_path(folder).exists():
        copies = _repeats(recipe, source, tables)
        if copies.height == 0:
            return 0
        if cfg.duplicate_ids == "error":
            ids = copies["doc_id"].unique(maintain_order=True)
            examples = [copies.filter(pl.col("doc_id") == doc_id).select("path", "row").head(2)
                        for doc_id in ids.head(EXAMPLES).to_list()]
            cut = {p.path for p in plan_pieces(cfg) if p.by_offset}
            lines = _lines([r for ex in examples for r in ex.iter_rows()], cut)
            shown = [f"{doc_id!r} at " + " and ".join(f"{p} line {lines[p, r][0]}" for p, r in ex.iter_rows())
                     for doc_id, ex in zip(ids.head(EXAMPLES).to_list(), examples)]
            raise DuplicateIdError(
                f"source '{source}': {ids.len():,} {cfg.id_field} value(s) repeat ({copies.height:,} documents), "
                f"e.g. {'; '.join(shown)}. Make them unique, or set duplicate_ids = \"keep-first\" in "
                f"[data.sources.{source}] and re-run `curate score`")
        later = copies.filter(pl.col("_order") != pl.col("_order").min().over("doc_id")).select("doc_id", "path", "row")
        with atomic_path(dropped_path(folder)) as tmp:
            later.write_parquet(tmp)
    dropped = pl.read_parquet(dropped_path(folder))
    for table in tables:  # idempotent: a table already rewritten has nothing left to drop
        frame = pl.read_parquet(table)
        kept = frame.join(dropped.select("path", "row"), on=["path", "row"], how="anti")
        if kept.height != frame.height:
            with atomic_path(table) as tmp:
                kept.write_parquet(tmp)
    cut = {p.path for p in plan_pieces(cfg) if p.by_offset} if dropped.height else set()
    firsts = dict(_kept_copies(tables, dropped, cut))
    lines = _lines([(p, r) for _, p, r in dropped.iter_rows()], cut)
    with atomic_open(folder / "rejects" / "duplicate_ids.jsonl") as f:
        for doc_id, path, row in dropped.iter_rows():
            line, offset = lines[path, row]
            f.write(json.dumps({"source": source, "path": path, "line": line, "offset": offset, "doc_id": doc_id,
                                "reason": "duplicate_id", "detail": f"{cfg.id_field} already used by the first "
                                f"copy, kept: {firsts.get(doc_id, 'unknown')}"}, ensure_ascii=False) + "\n")
    return dropped.height


def _lines(rows: list[tuple[str, int]], cut: set[str]) -> dict[tuple[str, int], tuple[int, int | None]]:
    """(1-based line, byte offset or None) of score table rows (path, row), as every other reject names
    them: `row` is the 0-based row, or the line's byte offset in a JSON Lines file read in ranges (`cut`,
    read once up to its last such row)."""
    offsets: dict[str, list[int]] = {}
    for path, row in rows:
        if path in cut:
            offsets.setdefault(path, []).append(row)
    found = {path: line_numbers(path, offs) for path, offs in offsets.items()}
    return {(p, r): ((found[p][r], r) if p in found else (r + 1, None)) for p, r in rows}


def _kept_copies(tables: list[Path], dropped: pl.DataFrame, cut: set[str]) -> list[tuple[str, str]]:
    """(doc_id, 'path line N') of the kept first copy of each dropped id."""
    kept = (pl.concat([pl.scan_parquet(t).select("doc_id", "path", "row") for t in tables])
            .join(dropped.lazy().select("doc_id").unique(), on="doc_id", how="semi").collect())
    lines = _lines([(p, r) for _, p, r in kept.iter_rows()], cut)
    return [(d, f"{p} line {lines[p, r][0]}") for d, p, r in kept.iter_rows()]
