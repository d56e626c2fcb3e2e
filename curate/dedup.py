"""Duplicate marks beside the score table (curate/SOURCE/dedup.parquet), removed later at selection.

- exact: equal `text_hash`; the first occurrence in input order (file order, then row) is kept.
- minhash: datatrove's MinHash stages (signatures -> buckets -> clusters) find near-duplicate
  clusters; we read its cluster files and keep, per cluster, the first document in input order.
  Choosing the keeper by input order (not datatrove's union-find root) keeps the two marks
  consistent: the exact-first copy of a text is also its cluster's keeper, so a text is never
  dropped twice over.

MinHash runs with the same task count as the score run, so doc index i of task r in datatrove's
signature files is row i of scores/r.parquet: no need to carry ids through the binary files.
The MinHash stages run on the recipe's executor (local, Ray or Slurm jobs) like scoring does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from continua.documents import expand_inputs
from continua.io import atomic_path
from continua.recipe import Recipe
from continua.score_table import dedup_path, source_dir
from curate.executors import Stage
from curate.heuristics import RegexWordTokenizer
from curate.steps import SourceReader, task_name


def _order_key(frame: pl.LazyFrame, recipe: Recipe, source: str) -> pl.LazyFrame:
    """Adds `_order` = input order of each document (position of its file in the source, then row)."""
    files = [str(p) for p, _, _ in expand_inputs(recipe.data.sources[source])]
    rank = pl.DataFrame({"path": files, "_file": list(range(len(files)))}, schema={"path": pl.String, "_file": pl.Int64})
    return (frame.join(rank.lazy(), on="path", how="left")
            .with_columns((pl.col("_file").fill_null(len(files)) * (1 << 40) + pl.col("row")).alias("_order"))
            .drop("_file"))


def exact_marks(scores: pl.LazyFrame) -> pl.LazyFrame:
    """dup_exact: true for every copy of a text after its first (needs `_order`)."""
    first = pl.col("_order") == pl.col("_order").min().over("text_hash")
    return scores.with_columns((~first).alias("dup_exact"))


def _read_pairs(path: Path) -> np.ndarray:
    """datatrove's `.clusters` file: little-endian uint32 pairs (doc index in the task, cluster id)."""
    return np.fromfile(path, dtype="<u4").reshape(-1, 2) if path.exists() else np.zeros((0, 2), dtype="<u4")


def minhash_folder(recipe: Recipe, curate_dir: Path, source: str) -> Path:
    """One folder per MinHash setting, so changed options never reuse stale clusters."""
    opts = recipe.curate.minhash
    return source_dir(curate_dir, source) / "dedup" / (
        f"minhash_{opts.n_grams}ng_{opts.num_buckets}b_{opts.hashes_per_bucket}h_seed{opts.seed}")


def minhash_stages(recipe: Recipe, source: str, curate_dir: Path, tasks: int, workers: int,
                   verbose: bool = False) -> list[Stage]:
    """datatrove's three MinHash stages (signatures -> buckets -> clusters), run on the recipe's executor."""
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupSignature)
    from datatrove.utils.hashing import HashConfig

    opts = recipe.curate.minhash
    # sha1 shingle hashes: datatrove's default xxhash path passes str, which xxhash>=4 rejects
    config = MinhashConfig(n_grams=opts.n_grams, num_buckets=opts.num_buckets,
                           hashes_per_bucket=opts.hashes_per_bucket, seed=opts.seed,
                           hash_config=HashConfig(precision=64, hash_fc="sha1"))
    folder = minhash_folder(recipe, curate_dir, source)
    sigs, buckets, clusters = folder / "signatures", folder / "buckets", folder / "clusters"
    reader = SourceReader(source, recipe.data.sources[source], source_dir(curate_dir, source), record_rejects=False)
    return [
        Stage("signatures", [reader, MinhashDedupSignature(output_folder=str(sigs), config=config,
                                                           language=RegexWordTokenizer())],
              tasks, workers, folder / "logs" / "signatures", verbose=verbose),
        Stage("buckets", [MinhashDedupBuckets(input_folder=str(sigs), output_folder=str(buckets), config=config)],
              config.num_buckets, workers, folder / "logs" / "buckets", verbose=verbose),
        Stage("clusters", [MinhashDedupCluster(input_folder=str(buckets), output_folder=str(clusters), config=config,
                                               save_cluster_id=True)],
              1, 1, folder / "logs" / "clusters", verbose=verbose),
    ]


def minhash_marks(scores: pl.LazyFrame, clusters: Path, tasks: int) -> pl.LazyFrame:
    """dup_minhash_cluster (null when unique) and dup_minhash_keep (first of its cluster in input order)."""
    parts = []
    for rank in range(tasks):
        pairs = _read_pairs(clusters / f"{rank:06d}.clusters")
        parts.append(pl.DataFrame({"_task": np.full(len(pairs), rank, dtype=np.int64),
                                   "_idx": pairs[:, 0].astype(np.int64),
                                   "dup_minhash_cluster": pairs[:, 1].astype(np.int64)}))
    table = pl.concat(parts) if parts else pl.DataFrame(schema={"_task": pl.Int64, "_idx": pl.Int64,
                                                                "dup_minhash_cluster": pl.Int64})
    marked = scores.join(table.lazy(), on=["_task", "_idx"], how="left")
    first = pl.col("_order") == pl.col("_order").min().over("dup_minhash_cluster")
    return marked.with_columns(
        pl.when(pl.col("dup_minhash_cluster").is_null()).then(True).otherwise(first).alias("dup_minhash_keep"))


def _scores_with_position(curate_dir: Path, source: str, tasks: int) -> pl.LazyFrame:
    """Score rows with their task and index within the task (what datatrove's files refer to)."""
    frames = []
    folder = source_dir(curate_dir, source) / "scores"
    for rank in range(tasks):
        f = folder / f"{task_name(rank)}.parquet"
        if not f.exists():
            raise FileNotFoundError(f"{f}: score task {rank} missing; finish `curate score` before dedup")
        frames.append(pl.scan_parquet(f).select("doc_id", "path", "row", "text_hash")
                      .with_row_index("_idx").with_columns(pl.col("_idx").cast(pl.Int64), pl.lit(rank, pl.Int64).alias("_task")))
    return pl.concat(frames)


def write_marks(recipe: Recipe, source: str, curate_dir: Path, tasks: int) -> pl.DataFrame:
    """Write dedup.parquet (doc_id + the dup_* columns of the enabled methods) atomically; MinHash
    marks read the clusters the MinHash stages wrote."""
    methods = recipe.curate.dedup
    scores = _order_key(_scores_with_position(curate_dir, source, tasks), recipe, source)
    columns = ["doc_id"]
    if "exact" in methods:
        scores = exact_marks(scores)
        columns.append("dup_exact")
    if "minhash" in methods:
        clusters = minhash_folder(recipe, curate_dir, source) / "clusters"
        scores = minhash_marks(scores, clusters, tasks)
        columns += ["dup_minhash_cluster", "dup_minhash_keep"]
    marks = scores.select(columns).collect()
    with atomic_path(dedup_path(curate_dir, source)) as tmp:
        marks.write_parquet(tmp)
    return marks
