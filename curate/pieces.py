"""The pieces of a source `curate score` keeps its outputs by, and which of them a run must (re)score.

Every output of scoring is per piece (continua.partition): `scores/KEY.parquet`, `rejects/KEY.jsonl`,
`counts/KEY.json`, and the piece's MinHash signatures. A piece's KEY is a digest of what its
documents are made of: the content hash of its file (continua.fingerprint) and where the piece lies
in it. A re-run after files were added, removed or edited therefore re-scores only the pieces of
added and edited files (an edited file is re-scored whole: its byte ranges, and so its document
ids, move), drops the outputs of removed ones and keeps the rest unread; the tasks only share out
the pieces to do, so the task and worker counts never change a result. KEYs are 16-digit numbers,
so the score files sort in one order everywhere (curate.dedup numbers the pieces by it).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from continua.io import read_json, write_json
from continua.partition import Piece, plan_pieces
from continua.recipe import SourceConfig

SCORES, REJECTS, COUNTS = "scores", "rejects", "counts"
INDEX = "pieces.json"  # the pieces (and input fingerprints) of the latest run, written when it starts


def piece_key(piece: Piece, file_hash: str) -> str:
    """16 decimal digits from the file's content hash and the piece's place in it."""
    blob = json.dumps([piece.path, piece.name, piece.fmt, piece.start, piece.stop, piece.first_row,
                       piece.by_offset, piece.split, file_hash])
    return str(10**15 + xxhash.xxh3_64_intdigest(blob.encode()) % (9 * 10**15))


def piece_record(key: str, piece: Piece) -> dict:
    return {"key": key, "path": piece.path, "start": piece.start, "stop": piece.stop, "split": piece.split}


def table_path(folder: Path, key: str) -> Path:
    return Path(folder) / SCORES / f"{key}.parquet"


def counts_path(folder: Path, key: str) -> Path:
    return Path(folder) / COUNTS / f"{key}.json"


def rejects_path(folder: Path, key: str) -> Path:
    return Path(folder) / REJECTS / f"{key}.jsonl"


def is_scored(folder: Path, key: str) -> bool:
    """A piece is scored when both its table and its counts were written (each renamed into place whole)."""
    return table_path(folder, key).exists() and counts_path(folder, key).exists()


@dataclass
class Work:
    """One run's view of a source: every piece with its key (input order), and those to score."""

    inputs: list[dict]
    pieces: list[tuple[str, Piece]]
    todo: list[tuple[str, Piece]] = field(default_factory=list)
    changed: bool = False  # the set of pieces differs from the last run's

    @property
    def keys(self) -> list[str]:
        """Keys in the order of the score files (and of the MinHash signature files)."""
        return sorted(k for k, _ in self.pieces)

    def records(self) -> list[dict]:
        return [piece_record(k, p) for k, p in self.pieces]


def keyed_pieces(cfg: SourceConfig, inputs: list[dict]) -> list[tuple[str, Piece]]:
    """(key, piece) of every piece of `cfg`, in input order; `inputs` are its files' fingerprints."""
    hashes = {r["path"]: r["hash"] for r in inputs}
    return [(piece_key(p, hashes[p.path]), p) for p in plan_pieces(cfg)]


def fresh_work(cfg: SourceConfig) -> Work:
    """Every piece of `cfg` to score, as a run on an empty folder has."""
    from continua.documents import expand_inputs
    from continua.fingerprint import fingerprints

    inputs = fingerprints([p for p, _, _ in expand_inputs(cfg)])
    pieces = keyed_pieces(cfg, inputs)
    return Work(inputs, pieces, list(pieces), True)


def plan_work(folder: Path, cfg: SourceConfig, inputs: list[dict], rescore_files: set[str] = frozenset()) -> Work:
    """The pieces of `cfg` under `inputs` (fingerprints of its files), those not yet scored (plus every
    piece of `rescore_files`), outputs of pieces no longer in the source deleted; records the index."""
    folder = Path(folder)
    pieces = keyed_pieces(cfg, inputs)
    keys = {k for k, _ in pieces}
    for key, piece in pieces:
        if piece.path in rescore_files:
            table_path(folder, key).unlink(missing_ok=True)
            counts_path(folder, key).unlink(missing_ok=True)
    old = read_json(folder / INDEX) if (folder / INDEX).exists() else {}
    stale = 0
    for sub, suffix in ((SCORES, ".parquet"), (COUNTS, ".json"), (REJECTS, ".jsonl")):
        for f in (folder / sub).glob(f"*{suffix}") if (folder / sub).is_dir() else []:
            if f.name[:-len(suffix)].isdigit() and f.name[:-len(suffix)] not in keys:
                f.unlink()
                stale += 1
    todo = [(k, p) for k, p in pieces if not is_scored(folder, k)]
    changed = bool(todo) or stale > 0 or sorted(r["key"] for r in old.get("pieces", [])) != sorted(keys)
    work = Work(inputs, pieces, todo, changed)
    write_json(folder / INDEX, {"inputs": inputs, "pieces": work.records()})
    return work


def last_inputs(folder: Path) -> list[dict]:
    """The input fingerprints of the latest run (their hashes are reused while a file's stat is unchanged)."""
    index = Path(folder) / INDEX
    return read_json(index).get("inputs", []) if index.exists() else []


def clear(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
