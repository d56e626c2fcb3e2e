"""The one content fingerprint of the project: every stage, resume check and checksum manifest hashes files here.

A file's identity is its content: `hash` is `xxh3_128:HEX` of the whole content (a folder, such as
a saved `datasets` dataset, hashes its files' names and bytes), at memory speed, so hashing a corpus
costs a fraction of scoring it. A record is `{"path", "size", "mtime_ns", "inode", "hash"}`; the
stat fields are only a shortcut: when size, mtime and inode are all as recorded the file is taken as
unchanged without reading it, otherwise it is hashed again and compared by content. A copied,
restored or touched but identical file is therefore never "changed", and an edit that keeps size
and mtime is caught by whoever re-hashes (e.g. `mix build` checks every text's hash).

A change is a `StaleInputError` naming the file and the command to re-run: a stage never builds on
inputs that moved under it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import xxhash

from continua.exitcodes import RunFailure
from continua.io import read_json, write_json

ALGO = "xxh3_128"
_CHUNK = 8 << 20


# the shape (continua.shape) of a record as artifacts keep it
RECORD_SHAPE = {"path": str, "size": int, "mtime_ns": int, "inode": int, "hash": str}


class StaleInputError(RunFailure):
    """An input that changed, or is incomplete, since the stage that recorded it: exit 1, re-run that stage."""


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def digest(path: str | Path) -> str:
    """Hex xxh3-128 of the content (a folder: its files' relative names and bytes, in name order)."""
    path = Path(path)
    h = xxhash.xxh3_128()
    for p in _files(path):
        if p is not path:
            h.update(str(p.relative_to(path)).encode())
        with open(p, "rb") as f:
            while block := f.read(_CHUNK):
                h.update(block)
    return h.hexdigest()


def hash_file(path: str | Path, algo: str = ALGO) -> str:
    """`ALGO:HEX` of the content; a record of another algorithm cannot be checked (made by an older version)."""
    if algo != ALGO:
        raise StaleInputError(f"{path}: recorded with the hash {algo!r}, this version uses {ALGO!r}; re-run the "
                              f"stage that recorded it")
    return f"{ALGO}:{digest(path)}"


def _stat(path: Path) -> tuple[int, int, int]:
    """(size, newest mtime, inode) of a file; summed sizes and newest mtime of a folder's files."""
    if path.is_dir():
        stats = [p.stat() for p in _files(path)]
        return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0), path.stat().st_ino
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ino


def _unchanged_stat(record: dict | None, stat: tuple[int, int, int]) -> bool:
    return bool(record) and (record.get("size"), record.get("mtime_ns"), record.get("inode")) == stat


def fingerprint(path: str | Path, known: dict | None = None) -> dict:
    """The record of one file (or folder) as it is now; `known` (an earlier record of it) saves the
    hashing when its size, mtime and inode are unchanged."""
    path = Path(path)
    stat = _stat(path)
    if _unchanged_stat(known, stat) and str(known.get("hash", "")).startswith(f"{ALGO}:"):
        content = known["hash"]
    else:
        content = hash_file(path)
    return {"path": str(path), "size": stat[0], "mtime_ns": stat[1], "inode": stat[2], "hash": content}


def fingerprints(paths: Iterable[str | Path], known: Iterable[dict] = ()) -> list[dict]:
    """Records of `paths`, reusing the hashes of `known` records (by path) whose stat is unchanged."""
    cache = {r["path"]: r for r in known}
    return [fingerprint(p, cache.get(str(p))) for p in paths]


def changed(record: dict, base: str | Path | None = None) -> str | None:
    """Why the file of `record` no longer matches it (None when it does); a relative `path` is taken
    under `base`."""
    path = Path(record["path"]) if base is None else Path(base) / record["path"]
    if not path.exists():
        return "missing"
    stat = _stat(path)
    if stat[0] != record["size"]:
        return f"size {record['size']:,} -> {stat[0]:,} bytes"
    if _unchanged_stat(record, stat):
        return None
    algo = record["hash"].split(":", 1)[0]
    return None if hash_file(path, algo) == record["hash"] else "content changed"


def check(records: Iterable[dict], made_by: str, rerun: str, base: str | Path | None = None) -> None:
    """Raise naming the first file that differs from its record, the stage that recorded it and what to re-run."""
    for record in records:
        why = changed(record, base)
        if why is not None:
            where = record["path"] if base is None else Path(base) / record["path"]
            raise StaleInputError(f"{where}: changed since {made_by} ({why}); re-run {rerun}")


def check_listing(recorded: Iterable[str], current: Iterable[str | Path], made_by: str, rerun: str) -> None:
    """Raise naming the first file that was added to, or removed from, a source since `made_by` listed it:
    a new file is never silently left out, a removed one never silently kept."""
    before = list(map(str, recorded))
    now = list(map(str, current))
    added = [p for p in now if p not in set(before)]
    if added:
        more = f" (and {len(added) - 1} more)" if len(added) > 1 else ""
        raise StaleInputError(f"{added[0]}: new file{more} in the source since {made_by}; re-run {rerun}")
    removed = [p for p in before if p not in set(now)]
    if removed:
        more = f" (and {len(removed) - 1} more)" if len(removed) > 1 else ""
        raise StaleInputError(f"{removed[0]}: removed{more} from the source since {made_by}; re-run {rerun}")


def write_record(path: str | Path, record: dict) -> None:
    write_json(path, {"algo": ALGO, **record})


def read_record(path: str | Path, missing: str) -> dict:
    """A record file, or a StaleInputError with `missing` (what was not done, what to run) when absent."""
    path = Path(path)
    if not path.exists():
        raise StaleInputError(f"{path}: missing: {missing}")
    return read_json(path)


# ---------------------------------------------------------------- curate score -> mix plan

SCORED = "fingerprint.json"  # curate/SOURCE/fingerprint.json: written last, so it exists only after a whole run
RESCORE = "`curate score` (it scores only the added and changed files)"


def finish_scoring(folder: Path, inputs: list[dict], outputs: Iterable[Path], steps: dict,
                   pieces: list[dict] | None = None) -> None:
    """Record inputs, pieces, outputs (relative to `folder`) and the steps run; the inputs must not have
    moved meanwhile."""
    folder = Path(folder)
    check(inputs, "`curate score` started", RESCORE)
    outs = [fingerprint(p) | {"path": str(Path(p).relative_to(folder))} for p in outputs]
    write_record(folder / SCORED, {"inputs": inputs, "pieces": pieces or [], "outputs": outs, "steps": steps})


def check_scored(folder: Path, inputs: Iterable[Path], score_files: list[Path], dedup: list[str]) -> list[dict]:
    """What `mix plan` checks of one source's score table: `curate score` finished (every configured step,
    `dedup` naming the methods the plan relies on), its outputs are as it left them, and the source
    holds the files it scored, as they were: a file added, removed or edited since is named.
    Returns the source files' fingerprints for the plan. A table written by other tools (no run.json)
    has no record: the files are fingerprinted now, and `mix build` still checks every text's hash."""
    folder = Path(folder)
    inputs = list(inputs)
    marks = folder / "dedup.parquet"
    if dedup and not marks.exists() and (folder / "run.json").exists():
        raise StaleInputError(f"{marks}: missing: the recipe's [curate] dedup = {dedup} step did not run to the "
                              f"end (was `curate score` interrupted?); re-run `curate score`")
    if not (folder / SCORED).exists():
        if (folder / "run.json").exists():
            raise StaleInputError(f"{folder / SCORED}: missing: `curate score` did not finish for this source; "
                                  f"re-run `curate score`")
        return [fingerprint(p) for p in inputs]
    record = read_json(folder / SCORED)
    ran = record.get("steps", {}).get("dedup", [])
    if not set(dedup) <= set(ran):
        raise StaleInputError(f"{folder / SCORED}: `curate score` marked duplicates by {ran or 'nothing'} but the "
                              f"recipe asks for {dedup}; re-run `curate score`")
    check(record["outputs"], "`curate score` wrote it", "`curate score`", base=folder)
    extra = sorted(set(map(str, score_files)) - {str(folder / r["path"]) for r in record["outputs"]})
    if extra:
        raise StaleInputError(f"{extra[0]}: not written by the last `curate score` of this source; "
                              f"re-run `curate score --restart`")
    check_listing([r["path"] for r in record["inputs"]], inputs, "`curate score`", f"{RESCORE}, then `mix plan`")
    check(record["inputs"], "`curate score` read it", f"{RESCORE}, then `mix plan`")
    return record["inputs"]
