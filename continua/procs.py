"""SIGTERM / SIGINT to a command that runs worker processes: stop them all, leave resumable state.

datatrove's local executor runs tasks in a forkserver pool: the workers are grandchildren of the
main process, and a plain SIGTERM to the main process leaves them running (adopted by init). Inside
`stop_workers_on_signal`, the signal raises `Interrupted` in the main thread instead; on the way out
every descendant process is terminated (then killed after a grace period) before the command exits.
Finished tasks keep their completion markers and unfinished ones left no output (outputs are
renamed into place when complete), so running the command again resumes.

A main process killed outright (SIGKILL, the OOM killer) ends nothing itself, so a launcher it starts
(torchrun) gets SIGTERM from the kernel when it dies (`end_with_parent`), and while
`stop_workers_on_signal` runs, every process it starts ends itself once the main process is gone
(`exit_with`, a watch thread): children forked from it (the pool's manager) from a fork hook, and
the forkserver and each worker it forks from `continua.forkserver_watch`, which the forkserver
imports at its start. The resource tracker exits by itself when the last of them has.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import psutil

WATCH_ENV = "CONTINUA_EXIT_WITH_PID"  # read by continua.forkserver_watch in the forkserver
POLL_S = 0.5  # how often a worker looks whether the main process is still there
_watching_in: int | None = None  # the process whose watch thread runs (a forked copy must start its own)
_forks_watch: int | None = None  # while set, children forked from this process end with it
_hook_installed = False


class Interrupted(Exception):
    """The command was asked to stop (SIGTERM or SIGINT); its state is resumable."""


def _resource_trackers() -> set[int]:
    """PIDs of this process's (py)multiprocessing resource trackers."""
    pids = set()
    for name in ("multiprocess.resource_tracker", "multiprocessing.resource_tracker"):
        tracker = getattr(sys.modules.get(name), "_resource_tracker", None)
        if getattr(tracker, "_pid", None) is not None:
            pids.add(tracker._pid)
    return pids


def stop_descendants(grace_s: float = 5.0) -> list[int]:
    """Terminate every descendant of this process (SIGTERM, then SIGKILL after `grace_s`); returns their PIDs.

    The resource tracker stays: this process still unregisters its semaphores with it on the way out
    (a killed tracker is relaunched and answers each with a KeyError traceback), and it exits by
    itself, cleaning up, once this process has."""
    keep = _resource_trackers()
    procs = [p for p in psutil.Process().children(recursive=True) if p.pid not in keep]
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


def exit_with(pid: int, poll_s: float = POLL_S) -> None:
    """End this process (exit code 1) as soon as process `pid` is gone (a daemon thread polls it; PID
    and start time, so a reused PID does not count). Once per process; a forked copy starts its own."""
    global _watching_in
    if _watching_in == os.getpid():
        return
    _watching_in = os.getpid()
    try:
        target = psutil.Process(pid)
    except psutil.NoSuchProcess:
        os._exit(1)

    def watch() -> None:
        while target.is_running():
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name=f"exit-with-{pid}", daemon=True).start()


def end_with_parent(sig: int = signal.SIGTERM):
    """A `preexec_fn` for `subprocess`: the child gets `sig` when this process dies, however it dies (Linux
    PR_SET_PDEATHSIG, kept across exec; None elsewhere). For a launcher such as torchrun, whose SIGTERM
    handler stops its own workers: a `kill -9` of the command then leaves none of them running."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the line above: nobody will send it
            os.kill(os.getpid(), int(sig))

    return preexec


def _after_fork_in_child() -> None:
    global _forks_watch
    if _forks_watch is not None:
        pid, _forks_watch = _forks_watch, None  # the child's own forks are its business
        exit_with(pid)


def _forkserver_preload() -> None:
    """Have the forkserver (py)multiprocessing starts next import continua.forkserver_watch."""
    for name in ("multiprocess.forkserver", "multiprocessing.forkserver"):
        try:
            module = __import__(name, fromlist=["_forkserver"])
        except ImportError:
            continue
        preload = list(getattr(module._forkserver, "_preload_modules", None) or ["__main__"])
        if "continua.forkserver_watch" not in preload:
            module.set_forkserver_preload(preload + ["continua.forkserver_watch"])


@contextmanager
def stop_workers_on_signal() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into `Interrupted`; on any exception, end every worker process before leaving.
    Meanwhile every process started from here ends itself when this one dies (see the module's doc)."""
    global _forks_watch, _hook_installed

    def handler(signum: int, _frame) -> None:
        raise Interrupted(signal.Signals(signum).name)

    if not _hook_installed:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _hook_installed = True
    _forkserver_preload()
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    old_env = os.environ.get(WATCH_ENV)
    os.environ[WATCH_ENV] = str(os.getpid())
    _forks_watch = os.getpid()
    try:
        yield
    except BaseException:
        for s in old:  # a second signal must not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        stop_descendants()
        raise
    finally:
        _forks_watch = None
        if old_env is None:
            os.environ.pop(WATCH_ENV, None)
        else:
            os.environ[WATCH_ENV] = old_env
        for s, h in old.items():
            signal.signal(s, h)
