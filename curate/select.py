"""`curate select`: decide per document kept or dropped, with a reason, from the score table.

Order of decisions: marked duplicates (dup_exact, then dup_minhash_keep == false), then documents
without a score, then the score rule: a fixed range (--min/--max), a percentile, the top fraction,
or the best documents up to a token target. Ranking ties break on doc_id, so the result is
deterministic. Writes curate/SOURCE/selection.parquet (doc_id, kept, reason, score).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from continua.console import make_console
from continua.io import atomic_path
from continua.score_formula import score_expr
from continua.score_table import scan_scores, selection_path


@dataclass
class SelectSpec:
    by: str | None = None
    top: float | None = None          # fraction of eligible documents to keep
    tokens: int | None = None         # token target
    min: float | None = None
    max: float | None = None
    min_percentile: float | None = None
    ascending: bool = False           # lower score is better
    drop_duplicates: bool = True
    # CCNet buckets to keep, e.g. {"bucket_ppl_ngram_med": ["head", "middle"]} (columns from [curate] buckets)
    keep_buckets: dict[str, list[str]] | None = None

    def mode(self) -> str:
        modes = [m for m, on in (("top", self.top is not None), ("tokens", self.tokens is not None),
                                 ("range", self.min is not None or self.max is not None),
                                 ("percentile", self.min_percentile is not None)) if on]
        if len(modes) > 1:
            raise ValueError(f"choose one of --top, --tokens, --min/--max, --min-percentile (got {', '.join(modes)})")
        if modes and not self.by:
            raise ValueError(f"--{modes[0] if modes[0] != 'range' else 'min/--max'} needs --by COLUMN or formula")
        return modes[0] if modes else "all"


_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


def parse_tokens(text: str) -> int:
    """'5B' -> 5_000_000_000, '300M', '20k', '1.5e9', '1000'."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmbgt]?)\s*", text.lower())
    if not m:
        raise ValueError(f"--tokens {text!r}: expected a number with an optional k/M/B/T suffix, e.g. 5B")
    value = int(float(m.group(1)) * _SUFFIX[m.group(2)])
    if value <= 0:
        raise ValueError(f"--tokens {text!r}: must be positive")
    return value


def parse_fraction(text: str) -> float:
    """'10%' -> 0.1, '0.1' -> 0.1."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError as e:
        raise ValueError(f"--top {text!r}: expected a percentage like 10% or a fraction like 0.1") from e
    if not 0 < value <= 1:
        raise ValueError(f"--top {text!r}: must be in (0, 100%]")
    return value


def decide(frame: pl.LazyFrame, spec: SelectSpec) -> pl.DataFrame:
    """doc_id, n_tokens, score, kept, reason for every document of the score table."""
    mode = spec.mode()
    columns = list(frame.collect_schema().names())
    score = score_expr(spec.by, columns, label="--by") if spec.by else pl.lit(None, dtype=pl.Float64)
    reason = pl.lit("", dtype=pl.String)
    if spec.drop_duplicates and "dup_exact" in columns:
        reason = pl.when(reason == "").then(pl.when(pl.col("dup_exact").fill_null(False)).then(pl.lit("duplicate_exact"))
                                             .otherwise(pl.lit(""))).otherwise(reason)
    if spec.drop_duplicates and "dup_minhash_keep" in columns:
        reason = pl.when(reason == "").then(pl.when(~pl.col("dup_minhash_keep").fill_null(True))
                                             .then(pl.lit("duplicate_minhash")).otherwise(pl.lit(""))).otherwise(reason)
    for col, wanted in (spec.keep_buckets or {}).items():
        if col not in columns:
            raise ValueError(f"--bucket {col}: no such column; bucket columns come from [curate] buckets "
                             f"(columns: {', '.join(c for c in columns if c.startswith('bucket_')) or 'none'})")
        reason = pl.when(reason == "").then(pl.when(pl.col(col).is_in(wanted)).then(pl.lit(""))
                                             .otherwise(pl.lit(f"{col}_not_{'_'.join(wanted)}"))).otherwise(reason)
    df = frame.select("doc_id", pl.col("n_tokens"), score.alias("score"), reason.alias("reason")).collect()
    if spec.by:
        df = df.with_columns(pl.when((pl.col("reason") == "") & (pl.col("score").is_null() | pl.col("score").is_nan()))
                             .then(pl.lit("no_score")).otherwise(pl.col("reason")).alias("reason"))
    eligible = pl.col("reason") == ""
    better_first = [pl.col("score"), pl.col("doc_id")]
    if mode == "range":
        if spec.min is not None:
            df = df.with_columns(pl.when(eligible & (pl.col("score") < spec.min)).then(pl.lit(f"below_min_{spec.min:g}"))
                                 .otherwise(pl.col("reason")).alias("reason"))
        if spec.max is not None:
            df = df.with_columns(pl.when(eligible & (pl.col("score") > spec.max)).then(pl.lit(f"above_max_{spec.max:g}"))
                                 .otherwise(pl.col("reason")).alias("reason"))
    elif mode == "percentile":
        if not 0 <= spec.min_percentile <= 100:
            raise ValueError(f"--min-percentile {spec.min_percentile}: must be within 0..100")
        scores = df.filter(eligible)["score"]
        q = spec.min_percentile / 100
        if len(scores):
            cut = scores.quantile(1 - q if spec.ascending else q, interpolation="linear")
            worse = pl.col("score") > cut if spec.ascending else pl.col("score") < cut
            df = df.with_columns(pl.when(eligible & worse).then(pl.lit(f"below_p{spec.min_percentile:g}"))
                                 .otherwise(pl.col("reason")).alias("reason"))
    elif mode in ("top", "tokens"):
        ranked = (df.with_row_index("_i").filter(eligible)
                  .sort(better_first, descending=[not spec.ascending, False]))
        if mode == "top":
            n_keep = math.ceil(spec.top * ranked.height)
            dropped = ranked["_i"][n_keep:]
            label = f"below_top_{spec.top * 100:g}%"
        else:
            cum = ranked["n_tokens"].fill_null(0).cum_sum()
            dropped = ranked.filter(cum > spec.tokens)["_i"]
            label = "over_token_target"
        df = (df.with_row_index("_i")
              .with_columns(pl.when(pl.col("_i").is_in(dropped.implode())).then(pl.lit(label))
                            .otherwise(pl.col("reason")).alias("reason")).drop("_i"))
    kept = pl.col("reason") == ""
    return df.with_columns(kept.alias("kept"),
                           pl.when(kept).then(pl.lit("kept")).otherwise(pl.col("reason")).alias("reason"))


def summarize(decided: pl.DataFrame) -> pl.DataFrame:
    return (decided.group_by("kept", "reason").agg(pl.len().alias("documents"),
                                                   pl.col("n_tokens").sum().alias("tokens"))
            .sort(["kept", "documents"], descending=[True, True]))


def parse_bucket(items: list[str]) -> dict[str, list[str]]:
    """['ppl_ngram_med=head,middle'] -> {'bucket_ppl_ngram_med': ['head', 'middle']}."""
    out: dict[str, list[str]] = {}
    for item in items:
        col, _, names = item.partition("=")
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        if not col or not wanted or set(wanted) - {"head", "middle", "tail"}:
            raise ValueError(f"--bucket {item!r}: expected COLUMN=head[,middle][,tail]")
        out[col if col.startswith("bucket_") else f"bucket_{col}"] = wanted
    return out


def run_select(curate_dir: Path, source: str, spec: SelectSpec, console: Console | None = None,
               buckets: dict[str, list[float]] | None = None) -> pl.DataFrame:
    """Decide, write selection.parquet atomically, print kept/dropped counts and tokens by reason."""
    frame = scan_scores(curate_dir, source)
    if buckets:
        from curate.buckets import add_buckets

        frame = add_buckets(frame, buckets)
    decided = decide(frame, spec)
    out = selection_path(curate_dir, source)
    with atomic_path(out) as tmp:
        decided.select("doc_id", "kept", "reason", "score").write_parquet(tmp)
    summary = summarize(decided)
    t = Table(title=f"curate select {source}: {spec.by or 'no score'} ({spec.mode()})")
    for col in ("", "reason", "documents", "tokens"):
        t.add_column(col, justify="right" if col in ("documents", "tokens") else "left")
    for r in summary.iter_rows(named=True):
        t.add_row("kept" if r["kept"] else "dropped", r["reason"], f"{r['documents']:,}", f"{(r['tokens'] or 0):,}")
    total_kept = decided.filter(pl.col("kept"))
    t.add_row("total kept", "", f"{total_kept.height:,} / {decided.height:,}",
              f"{(total_kept['n_tokens'].sum() or 0):,} / {(decided['n_tokens'].sum() or 0):,}")
    (console or make_console()).print(t)
    return decided
