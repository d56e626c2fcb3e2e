"""CCNet buckets: head / middle / tail of a score column, by percentile over the whole table.

CCNet splits each language by KenLM perplexity at the 30th and 60th percentiles. Percentiles need
the whole table, so buckets are not written by the per-task scorers: they are added lazily when the
score table is read (`scan_scores(...)` then `ccnet_buckets(...)`).

A document's bucket comes from its rank among the non-missing values (ties share the worst rank of
their group, so equal scores always land in the same bucket): head = rank <= p1% of them, middle
<= p2%, tail the rest. Missing or NaN scores get a null bucket.
"""

from __future__ import annotations

from typing import Sequence

import polars as pl


def check_percentiles(percentiles: Sequence[float], where: str = "percentiles") -> tuple[float, float]:
    if len(percentiles) != 2:
        raise ValueError(f"{where}: give two percentiles (head/middle and middle/tail cuts), got {list(percentiles)}")
    p1, p2 = (float(p) for p in percentiles)
    if not 0 < p1 < p2 < 100:
        raise ValueError(f"{where}: percentiles must satisfy 0 < first < second < 100, got {list(percentiles)}")
    return p1, p2


def ccnet_buckets(lf: pl.LazyFrame, column: str, percentiles: Sequence[float] = (30, 60),
                  lower_is_better: bool = True) -> pl.LazyFrame:
    """Add `bucket_<column>` = "head" (best p1%) / "middle" / "tail", computed lazily over all rows."""
    p1, p2 = check_percentiles(percentiles, f"buckets.{column}")
    value = pl.col(column).cast(pl.Float64).fill_nan(None)
    rank = (value if lower_is_better else -value).rank(method="max")
    scaled, n = rank * 100, value.count()  # rank/n <= p/100 without the rounding of a division
    bucket = (pl.when(value.is_null()).then(pl.lit(None, dtype=pl.String))
              .when(scaled <= n * p1).then(pl.lit("head"))
              .when(scaled <= n * p2).then(pl.lit("middle"))
              .otherwise(pl.lit("tail")))
    return lf.with_columns(bucket.alias(f"bucket_{column}"))


def add_buckets(lf: pl.LazyFrame, buckets: dict[str, list[float]]) -> pl.LazyFrame:
    """The `[curate] buckets` table applied: perplexity columns (ppl_*) rank lower-is-better, others higher."""
    names = lf.collect_schema().names()
    for column, percentiles in buckets.items():
        if column not in names:
            raise ValueError(f"[curate] buckets.{column}: the score table has no column '{column}' "
                             f"(columns: {', '.join(names)})")
        lf = ccnet_buckets(lf, column, percentiles, lower_is_better=column.startswith("ppl_"))
    return lf
