"""Planning out of core: score tables stream through polars, only what the plan keeps is held in memory.

The in-memory planner held five numbers per scored document (1.6 GB at 10M rows, 4.2 GB at 30M).
Here each source is read in three streaming passes: counts, the validation hold-out (the k smallest
seeded keys, k <= valid_max_docs), then the training candidates (not held out, not copies of a
validation text, not marked by curate) written to disk in partitions by text hash. Exact dedup
runs one partition at a time (copies of a text share a partition), and the pool keeps only its
per-source counts. Ranking reads back just the head of the order: a 1-in-64 sample by seeded key
estimates the threshold under which the asked tokens lie, the rows under it are loaded and ranked
exactly as before (value, key, position), widening the threshold until they hold enough tokens.
Memory follows the documents the plan selects, not the rows of the tables.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from mix.tables import IDX, KEY, SRC, PlanError, Pool, Ranked, SourceTable, first_copies

PART_ROWS = 2_000_000  # candidate rows per dedup partition: the memory of one partition pass
SAMPLE = 64  # 1 row in SAMPLE (by seeded key) estimates ranking thresholds
PART = "_part"


@dataclass
class Valid:
    """The held-out validation documents of one source (at most valid_max_docs rows); `asked` is how many
    [mix] valid_fraction / valid_max_docs / min_valid_docs asked for (more than `size` when the source
    holds fewer distinct texts)."""

    rows: np.ndarray
    key: np.ndarray
    th: np.ndarray
    tokens: np.ndarray
    asked: int = 0

    @property
    def size(self) -> int:
        return int(self.rows.size)


def plan_columns(table: SourceTable, seed: int, score: pl.Expr | None, use_marks: bool) -> list[str]:
    """Set `table.lazy` (the plan's columns, one row per document) and its counts; returns notes on marks."""
    notes: list[str] = []
    marked = pl.lit(False)
    if use_marks:
        for col, drop_when in (("dup_exact", True), ("dup_minhash_keep", False)):
            if col not in table.schema:
                continue
            if table.schema[col] != pl.Boolean:
                notes.append(f"column {col} is {table.schema[col]}, not boolean: ignored (exact duplicates are "
                             f"still removed by text_hash)")
                continue
            marked = marked | (pl.col(col).fill_null(not drop_when) == drop_when)
            notes.append(f"drops documents marked {col} = {str(drop_when).lower()}")
    cols = [pl.col("doc_id").hash(seed).alias(KEY), pl.col("text_hash").hash(0).alias("th"),
            pl.col("n_tokens").cast(pl.Int64), marked.alias("marked")]
    if score is not None:
        cols.append(score.cast(pl.Float64).fill_null(float("nan")).alias("score"))
    table.lazy = table.frame.select(cols).with_row_index(IDX).with_columns(pl.col(IDX).cast(pl.Int64))
    counts = table.lazy.select(pl.len().alias("n"), pl.col("n_tokens").sum().alias("t"),
                               pl.col("n_tokens").null_count().alias("nulls")).collect(engine="streaming")
    n, tokens, nulls = counts.row(0)
    if n == 0:
        raise PlanError(f"source '{table.name}': the score table has no documents ({table.files[0].parent})")
    if nulls:
        raise PlanError(f"source '{table.name}': {nulls} document(s) have no n_tokens in {table.files[0].parent}")
    table.seed, table.docs, table.token_sum = seed, int(n), int(tokens or 0)
    table.score = None if score is None else np.zeros(0)
    return notes


def hold_out(table: SourceTable, fraction: float, max_docs: int, min_docs: int, distinct: bool = False) -> Valid:
    """The documents with the smallest seeded hash of doc_id: the split depends only on ids and seed.

    With `distinct` (the plan deduplicates) a text is held out once: of its copies, the one with the
    smallest key; the others are copies of a validation text and never train either."""
    n = table.docs
    k = max(min(math.ceil(n * fraction), max_docs), min_docs)
    if k >= n:
        k = n - 1
        if k < min_docs:
            raise PlanError(f"source '{table.name}': {n} document(s) cannot give {min_docs} validation document(s) "
                            f"and still leave documents to train on")
    if k <= 0:
        z = np.zeros(0, np.int64)
        return Valid(z, z.astype(np.uint64), z.astype(np.uint64), z, max(k, 0))
    # keys are uniform 64-bit hashes: the k smallest lie under about k/n of the range; stream the rows
    # under twice that bound (widened until they are at least k), then take the k smallest in memory
    bound = min(2.0 ** 64, 2.0 * (k + 64) / n * 2.0 ** 64)
    while True:
        under = pl.col(KEY) <= pl.lit(min(int(bound), 2 ** 64 - 1), pl.UInt64)
        v = table.lazy.filter(under).select(IDX, KEY, "th", "n_tokens").collect(engine="streaming").sort(KEY, IDX)
        if distinct:  # every copy under the bound is here, so the first one kept is the text's smallest key
            v = v.unique(subset="th", keep="first", maintain_order=True)
        if v.height >= k or bound >= 2.0 ** 64:
            break
        bound *= 4
    v = v.head(k)
    return Valid(v[IDX].to_numpy(), v[KEY].to_numpy(), v["th"].to_numpy(), v["n_tokens"].to_numpy(), k)


def write_candidates(table: SourceTable, src: int, valid: Valid, valid_th: np.ndarray, parts: int,
                     folder: Path) -> tuple[int, int]:
    """Stream the source's training candidates into `folder`/_part=P/ by text hash; returns (copies of
    validation documents dropped, curate-marked documents dropped)."""
    not_valid = ~pl.col(IDX).is_in(pl.Series(valid.rows, dtype=pl.Int64).implode())
    copy = pl.col("th").is_in(pl.Series(valid_th, dtype=pl.UInt64).implode())
    lf = table.lazy.filter(not_valid)
    counts = lf.select(copy.sum().alias("c"), (pl.col("marked") & ~copy).sum().alias("m")).collect(engine="streaming")
    cols = [pl.lit(src, pl.Int32).alias(SRC), IDX, KEY, "th", "n_tokens"]
    if "score" in table.lazy.collect_schema():
        cols.append("score")
    (lf.filter(~copy & ~pl.col("marked")).select(cols)
     .with_columns((pl.col("th") % parts).cast(pl.Int64).alias(PART))
     .sink_parquet(pl.PartitionBy(folder / f"src{src}", key=PART, include_key=False), mkdir=True))
    c, m = counts.row(0)
    return int(c or 0), int(m or 0)


@dataclass
class DiskPool:
    """Training candidates of one or more sources, on disk, deduplicated; counts in memory."""

    folder: Path
    n_src: int
    has_score: bool
    parts: list[list[Path]] = field(default_factory=list)
    docs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    duplicates: list[int] = field(default_factory=list)
    nan: int = 0
    score_sum: float = 0.0

    @classmethod
    def build(cls, folder: Path, out: Path, srcs: list[int], n_parts: int, has_score: bool, dedup: bool
              ) -> "DiskPool":
        """Dedup each partition of `folder` (one copy per text: the smallest key, then the earliest row of
        the pool's sources in order) into `out` and count what is left."""
        pool = cls(out, len(srcs), has_score, docs=np.zeros(len(srcs), np.int64),
                   tokens=np.zeros(len(srcs), np.int64), duplicates=[0] * len(srcs))
        out.mkdir(parents=True, exist_ok=True)
        for p in range(n_parts):
            files = [f for s in srcs for f in sorted((folder / f"src{s}" / f"{PART}={p}").glob("*.parquet"))]
            if not files:
                continue
            df = pl.read_parquet(files).with_columns(pl.col(SRC).replace_strict(
                {s: i for i, s in enumerate(srcs)}, return_dtype=pl.Int32)).sort(SRC, IDX)
            if dedup and df.height > 1:
                keep = first_copies(df["th"].to_numpy(), df[KEY].to_numpy())
                if not keep.all():
                    gone = np.bincount(df[SRC].to_numpy()[~keep], minlength=len(srcs))
                    pool.duplicates = [a + int(b) for a, b in zip(pool.duplicates, gone)]
                    df = df.filter(pl.Series(keep))
            df = df.drop("th")
            src = df[SRC].to_numpy()
            pool.docs += np.bincount(src, minlength=len(srcs))
            pool.tokens += np.bincount(src, weights=df["n_tokens"].to_numpy(), minlength=len(srcs)).astype(np.int64)
            if has_score:
                s = df["score"].to_numpy()
                pool.nan += int(np.isnan(s).sum())
                pool.score_sum += float(np.nansum(s))
            path = out / f"{p:05d}.parquet"
            df.write_parquet(path, compression="lz4", statistics=True)
            pool.parts.append([path])
        return pool

    @property
    def size(self) -> int:
        return int(self.docs.sum())

    @property
    def total_tokens(self) -> int:
        return int(self.tokens.sum())

    @property
    def score_mean(self) -> float:
        n = self.size - self.nan
        return self.score_sum / n if n else float("nan")

    def scan(self) -> pl.LazyFrame:
        files = [f for part in self.parts for f in part]
        if not files:
            schema = {SRC: pl.Int32, IDX: pl.Int64, KEY: pl.UInt64, "n_tokens": pl.Int64}
            if self.has_score:
                schema["score"] = pl.Float64
            return pl.LazyFrame(schema=schema)
        return pl.scan_parquet(files)

    def load(self, where: pl.Expr | None = None, ordered: bool = True) -> Pool:
        """The rows (matching `where`) as an in-memory `Pool`, in pool order (source, then row) when `ordered`."""
        lf = self.scan()
        if where is not None:
            lf = lf.filter(where)
        df = lf.collect(engine="streaming")
        if ordered:
            df = df.sort(SRC, IDX)
        return Pool(df[SRC].to_numpy(), df[IDX].to_numpy(), df[KEY].to_numpy(), np.zeros(0, np.uint64),
                    df["n_tokens"].to_numpy(), df["score"].to_numpy() if self.has_score else None,
                    list(self.duplicates))


def _primary(kind: str) -> pl.Expr:
    """The ranking value of `Ranked` as an expression: missing scores rank last."""
    if kind == "key":
        return pl.col(KEY).cast(pl.Float64)  # thresholds only: exact order is taken in memory
    s = pl.col("score") if kind == "score_asc" else -pl.col("score")
    return s.fill_nan(float("inf"))


class LazyRanked(Ranked):
    """A `Ranked` over a `DiskPool`: `prefix` loads only the head of the order it needs."""

    def __init__(self, pool: DiskPool, kind: str):
        self.disk, self.kind = pool, kind

    @property
    def total_tokens(self) -> int:
        return self.disk.total_tokens

    @property
    def frame(self) -> pl.DataFrame:
        return self.disk.load(pl.lit(False)).frame()

    def _ranked(self, pool: Pool) -> Ranked:
        if self.kind == "key":
            return Ranked(pool, pool.key)
        return Ranked(pool, pool.score.copy() if self.kind == "score_asc" else -pool.score)

    def prefix(self, tokens: float) -> pl.DataFrame:
        total = self.total_tokens
        if tokens <= 0 or self.disk.size == 0:
            return self._ranked(self.disk.load(pl.lit(False))).prefix(0)
        if tokens >= total:
            return self._ranked(self.disk.load()).prefix(tokens)
        value = _primary(self.kind)
        sample = (self.disk.scan().filter(pl.col(KEY) % SAMPLE == 0)
                  .select(value.alias("v"), pl.col("n_tokens")).collect(engine="streaming").sort("v"))
        cum = sample["n_tokens"].cum_sum().to_numpy() * SAMPLE
        margin = 1.05
        while True:
            want = tokens * margin
            at = int(np.searchsorted(cum, want, side="left")) if cum.size else 0
            if at >= sample.height:
                return self._ranked(self.disk.load()).prefix(tokens)
            cut = sample["v"][at]
            # the head in any order: ranking orders by (value, key), and equal keys are refused later
            pool = self.disk.load(value <= cut, ordered=False)
            if int(pool.tokens.sum()) >= tokens:
                return self._ranked(pool).prefix(tokens)
            margin *= 1.5


class PoolFolder:
    """A temporary folder beside the plan for the candidate partitions, removed when planning ends."""

    def __init__(self, parent: Path):
        Path(parent).mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=".plan-", dir=parent))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def partitions(rows: int) -> int:
    return max(1, math.ceil(rows / PART_ROWS))
