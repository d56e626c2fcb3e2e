"""Reading corpora: stable ids, every format, and bad input either an error naming the file or a reject."""

import gzip
import json

import pytest

from continua.documents import InputError, Record, Reject, iter_source
from continua.recipe import SourceConfig


def src(*paths, **kw) -> SourceConfig:
    return SourceConfig(paths=list(paths), **kw)


def test_jsonl_ids_are_stable_and_sharding_partitions(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(10)))
    all_ids = [r.doc_id for r in iter_source("s", src(p))]
    assert all_ids == [f"s/a.jsonl#{i}" for i in range(10)]
    parts = [[r.doc_id for r in iter_source("s", src(p), rank=k, world_size=3)] for k in range(3)]
    assert sorted(sum(parts, [])) == sorted(all_ids)  # a file below piece_bytes is one task's piece
    # above piece_bytes a plain file is read in line-aligned byte ranges; its ids name byte offsets
    line = len(json.dumps({"text": "doc 0"})) + 1
    cut = src(p, piece_bytes=2 * line)
    whole = [r.doc_id for r in iter_source("s", cut)]
    assert whole == [f"s/a.jsonl@{i * line}" for i in range(10)]
    parts = [[r.doc_id for r in iter_source("s", cut, rank=k, world_size=3)] for k in range(3)]
    assert all(parts) and sorted(sum(parts, [])) == sorted(whole)


def test_gzip_parquet_and_hf_dataset(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    gz = tmp_path / "b.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps({"content": "hello", "uid": "u1"}) + "\n")
    pq.write_table(pa.table({"content": ["p0", None, "p2"]}), tmp_path / "c.parquet")
    datasets.Dataset.from_dict({"content": ["h0", "h1"]}).save_to_disk(str(tmp_path / "hf"))
    got = list(iter_source("s", src(gz, tmp_path / "c.parquet", tmp_path / "hf", text_field="content")))
    texts = [r.text for r in got if isinstance(r, Record)]
    assert texts == ["hello", "p0", "p2", "h0", "h1"]
    rejects = [r for r in got if isinstance(r, Reject)]
    assert [(r.reason, r.row) for r in rejects] == [("missing_text", 1)]
    ids = [r.doc_id for r in got if isinstance(r, Record)]
    assert ids[1] == "s/c.parquet#0" and ids[3] == "s/hf#0"
    with_id = list(iter_source("s", src(gz, text_field="content", id_field="uid")))
    assert with_id[0].doc_id == "s/u1"


def test_bad_lines_become_rejects_with_line_and_reason(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"text": "good one"}\n'
                  b'{"text": "broken\n'
                  b'{"body": "no text field"}\n'
                  b'{"text": "caf\xe9 latin-1"}\n'
                  b'{"text": "   "}\n'
                  b'[1, 2]\n'
                  b'{"text": 5}\n'
                  b'{"text": "good two"}\n')
    items = list(iter_source("s", src(p)))
    kept = [i for i in items if isinstance(i, Record)]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [k.text for k in kept] == ["good one", "good two"]
    assert [(r.row + 1, r.reason) for r in rejects] == [
        (2, "malformed_json"), (3, "missing_text"), (4, "invalid_utf8"), (5, "empty_text"),
        (6, "not_an_object"), (7, "text_not_string")]
    assert len(items) == 8  # documents in = kept + rejected
    assert rejects[0].to_json("s")["line"] == 2 and rejects[0].path == str(p)


def test_empty_file_is_an_error_naming_it(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("")
    with pytest.raises(InputError, match="empty.jsonl: input file is empty"):
        list(iter_source("s", src(p)))


def test_unknown_format_and_missing_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="x.csv: unknown input format"):
        list(iter_source("s", src(tmp_path / "x.csv")))
    pq.write_table(pa.table({"body": ["a"]}), tmp_path / "y.parquet")
    with pytest.raises(InputError, match="y.parquet: no column 'text'"):
        list(iter_source("s", src(tmp_path / "y.parquet")))


def test_folder_input_is_recursive_and_sorted(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.jsonl").write_text('{"text": "b"}\n')
    (tmp_path / "d" / "sub" / "a.jsonl").write_text('{"text": "a"}\n')
    ids = [r.doc_id for r in iter_source("s", src(tmp_path / "d"))]
    assert ids == ["s/d/b.jsonl#0", "s/d/sub/a.jsonl#0"]
