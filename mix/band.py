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
from continua.layout import curate_dir
from continua.recipe import Recipe
from curate.table import scan_scores
from mix.score import score_columns, score_expr

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
        chosen = selection.filter(pl.col("source") == name).select("doc_id", "split")
        parts.append(frame.select("doc_id", "path", "row", "n_tokens", expr.alias("score"))
                     .collect()
                     .join(chosen, on="doc_id", how="left")
                     .filter(pl.col("split").is_null() | (pl.col("split") == "train"))
                     .with_columns(pl.lit(name).alias("source"), pl.col("split").is_not_null().alias("kept")))
    if not parts:
        return None
    docs = pl.concat(parts)
    band, rest = docs.filter(pl.col("kept")), docs.filter(~pl.col("kept"))
    out = {"score": mix.score, "prefer": mix.prefer,
           "band": _summary(band, mix.prefer, examples), "rest": _summary(rest, mix.prefer, examples)}
    _fill_texts(recipe, [*out["band"]["examples"], *out["rest"]["examples"]])
    return out


def _summary(docs: pl.DataFrame, prefer: str, examples: int) -> dict:
    scores = docs["score"].drop_nans().drop_nulls()
    by_file = (docs.group_by("path").agg(pl.len().alias("docs"), pl.col("n_tokens").sum().alias("tokens"))
               .sort("tokens", descending=True))
    ranked = docs.filter(pl.col("score").is_not_nan() & pl.col("score").is_not_null()).sort(
        "score", descending=prefer == "high")
    picks = sorted(set(np.linspace(0, ranked.height - 1, examples).round().astype(int).tolist())) if ranked.height else []
    return {
        "docs": docs.height, "tokens": int(docs["n_tokens"].sum()) if docs.height else 0,
        "score": ({"min": float(scores.min()), "median": float(scores.median()), "max": float(scores.max())}
                  if scores.len() else None),
        "by_file": [{"path": r["path"], "docs": r["docs"], "tokens": int(r["tokens"])} for r in by_file.iter_rows(named=True)],
        "examples": [{"source": ranked["source"][i], "doc_id": ranked["doc_id"][i], "path": ranked["path"][i],
                      "row": int(ranked["row"][i]), "score": float(ranked["score"][i]), "text": None} for i in picks],
    }


def _fill_texts(recipe: Recipe, examples: list[dict]) -> None:
    """Read each example's text from its input file (one pass per file, stopping at the last row needed)."""
    wanted: dict[tuple[str, str], dict[int, list[dict]]] = {}
    for ex in examples:
        wanted.setdefault((ex["source"], ex["path"]), {}).setdefault(ex["row"], []).append(ex)
    for (source, path), rows in wanted.items():
        cfg = dataclasses.replace(recipe.data.sources[source], paths=[Path(path)])
        last = max(rows)
        for item in iter_source(source, cfg):
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
