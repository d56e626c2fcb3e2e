"""The plumbing steps of a `curate score` pipeline: read a source, count tokens, write the score table.

Each step is a datatrove `PipelineStep` with one job. Scorers (fastText, heuristics, perplexity)
sit between `TokenCounter` and `ScoreWriter` and only add `doc.metadata` entries; the writer turns
every metadata entry into a column, so a new scorer needs no change here.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Callable

import polars as pl
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched

from continua.documents import Record, iter_source
from continua.io import atomic_open, atomic_path, read_json, write_json
from continua.partition import Piece, pieces_of_task
from continua.recipe import SourceConfig
from continua.score_table import dropped_rows, text_hash
from continua.tokenizer import TextTokenizer
from curate.pieces import counts_path, is_scored, rejects_path, table_path

# metadata keys the reader sets; everything else in metadata is a score column
LOCATION_KEYS = ("source", "path", "row", "piece")


def task_name(rank: int) -> str:
    return f"{rank:05d}"


def task_pieces(pieces: list[tuple[str, Piece]], rank: int, world_size: int) -> list[tuple[str, Piece]]:
    """(key, piece) of this task, in input order (continua.partition balances them by size)."""
    by_piece = {p: k for k, p in pieces}
    return [(by_piece[p], p) for p in pieces_of_task([p for _, p in pieces], rank, world_size)]


class SourceReader(PipelineStep):
    """Turns the given pieces of a recipe source into datatrove Documents (metadata `piece` = its key);
    unreadable items go to rejects/KEY.jsonl.

    Writes counts/KEY.json with the piece's documents_in and rejects by reason once it is read, so
    the source's stats can prove documents_in == scored + rejected. A piece already scored (an
    earlier, interrupted run of the same work) is skipped. With `record_rejects` False (the MinHash
    re-read) it reads only pieces whose signatures are missing or stale (`needs`).
    """

    name = "📖 continua source"
    type = "📖 - READER"

    def __init__(self, source: str, cfg: SourceConfig, source_dir: str | Path, pieces: list[tuple[str, Piece]],
                 record_rejects: bool = True, needs: Callable[[str], bool] | None = None):
        super().__init__()
        self.source = source
        self.cfg = cfg
        self.source_dir = Path(source_dir)
        self.record_rejects = record_rejects  # False when re-reading a source already scored (dedup)
        self.pieces = pieces  # planned once, in the main process: each task reads only its own
        self.needs = needs

    def _documents(self, key: str, items) -> DocumentsPipeline:
        for item in items:
            if isinstance(item, Record):
                yield Document(text=item.text, id=item.doc_id,
                               metadata={"source": self.source, "path": item.path, "row": item.row, "piece": key})

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        mine = task_pieces(self.pieces, rank, world_size)
        if not self.record_rejects:
            skip = dropped_rows(self.source_dir)  # copies of repeated ids dropped from the score table
            for key, piece in mine:
                if self.needs is None or self.needs(key):
                    items = iter_source(self.source, self.cfg, 0, 1, [piece])
                    yield from self._documents(key, (r for r in items if (r.path, r.row) not in skip))
            return
        n_docs = 0
        rejected_all: Counter[str] = Counter()
        for key, piece in mine:
            if is_scored(self.source_dir, key):
                continue
            rejected: Counter[str] = Counter()
            documents_in = 0
            with atomic_open(rejects_path(self.source_dir, key)) as rej:
                for item in iter_source(self.source, self.cfg, 0, 1, [piece]):
                    documents_in += 1
                    if isinstance(item, Record):
                        yield Document(text=item.text, id=item.doc_id,
                                       metadata={"source": self.source, "path": item.path, "row": item.row,
                                                 "piece": key})
                    else:
                        rejected[item.reason] += 1
                        rej.write(json.dumps(item.to_json(self.source), ensure_ascii=False) + "\n")
            write_json(counts_path(self.source_dir, key), {"path": piece.path, "start": piece.start,
                                                            "stop": piece.stop, "documents_in": documents_in,
                                                            "rejected": dict(sorted(rejected.items()))})
            n_docs += documents_in - sum(rejected.values())
            rejected_all.update(rejected)
        # stats once per task: a per-document stat_update costs ~20 us, as much as reading the line
        self.stat_update("documents", value=n_docs)
        for reason, n in rejected_all.items():
            self.stat_update(f"rejected_{reason}", value=n)


class TokenCounter(PipelineStep):
    """Adds `n_tokens` (incl. BOS/EOS per the tokenizer's policy), counted in batches."""

    name = "🔢 token count"
    type = "🔢 - TOKENIZER"

    def __init__(self, tokenizer: TextTokenizer, batch_size: int = 256):
        super().__init__()
        self.tokenizer = tokenizer  # pickles without its backend; reloads lazily in the worker
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for batch in batched(data, self.batch_size):
            with self.track_time("batch"):
                counts = self.tokenizer.count_batch([d.text for d in batch])
            for doc, n in zip(batch, counts):
                doc.metadata["n_tokens"] = n
                yield doc


class ScoreWriter(PipelineStep):
    """Writes scores/KEY.parquet for each piece of the task, atomically, once its documents have passed
    through (documents arrive piece after piece, in the reader's order); a piece without readable
    documents gets an empty table once the reader has counted it."""

    name = "💾 score table"
    type = "💾 - WRITER"

    def __init__(self, source_dir: str | Path, pieces: list[tuple[str, Piece]], show_progress: bool = True):
        super().__init__()
        self.source_dir = Path(source_dir)
        self.pieces = pieces
        self.show_progress = show_progress

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from continua.progress import progress

        table = _Table()
        key = None
        total = 0
        for doc in progress(data, desc=f"score {self.source_dir.name} task {rank}", unit="doc",
                            disable=not self.show_progress, mininterval=2.0, position=rank if world_size > 1 else None):
            if doc.metadata["piece"] != key:
                if key is not None:
                    table.write(table_path(self.source_dir, key))
                key, table = doc.metadata["piece"], _Table()
            table.add(doc)
            total += 1
            yield doc
        if key is not None:
            table.write(table_path(self.source_dir, key))
        for k, _ in task_pieces(self.pieces, rank, world_size):  # pieces with no readable document
            counts = counts_path(self.source_dir, k)
            if not table_path(self.source_dir, k).exists() and counts.exists():
                c = read_json(counts)
                if c["documents_in"] == sum(c["rejected"].values()):
                    _Table().write(table_path(self.source_dir, k))
        self.stat_update("scored", value=total)


class _Table:
    """The rows of one piece's score table. Per document only what needs the text is computed (length,
    hash); the columns are built from the documents' metadata when the table is written."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.n_chars: list[int] = []
        self.hashes: list[str] = []
        self.metas: list[dict] = []

    def add(self, doc: Document) -> None:
        text = doc.text
        self.ids.append(doc.id)
        self.n_chars.append(len(text))
        self.hashes.append(text_hash(text))
        self.metas.append(doc.metadata)

    def write(self, path: Path) -> None:
        metas = self.metas
        base = {"doc_id": self.ids, **{k: [md[k] for md in metas] for k in ("source", "path", "row")},
                "n_chars": self.n_chars, "n_tokens": [md.get("n_tokens") for md in metas], "text_hash": self.hashes}
        frame = pl.DataFrame(base, schema={"doc_id": pl.String, "source": pl.String, "path": pl.String,
                                           "row": pl.Int64, "n_chars": pl.Int64, "n_tokens": pl.Int64,
                                           "text_hash": pl.String})
        # every other metadata entry is a score column; a scorer that skipped a document leaves a null there
        extra = sorted({k for md in metas for k in md} - {*LOCATION_KEYS, "n_tokens"})
        if extra:
            frame = frame.with_columns(pl.DataFrame({k: [md.get(k) for md in metas] for k in extra}, strict=False))
        with atomic_path(path) as tmp:
            frame.write_parquet(tmp)
