"""The kept band of a score-ranked plan beside the rest of the domain: what the selector chose.

Why: a quality subset is only as good as its ranking, and a number such as "top 10%" says nothing
about what was kept. For Guo et al.'s selector (lowest reference perplexity) a person should see,
before training on it, the band's size, its score range, its composition by input file and a few of
its documents next to the same for the documents left out. `mix plan` stores this summary in
plan.json under "band"; `mix plan` and `mix show` print it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl

from continua.documents import Record, iter_source
from continua.partition import Piece, plan_pieces
from continua.layout import curate_dir
from continua.recipe import Recipe
from continua.score_formula import score_columns, score_expr
from continua.score_table import scan_scores

EXCERPT_CHARS = 300
N_EXAMPLES = 3


def domain_band(recipe: Recipe, selection: pl.DataFrame, examples: int = N_EXAMPLES) -> dict | None:
    """{"score", "prefer", "band": summary, "rest": summary} over the domain sources, or None without a score.

    The band is the domain's training documents; the rest is every other scored domain document
    except the validation hold-out. Each summary: docs, tokens, score min/median/max, composition by
    input file, and `examples` documents spread over the score range (best, middle, last), with an
    excerpt of their text.
    """
    mix = recipe.mix
    if not mix.score:
        return None
    parts = []
    for name, cfg in recipe.data.sources.items():
        if cfg.role != "domain" or name == mix.dsir_target:
            continue
        frame = scan_scores(curate_dir(recipe), name)
        expr = score_expr(mix.score, score_columns(dict(frame.collect_schema())))
        chosen = selection.filter(pl.col("source") == name).select("doc_id", "split").lazy()
        parts.append(frame.select("doc_id", "path", "row", "n_tokens", expr.cast(pl.Float64).alias("score"))
                     .join(chosen, on="doc_id", how="left")
                     .filter(pl.col("split").is_null() | (pl.col("split") == "train"))
                     .with_columns(pl.lit(name).alias("source"), pl.col("split").is_not_null().alias("kept")))
    if not parts:
        return None
    docs = pl.concat(parts)  # lazy: every summary below streams over the score tables (out of core)
    out = {"score": mix.score, "prefer": mix.prefer,
           "band": _summary(docs.filter(pl.col("kept")), mix.prefer, examples),
           "rest": _summary(docs.filter(~pl.col("kept")), mix.prefer, examples)}
    _fill_texts(recipe, [*out["band"]["examples"], *out["rest"]["examples"]])
    return out


def _summary(docs: pl.LazyFrame, prefer: str, examples: int) -> dict:
    """Counts, score range and composition by file in streaming passes (memory does not grow with the
    rows); the examples are the documents nearest to evenly spaced score quantiles (best to last)."""
    valid = pl.col("score").is_not_nan() & pl.col("score").is_not_null()
    scored = docs.filter(valid)
    totals, stats, by_file = pl.collect_all([
        docs.select(pl.len().alias("docs"), pl.col("n_tokens").sum().alias("tokens")),
        scored.select(pl.col("score").min().alias("min"), pl.col("score").median().alias("median"),
                      pl.col("score").max().alias("max"), pl.len().alias("n")),
        docs.group_by("path").agg(pl.len().alias("docs"), pl.col("n_tokens").sum().alias("tokens"))
            .sort("tokens", "path", descending=[True, False]),
    ], engine="streaming")
    n_docs, tokens = totals.row(0)
    lo, median, hi, n_scored = stats.row(0)
    picks = []
    if n_scored:
        best_first = prefer != "high"
        quantiles = np.linspace(0.0, 1.0, examples) if best_first else np.linspace(1.0, 0.0, examples)
        targets = scored.select([pl.col("score").quantile(float(q), "nearest").alias(str(i))
                                 for i, q in enumerate(quantiles)]).collect(engine="streaming").row(0)
        nearest = pl.collect_all([scored.bottom_k(1, by=[(pl.col("score") - t).abs(), pl.col("doc_id")])
                                  for t in targets], engine="streaming")
        seen = set()
        for row in (f.row(0, named=True) for f in nearest if f.height):
            if row["doc_id"] not in seen:
                seen.add(row["doc_id"])
                picks.append(row)
    return {
        "docs": int(n_docs), "tokens": int(tokens or 0),
        "score": {"min": float(lo), "median": float(median), "max": float(hi)} if n_scored else None,
        "by_file": [{"path": r["path"], "docs": r["docs"], "tokens": int(r["tokens"])} for r in by_file.iter_rows(named=True)],
        "examples": [{"source": r["source"], "doc_id": r["doc_id"], "path": r["path"], "row": int(r["row"]),
                      "score": float(r["score"]), "text": None} for r in picks],
    }


def pieces_holding(pieces: list[Piece], rows: set[int]) -> list[Piece]:
    """The pieces of one file that hold any of `rows` (byte offsets in a cut JSON Lines file, row numbers
    otherwise): an example from the end of a multi-GB file is read from its piece, not from byte 0."""
    starts = [p.start if p.by_offset else p.first_row for p in pieces]
    ends = starts[1:] + [float("inf")]
    return [p for p, lo, hi in zip(pieces, starts, ends) if any(lo <= r < hi for r in rows)]


def _fill_texts(recipe: Recipe, examples: list[dict]) -> None:
    """Read each example's text from its input file: only the pieces holding the examples, each read up to
    the last row needed."""
    wanted: dict[tuple[str, str], dict[int, list[dict]]] = {}
    for ex in examples:
        wanted.setdefault((ex["source"], ex["path"]), {}).setdefault(ex["row"], []).append(ex)
    for (source, path), rows in wanted.items():
        cfg = dataclasses.replace(recipe.data.sources[source], paths=[Path(path)])
        last = max(rows)
        for item in iter_source(source, cfg, pieces=pieces_holding(plan_pieces(cfg), set(rows))):
            if isinstance(item, Record) and item.row in rows:
                for ex in rows[item.row]:
                    # one line of printable characters: an excerpt must not drive the terminal
                    text = " ".join("".join(c if c.isprintable() else " " for c in item.text).split())
                    ex["text"] = text[:EXCERPT_CHARS] + (" ..." if len(text) > EXCERPT_CHARS else "")
            if item.row >= last:
                break
        for ex in (e for r in rows.values() for e in r):
            if ex["text"] is None:
                raise FileNotFoundError(f"{path}: row {ex['row']} (document {ex['doc_id']}) is no longer in the "
                                        f"file; re-run `curate score` for source '{source}'")
