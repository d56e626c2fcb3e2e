"""One exit-code table for `curate`, `mix`, `train` and `continua`, so scripts can tell outcomes apart.

| code | meaning |
| ---- | ------- |
| 0    | finished, and every output the command promises exists |
| 1    | runtime failure (a step failed, an input changed, a system error such as a full disk) |
| 2    | usage or recipe error: nothing was started |
| 75   | interrupted (SIGTERM, SIGINT, --stop-at): state is saved, run the same command again to resume |

75 is sysexits' EX_TEMPFAIL ("try again later"), which is what an interrupted, resumable job is.
"""

from __future__ import annotations

OK = 0
FAILED = 1
USAGE = 2
INTERRUPTED = 75

__all__ = ["OK", "FAILED", "USAGE", "INTERRUPTED"]
