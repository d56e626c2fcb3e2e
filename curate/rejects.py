"""Line numbers for the rejects of JSON Lines files read in byte ranges, added once every task is done.

A task reading a range that starts mid-file cannot know the line number there without reading what
comes before (continua.partition), so its rejects carry the byte offset and `"line": null`. When all
tasks have finished, each such file is read once, up to its last reject, and the rejects files are
rewritten with the 1-based line of every reject, as the rejects of any other file have it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from continua.documents import line_numbers
from continua.io import atomic_open


def fill_reject_lines(folder: Path) -> int:
    """Give every reject of `folder`/rejects/*.jsonl with an offset but no line its line; returns how many."""
    files = sorted((Path(folder) / "rejects").glob("*.jsonl"))
    wanted: dict[str, set[int]] = defaultdict(set)
    touched = []
    for f in files:
        rows = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line]
        missing = [r for r in rows if r.get("line") is None and r.get("offset") is not None]
        for r in missing:
            wanted[r["path"]].add(int(r["offset"]))
        if missing:
            touched.append((f, rows))
    if not touched:
        return 0
    lines = {path: line_numbers(path, offsets) for path, offsets in wanted.items()}
    filled = 0
    for f, rows in touched:
        with atomic_open(f) as out:
            for r in rows:
                if r.get("line") is None and r.get("offset") is not None:
                    r["line"] = lines[r["path"]][int(r["offset"])]
                    filled += 1
                out.write(json.dumps(r, ensure_ascii=False) + "\n")
    return filled
