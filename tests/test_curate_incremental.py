"""Data that grows: `curate score` re-scores only the pieces of added and edited files and equals a fresh
run; every later stage refuses a source folder whose files changed since they were scored, naming the file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest
from helpers_curate import make_tokenizer, styled_texts, write_jsonl, write_recipe

import continua.documents
from continua import fingerprint as fp
from continua.exitcodes import FAILED
from curate.cli import main as curate_main
from continua.score_table import scan_scores

DEDUP = 'dedup = ["exact", "minhash"]\n[curate.minhash]\nnum_buckets = 4\nhashes_per_bucket = 4\n'


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grow")
    texts = styled_texts("med", 40, 3)
    near = [t.replace(".", "!", 1) for t in texts[:3]]  # MinHash near-duplicates of a.jsonl's first texts
    files = {"a": texts[:12] + texts[:2], "b": texts[12:24], "c": texts[24:34] + near + texts[5:7],
             "b2": texts[12:20] + texts[34:40]}
    return {"tmp": tmp, "tok": make_tokenizer(tmp / "tok"), "texts": files}


def _source(folder: Path, corpus, names: list[str]) -> Path:
    """A source folder holding `names` (b2 is an edited b.jsonl)."""
    for n in names:
        write_jsonl(folder / f"{n.rstrip('2')}.jsonl", corpus["texts"][n])
    return folder


def _outputs(cdir: Path, source: str = "med") -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    scores = scan_scores(cdir, source).collect().sort("doc_id")
    marks = pl.read_parquet(cdir / source / "dedup.parquet").sort("doc_id")
    return scores, marks, json.loads((cdir / source / "stats.json").read_text())


def _opened(monkeypatch) -> list[str]:
    """Records the file of every piece the readers open (workers = 1 runs the tasks in this process)."""
    seen: list[str] = []
    real = continua.documents._read_jsonl

    def spy(piece, *args, **kwargs):
        seen.append(Path(piece.path).name)
        return real(piece, *args, **kwargs)

    monkeypatch.setattr(continua.documents, "_read_jsonl", spy)
    return seen


def test_added_and_edited_files_are_scored_alone_and_equal_a_fresh_run(corpus, tmp_path, monkeypatch):
    src = _source(tmp_path / "data", corpus, ["a", "b"])
    recipe = write_recipe(tmp_path / "r.toml", {"med": [src]}, corpus["tok"], None, ["c4"], extra=DEDUP)
    cdir = tmp_path / "out" / "curate"
    assert curate_main(["score", str(recipe), "--tasks", "2", "--workers", "1"]) == 0
    a_table = {p.name: p.stat().st_mtime_ns for p in (cdir / "med" / "scores").glob("*.parquet")}

    _source(src, corpus, ["c", "b2"])  # c.jsonl added (copies of a.jsonl's texts inside), b.jsonl edited
    opened = _opened(monkeypatch)
    hashed: list[str] = []
    real_digest = fp.digest
    monkeypatch.setattr(fp, "digest", lambda p: hashed.append(Path(p).name) or real_digest(p))
    assert curate_main(["score", str(recipe), "--tasks", "3", "--workers", "1"]) == 0  # no --restart
    assert sorted(set(opened)) == ["b.jsonl", "c.jsonl"]  # a.jsonl was neither scored nor re-read by MinHash
    assert "a.jsonl" not in hashed  # its stat is unchanged: its recorded hash is reused
    monkeypatch.undo()
    kept = {p.name: p.stat().st_mtime_ns for p in (cdir / "med" / "scores").glob("*.parquet")}
    assert len(set(kept) & set(a_table)) == 1 and all(kept[k] == a_table[k] for k in set(kept) & set(a_table))

    fresh = tmp_path / "fresh"
    shutil.copytree(src, fresh / "data")
    frecipe = write_recipe(fresh / "r.toml", {"med": [fresh / "data"]}, corpus["tok"], None, ["c4"], extra=DEDUP)
    assert curate_main(["score", str(frecipe), "--tasks", "1", "--workers", "1"]) == 0
    inc, new = _outputs(cdir), _outputs(fresh / "out" / "curate")
    assert inc[0].drop("path").equals(new[0].drop("path")) and inc[0].height == 14 + 14 + 15
    assert inc[1].equals(new[1])
    assert inc[2] == new[2] and inc[2]["documents_in"] == 43
    marks = inc[1]
    assert marks["dup_exact"].sum() == 4  # 2 copies inside a.jsonl, 2 of them again in c.jsonl
    assert marks.filter(~pl.col("dup_minhash_keep")).height >= 6


def test_removed_file_is_dropped_and_restored_identical_file_is_not_changed(corpus, tmp_path, monkeypatch):
    src = _source(tmp_path / "data", corpus, ["a", "b", "c"])
    recipe = write_recipe(tmp_path / "r.toml", {"med": [src]}, corpus["tok"], None, ["c4"],
                          extra='dedup = ["exact"]\n')
    cdir = tmp_path / "out" / "curate"
    assert curate_main(["score", str(recipe)]) == 0
    saved = (src / "c.jsonl").read_bytes()
    (src / "c.jsonl").unlink()
    opened = _opened(monkeypatch)
    assert curate_main(["score", str(recipe), "--workers", "1"]) == 0
    assert opened == []  # nothing to read: the removed file's outputs are dropped
    scores, marks, stats = _outputs(cdir)
    assert set(scores["doc_id"].str.split("#").list.first()) == {"med/data/a.jsonl", "med/data/b.jsonl"}
    assert stats["documents_in"] == 26 and marks.height == 26 and marks["dup_exact"].sum() == 2
    (src / "c.jsonl").write_bytes(saved)  # restored: same content, new mtime and inode
    assert curate_main(["score", str(recipe), "--workers", "1"]) == 0
    assert opened == ["c.jsonl"]
    os.utime(src / "a.jsonl", ns=(1, 1))  # touched only: re-hashed, found equal, not re-scored
    assert curate_main(["score", str(recipe), "--workers", "1"]) == 0
    assert opened == ["c.jsonl"]


def test_a_setting_that_changes_every_score_is_named(corpus, tmp_path, capsys):
    src = _source(tmp_path / "data", corpus, ["a"])
    recipe = write_recipe(tmp_path / "r.toml", {"med": [src]}, corpus["tok"], None, ["c4"])
    assert curate_main(["score", str(recipe)]) == 0
    assert curate_main(["score", str(recipe), "--set", 'curate.heuristics=["gopher_quality"]']) == 2
    err = capsys.readouterr().err
    assert "curate.heuristics" in err and "--restart" in err
    assert curate_main(["score", str(recipe), "--tasks", "5", "--workers", "2"]) == 0  # tasks never force one
    # a smaller piece size cuts the file into byte ranges: its pieces are new, scored without --restart
    assert curate_main(["score", str(recipe), "--set", "data.sources.med.piece_bytes=1000"]) == 0
    scores = scan_scores(tmp_path / "out" / "curate", "med").collect()
    assert scores.height == 14 and scores["doc_id"].str.contains("@").all()
    assert len(list((tmp_path / "out" / "curate" / "med" / "scores").glob("*.parquet"))) > 1


def test_repeated_ids_are_resolved_again_over_the_new_files(tmp_path, corpus):
    """keep-first: when the file holding the first copy goes, the next copy is kept (its piece is re-read);
    a new file's copy of an old id is dropped; the result equals a fresh run."""
    texts = styled_texts("med", 12, 6)

    def write(folder: Path, name: str, rows: list[tuple[str, str]]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("".join(json.dumps({"text": t, "uid": u}) + "\n" for u, t in rows))

    def recipe(root: Path) -> Path:
        r = write_recipe(root / "r.toml", {"m": [root / "d"]}, corpus["tok"], extra=DEDUP)
        r.write_text(r.read_text().replace("paths = [", 'id_field = "uid"\nduplicate_ids = "keep-first"\npaths = [', 1))
        return r

    write(tmp_path / "d", "a.jsonl", [(f"u{i}", t) for i, t in enumerate(texts[:5])])
    write(tmp_path / "d", "b.jsonl", [("u1", texts[5]), ("x", texts[6]), ("u4", texts[7])])
    inc = recipe(tmp_path)
    assert curate_main(["score", str(inc), "--workers", "1"]) == 0
    assert json.loads((tmp_path / "out" / "curate" / "m" / "stats.json").read_text())["rejected"] == 2
    (tmp_path / "d" / "a.jsonl").unlink()  # the first copies of u1 and u4 go
    write(tmp_path / "d", "c.jsonl", [("u1", texts[8]), ("y", texts[9])])  # a later copy of u1 comes
    assert curate_main(["score", str(inc), "--workers", "1"]) == 0

    fresh = tmp_path / "fresh"
    shutil.copytree(tmp_path / "d", fresh / "d")
    assert curate_main(["score", str(recipe(fresh)), "--workers", "1"]) == 0
    got, want = _outputs(tmp_path / "out" / "curate", "m"), _outputs(fresh / "out" / "curate", "m")
    assert got[0].drop("path").equals(want[0].drop("path")) and got[1].equals(want[1]) and got[2] == want[2]
    kept = dict(zip(got[0]["doc_id"].to_list(), got[0]["path"].to_list()))
    assert Path(kept["m/u1"]).name == "b.jsonl" and set(kept) == {"m/u1", "m/x", "m/u4", "m/y"}
    assert got[2]["rejected_by_reason"] == {"duplicate_id": 1}



def test_bench_small_mode_adds_one_file_and_equals_a_fresh_run():
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(root / "bench" / "bench_curate_incremental.py"), "--small"], cwd=root,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["equal_to_fresh"] and (result["new_pieces"], result["kept_pieces"]) == (1, 3)
