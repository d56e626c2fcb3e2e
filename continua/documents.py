"""Reading user corpora: JSON Lines (plain or .gz), Parquet, or a `datasets` dataset saved to disk.

Every document gets a stable id, `SOURCE/FILE#ROW` (`SOURCE/FILE@OFFSET` for plain JSON Lines files
larger than the source's `piece_bytes`, see continua.partition; `SOURCE/ID` when the source names
an id field), so a score table row can always be traced back to its text. Nothing is dropped
silently: a line that is not JSON, not UTF-8, too long, or has no usable text becomes a `Reject`
with the file, the line (or, in a file read in byte ranges, the offset: `curate score` adds the line
once every task is done) and the reason, which the caller counts and writes out.

Reads are bounded: JSON Lines are read in chunks, a line longer than `max_line_bytes` is skipped
to the next newline without ever being held whole, `.gz` files are inflated a chunk at a time,
and a damaged `.gz` keeps the rows before the damage and becomes one reject for the rest.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import orjson

from continua.partition import (JSONL_SUFFIXES, PARQUET_SUFFIXES, InputError, Piece, detect_format, expand_inputs,
                                hf_splits, load_hf, pieces_of_task, plan_pieces)
from continua.recipe import SourceConfig

__all__ = ["InputError", "Record", "Reject", "detect_format", "expand_inputs", "iter_source", "iter_documents",
           "JSONL_SUFFIXES", "PARQUET_SUFFIXES"]

CHUNK = 1 << 20  # bytes per read (and per inflate step of a .gz)
# compressed bytes handed to zlib at a time: an error loses what inflating the current slice gave
GZ_FEED = 1 << 14
BATCH_ROWS = 4096  # rows per batch from Parquet and datasets
BOM = b"\xef\xbb\xbf"
RAW_KEEP = 2000  # characters of a rejected item kept in the rejects file


@dataclass(slots=True)
class Record:
    """One readable document and where it came from (row: line/row number, or byte offset in a cut file)."""

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
    offset: int | None = None  # byte offset of the line (JSON Lines; in the inflated stream for .gz)
    row_is_line: bool = True  # False where `row` is a byte offset (a JSON Lines file read in ranges)

    def to_json(self, source: str) -> dict:
        return {"source": source, "path": self.path, "line": self.row + 1 if self.row_is_line else None,
                "offset": self.offset, "reason": self.reason, "detail": self.detail, "raw": self.raw}


def _doc_id(source: str, unit_name: str, row: int, explicit: object, by_offset: bool = False) -> str:
    if explicit is not None:
        return f"{source}/{explicit}"
    return f"{source}/{unit_name}{'@' if by_offset else '#'}{row}"


def _check_text(value: object, field: str) -> tuple[str | None, str, str]:
    """(text or None, reason, detail) for a field value."""
    if value is None:
        return None, "missing_text", f"no '{field}' field"
    if not isinstance(value, str):
        return None, "text_not_string", f"'{field}' is {type(value).__name__}, not a string"
    if not value.strip():
        return None, "empty_text", f"'{field}' is empty or whitespace"
    return value, "", ""


class _Damaged(Exception):
    """A .gz stream that breaks off: where (compressed and inflated byte) and why."""

    def __init__(self, why: str, compressed_at: int, inflated_at: int):
        super().__init__(why)
        self.why, self.compressed_at, self.inflated_at = why, compressed_at, inflated_at


def _open(path: str | Path) -> BinaryIO:
    """Unbuffered: every read is exactly the bytes asked for (tests count them)."""
    return open(path, "rb", buffering=0)


def _plain_chunks(f: BinaryIO, start: int, stop: int | None) -> Iterator[bytes]:
    f.seek(start)
    pos = start
    while stop is None or pos < stop:
        block = f.read(CHUNK if stop is None else min(CHUNK, stop - pos))
        if not block:
            return
        pos += len(block)
        yield block


def _gzip_chunks(f: BinaryIO) -> Iterator[bytes]:
    """Inflated data in pieces of at most CHUNK bytes (a small .gz that expands to gigabytes never
    expands at once); concatenated gzip members are read in turn; damage raises _Damaged.

    zlib finds a damaged stream when it cannot decode it or, at the latest, at the member's CRC:
    rows inflated before that are kept (like every streaming reader, this cannot take them back)."""
    d = zlib.decompressobj(31)
    fed = 0  # compressed bytes handed to zlib so far
    out_at = 0
    started = False  # inside a member (not between members)
    while True:
        raw = f.read(CHUNK)
        if not raw:
            break
        for at in range(0, len(raw), GZ_FEED):
            data = raw[at:at + GZ_FEED]
            base = fed
            fed += len(data)
            while data:
                if not started:
                    data = data.lstrip(b"\0")  # zero padding after the last member is allowed
                    if not data:
                        break
                started = True
                try:
                    out = d.decompress(data, CHUNK)
                except zlib.error as e:
                    raise _Damaged(f"corrupt ({e})", base, out_at) from e
                if out:
                    out_at += len(out)
                    yield out
                if d.eof:  # end of a member: another may follow
                    data = d.unused_data
                    started = False
                    d = zlib.decompressobj(31)
                else:
                    data = d.unconsumed_tail
    if started:
        raise _Damaged("truncated (ends before its end-of-stream marker)", fed, out_at)


def _lines(chunks: Iterator[bytes], start: int, max_line: int) -> Iterator[tuple[int, bytes | None, int]]:
    """(byte offset, line without its newline or None when longer than max_line, length) per line.

    Holds at most max_line + one chunk: a longer line is measured and dropped as it streams past."""
    pending = bytearray()
    pend_len = 0
    too_long = False
    line_start = start
    for chunk in chunks:
        parts = chunk.split(b"\n")
        last = parts.pop()
        for part in parts:
            length = pend_len + len(part)
            if too_long or length > max_line:
                yield line_start, None, length
            else:
                yield line_start, (bytes(pending) + part) if pend_len else part, length
            pending = bytearray()
            pend_len = 0
            too_long = False
            line_start += length + 1
        pend_len += len(last)
        if not too_long:
            if pend_len > max_line:
                too_long = True
                pending = bytearray()
            else:
                pending += last
    if pend_len:
        yield line_start, None if too_long else bytes(pending), pend_len


def _read_jsonl(piece: Piece, source: str, cfg: SourceConfig) -> Iterator[Record | Reject]:
    path = piece.path
    gz = path.lower().endswith(".gz")
    by_offset = piece.by_offset
    row = 0
    n_lines = 0
    try:
        with _open(path) as f:
            chunks = _gzip_chunks(f) if gz else _plain_chunks(f, piece.start, piece.stop)
            try:
                for offset, raw, length in _lines(chunks, piece.start, cfg.max_line_bytes):
                    n_lines += 1
                    pos = offset if by_offset else row
                    row += 1
                    if raw is not None and offset == 0 and raw.startswith(BOM):
                        raw = raw[len(BOM):]
                    yield _jsonl_item(raw, length, offset, pos, piece, source, cfg)
            except _Damaged as e:
                if e.inflated_at == 0:
                    raise InputError(f"{path}: not a readable gzip file: {e.why}") from e
                n_lines += 1
                yield Reject(path, row, "gzip_damaged",
                             f"compressed stream {e.why} at byte {e.compressed_at:,} of the file (inflated byte "
                             f"{e.inflated_at:,}); the {row:,} line(s) before it were read, the rest is lost", "",
                             offset=e.inflated_at)
    except OSError as e:
        raise InputError(f"{path}: cannot be read: {e}") from e
    if n_lines == 0 and piece.start == 0:
        raise InputError(f"{path}: input file is empty (no lines)")


def line_numbers(path: str | Path, offsets: Iterable[int]) -> dict[int, int]:
    """1-based numbers of the lines that start at `offsets` (bytes of a plain file), in one read up to the
    last of them. A file read in byte ranges names its rejects by offset (a task cannot know the line
    where its range starts); this names their lines once every task is done."""
    wanted = sorted(set(offsets))
    out: dict[int, int] = {}
    newlines, pos, i = 0, 0, 0
    with _open(path) as f:
        for block in _plain_chunks(f, 0, wanted[-1] if wanted else 0):
            end = pos + len(block)
            while i < len(wanted) and wanted[i] <= end:
                out[wanted[i]] = newlines + block.count(b"\n", 0, wanted[i] - pos) + 1
                i += 1
            newlines, pos = newlines + block.count(b"\n"), end
    for off in wanted[i:]:  # at the end of what was read (offset 0 of any file: line 1)
        out[off] = newlines + 1
    return out


def _jsonl_item(raw: bytes | None, length: int, offset: int, pos: int, piece: Piece, source: str,
                cfg: SourceConfig) -> Record | Reject:
    if raw is not None:
        try:
            obj = orjson.loads(raw)  # bytes: orjson checks the UTF-8 itself, without a decoded copy of the line
        except orjson.JSONDecodeError:
            obj = None  # invalid UTF-8 or JSON: told apart below, off the common path
        if type(obj) is dict:
            text = obj.get(cfg.text_field)
            if type(text) is str and text.strip():
                explicit = obj.get(cfg.id_field) if cfg.id_field else None
                return Record(_doc_id(source, piece.name, pos, explicit, piece.by_offset), text, piece.path, pos)
    reason, detail, shown = _why(raw, length, offset, cfg)
    return Reject(piece.path, pos, reason, detail, shown, offset=offset, row_is_line=not piece.by_offset)


def _why(raw: bytes | None, length: int, offset: int, cfg: SourceConfig) -> tuple[str, str, str]:
    """(reason, detail, start of the line) for a line that gave no document."""
    if raw is None:
        return "line_too_long", (f"line of {length:,} bytes at byte {offset:,} exceeds max_line_bytes = "
                                 f"{cfg.max_line_bytes:,}; skipped to the next newline"), ""
    if not raw.strip():
        return "blank_line", "line holds no JSON", ""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return "invalid_utf8", str(e), raw[:RAW_KEEP].decode("utf-8", "replace")
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        return "malformed_json", str(e), line[:RAW_KEEP]
    if not isinstance(obj, dict):
        return "not_an_object", f"line is a JSON {type(obj).__name__}", line[:RAW_KEEP]
    _, reason, detail = _check_text(obj.get(cfg.text_field), cfg.text_field)
    return reason, detail, line[:RAW_KEEP]


def _rows(texts: list, ids: list, first_row: int, name: str, path: str, source: str,
          cfg: SourceConfig, shown: Any) -> Iterator[Record | Reject]:
    for i, (value, explicit) in enumerate(zip(texts, ids)):
        row = first_row + i
        text, reason, detail = _check_text(value, cfg.text_field)
        if text is None:
            yield Reject(path, row, reason, detail, shown(i)[:RAW_KEEP])
        else:
            yield Record(_doc_id(source, name, row, explicit), text, path, row)


def _read_parquet(piece: Piece, source: str, cfg: SourceConfig, _cache: dict) -> Iterator[Record | Reject]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(piece.path)
    except Exception as e:  # pyarrow raises several types for a broken file
        raise InputError(f"{piece.path}: not a readable Parquet file: {e}") from e
    names = pf.schema_arrow.names
    columns = [cfg.text_field] + ([cfg.id_field] if cfg.id_field and cfg.id_field in names else [])
    row = piece.first_row
    for batch in pf.iter_batches(columns=columns, batch_size=BATCH_ROWS,
                                 row_groups=list(range(piece.start, piece.stop))):
        texts = batch.column(cfg.text_field).to_pylist()
        ids = batch.column(cfg.id_field).to_pylist() if len(columns) > 1 else [None] * len(texts)
        yield from _rows(texts, ids, row, piece.name, piece.path, source, cfg, lambda i: repr(texts[i]))
        row += len(texts)


def _read_hf(piece: Piece, source: str, cfg: SourceConfig, cache: dict) -> Iterator[Record | Reject]:
    """A row range of a `datasets` split, in batches of columnar slices (memory-mapped, no row-by-row decode)."""
    key = (piece.path, piece.split)
    if key not in cache:
        ds = dict(hf_splits(Path(piece.path), load_hf(piece.path), piece.split))[piece.split]
        cols = [cfg.text_field] + ([cfg.id_field] if cfg.id_field and cfg.id_field in ds.column_names else [])
        cache.clear()  # one dataset open at a time
        cache[key] = ds.select_columns(cols)
    ds = cache[key]
    name = f"{piece.name}/{piece.split}" if piece.split else piece.name
    path = f"{piece.path}/{piece.split}" if piece.split else piece.path
    for a in range(piece.start, piece.stop, BATCH_ROWS):
        batch = ds[a:min(piece.stop, a + BATCH_ROWS)]
        texts = batch[cfg.text_field]
        ids = batch[cfg.id_field] if cfg.id_field and cfg.id_field in batch else [None] * len(texts)
        yield from _rows(texts, ids, a, name, path, source, cfg,
                         lambda i: orjson.dumps({k: v[i] for k, v in batch.items()}, default=str).decode())


def iter_source(source: str, cfg: SourceConfig, rank: int = 0, world_size: int = 1,
                pieces: list[Piece] | None = None) -> Iterator[Record | Reject]:
    """Every record and reject of this task's pieces of a source (all of them when world_size is 1),
    in input order; `pieces` is the source's plan when the caller made it already."""
    cache: dict = {}
    for piece in pieces_of_task(plan_pieces(cfg) if pieces is None else pieces, rank, world_size):
        if piece.fmt == "jsonl":
            yield from _read_jsonl(piece, source, cfg)
        elif piece.fmt == "parquet":
            yield from _read_parquet(piece, source, cfg, cache)
        else:
            yield from _read_hf(piece, source, cfg, cache)


def iter_documents(source: str, cfg: SourceConfig) -> Iterator[Record]:
    """Only the readable documents of a source (rejects are the business of `curate score`)."""
    for item in iter_source(source, cfg):
        if isinstance(item, Record):
            yield item
