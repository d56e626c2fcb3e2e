"""Token shards: datatrove's .ds layout, so any datatrove-aware loader can read continua's output.

A shard `NAME.ds` is a flat little-endian array of token ids (uint16 when the vocabulary fits in
65,536 ids, else uint32); `NAME.ds.index` is a flat little-endian uint64 array of document ends
(exclusive, in tokens, cumulative within the shard); `NAME.ds.metadata` holds three lines,
`tokenizer|token_size`, the token count, and the same count in words, as datatrove writes it.
Every document already carries its BOS (when the tokenizer wants one) and its EOS, so a reader
can concatenate documents without knowing the tokenizer.

Layout under a shards folder: `SOURCE/SPLIT/NNNNN.ds` (SPLIT is `train` or `valid`) plus the
`manifest.json` that `mix build` writes (see mix.build).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from continua.io import naming


def token_dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")


class ShardWriter:
    """Appends documents to one shard; files appear under their final names only on `close()`."""

    def __init__(self, path: str | Path, dtype: np.dtype, tokenizer_name: str = "unknown"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.tokenizer_name = tokenizer_name
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._f = open(self._tmp, "wb")
        self._ends: list[int] = []
        self._n = 0

    def write(self, tokens: list[int] | np.ndarray) -> None:
        arr = np.asarray(tokens, dtype=self.dtype)
        if arr.size == 0:
            raise ValueError("refusing to write an empty document (every document ends with EOS)")
        with naming(self.path):
            self._f.write(arr.tobytes())
        self._n += int(arr.size)
        self._ends.append(self._n)

    @property
    def num_tokens(self) -> int:
        return self._n

    @property
    def num_docs(self) -> int:
        return len(self._ends)

    def close(self) -> None:
        with naming(self.path):
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            index_tmp = self._tmp.with_name(self._tmp.name + ".index")
            np.asarray(self._ends, dtype="<u8").tofile(index_tmp)
            meta_tmp = self._tmp.with_name(self._tmp.name + ".metadata")
            meta_tmp.write_text(f"{self.tokenizer_name}|{self.dtype.itemsize}\n{self._n}\n{self._n:,} tokens\n")
        # the token file goes last: a shard whose .ds exists is complete
        os.replace(index_tmp, self.path.with_name(self.path.name + ".index"))
        os.replace(meta_tmp, self.path.with_name(self.path.name + ".metadata"))
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        try:
            self._f.close()
        except OSError:  # the buffered rest cannot be written either (the reason already being raised)
            pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass
class Shard:
    """A read-only, memory-mapped view of one shard."""

    path: Path
    dtype: np.dtype

    @cached_property
    def tokens(self) -> np.ndarray:
        if self.path.stat().st_size == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r")

    @cached_property
    def ends(self) -> np.ndarray:
        return np.fromfile(self.path.with_name(self.path.name + ".index"), dtype="<u8").astype(np.int64)

    @property
    def num_docs(self) -> int:
        return int(self.ends.size)

    @property
    def num_tokens(self) -> int:
        return int(self.ends[-1]) if self.ends.size else 0

    def doc(self, i: int) -> np.ndarray:
        start = int(self.ends[i - 1]) if i > 0 else 0
        return np.asarray(self.tokens[start:int(self.ends[i])])

    def doc_lengths(self) -> np.ndarray:
        return np.diff(self.ends, prepend=0)


def read_dtype(shard_path: Path) -> np.dtype:
    meta = shard_path.with_name(shard_path.name + ".metadata")
    size = int(meta.read_text().splitlines()[0].rsplit("|", 1)[1])
    return np.dtype("<u2") if size == 2 else np.dtype("<u4")


@dataclass
class ShardSet:
    """All shards of one source and split, read as one sequence of documents."""

    folder: Path
    shards: list[Shard] = field(default_factory=list)

    @classmethod
    def open(cls, folder: str | Path) -> "ShardSet":
        folder = Path(folder)
        paths = sorted(folder.glob("*.ds"))
        if not paths:
            raise FileNotFoundError(f"{folder}: no .ds shards")
        return cls(folder, [Shard(p, read_dtype(p)) for p in paths])

    @cached_property
    def _offsets(self) -> np.ndarray:
        return np.cumsum([0] + [s.num_docs for s in self.shards])

    @property
    def num_docs(self) -> int:
        return int(self._offsets[-1])

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.shards)

    def doc(self, i: int) -> np.ndarray:
        k = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return self.shards[k].doc(i - int(self._offsets[k]))

    def doc_lengths(self) -> np.ndarray:
        return np.concatenate([s.doc_lengths() for s in self.shards]) if self.shards else np.zeros(0, np.int64)
