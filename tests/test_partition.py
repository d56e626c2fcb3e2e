"""Work split: every input byte read once across tasks, and the same score table whatever the task count."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

import continua.documents as documents
from continua.documents import iter_source
from continua.partition import pieces_of_task, plan_pieces
from continua.recipe import SourceConfig
from continua.score_table import scan_scores
from curate.cli import main
from helpers_curate import make_tokenizer, styled_texts, write_jsonl, write_recipe

PIECE = 3000  # bytes: small enough that the plain file is cut into many ranges


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """A folder with every kind of input: a plain JSON Lines file larger than PIECE (read in byte
    ranges), a .gz, a Parquet file of several row groups and a saved dataset; exact copies across files."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = tmp_path_factory.mktemp("part")
    d = tmp / "corpus"
    texts = styled_texts("med", 60, 7) + styled_texts("gen", 40, 7)
    big = write_jsonl(d / "big.jsonl", texts[:50] + [texts[0]])
    with open(big, "ab") as f:
        f.write(b'{"text": "broken\n')  # a reject inside one of the ranges
    with gzip.open(d / "small.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in texts[50:65] + [texts[3]])
    pq.write_table(pa.table({"text": texts[65:85] + [texts[51]]}), d / "rows.parquet", row_group_size=4)
    datasets.Dataset.from_dict({"text": texts[85:] + [texts[70]]}).save_to_disk(str(d / "hf"))
    assert big.stat().st_size > 5 * PIECE
    return {"folder": d, "big": big, "gz": d / "small.jsonl.gz", "tok": make_tokenizer(tmp / "tok"), "tmp": tmp}


def _cfg(corpus) -> SourceConfig:
    return SourceConfig(paths=[corpus["folder"]], piece_bytes=PIECE)


class _Counting:
    """A file whose reads are logged as (path, offset, length)."""

    def __init__(self, path, log):
        self.f, self.path, self.log = open(path, "rb", buffering=0), str(path), log

    def read(self, n=-1):
        at = self.f.tell()
        block = self.f.read(n)
        self.log.append((self.path, at, len(block)))
        return block

    def seek(self, pos, whence=0):
        return self.f.seek(pos, whence)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_every_input_byte_is_read_once_across_tasks(corpus, monkeypatch):
    import pyarrow.parquet as pq

    reads: list[tuple[str, int, int]] = []
    groups: list[tuple[str, int]] = []
    monkeypatch.setattr(documents, "_open", lambda p: _Counting(p, reads))
    original = pq.ParquetFile.iter_batches

    def logged(self, *a, row_groups=None, **kw):
        groups.extend((str(self.reader), g) for g in row_groups)
        return original(self, *a, row_groups=row_groups, **kw)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", logged)
    cfg = _cfg(corpus)
    pieces = plan_pieces(cfg)
    n_groups = pq.ParquetFile(corpus["folder"] / "rows.parquet").metadata.num_row_groups
    assert n_groups == 6 and sum(p.fmt == "parquet" for p in pieces) == 6
    assert sum(p.fmt == "hf" for p in pieces) >= 2 and sum(p.path == str(corpus["big"]) for p in pieces) >= 5
    baseline = None
    for world in (1, 3, 8):
        reads.clear()
        groups.clear()
        items = []
        for rank in range(world):
            mine = pieces_of_task(pieces, rank, world)
            assert mine or world > len(pieces)
            items += [(type(i).__name__, i.path, i.row) for i in iter_source("s", cfg, rank, world, pieces)]
        for path in (corpus["big"], corpus["gz"]):
            spans = sorted((at, n) for p, at, n in reads if p == str(path) and n)
            # contiguous, never overlapping, covering the file: each byte read exactly once
            assert spans[0][0] == 0 and all(a + n == b for (a, n), (b, _) in zip(spans, spans[1:]))
            assert sum(n for _, n in spans) == path.stat().st_size, (world, path)
        assert len(groups) == len(set(groups)) == n_groups  # each row group decoded by one task
        assert len(items) == len(set(items))
        baseline = baseline or sorted(items)
        assert sorted(items) == baseline


def _table(corpus, tasks: int) -> pl.DataFrame:
    out = corpus["tmp"] / f"t{tasks}"
    recipe = write_recipe(out / "r.toml", {"m": [corpus["folder"]]}, corpus["tok"], None, ["gopher_quality", "c4"])
    recipe.write_text(recipe.read_text().replace("[curate]\n", '[curate]\ndedup = ["exact", "minhash"]\n'))
    assert main(["score", str(recipe), "--tasks", str(tasks), "--workers", "1",
                 "--set", f"data.sources.m.piece_bytes={PIECE}"]) == 0
    stats = json.loads((out / "out" / "curate" / "m" / "stats.json").read_text())
    assert stats["documents_in"] == stats["scored"] + stats["rejected"] and stats["rejected"] == 1
    df = scan_scores(out / "out" / "curate", "m").collect()
    # cluster ids are datatrove's internal numbers: compare clusters by their first member instead
    first = df.group_by("dup_minhash_cluster").agg(pl.col("doc_id").min().alias("cluster_of"))
    df = df.join(first.filter(pl.col("dup_minhash_cluster").is_not_null()), on="dup_minhash_cluster", how="left")
    df = df.drop("dup_minhash_cluster")
    return df.sort("doc_id").select(sorted(df.columns))


def test_tasks_1_3_8_give_equal_tables(corpus):
    one = _table(corpus, 1)
    assert one.height == 51 + 16 + 21 + 16
    assert one["dup_exact"].sum() == 4 and one["cluster_of"].drop_nulls().n_unique() >= 4
    assert one.filter(pl.col("path") == str(corpus["big"]))["doc_id"].str.contains("@").all()  # byte-offset ids
    for tasks in (3, 8):
        other = _table(corpus, tasks)
        assert other.equals(one), tasks
