"""SIGTERM / SIGINT to a command that runs worker processes: stop them all, leave resumable state.

datatrove's local executor runs tasks in a forkserver pool: the workers are grandchildren of the
main process, and a plain SIGTERM to the main process leaves them running (adopted by init). Inside
`stop_workers_on_signal`, the signal raises `Interrupted` in the main thread instead; on the way out
every descendant process is terminated (then killed after a grace period) before the command exits.
Finished tasks keep their completion markers and unfinished ones left no output (outputs are
renamed into place when complete), so running the command again resumes.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from typing import Iterator

import psutil


class Interrupted(Exception):
    """The command was asked to stop (SIGTERM or SIGINT); its state is resumable."""


def stop_descendants(grace_s: float = 5.0) -> list[int]:
    """Terminate every descendant of this process (SIGTERM, then SIGKILL after `grace_s`); returns their PIDs."""
    procs = psutil.Process().children(recursive=True)
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    _forget_forkservers()
    return [p.pid for p in procs]


def _forget_forkservers() -> None:
    """The forkserver we just ended (and reaped) is still cached by (py)multiprocessing, whose next pool
    would `waitpid` it and fail with ECHILD: forget it, so a later run in this process starts a new one."""
    for name in ("multiprocessing.forkserver", "multiprocess.forkserver"):
        module = sys.modules.get(name)
        server = getattr(module, "_forkserver", None)
        if server is None or server._forkserver_pid is None:
            continue
        with server._lock:
            if server._forkserver_alive_fd is not None:
                try:
                    os.close(server._forkserver_alive_fd)
                except OSError:
                    pass
            try:
                os.waitpid(server._forkserver_pid, os.WNOHANG)
            except ChildProcessError:
                pass
            address = server._forkserver_address
            if isinstance(address, str) and os.path.exists(address):  # a filesystem socket (not abstract)
                os.unlink(address)
            server._forkserver_alive_fd = server._forkserver_pid = server._forkserver_address = None


@contextmanager
def stop_workers_on_signal() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into `Interrupted`; on any exception, end every worker process before leaving."""

    def handler(signum: int, _frame) -> None:
        raise Interrupted(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except BaseException:
        for s in old:  # a second signal must not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        stop_descendants()
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
