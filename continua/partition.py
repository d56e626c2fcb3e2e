"""Which input files a source has, the pieces they are read in, and which task reads each piece.

The pieces depend only on the inputs and the source's `piece_bytes`, never on the number of tasks,
so document ids (and the score table) are the same whatever the partitioning:

- a JSON Lines file up to `piece_bytes` (and every `.gz`, which cannot be entered mid-stream) is
  one piece; a larger plain one is cut into line-aligned byte ranges of about `piece_bytes`, and
  its documents are named by the byte offset of their line (`FILE@OFFSET`): a task starting in the
  middle of a file cannot know the line number there without reading what comes before it;
- a Parquet file is cut at its row groups (row numbers come from the footer, so ids keep `#ROW`);
- a `datasets` dataset is cut into row ranges of about `piece_bytes` (memory-mapped: a task touches
  only its rows).

Tasks get whole pieces, balanced by size (largest first to the least loaded task), and read them
in input order, so across all tasks every input byte is read once. Planning reads file metadata,
Parquet footers and, per range boundary of a large JSON Lines file, the bytes up to the next
newline (to align the boundary).
"""

from __future__ import annotations

import heapq
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continua.recipe import SourceConfig

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".ndjson.gz")
# what a folder scan reads: a stray .json (a manifest, an EXPECTED.json) in a data folder is no corpus
FOLDER_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".parquet")
PARQUET_SUFFIXES = (".parquet",)
ALIGN_READ = 1 << 16  # bytes per read while looking for the newline after a range boundary

log = logging.getLogger("continua.inputs")
_warned: set[str] = set()


class InputError(ValueError):
    """Input that cannot be read at all (missing, empty, unknown format): names the file."""


def is_hf_dataset_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists()
    )


def detect_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    if is_hf_dataset_dir(path):
        return "hf"
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise InputError(f"{path}: unknown input format (expected .jsonl[.gz], .parquet or a saved datasets folder)")


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def _scan_folder(root: Path) -> tuple[list[Path], list[str], list[str]]:
    """Data files and `datasets` folders under root (sorted), what was skipped (relative names) and the
    data files skipped because they are empty (0 bytes: no documents, and nothing a reader could reject)."""
    found: list[Path] = []
    skipped: list[str] = []
    empty: list[str] = []
    for here, dirs, files in os.walk(root):
        here_p = Path(here)
        keep = []
        for d in sorted(dirs):
            sub = here_p / d
            if d.startswith("."):
                skipped.append(f"{sub.relative_to(root)}/")
            elif is_hf_dataset_dir(sub):
                found.append(sub)
            else:
                keep.append(d)
        dirs[:] = keep
        for name in sorted(files):
            p = here_p / name
            if not name.lower().endswith(FOLDER_SUFFIXES):
                skipped.append(str(p.relative_to(root)))
            elif p.stat().st_size == 0:
                empty.append(str(p.relative_to(root)))
            else:
                found.append(p)
    return sorted(found), sorted(skipped), sorted(empty)


def _listed(names: list[str]) -> str:
    return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _split_files(root: Path, split: str) -> set[Path]:
    """Files of one split of a hub-style folder (data/train-00000-of-00002.parquet, train/*.jsonl, ...),
    by the `datasets` library's own split patterns."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        patterns = get_data_patterns(str(root))
    except Exception as e:  # datasets raises EmptyDatasetError when nothing looks like data
        raise InputError(f"{root}: no data files to choose split '{split}' from: {e}") from e
    resolved = DataFilesDict.from_patterns(patterns, base_path=str(root))
    names = [str(k) for k in resolved]
    if split not in names:
        raise InputError(f"{root}: no split '{split}' in this folder (splits found: {', '.join(names)})")
    return {Path(f).resolve() for f in resolved[split]}


def expand_inputs(cfg: SourceConfig) -> list[tuple[Path, str, str]]:
    """All input units of a source as (path, format, name used in ids), in a stable order.

    The name is the path relative to the folder holding all of the source's paths, so two files
    with one basename (`a/part.jsonl`, `b/part.jsonl`) never share ids, while a single file keeps
    its file name and a single folder `FOLDER/relative/path`. Folders are scanned for data files
    only; what they hold besides is listed in a warning, never read as JSON Lines.
    """
    roots = [Path(p) for p in cfg.paths]
    for root in roots:
        if not root.exists():
            raise InputError(f"{root}: input path does not exist")
    base = Path(os.path.commonpath([str(r.absolute().parent) for r in roots]))
    units: list[tuple[Path, str, str]] = []
    for root in roots:
        if root.is_dir() and not is_hf_dataset_dir(root):
            files, skipped, empty = _scan_folder(root)
            if cfg.split is not None:
                wanted = _split_files(root, cfg.split)
                # a datasets folder inside is kept whole: `split` then picks within its DatasetDict
                files = [p for p in files if p.is_dir() or p.resolve() in wanted]
            if skipped:
                _warn_once(f"{root}: skipped {len(skipped)} item(s) that are not data files "
                           f"(.jsonl, .jsonl.gz, .ndjson, .parquet, datasets folders): {_listed(skipped)}")
            if empty and files:
                _warn_once(f"{root}: skipped {len(empty)} empty file(s) (0 bytes): {_listed(empty)}")
            if not files:
                raise InputError(f"{root}: folder holds no .jsonl, .jsonl.gz, .parquet files or datasets folders"
                                 + (f" of split '{cfg.split}'" if cfg.split else "")
                                 + (f" that hold anything (empty: {_listed(empty)})" if empty else ""))
            for p in files:
                units.append((p, detect_format(p, cfg.format), p.absolute().relative_to(base).as_posix()))
        else:
            units.append((root, detect_format(root, cfg.format), root.absolute().relative_to(base).as_posix()))
    seen: dict[Path, Path] = {}
    for p, _, _ in units:
        real = p.resolve()
        if real in seen:
            raise InputError(f"{p}: listed twice in the source's paths (also as {seen[real]}); its documents "
                             f"would be read twice")
        seen[real] = p
    return units


@dataclass(frozen=True, slots=True)
class Piece:
    """One unit of work: a whole file, a byte range of a JSON Lines file, row groups of a Parquet
    file, or a row range of a `datasets` split."""

    index: int          # position in the source's input order
    path: str           # file, or dataset folder
    fmt: str            # jsonl | parquet | hf
    name: str           # the file's name in ids
    start: int          # jsonl: first byte; parquet: first row group; hf: first row
    stop: int | None    # jsonl: end byte (None: to the end); parquet: end row group; hf: end row
    first_row: int      # row number of the piece's first row (parquet, hf); 0 for jsonl
    by_offset: bool     # jsonl cut into ranges: documents are named by byte offset
    split: str | None   # hf: the DatasetDict split
    nbytes: int         # size estimate for balancing


def _next_line_start(path: Path, pos: int, size: int) -> int:
    """The first line start at or after pos (pos itself when the byte before it is a newline)."""
    with open(path, "rb", buffering=0) as f:
        f.seek(pos - 1)
        at = pos - 1
        while True:
            block = f.read(ALIGN_READ)
            if not block:
                return size
            i = block.find(b"\n")
            if i >= 0:
                return at + i + 1
            at += len(block)


def _jsonl_pieces(path: Path, name: str, piece_bytes: int, index: int) -> list[Piece]:
    size = path.stat().st_size
    if path.name.lower().endswith(".gz") or size <= piece_bytes:
        return [Piece(index, str(path), "jsonl", name, 0, None, 0, False, None, size)]
    cuts = sorted({0, *(_next_line_start(path, k, size) for k in range(piece_bytes, size, piece_bytes))})
    bounds = [c for c in cuts if c < size] + [size]
    return [Piece(index, str(path), "jsonl", name, a, b, 0, True, None, b - a) for a, b in zip(bounds, bounds[1:])]


def _parquet_pieces(path: Path, name: str, cfg: SourceConfig, index: int) -> list[Piece]:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
        names = meta.schema.to_arrow_schema().names
    except Exception as e:  # pyarrow raises several types for a broken file
        raise InputError(f"{path}: not a readable Parquet file: {e}") from e
    if cfg.text_field not in names:
        raise InputError(f"{path}: no column '{cfg.text_field}' (columns: {', '.join(names)})")
    if meta.num_rows == 0:
        raise InputError(f"{path}: input file is empty (no rows)")
    pieces, row = [], 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        if rg.num_rows:
            pieces.append(Piece(index, str(path), "parquet", name, g, g + 1, row, False, None, rg.total_byte_size))
        row += rg.num_rows
    return pieces


def load_hf(path: str | Path) -> Any:
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except Exception as e:
        raise InputError(f"{path}: not a dataset saved with save_to_disk: {e}") from e


def hf_splits(path: Path, loaded: Any, split: str | None) -> list[tuple[str | None, Any]]:
    """(split name or None, Dataset) to read: the chosen split of a DatasetDict, else all of them."""
    import datasets

    if not isinstance(loaded, datasets.DatasetDict):
        saved_as = str(loaded.split) if loaded.split is not None else None
        if split is not None and saved_as is not None and saved_as != split:
            raise InputError(f"{path}: this dataset is split '{saved_as}', not '{split}'")
        return [(None, loaded)]
    if split is None:
        return list(loaded.items())
    if split not in loaded:
        raise InputError(f"{path}: no split '{split}' in this dataset (splits: {', '.join(loaded)})")
    return [(split, loaded[split])]


def _hf_pieces(path: Path, name: str, cfg: SourceConfig, index: int) -> list[Piece]:
    pieces = []
    for split, ds in hf_splits(path, load_hf(path), cfg.split):
        if cfg.text_field not in ds.column_names:
            raise InputError(f"{path}: split '{split or 'default'}' has no column '{cfg.text_field}' "
                             f"(columns: {', '.join(ds.column_names)})")
        n = ds.num_rows
        nbytes = max(1, ds.data.nbytes)
        rows = max(1, cfg.piece_bytes * n // nbytes)
        for a in range(0, n, rows):
            b = min(n, a + rows)
            pieces.append(Piece(index, str(path), "hf", name, a, b, a, False, split, nbytes * (b - a) // max(1, n)))
    return pieces


def plan_pieces(cfg: SourceConfig) -> list[Piece]:
    """Every piece of a source, in input order; the same whatever the number of tasks."""
    pieces: list[Piece] = []
    for index, (path, fmt, name) in enumerate(expand_inputs(cfg)):
        if fmt == "jsonl":
            pieces += _jsonl_pieces(path, name, cfg.piece_bytes, index)
        elif fmt == "parquet":
            pieces += _parquet_pieces(path, name, cfg, index)
        elif fmt == "hf":
            pieces += _hf_pieces(path, name, cfg, index)
        else:
            raise InputError(f"{path}: unknown format {fmt!r}")
    return pieces


def pieces_of_task(pieces: list[Piece], rank: int, world_size: int) -> list[Piece]:
    """This task's pieces in input order: largest piece first to the least loaded task (ties: lowest rank)."""
    if world_size <= 1:
        return list(pieces)
    load = [(0, r) for r in range(world_size)]
    mine: list[int] = []
    order = sorted(range(len(pieces)), key=lambda i: (-pieces[i].nbytes, i))
    for i in order:
        used, r = heapq.heappop(load)
        if r == rank:
            mine.append(i)
        heapq.heappush(load, (used + max(1, pieces[i].nbytes), r))
    return [pieces[i] for i in sorted(mine)]
