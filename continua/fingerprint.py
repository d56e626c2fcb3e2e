"""Fingerprints of the files each stage reads, recorded by the stage that read them and checked by the next.

A fingerprint is `{"path", "size", "mtime_ns", "hash"}`; `hash` is `ALGO:HEX` of the whole content
(xxh3-128 when the `xxhash` package is installed, else BLAKE2b-128: both much faster than reading
the file from disk, so hashing a corpus costs a fraction of scoring it). Checking is cheap: size
and mtime equal means unchanged; a different mtime with an equal size is re-hashed, so a copied
or touched but identical file still passes. A change is a `StaleInputError` naming the file and
the command to re-run: a stage never builds on inputs that moved under it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Iterable

from continua.exitcodes import RunFailure
from continua.io import read_json, write_json

try:
    import xxhash
except ImportError:  # optional: the fallback is only slower
    xxhash = None

ALGO = "xxh3_128" if xxhash is not None else "blake2b"
_CHUNK = 1 << 20


class StaleInputError(RunFailure):
    """An input that changed, or is incomplete, since the stage that recorded it: exit 1, re-run that stage."""


def _hasher(algo: str) -> Callable[[], Any]:
    if algo == "xxh3_128":
        if xxhash is None:
            raise StaleInputError("this fingerprint was made with xxh3_128: `pip install xxhash` to check it")
        return xxhash.xxh3_128
    if algo == "blake2b":
        return lambda: hashlib.blake2b(digest_size=16)
    raise StaleInputError(f"unknown fingerprint hash {algo!r}")


def hash_file(path: str | Path, algo: str = ALGO) -> str:
    """`ALGO:HEX` over the whole content; a folder (a saved `datasets` dataset) hashes its files' names and bytes."""
    path = Path(path)
    h = _hasher(algo)()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if p is not path:
            h.update(str(p.relative_to(path)).encode())
        with open(p, "rb") as f:
            while block := f.read(_CHUNK):
                h.update(block)
    return f"{algo}:{h.hexdigest()}"


def _stat(path: Path) -> tuple[int, int]:
    """(size, newest mtime) of a file, or summed over a folder's files."""
    if path.is_dir():
        stats = [p.stat() for p in path.rglob("*") if p.is_file()]
        return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def fingerprint(path: str | Path) -> dict:
    """The record of one file (or folder) as it is now."""
    path = Path(path)
    size, mtime = _stat(path)
    return {"path": str(path), "size": size, "mtime_ns": mtime, "hash": hash_file(path)}


def changed(record: dict) -> str | None:
    """Why the file of `record` no longer matches it (None when it does)."""
    path = Path(record["path"])
    if not path.exists():
        return "missing"
    size, mtime = _stat(path)
    if size != record["size"]:
        return f"size {record['size']:,} -> {size:,} bytes"
    if mtime == record.get("mtime_ns"):
        return None
    algo = record["hash"].split(":", 1)[0]
    return None if hash_file(path, algo) == record["hash"] else "content changed"


def check(records: Iterable[dict], made_by: str, rerun: str) -> None:
    """Raise naming the first file that differs from its record, the stage that recorded it and what to re-run."""
    for record in records:
        why = changed(record)
        if why is not None:
            raise StaleInputError(f"{record['path']}: changed since {made_by} ({why}); re-run {rerun}")


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


def start_scoring(folder: Path, inputs: Iterable[Path]) -> list[dict]:
    """Fingerprints of a source's files as `curate score` starts; the old record goes until the run completes."""
    (Path(folder) / SCORED).unlink(missing_ok=True)
    return [fingerprint(p) for p in inputs]


def finish_scoring(folder: Path, inputs: list[dict], outputs: Iterable[Path], steps: dict) -> None:
    """Record inputs, outputs (relative to `folder`) and the steps run; the inputs must not have moved meanwhile."""
    folder = Path(folder)
    check(inputs, "`curate score` started", "`curate score --restart`")
    outs = [fingerprint(p) | {"path": str(Path(p).relative_to(folder))} for p in outputs]
    write_record(folder / SCORED, {"inputs": inputs, "outputs": outs, "steps": steps})


def check_scored(folder: Path, inputs: Iterable[Path], score_files: list[Path], dedup: list[str]) -> list[dict]:
    """What `mix plan` checks of one source's score table: `curate score` finished (every configured step,
    `dedup` naming the methods the plan relies on), its outputs and the source files are as it left them.
    Returns the source files' fingerprints for the plan. A table written by other tools (no run.json)
    has no record: the files are fingerprinted now, and `mix build` still checks every text's hash."""
    folder = Path(folder)
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
    outputs = [r | {"path": str(folder / r["path"])} for r in record["outputs"]]
    check(outputs, "`curate score` wrote it", "`curate score --restart`")
    extra = sorted(set(map(str, score_files)) - {r["path"] for r in outputs})
    if extra:
        raise StaleInputError(f"{extra[0]}: not written by the last `curate score` of this source; "
                              f"re-run `curate score --restart`")
    check(record["inputs"], "`curate score` read it", "`curate score --restart`, then `mix plan`")
    return record["inputs"]
