"""One exit-code table for `curate`, `mix`, `train` and `continua`, so scripts can tell outcomes apart.

| code | meaning |
| ---- | ------- |
| 0    | finished, and every output the command promises exists |
| 1    | runtime failure (a step failed, an input changed or is damaged, bad data found while working, a system error such as a full disk) |
| 2    | usage or recipe error: nothing was started |
| 75   | interrupted (SIGTERM, SIGINT, --stop-at): state is saved, run the same command again to resume |

75 is sysexits' EX_TEMPFAIL ("try again later"), which is what an interrupted, resumable job is.
"""

from __future__ import annotations

import sys
from typing import Callable

OK = 0
FAILED = 1
USAGE = 2
INTERRUPTED = 75

__all__ = ["OK", "FAILED", "USAGE", "INTERRUPTED", "RunFailure", "run_command", "system_error"]


class RunFailure(RuntimeError):
    """Found while the command was working (bad data a step met, unfinished tasks): exit 1, never 2,
    since 2 promises that nothing was started."""


def system_error(e: OSError) -> str:
    """One line for an error of the system, naming the path: `PATH: Permission denied`."""
    where = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "") if e.filename else None
    what = e.strerror or str(e)
    return f"{where}: {what}" if where else what


def run_command(prog: str, func: Callable[[], int], failures: tuple[type[BaseException], ...] = (),
                usage: tuple[type[BaseException], ...] = ()) -> int:
    """Run a command's body and turn what it raises into one line on stderr and the code of the table.

    `failures` are the caller's runtime-failure types (1); `usage` adds usage-error types (2) to
    recipe and value errors. Errors of the system (a read-only folder, a full disk, an unreadable
    file), also when wrapped in another error, are 1 and name the path. Anything else is a bug and
    keeps its traceback.
    """
    def say(message: str) -> None:
        print(f"{prog}: {' '.join(message.split())}", file=sys.stderr, flush=True)

    try:
        return func()
    except KeyboardInterrupt:
        say("interrupted; run the same command again to resume")
        return INTERRUPTED
    except (RunFailure, *failures) as e:
        say(f"error: {e}")
        return FAILED
    except OSError as e:
        if e.errno is None:  # raised by our code with a message (e.g. "run `mix build` first")
            say(f"error: {e}")
            return USAGE
        say(f"error: {system_error(e)}")
        return FAILED
    except (ValueError, *usage) as e:
        cause = e.__cause__
        say(f"error: {e}")
        return FAILED if isinstance(cause, OSError) and cause.errno is not None else USAGE
