"""One writer per output folder: a lock file naming its holder (PID, host, start time, command).

Two `curate score` runs on one folder would interleave datatrove's completion markers and MinHash
files and corrupt each other, so the second one stops at once with `LockHeld` (exit code 1: a
runtime failure, nothing was changed; run it again when the first one ends). The lock is created
with O_EXCL, so exactly one process wins. A lock whose holder PID is dead on this same host is
stale and taken over (a killed run does not block the next); a lock from another host is never
guessed stale: the message says how to remove it once that run is known to be gone.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".lock"


class LockHeld(RuntimeError):
    """Another live process writes to this folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    return (f"PID {info.get('pid', '?')} on host {info.get('host', '?')}, started {info.get('started', '?')}"
            + (f" ({info['command']})" if info.get("command") else ""))


def _try_create(path: Path, info: dict) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    return True


def acquire(folder: Path, what: str) -> Path:
    """Take the lock of `folder` or raise LockHeld naming the holder; stale same-host locks are replaced."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": what,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    for _ in range(3):
        if _try_create(path, info):
            return path
        held = _read(path)
        if held.get("host") == info["host"] and isinstance(held.get("pid"), int) and not _alive(held["pid"]):
            # stale: move it aside atomically so two newcomers cannot both remove a fresh lock
            try:
                os.replace(path, path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}"))
                os.unlink(path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}"))
            except FileNotFoundError:
                pass
            print(f"{folder}: removed a stale lock of {_describe(held)} (that process is gone)", file=sys.stderr)
            continue
        if not held:
            time.sleep(0.1)  # being written this instant by its creator: look again
            continue
        raise LockHeld(f"{folder} is in use by {_describe(held)}; wait for it to finish. If that run is gone "
                       f"(killed, or its node rebooted), delete {path} and run again")
    raise LockHeld(f"{folder}: could not take the lock {path}; delete it if no run is using this folder")


def release(path: Path) -> None:
    """Remove our lock (only if it is still ours)."""
    if _read(path).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


@contextmanager
def locked(folder: Path, what: str) -> Iterator[Path]:
    """Hold the lock of `folder` for the duration of the block."""
    path = acquire(folder, what)
    try:
        yield path
    finally:
        release(path)
