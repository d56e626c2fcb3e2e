"""Bounded reads and what a folder or file may hold: long lines, damaged .gz, BOM, stray files, ids, splits."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from continua.documents import InputError, Record, Reject, iter_source
from continua.recipe import SourceConfig

BIG = 300 << 20  # bytes of the hostile line


def src(*paths, **kw) -> SourceConfig:
    return SourceConfig(paths=list(paths), **kw)


def _line(text: str) -> bytes:
    return json.dumps({"text": text}).encode() + b"\n"


def _write_big_plain(path: Path) -> None:
    block = b"a" * (1 << 20)
    with open(path, "wb") as f:
        f.write(_line("good before") + b'{"text": "')
        for _ in range(BIG // len(block)):
            f.write(block)
        f.write(b'"}\n' + _line("good after"))


def _write_big_gzip(path: Path) -> None:
    """Concatenated gzip members (one compressed 1 MiB block written 300 times): a 300 KB file
    that inflates to a 300 MB line, without compressing 300 MB here."""
    block = gzip.compress(b"a" * (1 << 20), compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(_line("gz before") + b'{"text": "'))
        for _ in range(BIG >> 20):
            f.write(block)
        f.write(gzip.compress(b'"}\n' + _line("gz after")))


def test_300mb_lines_are_rejects_under_an_address_space_limit(tmp_path):
    """The default max_line_bytes, a process that may not map more than 128 MB: both hostile lines
    become `line_too_long` rejects and the documents around them are read."""
    plain, gz = tmp_path / "big.jsonl", tmp_path / "big.jsonl.gz"
    _write_big_plain(plain)
    _write_big_gzip(gz)
    assert plain.stat().st_size > BIG and gz.stat().st_size < BIG // 100
    limit = 128 << 20
    code = textwrap.dedent(f"""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
        from continua.documents import Record, iter_source
        from continua.recipe import SourceConfig
        try:
            bytearray({limit})  # the limit holds: this much cannot even be allocated
            sys.exit("address-space limit not in force")
        except MemoryError:
            pass
        out = []
        for item in iter_source("s", SourceConfig(paths=[{str(plain)!r}, {str(gz)!r}])):
            if isinstance(item, Record):
                out.append(["doc", item.text, item.doc_id])
            else:
                out.append(["reject", item.reason, item.path, item.offset, item.row])
        print(json.dumps(out))
    """)
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"})
    finally:
        plain.unlink()  # 300 MB: not left behind in pytest's kept temp folders
    assert done.returncode == 0, done.stderr[-2000:]
    items = json.loads(done.stdout)
    first = len(_line("good before"))
    after = len(_line("good before")) + len(b'{"text": "') + BIG + len(b'"}\n')
    assert items == [  # above piece_bytes (256 MiB) the plain file is cut into ranges: ids name byte offsets
        ["doc", "good before", "s/big.jsonl@0"],
        ["reject", "line_too_long", str(plain), first, first],
        ["doc", "good after", f"s/big.jsonl@{after}"],
        ["doc", "gz before", "s/big.jsonl.gz#0"],
        ["reject", "line_too_long", str(gz), len(_line("gz before")), 1],
        ["doc", "gz after", "s/big.jsonl.gz#2"],
    ]  # 6 in = 4 kept + 2 rejected


def test_long_line_reject_names_length_and_offset_and_reading_goes_on(tmp_path):
    p = tmp_path / "a.jsonl"
    body = _line("one") + _line("x" * 5000) + _line("two") + b'{"text": "' + b"y" * 3000  # last: no newline
    p.write_bytes(body)
    items = list(iter_source("s", src(p, max_line_bytes=1000)))
    assert [i.text for i in items if isinstance(i, Record)] == ["one", "two"]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [(r.reason, r.row, r.offset) for r in rejects] == [
        ("line_too_long", 1, len(_line("one"))),
        ("line_too_long", 3, len(_line("one")) + len(_line("x" * 5000)) + len(_line("two")))]
    assert "5,012 bytes" in rejects[0].detail and rejects[0].to_json("s")["line"] == 2
    # the bound is on the line, not the chunk: a line exactly at the bound is read
    q = tmp_path / "b.jsonl"
    q.write_bytes(_line("z" * 988))
    assert len(_line("z" * 988)) - 1 == 1000
    assert [i.text for i in iter_source("s", src(q, max_line_bytes=1000))] == ["z" * 988]


def _gz_lines(path: Path, n: int) -> bytes:
    import random

    rng = random.Random(0)  # incompressible enough that the file has a middle to cut
    lines = b"".join(_line(f"doc {i} " + "".join(rng.choice("abcdefgh ") for _ in range(200))) for i in range(n))
    path.write_bytes(gzip.compress(lines))
    return lines


def test_truncated_gzip_keeps_rows_before_the_damage_and_rejects_it_once(tmp_path):
    p = tmp_path / "t.jsonl.gz"
    _gz_lines(p, 400)
    whole = p.read_bytes()
    p.write_bytes(whole[: len(whole) // 2])
    items = list(iter_source("s", src(p)))
    docs = [i for i in items if isinstance(i, Record)]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert 100 < len(docs) < 400
    assert [d.row for d in docs] == list(range(len(docs)))  # every row before the damage, in order
    assert [d.text.split()[1] for d in docs] == [str(i) for i in range(len(docs))]
    assert len(rejects) == 1 and rejects[0].reason == "gzip_damaged" and rejects[0].path == str(p)
    assert f"at byte {len(whole) // 2:,} of the file" in rejects[0].detail and "truncated" in rejects[0].detail
    # corrupt in the middle: damage is named, the rows before it are kept
    bad = bytearray(whole)
    bad[len(bad) // 2: len(bad) // 2 + 64] = b"\xff" * 64
    p.write_bytes(bytes(bad))
    items = list(iter_source("s", src(p)))
    assert isinstance(items[-1], Reject) and items[-1].reason == "gzip_damaged" and "corrupt" in items[-1].detail
    assert sum(isinstance(i, Record) for i in items) > 50  # zlib may notice only at the CRC: rows before it stay
    # a file that is no gzip at all is an error naming it, not a reject
    p.write_bytes(b"plain text, not gzip\n")
    with pytest.raises(InputError, match="t.jsonl.gz: not a readable gzip file"):
        list(iter_source("s", src(p)))


def test_damaged_gzip_and_long_line_in_curate_score_balance(tmp_path):
    from curate.cli import main
    from helpers_curate import make_tokenizer, styled_texts, write_jsonl, write_recipe

    data = tmp_path / "data"
    good = write_jsonl(data / "a.jsonl", styled_texts("med", 12, 1))
    with open(good, "ab") as f:
        f.write(_line("w " * 3000))
    lines = _gz_lines(data / "b.jsonl.gz", 300)
    whole = (data / "b.jsonl.gz").read_bytes()
    (data / "b.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    recipe = write_recipe(tmp_path / "r.toml", {"med": [data]}, make_tokenizer(tmp_path / "tok"))
    assert main(["score", str(recipe), "--set", "data.sources.med.max_line_bytes=4000"]) == 0
    stats = json.loads((tmp_path / "out" / "curate" / "med" / "stats.json").read_text())
    assert stats["rejected_by_reason"] == {"gzip_damaged": 1, "line_too_long": 1}
    assert stats["documents_in"] == stats["scored"] + stats["rejected"]
    assert 12 + 50 < stats["scored"] < 12 + lines.count(b"\n")
    rejects = [json.loads(x) for f in sorted((tmp_path / "out" / "curate" / "med" / "rejects").glob("*.jsonl"))
               for x in f.open()]  # one file per piece
    assert {r["reason"]: r["path"] for r in rejects} == {"line_too_long": str(good),
                                                        "gzip_damaged": str(data / "b.jsonl.gz")}


def test_rejects_of_a_file_read_in_byte_ranges_name_their_line_like_any_other(tmp_path):
    from curate.cli import main
    from helpers_curate import make_tokenizer, styled_texts, write_recipe

    texts = styled_texts("med", 30, 2)
    lines = [json.dumps({"text": t, "uid": f"u{i}"}).encode() + b"\n" for i, t in enumerate(texts)]
    lines[4] = b'{"text": "' + b"x" * 5000 + b'"}\n'  # too long
    lines[17] = b"not json\n"
    lines[26] = b'{"text": "' + b"y" * 6000 + b'"}\n'  # too long, in a later range
    lines[28] = json.dumps({"text": texts[28], "uid": "u3"}).encode() + b"\n"  # a repeated id
    p = tmp_path / "cut.jsonl"
    p.write_bytes(b"".join(lines))
    recipe = write_recipe(tmp_path / "r.toml", {"m": [p]}, make_tokenizer(tmp_path / "tok"))
    recipe.write_text(recipe.read_text().replace('paths = [', 'id_field = "uid"\nduplicate_ids = "keep-first"\n'
                                                 'piece_bytes = 3000\nmax_line_bytes = 4000\npaths = [', 1))
    assert main(["score", str(recipe), "--tasks", "3", "--workers", "1"]) == 0
    folder = tmp_path / "out" / "curate" / "m" / "rejects"
    rejects = [json.loads(x) for f in sorted(folder.glob("*.jsonl")) for x in f.open()]
    starts = {i + 1: sum(map(len, lines[:i])) for i in range(30)}
    assert sorted((r["line"], r["offset"], r["reason"]) for r in rejects) == [
        (5, starts[5], "line_too_long"), (18, starts[18], "malformed_json"), (27, starts[27], "line_too_long"),
        (29, starts[29], "duplicate_id")]
    assert all(r["path"] == str(p) for r in rejects)
    assert f"{p} line 4" in next(r["detail"] for r in rejects if r["reason"] == "duplicate_id")


def test_bom_is_accepted(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + _line("first") + _line("second"))
    assert [(i.text, i.doc_id) for i in iter_source("s", src(p))] == [("first", "s/bom.jsonl#0"),
                                                                      ("second", "s/bom.jsonl#1")]


def test_folder_reads_only_data_files_and_names_what_it_skips(tmp_path, caplog):
    d = tmp_path / "corpus"
    (d / ".cache" / "x").mkdir(parents=True)
    (d / ".cache" / "x" / "junk.jsonl").write_bytes(b"not json\n")
    (d / "a.jsonl").write_bytes(_line("a"))
    (d / "EXPECTED.json").write_text(json.dumps({"rows": 19}, indent=1))
    (d / "notes.txt").write_text("hello\n")
    with caplog.at_level(logging.WARNING, logger="continua.inputs"):
        items = list(iter_source("s", src(d)))
    assert [(type(i).__name__, i.doc_id) for i in items] == [("Record", "s/corpus/a.jsonl#0")]
    assert "skipped 3 item(s)" in caplog.text and "EXPECTED.json" in caplog.text and "notes.txt" in caplog.text
    assert ".cache/" in caplog.text
    # a .json file named explicitly is read as JSON Lines
    j = tmp_path / "one.json"
    j.write_bytes(_line("j"))
    assert [i.text for i in iter_source("s", src(j))] == ["j"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("x")
    with pytest.raises(InputError, match="empty: folder holds no .jsonl"):
        list(iter_source("s", src(tmp_path / "empty")))


def test_ids_use_the_path_relative_to_the_sources_common_folder(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "part.jsonl").write_bytes(_line(sub))
    both = src(tmp_path / "a" / "part.jsonl", tmp_path / "b" / "part.jsonl")
    assert [i.doc_id for i in iter_source("s", both)] == ["s/a/part.jsonl#0", "s/b/part.jsonl#0"]
    assert [i.doc_id for i in iter_source("s", src(tmp_path / "a"), )] == ["s/a/part.jsonl#0"]
    assert [i.doc_id for i in iter_source("s", src(tmp_path / "a" / "part.jsonl"))] == ["s/part.jsonl#0"]
    with pytest.raises(InputError, match="part.jsonl: listed twice"):
        list(iter_source("s", src(tmp_path / "a", tmp_path / "a" / "part.jsonl")))


def test_datasets_split_and_hub_style_folder_split(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(50)]}),
                               "test": datasets.Dataset.from_dict({"text": ["x0", "x1"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    every = [i.doc_id for i in iter_source("s", src(tmp_path / "dd"))]
    assert len(every) == 52
    train = list(iter_source("s", src(tmp_path / "dd", split="train")))
    assert [i.text for i in train] == [f"t{i}" for i in range(50)] and train[3].doc_id == "s/dd/train#3"
    # read in row ranges (pieces) and batches: the same ids as one piece
    cut = src(tmp_path / "dd", split="train", piece_bytes=64)
    parts = [[i.doc_id for i in iter_source("s", cut, rank=r, world_size=4)] for r in range(4)]
    assert all(parts) and sorted(sum(parts, [])) == sorted(i.doc_id for i in train)
    with pytest.raises(InputError, match="no split 'valid' in this dataset \\(splits: train, test\\)"):
        list(iter_source("s", src(tmp_path / "dd", split="valid")))
    datasets.Dataset.from_dict({"text": ["s0"]}, split="test").save_to_disk(str(tmp_path / "one"))
    assert [i.text for i in iter_source("s", src(tmp_path / "one", split="test"))] == ["s0"]
    with pytest.raises(InputError, match="this dataset is split 'test', not 'train'"):
        list(iter_source("s", src(tmp_path / "one", split="train")))
    hub = tmp_path / "hub"
    (hub / "data").mkdir(parents=True)
    pq.write_table(pa.table({"text": ["tr0", "tr1"]}), hub / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"text": ["te0"]}), hub / "data" / "test-00000-of-00001.parquet")
    (hub / "README.md").write_text("# card\n")
    assert [i.text for i in iter_source("s", src(hub, split="train"))] == ["tr0", "tr1"]
    assert [i.text for i in iter_source("s", src(hub, split="test"))] == ["te0"]
    with pytest.raises(InputError, match="no split 'dev' in this folder"):
        list(iter_source("s", src(hub, split="dev")))
