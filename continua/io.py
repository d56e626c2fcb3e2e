"""Files that are either whole or absent: every artifact is written to a temporary name and renamed."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from continua.exitcodes import RunFailure


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """A failed write (a full disk, a file-size limit) raises an OSError that names no file: name `path`,
    the one being written, so the one-line error says where."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise type(e)(e.errno, e.strerror or str(e), str(path)) from e
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; artifacts are for everyone to read
    try:
        with naming(path):
            yield tmp_path
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file for writing; it replaces `path` only when closed without error."""
    with atomic_path(path) as tmp:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")


class DamagedFileError(RunFailure, ValueError):
    """An artifact that exists but cannot be read (truncated, overwritten): exit 1, naming the file.
    Also a ValueError, so callers that treat unreadable content as a value error keep doing so."""


def read_json(path: str | Path) -> Any:
    """The JSON in `path`; damaged content is a DamagedFileError naming the file (not a bare parser message)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedFileError(f"{path}: not readable JSON ({e}); the file is damaged or was not written by "
                               f"continua: re-run the command that wrote it") from None


def check_parquet(path: str | Path, rerun: str) -> None:
    """Read the footer of a Parquet file (cheap): a truncated or overwritten one is a DamagedFileError
    naming it and `rerun`, before any reader meets it halfway through a plan."""
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(str(path))
    except OSError as e:
        if e.errno is not None:  # a system error (unreadable, gone): the caller's usual one line
            raise
        raise DamagedFileError(f"{path}: not a readable Parquet file ({' '.join(str(e).split())}); {rerun}") from None
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a broken file
        raise DamagedFileError(f"{path}: not a readable Parquet file ({' '.join(str(e).split())}); {rerun}") from None


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)
