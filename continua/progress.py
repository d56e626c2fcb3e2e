"""Progress that reads well where it ends up: a tqdm bar on a terminal, plain periodic lines in a log.

tqdm redraws its bar with carriage returns; redirected to a file that is thousands of `\\r` frames
(48 KB for the demo) that no one can read. When stderr is not a terminal, `progress()` returns a
`LineProgress` instead: one line per `interval` seconds (and one at the end) such as
`tokenize code: 1,200/4,000 doc (30%), 410 doc/s, loss=2.31`, with the subset of tqdm's API the
project uses (iterate, update, set_postfix, set_postfix_str, set_description, write, close).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterable, TextIO

LOG_INTERVAL_S = 30.0  # seconds between plain progress lines; CONTINUA_PROGRESS_INTERVAL overrides


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream if stream is not None else sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, disable: bool = False, file: TextIO | None = None, interval: float | None = None,
             **tqdm_kwargs: Any):
    """tqdm on a terminal, `LineProgress` otherwise; the same calls work on both."""
    stream = file if file is not None else sys.stderr
    if is_terminal(stream) and not disable:
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=stream, **tqdm_kwargs)
    if interval is None:
        interval = float(os.environ.get("CONTINUA_PROGRESS_INTERVAL", LOG_INTERVAL_S))
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable, file=stream,
                        interval=interval)


class LineProgress:
    """Plain progress lines, at most one per `interval` seconds plus a final one; never a carriage return."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, disable: bool = False, file: TextIO | None = None,
                 interval: float = LOG_INTERVAL_S):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.n, self.disable = total, desc, unit, initial, disable
        self.file, self.interval = file, interval
        self.postfix = ""
        self._start_n = initial
        self._t0 = self._last = time.monotonic()
        self._printed_n: int | None = None
        self._closed = False

    def __iter__(self):
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.total or 0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._print(now)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        self._last = time.monotonic()
        self._print(self._last)

    def write(self, s: str) -> None:
        if not self.disable:
            print(s, file=self._stream(), flush=True)

    def line(self, now: float | None = None) -> str:
        """`desc: 1,200/4,000 doc (30%), 410 doc/s, 12s, postfix`."""
        elapsed = max((time.monotonic() if now is None else now) - self._t0, 1e-9)
        done = f"{self.n:,}" + (f"/{self.total:,}" if self.total else "") + f" {self.unit}"
        if self.total:
            done += f" ({100 * self.n / self.total:.0f}%)"
        rate = (self.n - self._start_n) / elapsed
        parts = [done, f"{rate:,.1f} {self.unit}/s" if rate < 10 else f"{rate:,.0f} {self.unit}/s",
                 f"{elapsed:.0f}s"]
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: " + ", ".join(parts) if self.desc else ", ".join(parts)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._printed_n != self.n:  # the final count, once
            self._print()

    def _print(self, now: float | None = None) -> None:
        if self.disable:
            return
        self._printed_n = self.n
        print(self.line(now), file=self._stream(), flush=True)

    def _stream(self) -> TextIO:
        return self.file if self.file is not None else sys.stderr
