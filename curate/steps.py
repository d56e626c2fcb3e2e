"""The plumbing steps of a `curate score` pipeline: read a source, count tokens, write the score table.

Each step is a datatrove `PipelineStep` with one job. Scorers (fastText, heuristics, perplexity)
sit between `TokenCounter` and `ScoreWriter` and only add `doc.metadata` entries; the writer turns
every metadata entry into a column, so a new scorer needs no change here.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import polars as pl
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched

from continua.documents import Record, iter_source
from continua.io import atomic_open, atomic_path, write_json
from continua.partition import plan_pieces
from continua.recipe import SourceConfig
from continua.score_table import dropped_rows, text_hash
from continua.tokenizer import TextTokenizer

# metadata keys the reader sets; everything else in metadata is a score column
LOCATION_KEYS = ("source", "path", "row")


def task_name(rank: int) -> str:
    return f"{rank:05d}"


class SourceReader(PipelineStep):
    """Turns a recipe source into datatrove Documents; unreadable items go to rejects/NNNNN.jsonl.

    Also writes tasks/NNNNN.json with the task's documents_in and rejects by reason, so the
    source's stats can prove documents_in == scored + rejected.
    """

    name = "📖 continua source"
    type = "📖 - READER"

    def __init__(self, source: str, cfg: SourceConfig, source_dir: str | Path, record_rejects: bool = True):
        super().__init__()
        self.source = source
        self.cfg = cfg
        self.source_dir = Path(source_dir)
        self.record_rejects = record_rejects  # False when re-reading a source already scored (dedup)
        # planned once, here in the main process: the pieces travel to the tasks, each reads only its own
        self.pieces = plan_pieces(cfg)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        if not self.record_rejects:
            skip = dropped_rows(self.source_dir)  # copies of repeated ids dropped from the score table
            for item in iter_source(self.source, self.cfg, rank, world_size, self.pieces):
                if isinstance(item, Record) and (item.path, item.row) not in skip:
                    yield Document(text=item.text, id=item.doc_id,
                                   metadata={"source": self.source, "path": item.path, "row": item.row})
            return
        rejected: Counter[str] = Counter()
        documents_in = 0
        with atomic_open(self.source_dir / "rejects" / f"{task_name(rank)}.jsonl") as rej:
            for item in iter_source(self.source, self.cfg, rank, world_size, self.pieces):
                documents_in += 1
                if isinstance(item, Record):
                    yield Document(text=item.text, id=item.doc_id,
                                   metadata={"source": self.source, "path": item.path, "row": item.row})
                else:
                    rejected[item.reason] += 1
                    rej.write(json.dumps(item.to_json(self.source), ensure_ascii=False) + "\n")
        # stats once per task: a per-document stat_update costs ~20 us, as much as reading the line
        self.stat_update("documents", value=documents_in - sum(rejected.values()))
        for reason, n in rejected.items():
            self.stat_update(f"rejected_{reason}", value=n)
        write_json(self.source_dir / "tasks" / f"{task_name(rank)}.json",
                   {"rank": rank, "world_size": world_size, "documents_in": documents_in,
                    "rejected": dict(sorted(rejected.items()))})


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
    """Writes scores/NNNNN.parquet for the task, atomically, once every document has passed through."""

    name = "💾 score table"
    type = "💾 - WRITER"

    def __init__(self, source_dir: str | Path, show_progress: bool = True):
        super().__init__()
        self.source_dir = Path(source_dir)
        self.show_progress = show_progress

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from continua.progress import progress

        ids: list[str] = []
        n_chars: list[int] = []
        hashes: list[str] = []
        metas: list[dict] = []
        # the per-document work is only what needs the text; columns are built from the metadata after the loop
        for doc in progress(data, desc=f"score {self.source_dir.name} task {rank}", unit="doc",
                        disable=not self.show_progress, mininterval=2.0, position=rank if world_size > 1 else None):
            text = doc.text
            ids.append(doc.id)
            n_chars.append(len(text))
            hashes.append(text_hash(text))
            metas.append(doc.metadata)
            yield doc
        self.stat_update("scored", value=len(ids))
        base = {"doc_id": ids, **{k: [md[k] for md in metas] for k in LOCATION_KEYS}, "n_chars": n_chars,
                "n_tokens": [md.get("n_tokens") for md in metas], "text_hash": hashes}
        frame = pl.DataFrame(base, schema={"doc_id": pl.String, "source": pl.String, "path": pl.String,
                                           "row": pl.Int64, "n_chars": pl.Int64, "n_tokens": pl.Int64,
                                           "text_hash": pl.String})
        # every other metadata entry is a score column; a scorer that skipped a document leaves a null there
        extra = sorted({k for md in metas for k in md} - {*LOCATION_KEYS, "n_tokens"})
        if extra:
            frame = frame.with_columns(pl.DataFrame({k: [md.get(k) for md in metas] for k in extra}, strict=False))
        with atomic_path(self.source_dir / "scores" / f"{task_name(rank)}.parquet") as tmp:
            frame.write_parquet(tmp)
