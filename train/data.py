"""The training sampler: the plan's token budget per source, interleaved, packed, resumable.

Each source is a stream of its unique documents, read epoch after epoch in a fresh seeded order
(resample "dynamic": each epoch is a fresh draw of the manifest's `epoch_tokens` from the pool).
Streams are packed into windows of seq_len+1 tokens that overlap by one token, so every window
trains on exactly seq_len new tokens. Windows are dealt to sources by largest deficit against the
plan's shares, so every batch holds each source's share to within one sequence (compute-equivalent
replay inside each batch). The whole state is a few integers: where each stream is and how many
windows have been dealt; the orders are recomputed from the seed.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from xxhash import xxh3_64_intdigest

from continua import fingerprint as fp
from mix.manifest import MANIFEST_NAME, Manifest, SourceEntry
from mix.shards import ShardSet

_WINDOW = struct.Struct("<QIQQQ")  # previous hash, source, epoch, document position, token offset
RUN_INPUTS = "inputs.json"  # run dir: the manifest the run trains on (a resumed run must find the same)


@dataclass
class SourceStream:
    """One source's documents as an endless token stream, in seeded per-epoch orders."""

    name: str
    docs: ShardSet
    seed: int
    index: int
    epoch_tokens: int  # tokens per epoch: the whole pool ("fixed") or a fresh subset of it ("dynamic")
    dynamic: bool
    epoch: int = 0
    pos: int = 0  # document position within the epoch's order
    off: int = 0  # token offset within that document
    _lengths: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    _orders: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._lengths = self.docs.doc_lengths()
        if self._lengths.size == 0 or int(self._lengths.sum()) == 0:
            raise ValueError(f"{self.docs.folder}: source {self.name!r} has no training tokens but the plan "
                             "asks for some")

    def order(self, epoch: int) -> np.ndarray:
        """Document order of `epoch`: a permutation of the pool (cut to `epoch_tokens` when dynamic)."""
        if epoch not in self._orders:
            rng = np.random.default_rng([self.seed, self.index, epoch])
            perm = rng.permutation(self._lengths.size)
            if self.dynamic:
                cum = np.cumsum(self._lengths[perm])
                perm = perm[: int(np.searchsorted(cum, self.epoch_tokens)) + 1]
            self._orders = {k: v for k, v in self._orders.items() if k >= epoch - 1}  # keep memory flat
            self._orders[epoch] = perm
        return self._orders[epoch]

    def _walk(self, state: tuple[int, int, int], n: int) -> tuple[list[np.ndarray], tuple[int, int, int]]:
        epoch, pos, off = state
        pieces, got = [], 0
        while got < n:
            order = self.order(epoch)
            if pos >= order.size:
                epoch, pos, off = epoch + 1, 0, 0
                continue
            doc = self.docs.doc(int(order[pos]))
            piece = doc[off: off + n - got]
            pieces.append(piece)
            got += piece.size
            off += piece.size
            if off >= doc.size:
                pos, off = pos + 1, 0
        return pieces, (epoch, pos, off)

    def skip(self, n: int) -> None:
        """Move on by `n` tokens without reading them (another rank's window): document lengths only."""
        epoch, pos, off, got = self.epoch, self.pos, self.off, 0
        while got < n:
            order = self.order(epoch)
            if pos >= order.size:
                epoch, pos, off = epoch + 1, 0, 0
                continue
            length = int(self._lengths[order[pos]])
            take = min(length - off, n - got)
            got, off = got + take, off + take
            if off >= length:
                pos, off = pos + 1, 0
        self.epoch, self.pos, self.off = epoch, pos, off

    def window(self, seq_len: int) -> np.ndarray:
        """The next seq_len+1 tokens; the stream moves on by seq_len (the last token is shared)."""
        pieces, after = self._walk((self.epoch, self.pos, self.off), seq_len)
        last, _ = self._walk(after, 1)
        self.epoch, self.pos, self.off = after
        return np.concatenate(pieces + last).astype(np.int64)


class Sampler:
    """Deterministic, stateful batches for one rank, drawn from the manifest's training shards."""

    def __init__(self, shards_dir: Path, manifest: Manifest, seq_len: int, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ValueError(f"[train] batch_size {batch_size} must be divisible by the number of processes {world}")
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.rank, self.world = rank, world
        planned = {n: s for n, s in manifest.sources.items() if s.target_tokens > 0}
        if not planned:
            raise ValueError(f"{Path(shards_dir) / 'manifest.json'}: no source has target_tokens > 0")
        self.names = sorted(planned)
        total = sum(planned[n].target_tokens for n in self.names)
        self.shares = np.array([planned[n].target_tokens / total for n in self.names])
        self.streams = [self._stream(Path(shards_dir), n, planned[n], i) for i, n in enumerate(self.names)]
        self.counts = np.zeros(len(self.names), dtype=np.int64)  # windows dealt to each source
        self.dealt = 0  # windows dealt in total (all ranks)
        self.consumed = 0  # chained hash of every window dealt (source, epoch, document, offset): the sample order

    def _stream(self, shards_dir: Path, name: str, entry: SourceEntry, index: int) -> SourceStream:
        docs = ShardSet.open(shards_dir / name / "train")
        if entry.resample not in ("fixed", "dynamic"):
            raise ValueError(f"{shards_dir / 'manifest.json'}: source {name!r} has resample {entry.resample!r}; "
                             "expected 'fixed' or 'dynamic'")
        pool = docs.num_tokens
        dynamic = entry.resample == "dynamic"
        epoch_tokens = pool
        if dynamic:  # mix writes epoch_tokens; older manifests imply it as target_tokens / epochs
            planned = entry.epoch_tokens or (int(round(entry.target_tokens / entry.epochs)) if entry.epochs > 0 else pool)
            epoch_tokens = min(pool, planned)
        return SourceStream(name, docs, self.seed, index, max(1, epoch_tokens), dynamic)

    def _next_source(self) -> int:
        deficit = self.shares * (self.dealt + 1) - self.counts
        return int(np.argmax(deficit))

    def next_batch(self) -> np.ndarray:
        """This rank's slice of the next global batch: (batch_size / world, seq_len + 1) int64 tokens."""
        per_rank = self.batch_size // self.world
        lo = self.rank * per_rank
        rows = []
        for j in range(self.batch_size):  # every rank deals the whole batch so all states stay equal,
            s = self._next_source()  # but reads only its own windows' tokens
            st = self.streams[s]
            self.consumed = xxh3_64_intdigest(_WINDOW.pack(self.consumed, s, st.epoch, st.pos, st.off))
            if lo <= j < lo + per_rank:
                rows.append(self.streams[s].window(self.seq_len))
            else:
                self.streams[s].skip(self.seq_len)
            self.counts[s] += 1
            self.dealt += 1
        return np.stack(rows)

    def tokens_by_source(self) -> dict[str, int]:
        """Training tokens (targets) dealt to each source so far, over all ranks."""
        return {n: int(c) * self.seq_len for n, c in zip(self.names, self.counts)}

    def state_dict(self) -> dict:
        return {"seq_len": self.seq_len, "batch_size": self.batch_size, "seed": self.seed, "dealt": self.dealt,
                "consumed": f"{self.consumed:016x}",
                "sources": {s.name: [s.epoch, s.pos, s.off, int(c)] for s, c in zip(self.streams, self.counts)}}

    def load_state_dict(self, state: dict) -> None:
        mine = (self.seq_len, self.batch_size, self.seed, self.names)
        theirs = (state["seq_len"], state["batch_size"], state["seed"], sorted(state["sources"]))
        if mine != theirs:
            raise ValueError(f"checkpoint's sampler (seq_len, batch_size, seed, sources) = {theirs} does not match "
                             f"this run's {mine}; start fresh with --no-resume")
        self.dealt = int(state["dealt"])
        self.consumed = int(state.get("consumed", "0"), 16)  # checkpoints of older versions: not recorded
        for i, s in enumerate(self.streams):
            s.epoch, s.pos, s.off, count = (int(v) for v in state["sources"][s.name])
            self.counts[i] = count


class DeviceBatches:
    """A sampler's batches on the device, the next one cut and copied while the current step computes.

    `prefetch` (called once the step's work is queued) deals the next batch into pinned memory and starts
    its copy with non_blocking, so the GPU never waits for the host's token reading. The sampler has then
    dealt one batch ahead: `state_dict` and `tokens_by_source` describe the batches taken so far, which is
    what a checkpoint must record.
    """

    def __init__(self, sampler: Sampler, device: torch.device):
        self.sampler, self.device = sampler, device
        self._pin = device.type == "cuda"
        self._next: torch.Tensor | None = None
        self._state: dict = {}
        self._tokens: dict[str, int] = {}

    def prefetch(self) -> None:
        if self._next is None:
            self._state, self._tokens = self.sampler.state_dict(), self.sampler.tokens_by_source()
            batch = torch.from_numpy(self.sampler.next_batch())
            self._next = batch.pin_memory().to(self.device, non_blocking=True) if self._pin else batch.to(self.device)

    def take(self) -> torch.Tensor:
        """The next batch (dealt now if it was not prefetched)."""
        self.prefetch()
        batch, self._next = self._next, None
        return batch

    def state_dict(self) -> dict:
        return self._state if self._next is not None else self.sampler.state_dict()

    def tokens_by_source(self) -> dict[str, int]:
        return self._tokens if self._next is not None else self.sampler.tokens_by_source()


def planned_steps(manifest: Manifest, batch_size: int, seq_len: int) -> int:
    """Optimizer steps the plan implies: all sources' target tokens / tokens per step."""
    total = sum(s.target_tokens for s in manifest.sources.values())
    steps = total // (batch_size * seq_len)
    if steps < 1:
        raise ValueError(f"the plan's {total} target tokens are less than one step "
                         f"({batch_size} x {seq_len} tokens); lower [train] batch_size or seq_len, or set steps")
    return int(steps)


def open_shards(shards: Path, run_dir: Path | None = None, resuming: bool = False, record: bool = True) -> Manifest:
    """The shard manifest, refused when it is stale: its plan changed since `mix build` (a new budget
    must be rebuilt before training), or a resumed run started on other shards. Records the
    manifest's fingerprint in `run_dir` (when `record`) so the next resume can tell."""
    shards = Path(shards)
    manifest = Manifest.load(shards)
    why = _plan_changed(manifest.plan, shards)
    if why:
        raise fp.StaleInputError(f"{os.path.normpath(shards / manifest.plan['path'])}: changed since `mix build` made {shards} ({why}): "
                                 f"the shards are of the earlier plan; re-run `mix build`")
    if run_dir is None:
        return manifest
    inputs = Path(run_dir) / RUN_INPUTS
    if resuming and inputs.exists():
        # by content, at the manifest the run reads now: a moved run folder still resumes on equal shards
        why = fp.changed(fp.read_record(inputs, "")["manifest"] | {"path": str(shards / MANIFEST_NAME)})
        if why:
            raise fp.StaleInputError(f"{shards / MANIFEST_NAME}: changed since this run started in {run_dir} ({why}): "
                                     f"resuming would train on other data; start over with `train run --no-resume` "
                                     f"or set another [train] out")
    elif record:
        fp.write_record(inputs, {"manifest": fp.fingerprint(shards / MANIFEST_NAME)})
    return manifest


def open_blends(shards: dict[str, Path], run_dir: Path, resuming: bool, record: bool) -> dict[str, Manifest]:
    """The manifests of a staged run's blends (label -> shards folder), each checked as `open_shards` checks one;
    `run_dir`'s record holds them all, so a resumed run refuses any blend rebuilt since it started."""
    manifests = {label: open_shards(path) for label, path in shards.items()}
    tokenizers = {json.dumps(m.tokenizer, sort_keys=True) for m in manifests.values()}
    if len(tokenizers) > 1:
        raise ValueError(f"the stages' shards were built with different tokenizers ({', '.join(shards)}): one model "
                         "reads them all; rebuild them with one [data] tokenizer")
    held: dict[str, tuple[str, tuple[int, int]]] = {}
    for label, m in manifests.items():  # one validation set per source, or a stage trains on another's
        for name, entry in m.sources.items():
            split = (entry.valid.docs, entry.valid.tokens)
            first = held.setdefault(name, (label, split))
            if first[1] != split:
                raise ValueError(f"source {name!r} holds out {first[1][0]} validation documents ({first[1][1]} tokens) "
                                 f"in {first[0]} but {split[0]} ({split[1]} tokens) in {label}: a stage would train on "
                                 "documents another evaluates on; give every stage the same [mix] valid_fraction, "
                                 "valid_max_docs and min_valid_docs")
    inputs = Path(run_dir) / RUN_INPUTS
    if resuming and inputs.exists():
        recorded = fp.read_record(inputs, "").get("manifests", {})
        for label, path in shards.items():
            why = (fp.changed(recorded[label] | {"path": str(path / MANIFEST_NAME)}) if label in recorded
                   else "not a blend of this run when it started")
            if why:
                raise fp.StaleInputError(f"{path / MANIFEST_NAME}: changed since this run started in {run_dir} "
                                         f"({why}): resuming would train on other data; start over with "
                                         f"`train run --no-resume` or set another [train] out")
    elif record:
        fp.write_record(inputs, {"manifests": {label: fp.fingerprint(p / MANIFEST_NAME) for label, p in shards.items()}})
    return manifests


def _plan_changed(plan: dict, shards: Path) -> str | None:
    """How the plan file differs from the one the shards were built from (shards made without a plan: None);
    its path is relative to the shards folder (absolute in manifests of older versions)."""
    if "hash" in plan:
        return fp.changed(plan, base=shards)
    if "sha256" in plan:  # a manifest of an older `mix build`, hashed another way
        return "recorded by an older `mix build`"
    return None
