"""Duplicate marks beside the score table (curate/SOURCE/dedup.parquet), removed later at selection.

- exact: equal `text_hash`; the first occurrence in input order (file order, then row) is kept.
- minhash: datatrove's MinHash stages (signatures -> buckets -> clusters) find near-duplicate
  clusters; we read its cluster files and keep, per cluster, the first document in input order.
  Choosing the keeper by input order (not datatrove's union-find root) keeps the two marks
  consistent: the exact-first copy of a text is also its cluster's keeper, so a text is never
  dropped twice over.

Signatures are kept per piece (curate.pieces): datatrove's file `bucket_B/NNNNN.minhash.sig` holds
the signatures of the piece at position NNNNN of the source's pieces in key order (datatrove names
its clusters by that 32-bit number), doc index i being row i of scores/KEY.parquet, and a marker
`sigs/KEY.json` names the score table they were made from. A re-run signs only pieces whose table
is new or changed (kept pieces' files are renamed to their new positions); buckets and clusters are
recomputed over all pieces whenever any changed, so the marks equal a fresh run's. The MinHash stages run on the recipe's executor (local, Ray or
Slurm jobs) like scoring does.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import polars as pl
from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

from continua import fingerprint as fp
from continua.documents import expand_inputs
from continua.io import atomic_path, read_json, write_json
from continua.partition import Piece
from continua.recipe import Recipe
from continua.score_table import dedup_path, source_dir
from curate.executors import Stage
from curate.heuristics import RegexWordTokenizer
from curate.pieces import Work, clear, table_path
from curate.steps import SourceReader, task_pieces

SIGNED = "sigs"  # MINHASH_FOLDER/sigs/KEY.json: the score table a piece's signatures were made from


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


class SignedMarks:
    """Whether a piece's signatures are current: its marker names its score table as it is now."""

    def __init__(self, folder: Path, source_folder: Path):
        self.folder = Path(folder)
        self.source_folder = Path(source_folder)

    def marker(self, key: str) -> Path:
        return self.folder / SIGNED / f"{key}.json"

    def __call__(self, key: str) -> bool:  # True: needs signing
        m = self.marker(key)
        if not m.exists():
            return True
        return fp.changed(read_json(m)["table"] | {"path": str(table_path(self.source_folder, key))}) is not None

    def mark(self, key: str) -> None:
        write_json(self.marker(key), {"table": fp.fingerprint(table_path(self.source_folder, key))})


class PieceSignatures(MinhashDedupSignature):
    """datatrove's signature step, one set of signature files per piece (named by its key) instead of per task."""

    def __init__(self, pieces: list[tuple[str, Piece]], signed: SignedMarks, **kwargs):
        super().__init__(**kwargs)
        self.pieces = pieces
        self.position = {k: i for i, k in enumerate(sorted(k for k, _ in pieces))}
        self.signed = signed

    def run(self, data, rank: int = 0, world_size: int = 1):
        seen = set()
        for key, docs in itertools.groupby(data, key=lambda d: d.metadata["piece"]):
            super().run(docs, rank=self.position[key], world_size=world_size)
            self.signed.mark(key)
            seen.add(key)
        for key, _ in task_pieces(self.pieces, rank, world_size):
            if key not in seen and self.signed(key):  # no document left to sign: empty files, still listed
                super().run(iter(()), rank=self.position[key], world_size=world_size)
                self.signed.mark(key)


def prepare_minhash(recipe: Recipe, curate_dir: Path, source: str, work: Work) -> None:
    """Before the MinHash stages: move kept pieces' signatures to their positions among the current pieces,
    drop those of pieces no longer in the source; when any piece was added, removed or re-scored, drop
    buckets and clusters so they are made again over all pieces. An interruption here only costs
    re-signing: the markers are written back last."""
    folder = minhash_folder(recipe, curate_dir, source)
    index = folder / "pieces.json"
    old = read_json(index)["keys"] if index.exists() else []
    if old != work.keys:
        position = {k: i for i, k in enumerate(work.keys)}
        markers = {}
        for m in (folder / SIGNED).glob("*.json") if (folder / SIGNED).is_dir() else []:
            if m.stem in position:
                markers[m.stem] = read_json(m)
            m.unlink()
        moved = []
        for f in (folder / "signatures").glob("bucket_*/*.minhash.sig") if (folder / "signatures").is_dir() else []:
            at = int(f.name.split(".")[0])
            key = old[at] if at < len(old) else None
            if key in position and key in markers:
                moved.append(f.rename(f.with_name(f"{position[key]:05d}.moving")))
            else:
                f.unlink()
        for f in moved:
            f.rename(f.with_name(f.name.replace(".moving", ".minhash.sig")))
        write_json(index, {"keys": work.keys})
        for key, marker in markers.items():
            write_json(folder / SIGNED / f"{key}.json", marker)
    clear(folder / "logs" / "signatures" / "completions")  # the pieces to sign are found by each task
    if work.changed or old != work.keys:
        for sub in ("buckets", "clusters", "logs/buckets", "logs/clusters"):
            clear(folder / sub)


def minhash_stages(recipe: Recipe, source: str, curate_dir: Path, tasks: int, workers: int, work: Work,
                   verbose: bool = False) -> list[Stage]:
    """datatrove's three MinHash stages (signatures -> buckets -> clusters), run on the recipe's executor."""
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster
    from datatrove.utils.hashing import HashConfig

    opts = recipe.curate.minhash
    # sha1 shingle hashes: datatrove's default xxhash path passes str, which xxhash>=4 rejects
    config = MinhashConfig(n_grams=opts.n_grams, num_buckets=opts.num_buckets,
                           hashes_per_bucket=opts.hashes_per_bucket, seed=opts.seed,
                           hash_config=HashConfig(precision=64, hash_fc="sha1"))
    folder = minhash_folder(recipe, curate_dir, source)
    sigs, buckets, clusters = folder / "signatures", folder / "buckets", folder / "clusters"
    signed = SignedMarks(folder, source_dir(curate_dir, source))
    reader = SourceReader(source, recipe.data.sources[source], source_dir(curate_dir, source), work.pieces,
                          record_rejects=False, needs=signed)
    return [
        Stage("signatures", [reader, PieceSignatures(work.pieces, signed, output_folder=str(sigs), config=config,
                                                     language=RegexWordTokenizer())],
              tasks, workers, folder / "logs" / "signatures", verbose=verbose),
        Stage("buckets", [MinhashDedupBuckets(input_folder=str(sigs), output_folder=str(buckets), config=config)],
              config.num_buckets, workers, folder / "logs" / "buckets", verbose=verbose),
        Stage("clusters", [MinhashDedupCluster(input_folder=str(buckets), output_folder=str(clusters), config=config,
                                               save_cluster_id=True)],
              1, 1, folder / "logs" / "clusters", verbose=verbose),
    ]


def minhash_marks(scores: pl.LazyFrame, clusters: Path, n_pieces: int) -> pl.LazyFrame:
    """dup_minhash_cluster (null when unique) and dup_minhash_keep (first of its cluster in input order);
    datatrove numbers the signature files (one per piece) in name order, as `_task` does."""
    parts = []
    for rank in range(n_pieces):
        pairs = _read_pairs(clusters / f"{rank:06d}.clusters")
        parts.append(pl.DataFrame({"_task": np.full(len(pairs), rank, dtype=np.int64),
                                   "_idx": pairs[:, 0].astype(np.int64),
                                   "dup_minhash_cluster": pairs[:, 1].astype(np.int64)}))
    table = pl.concat(parts) if parts else pl.DataFrame(schema={"_task": pl.Int64, "_idx": pl.Int64,
                                                                "dup_minhash_cluster": pl.Int64})
    marked = scores.join(table.lazy(), on=["_task", "_idx"], how="left")
    # a cluster is named by its first document's input order, not datatrove's union-find root, whose
    # number depends on how the work was split: the marks of a re-run equal a fresh run's
    cluster = pl.col("dup_minhash_cluster")
    marked = marked.with_columns(pl.when(cluster.is_null()).then(None).otherwise(pl.col("_order").min().over(cluster))
                                 .alias("dup_minhash_cluster"))
    return marked.with_columns(
        pl.when(cluster.is_null()).then(True).otherwise(pl.col("_order") == cluster).alias("dup_minhash_keep"))


def _scores_with_position(curate_dir: Path, source: str, keys: list[str]) -> pl.LazyFrame:
    """Score rows with their piece's position in key order and index within the piece (what datatrove's
    files refer to)."""
    frames = []
    for rank, key in enumerate(keys):
        f = table_path(source_dir(curate_dir, source), key)
        if not f.exists():
            raise FileNotFoundError(f"{f}: score table of a piece missing; finish `curate score` before dedup")
        frames.append(pl.scan_parquet(f).select("doc_id", "path", "row", "text_hash")
                      .with_row_index("_idx").with_columns(pl.col("_idx").cast(pl.Int64), pl.lit(rank, pl.Int64).alias("_task")))
    return pl.concat(frames)


def write_marks(recipe: Recipe, source: str, curate_dir: Path, keys: list[str]) -> pl.DataFrame:
    """Write dedup.parquet (doc_id + the dup_* columns of the enabled methods) atomically; MinHash
    marks read the clusters the MinHash stages wrote."""
    methods = recipe.curate.dedup
    scores = _order_key(_scores_with_position(curate_dir, source, keys), recipe, source)
    columns = ["doc_id"]
    if "exact" in methods:
        scores = exact_marks(scores)
        columns.append("dup_exact")
    if "minhash" in methods:
        clusters = minhash_folder(recipe, curate_dir, source) / "clusters"
        scores = minhash_marks(scores, clusters, len(keys))
        columns += ["dup_minhash_cluster", "dup_minhash_keep"]
    marks = scores.select(columns).collect()
    with atomic_path(dedup_path(curate_dir, source)) as tmp:
        marks.write_parquet(tmp)
    return marks
