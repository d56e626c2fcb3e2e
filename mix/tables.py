"""Score tables as the planner needs them: lazy scans, 64-bit keys, ranking with partial sorts.

Strings become 64-bit numbers on the way in (the seeded key of doc_id, the hash of text_hash, the
score expression already evaluated); mix.stream streams the tables through the hold-out and dedup
and hands the rows a plan may keep to `Pool` / `Ranked` here (numpy, partial sorts where only a
prefix matters); doc_id strings are read again only for the documents the plan keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from continua import fingerprint as fp
from continua.recipe import SourceConfig
from continua.schema import RecipeError
from continua.score_table import dedup_path, scan_scores, score_files

KEY = "_key"  # seeded hash of doc_id: the order of every random choice in the plan
SRC = "_src"  # which source of a pooled frame a row comes from
IDX = "_i"  # row of the document in its source's table
REQUIRED = ("doc_id", "n_tokens", "text_hash")


class PlanError(RecipeError):
    """A plan that cannot be made from these inputs; the message says which source and why."""


@dataclass
class SourceTable:
    """One source's score table: the lazy scan, then (after `load`) the arrays the plan uses."""

    name: str
    cfg: SourceConfig
    files: list[Path]
    frame: pl.LazyFrame
    schema: dict[str, pl.DataType]
    seed: int = 0
    lazy: pl.LazyFrame | None = None  # the plan's columns (mix.stream.plan_columns)
    docs: int = 0
    token_sum: int = 0
    score: np.ndarray | None = None

    @property
    def role(self) -> str:
        return self.cfg.role

    @property
    def num_docs(self) -> int:
        return self.docs


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


def describe_inputs(table: SourceTable, cache: dict | None = None) -> list[dict]:
    """Provenance of a table: each file's fingerprint (continua.fingerprint; the hash is reused from
    `cache`, records by path, while size, mtime and inode are unchanged)."""
    out = []
    for f in table.files:
        record = fp.fingerprint(f, (cache or {}).get(str(f)))
        if cache is not None:
            cache[str(f)] = record
        out.append({"source": table.name, "kind": "scores"} | record)
    return out


def _ordered(cand: np.ndarray, values: np.ndarray, key: np.ndarray) -> np.ndarray:
    """`cand` sorted by (value, key, index): one argsort, a lexsort only when values tie."""
    v = values[cand]
    order = np.argsort(v, kind="stable")
    vs = v[order]
    if vs.size > 1 and np.any(vs[1:] == vs[:-1]):
        return cand[np.lexsort((cand, key[cand], v))]
    return cand[order]


def isin(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Vectorized membership through a hash set (numpy's isin sorts both arrays)."""
    if members.size == 0:
        return np.zeros(values.size, dtype=bool)
    return pl.Series(values).is_in(pl.Series(members).implode()).to_numpy()


def first_copies(th: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Mask keeping one row per text hash, the one with the smallest key (independent of row order).

    Sorting the hashes (not arg-sorting the rows) finds the duplicated values; only the few rows
    holding those values are then ordered, which keeps this cheap for tables of millions of rows."""
    keep = np.ones(th.size, dtype=bool)
    if th.size < 2:
        return keep
    s = np.sort(th)
    dup_values = np.unique(s[1:][s[1:] == s[:-1]])
    if dup_values.size == 0:
        return keep
    rows = np.flatnonzero(isin(th, dup_values))
    order = rows[np.lexsort((rows, key[rows], th[rows]))]
    t = th[order]
    later = np.zeros(order.size, dtype=bool)
    later[1:] = t[1:] == t[:-1]
    keep[order[later]] = False
    return keep


@dataclass
class Pool:
    """Training candidates of one or more sources as parallel arrays (one entry per document)."""

    src: np.ndarray  # index of the source in the pool's source list
    rows: np.ndarray  # row in that source's table
    key: np.ndarray
    th: np.ndarray  # empty once dedup is done (mix.stream drops it)
    tokens: np.ndarray
    score: np.ndarray | None = None
    duplicates: list[int] = field(default_factory=list)  # exact duplicates removed, per source

    @property
    def size(self) -> int:
        return int(self.rows.size)

    def take(self, pos: np.ndarray) -> "Pool":
        return Pool(self.src[pos], self.rows[pos], self.key[pos], self.th[pos] if self.th.size else self.th,
                    self.tokens[pos],
                    None if self.score is None else self.score[pos], list(self.duplicates))

    def frame(self) -> pl.DataFrame:
        cols = {SRC: self.src, IDX: self.rows, KEY: self.key, "n_tokens": self.tokens}
        if self.score is not None:
            cols["score"] = self.score
        return pl.DataFrame(cols)


@dataclass
class Ranked:
    """A pool in rank order (`primary` ascending, then key), sorted only as far as asked.

    Asking for the best T tokens partitions around a count guess (O(n)) and sorts only the rows
    on the good side, doubling the guess until they hold T tokens, so choosing the top 10% of a
    10-million-row table never sorts all of it."""

    pool: Pool
    primary: np.ndarray

    def __post_init__(self) -> None:
        if self.primary.dtype.kind == "f":
            self.primary = np.where(np.isnan(self.primary), np.inf, self.primary)  # missing scores rank last

    @property
    def total_tokens(self) -> int:
        return int(self.pool.tokens.sum())

    @property
    def frame(self) -> pl.DataFrame:
        return self.pool.frame()

    def prefix(self, tokens: float) -> pl.DataFrame:
        """The shortest run of best documents holding at least `tokens` tokens (all if they hold fewer)."""
        n = self.pool.size
        if tokens <= 0 or n == 0:
            return self.pool.take(np.zeros(0, np.int64)).frame()
        p, key, tok = self.primary, self.pool.key, self.pool.tokens
        k = min(n, int(tokens / max(self.total_tokens / n, 1.0) * 1.25) + 64)
        while True:
            cand = np.arange(n) if k >= n else np.flatnonzero(p <= np.partition(p, k - 1)[k - 1])
            order = _ordered(cand, p, key)  # ties with the k-th value are all in
            cum = np.cumsum(tok[order])
            if cum[-1] >= tokens or order.size == n:
                break
            k = min(n, 2 * k)
        m = int(np.searchsorted(cum - tok[order], tokens, side="left"))
        return self.pool.take(order[:max(m, 1)]).frame()


def fetch_ids(table: SourceTable, train_keys: np.ndarray, valid_keys: np.ndarray) -> pl.DataFrame:
    """(doc_id, text_hash, split) of the training and validation documents, read again from the score table.

    Only the kept documents' ids are materialized; the seeded key identifies them (a 64-bit hash:
    a collision or a doc_id listed twice is reported, never silently merged)."""
    valid = pl.Series(valid_keys, dtype=pl.UInt64).implode()
    wanted = pl.Series(np.concatenate([train_keys, valid_keys]), dtype=pl.UInt64).implode()
    # concat_str copies the kept strings: a filtered string view would keep every id of the table alive
    found = (table.frame.select(pl.col("doc_id"), pl.col("doc_id").hash(table.seed).alias(KEY), "text_hash")
             .filter(pl.col(KEY).is_in(wanted))
             .with_columns(pl.concat_str([pl.col("doc_id"), pl.lit("")]), pl.concat_str([pl.col("text_hash"), pl.lit("")]))
             .collect(engine="streaming")
             .select("doc_id", "text_hash", pl.when(pl.col(KEY).is_in(valid)).then(pl.lit("valid")).otherwise(pl.lit("train"))
                     .alias("split")))
    if found.height != train_keys.size + valid_keys.size:
        twice = found.filter(pl.col("doc_id").is_duplicated())["doc_id"].head(3).to_list()
        raise PlanError(f"source '{table.name}': {found.height:,} documents found for {train_keys.size + valid_keys.size:,} "
                        f"planned; doc_id(s) {twice} appear more than once in the score table {table.files[0].parent} "
                        f"(or two ids share a 64-bit hash): each document must be listed once")
    return found
