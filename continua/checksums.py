"""Checksums of a folder's files (size + content hash), written beside them and verified before they are read.

A manifest catches damage (a disk or copy that flipped bytes, a file cut short, a missing file); it
is not a signature: whoever can write the files can write a matching manifest. The hash is the
project's one content hash (continua.fingerprint.digest, xxh3-128 at memory speed), so verifying
costs about one read of the files.
"""

from __future__ import annotations

from pathlib import Path

from continua.fingerprint import ALGO, digest
from continua.io import read_json, write_json

MANIFEST = "checksums.json"
ALGORITHM = ALGO


class ChecksumError(ValueError):
    """A file of a checksummed folder is missing, of another size, or of other content."""


def hash_file(path: str | Path) -> str:
    return digest(path)


def describe(folder: Path, names: list[str]) -> dict[str, dict]:
    """{name: {size, hash}} for `names` in `folder`: what a manifest records (callers may split the work)."""
    return {n: {"size": (folder / n).stat().st_size, "hash": hash_file(folder / n)} for n in names}


def write_manifest(folder: Path, files: dict[str, dict]) -> None:
    """Write the manifest atomically; it is the last file of the folder to be written."""
    write_json(Path(folder) / MANIFEST, {"algorithm": ALGORITHM, "files": dict(sorted(files.items()))})


def read_manifest(folder: Path) -> dict[str, dict] | None:
    """The recorded files, or None when the folder has no manifest."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    try:
        data = read_json(path)
        files = data["files"]
        if data.get("algorithm") != ALGORITHM or not isinstance(files, dict):
            raise ValueError(f"algorithm {data.get('algorithm')!r}, expected {ALGORITHM!r}")
        for name, entry in files.items():
            if Path(name).name != name or name.startswith(".."):
                raise ValueError(f"file name {name!r} is not a plain name in the folder")
            int(entry["size"]), str(entry["hash"])
    except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as e:  # 1e999: int(inf)
        raise ChecksumError(f"{path}: unreadable checksum manifest ({e})") from None
    return files


def verify(folder: Path, files: dict[str, dict], names: list[str] | None = None) -> None:
    """Check `names` (default: all) against the manifest's `files`: sizes first (cheap), then hashes."""
    folder = Path(folder)
    names = sorted(files) if names is None else names
    for name in names:
        path = folder / name
        if not path.is_file():
            raise ChecksumError(f"{path}: missing")
        size = path.stat().st_size
        if size != files[name]["size"]:
            raise ChecksumError(f"{path}: {size:,} bytes, {files[name]['size']:,} when written (truncated or replaced)")
    for name in names:
        if hash_file(folder / name) != files[name]["hash"]:
            raise ChecksumError(f"{folder / name}: content differs from its checksum (corrupted)")
