"""Reading user corpora: JSON Lines (plain or .gz), Parquet, or a `datasets` dataset saved to disk.

Every document gets a stable id, `SOURCE/FILE#ROW` (or `SOURCE/ID` when the source names an id
field), so a score table row can always be traced back to its text. Nothing is dropped silently:
a line that is not JSON, not UTF-8, or has no usable text becomes a `Reject` with the file, the
line number and the reason, which the caller counts and writes out.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import orjson

from continua.recipe import SourceConfig

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet",)


class InputError(ValueError):
    """Input that cannot be read at all (missing, empty, unknown format): names the file."""


@dataclass(slots=True)
class Record:
    """One readable document and where it came from."""

    doc_id: str
    text: str
    path: str
    row: int


@dataclass(slots=True)
class Reject:
    """One unreadable item: where it is, why, and (the start of) what was there."""

    path: str
    row: int
    reason: str
    detail: str
    raw: str

    def to_json(self, source: str) -> dict:
        return {"source": source, "path": self.path, "line": self.row + 1, "reason": self.reason,
                "detail": self.detail, "raw": self.raw}


def _is_hf_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists()
    )


def detect_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    if _is_hf_dataset_dir(path):
        return "hf"
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise InputError(f"{path}: unknown input format (expected .jsonl[.gz], .parquet or a saved datasets folder)")


def expand_inputs(cfg: SourceConfig) -> list[tuple[Path, str, str]]:
    """All input units of a source as (path, format, name used in ids), in a stable order."""
    units: list[tuple[Path, str, str]] = []
    for root in cfg.paths:
        root = Path(root)
        if not root.exists():
            raise InputError(f"{root}: input path does not exist")
        if root.is_dir() and not _is_hf_dataset_dir(root):
            files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES))
            if not files:
                raise InputError(f"{root}: folder holds no .jsonl, .jsonl.gz or .parquet files")
            for p in files:
                units.append((p, detect_format(p, cfg.format), f"{root.name}/{p.relative_to(root)}"))
        else:
            units.append((root, detect_format(root, cfg.format), root.name))
    return units


def _doc_id(source: str, unit_name: str, row: int, explicit: object) -> str:
    if explicit is not None:
        return f"{source}/{explicit}"
    return f"{source}/{unit_name}#{row}"


def _check_text(value: object, field: str) -> tuple[str | None, str, str]:
    """(text or None, reason, detail) for a field value."""
    if value is None:
        return None, "missing_text", f"no '{field}' field"
    if not isinstance(value, str):
        return None, "text_not_string", f"'{field}' is {type(value).__name__}, not a string"
    if not value.strip():
        return None, "empty_text", f"'{field}' is empty or whitespace"
    return value, "", ""


def _read_jsonl(path: Path, unit: str, source: str, cfg: SourceConfig,
                skip: Callable[[int], bool] | None = None) -> Iterator[Record | Reject | None]:
    """Items of a JSON Lines file; lines with skip(row) true yield None undecoded (another shard's)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            n_lines = 0
            for row, raw in enumerate(f):
                n_lines += 1
                if skip is not None and skip(row):
                    yield None
                    continue
                if not raw.strip():
                    yield Reject(str(path), row, "blank_line", "line holds no JSON", "")
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield Reject(str(path), row, "invalid_utf8", str(e), raw[:2000].decode("utf-8", "replace"))
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    yield Reject(str(path), row, "malformed_json", str(e), line[:2000])
                    continue
                if not isinstance(obj, dict):
                    yield Reject(str(path), row, "not_an_object", f"line is a JSON {type(obj).__name__}", line[:2000])
                    continue
                text, reason, detail = _check_text(obj.get(cfg.text_field), cfg.text_field)
                if text is None:
                    yield Reject(str(path), row, reason, detail, line[:2000])
                    continue
                explicit = obj.get(cfg.id_field) if cfg.id_field else None
                yield Record(_doc_id(source, unit, row, explicit), text, str(path), row)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise InputError(f"{path}: cannot be read: {e}") from e
    if n_lines == 0:
        raise InputError(f"{path}: input file is empty (no lines)")


def _read_parquet(path: Path, unit: str, source: str, cfg: SourceConfig) -> Iterator[Record | Reject]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a broken file
        raise InputError(f"{path}: not a readable Parquet file: {e}") from e
    names = pf.schema_arrow.names
    if cfg.text_field not in names:
        raise InputError(f"{path}: no column '{cfg.text_field}' (columns: {', '.join(names)})")
    if pf.metadata.num_rows == 0:
        raise InputError(f"{path}: input file is empty (no rows)")
    columns = [cfg.text_field] + ([cfg.id_field] if cfg.id_field and cfg.id_field in names else [])
    row = 0
    for batch in pf.iter_batches(columns=columns, batch_size=4096):
        texts = batch.column(cfg.text_field).to_pylist()
        ids = batch.column(cfg.id_field).to_pylist() if len(columns) > 1 else [None] * len(texts)
        for value, explicit in zip(texts, ids):
            text, reason, detail = _check_text(value, cfg.text_field)
            if text is None:
                yield Reject(str(path), row, reason, detail, repr(value)[:2000])
            else:
                yield Record(_doc_id(source, unit, row, explicit), text, str(path), row)
            row += 1


def _read_hf(path: Path, unit: str, source: str, cfg: SourceConfig) -> Iterator[Record | Reject]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:
        raise InputError(f"{path}: not a dataset saved with save_to_disk: {e}") from e
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
    for split, ds in splits:
        if cfg.text_field not in ds.column_names:
            raise InputError(f"{path}: split '{split or 'default'}' has no column '{cfg.text_field}' "
                             f"(columns: {', '.join(ds.column_names)})")
        name = f"{unit}/{split}" if split else unit
        for row, item in enumerate(ds):
            text, reason, detail = _check_text(item.get(cfg.text_field), cfg.text_field)
            if text is None:
                yield Reject(f"{path}/{split}" if split else str(path), row, reason, detail,
                             json.dumps(item, default=str)[:2000])
                continue
            explicit = item.get(cfg.id_field) if cfg.id_field else None
            yield Record(_doc_id(source, name, row, explicit), text, f"{path}/{split}" if split else str(path), row)


_READERS = {"jsonl": _read_jsonl, "parquet": _read_parquet, "hf": _read_hf}


def iter_source(source: str, cfg: SourceConfig, rank: int = 0, world_size: int = 1) -> Iterator[Record | Reject]:
    """Every record and reject of a source, in a stable order; this shard gets items i with i % world_size == rank."""
    index = 0
    for path, fmt, unit in expand_inputs(cfg):
        if fmt == "jsonl" and world_size > 1:
            # lines of other shards are counted but not decoded: each task parses only its own share
            start = index
            items = _read_jsonl(path, unit, source, cfg, skip=lambda row: (start + row) % world_size != rank)
        else:
            items = _READERS[fmt](path, unit, source, cfg)
        for item in items:
            if index % world_size == rank:
                yield item
            index += 1


def iter_documents(source: str, cfg: SourceConfig) -> Iterator[Record]:
    """Only the readable documents of a source (rejects are the business of `curate score`)."""
    for item in iter_source(source, cfg):
        if isinstance(item, Record):
            yield item
