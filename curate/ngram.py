"""Reference n-gram language model (interpolated modified Kneser-Ney), trained and scored with numpy.

Guo et al. (2024) pick domain data by its perplexity under a KenLM model trained on a high-quality
reference corpus. KenLM is not available offline, so this module is a compact re-implementation:

* Tokens are words from a normalizing regex tokenizer (lower case, ASCII digits -> 0) or the ids of any
  `tokenizers` tokenizer. Internal ids: 0 = <s>, 1 = </s>, 2 = <unk>, real tokens from 3.
* Each document is `<s>^(N-1) tokens </s>`; every token and </s> is predicted, <s> never is.
* Every n-gram is a 64-bit hash computed position-wise over the whole batch at once, so counting is
  `np.unique` and scoring is a vectorized open-addressing lookup (`HashTable`) built from the
  sorted key arrays at load time: Python touches each word once (tokenizing), never each n-gram.
* Chen & Goodman's interpolated modified Kneser-Ney: the top order uses raw counts, lower orders
  continuation counts (n-grams that begin with <s> keep their raw counts, as in KenLM); three
  discounts per order from the count-of-counts. The unigram level interpolates with a uniform
  distribution over the vocabulary (which holds </s> and <unk>), so unseen words get mass.

For every n-gram type the model stores a(hw) = (c(hw) - D(c)) / c(h.) and for every context
gamma(h) = (D1 N1(h.) + D2 N2(h.) + D3 N3+(h.)) / c(h.); then p(w|h) = a(hw) + gamma(h) p(w|h')
with a = 0 for unseen n-grams and gamma = 1 for unseen contexts. The file is an uncompressed .npz
of those arrays plus a JSON header (and the word list): no pickle.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from continua.io import atomic_path

BOS, EOS, UNK = 0, 1, 2
OFFSET = 3  # first id of a real token
FORMAT = "continua-ngram"
VERSION = 1
MERGE_TOKENS = 4_000_000  # counted tokens after which per-chunk n-gram tables are folded together

_WORD = re.compile(r"\w+|[^\w\s]")
_DIGITS = bytes.maketrans(b"123456789", b"000000000")  # bytes.translate is ~15x faster than str.translate
_M1, _M2, _P = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


class NgramError(ValueError):
    """A model file or training input that cannot be used: the message names it."""


def words(text: str) -> list[str]:
    """The built-in tokenizer: CCNet-style normalization (lower case, ASCII digits -> 0), then words
    and single punctuation marks, so that surface variants of a word share one n-gram."""
    # digits mapped on the UTF-8 bytes: safe (multi-byte sequences never hold ASCII bytes) and fast
    raw = text.lower().encode("utf-8", "surrogatepass").translate(_DIGITS)
    return _WORD.findall(raw.decode("utf-8", "surrogatepass"))


# ---------------------------------------------------------------------------------------- encoders


class WordEncoder:
    """Words of the built-in tokenizer -> internal ids; words outside the vocabulary -> <unk>."""

    kind = "words"

    def __init__(self, vocab: list[str]):
        self.vocab = vocab
        self.index = {w: i + OFFSET for i, w in enumerate(vocab)}

    @property
    def n_symbols(self) -> int:  # predictable symbols: the words, </s> and <unk>
        return len(self.vocab) + 2

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        get = self.index.get
        out = []
        for text in texts:
            toks = words(text)
            out.append(np.fromiter((get(w, UNK) for w in toks), dtype=np.int64, count=len(toks)))
        return out

    def header(self) -> dict:
        return {"kind": self.kind, "vocab": len(self.vocab)}


class TokenizerEncoder:
    """Ids of a `tokenizers` tokenizer (tokenizer.json or a model folder), shifted past <s> </s> <unk>."""

    kind = "tokenizer"

    def __init__(self, path: str | Path):
        from continua.tokenizer import load_tokenizer

        self.path = Path(path)
        self.tokenizer = load_tokenizer(self.path)

    @property
    def n_symbols(self) -> int:
        return self.tokenizer.vocab_size + 2

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        backend = self.tokenizer.backend
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [np.asarray(e.ids, dtype=np.int64) + OFFSET for e in encode(texts, add_special_tokens=False)]

    def header(self) -> dict:
        return {"kind": self.kind, "path": str(self.path.resolve()), "vocab_size": self.tokenizer.vocab_size}


# ----------------------------------------------------------------------------------- shared kernels


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads the bits so sorted keys are uniform and collisions ~ 2^-64."""
    x = x ^ (x >> _S30)
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


def _hashes(seq: np.ndarray, order: int) -> list[np.ndarray]:
    """H[k-1][i] = hash of the k-gram seq[i-k+1 .. i] (garbage for i < k-1, never read there)."""
    s = seq.astype(np.uint64)
    out = [_mix(s + _P)]
    for k in range(2, order + 1):
        h = np.zeros_like(s)
        if len(s) >= k:
            h[k - 1:] = _mix(out[-1][k - 1:] * _P + s[: len(s) - k + 1] + np.uint64(1))
        out.append(h)
    return out


def _pad(docs: list[np.ndarray], order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate `<s>^(N-1) doc </s>` for every doc: (sequence, target positions, doc of each target)."""
    lens = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    seg = lens + order  # N-1 pads + tokens + </s>
    starts = np.cumsum(seg) - seg
    seq = np.full(int(seg.sum()), BOS, dtype=np.int64)
    if lens.sum():
        body_start = np.repeat(starts + order - 1, lens)
        within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        seq[body_start + within] = np.concatenate(docs)
    seq[starts + order - 1 + lens] = EOS
    targets = np.flatnonzero(seq != BOS)
    return seq, targets, np.repeat(np.arange(len(docs)), lens + 1)


class HashTable:
    """A read-only hash index over sorted uint64 keys, looked up for a whole array of queries at once.

    Binary search costs ~20 dependent cache misses per query; here a query starts at the slot given
    by its top bits and scans right. The table is the sorted keys spread out to load factor <= 0.5
    (position_i = max(home_i, position_(i-1) + 1), so occupied slots stay sorted): a scan stops at an
    empty slot (key 0) or at a larger key, after ~1.5 probes on average.
    """

    def __init__(self, keys: np.ndarray, values: np.ndarray, missing: float):
        n = len(keys)
        bits = max(1, int(np.ceil(np.log2(max(2 * n, 2)))))
        home = (keys >> np.uint64(64 - bits)).astype(np.int64)
        pos = np.maximum.accumulate(home - np.arange(n)) + np.arange(n) if n else home
        size = max(1 << bits, int(pos[-1]) + 2 if n else 1)  # always an empty slot after the last key
        if n and keys[0] == 0:
            raise NgramError("an n-gram hashed to the reserved key 0; retrain with another order")
        self.shift, self.missing = np.uint64(64 - bits), missing
        self.keys = np.zeros(size, dtype=np.uint64)
        self.keys[pos] = keys
        self.values = np.full(size, missing, dtype=np.float32)
        self.values[pos] = values

    def get(self, queries: np.ndarray) -> np.ndarray:
        """values for the queries found, `missing` for the others (float64)."""
        slot = (queries >> self.shift).astype(np.int64)
        found = self.keys[slot]
        todo = np.flatnonzero((found != 0) & (found < queries))
        while len(todo):
            slot[todo] += 1
            found[todo] = self.keys[slot[todo]]
            todo = todo[(found[todo] != 0) & (found[todo] < queries[todo])]
        return np.where(found == queries, self.values[slot].astype(np.float64), np.float64(self.missing))


# ------------------------------------------------------------------------------------------- model


@dataclass
class NgramModel:
    """Per order k (1-based, index k-1): sorted n-gram keys with a(hw), sorted context keys with gamma(h)."""

    order: int
    encoder: WordEncoder | TokenizerEncoder
    keys: list[np.ndarray]
    prob: list[np.ndarray]
    ctx: list[np.ndarray]
    gamma: list[np.ndarray]
    info: dict = field(default_factory=dict)

    # --- scoring
    @cached_property
    def _tables(self) -> list[tuple[HashTable, HashTable | None]]:
        """Per order: (n-gram -> a, context -> gamma) hash tables, built once from the sorted arrays
        (order 1 has one empty context, whose gamma is used directly)."""
        return [(HashTable(k, a, 0.0), HashTable(c, g, 1.0) if i else None)
                for i, (k, a, c, g) in enumerate(zip(self.keys, self.prob, self.ctx, self.gamma))]

    def _probs(self, seq: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """p(seq[t] | up to N-1 tokens before it) for every target position t, all orders at once."""
        H = _hashes(seq, self.order)
        p = self._tables[0][0].get(H[0][targets]) + float(self.gamma[0][0]) / self.encoder.n_symbols
        for k in range(2, self.order + 1):
            ngram, context = self._tables[k - 1]
            assert context is not None
            p = ngram.get(H[k - 1][targets]) + context.get(H[k - 2][targets - 1]) * p
        return p

    def logprobs(self, docs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Natural-log probability of every predicted token (each doc's tokens and its </s>), and its doc."""
        seq, targets, doc = _pad(docs, self.order)
        return np.log(self._probs(seq, targets)), doc

    def perplexity(self, texts: list[str]) -> np.ndarray:
        """exp(-mean log p) per document, </s> included (so an empty text still gets a finite score)."""
        if not texts:
            return np.zeros(0)
        logp, doc = self.logprobs(self.encoder.encode(texts))
        total = np.bincount(doc, weights=logp, minlength=len(texts))
        count = np.bincount(doc, minlength=len(texts))
        return np.exp(-total / count)

    def ranking_auc(self, reference_like: list[str], others: list[str]) -> float:
        """ROC AUC that a reference-like text gets a lower perplexity than another (ties count half):
        how well this model, as a selector, ranks held-out reference text above the rest."""
        from curate.classifier import roc_auc

        labels = np.concatenate([np.ones(len(reference_like), bool), np.zeros(len(others), bool)])
        return float(roc_auc(labels, -np.concatenate([self.perplexity(reference_like), self.perplexity(others)])))

    def cond_prob(self, context: list[int], word: int | Iterable[int]) -> np.ndarray:
        """p(word | context) for internal ids; a context shorter than N-1 means the document start."""
        words_ = np.atleast_1d(np.asarray(list(word) if not np.isscalar(word) else [word], dtype=np.int64))
        n = self.order
        ctx = list(context)[-(n - 1):] if n > 1 else []
        head = np.array([BOS] * (n - 1 - len(ctx)) + ctx, dtype=np.int64)
        seq = np.concatenate([np.concatenate([head, [w]]) for w in words_])
        targets = np.arange(n - 1, len(seq), n)
        return self._probs(seq, targets)

    # --- files
    def save(self, path: str | Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        for k in range(self.order):
            arrays[f"keys{k + 1}"], arrays[f"prob{k + 1}"] = self.keys[k], self.prob[k]
            arrays[f"ctx{k + 1}"], arrays[f"gamma{k + 1}"] = self.ctx[k], self.gamma[k]
        header = {"format": FORMAT, "version": VERSION, "order": self.order, "tokenizer": self.encoder.header(),
                  "n_symbols": self.encoder.n_symbols, **self.info}
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        if isinstance(self.encoder, WordEncoder):
            arrays["vocab"] = np.frombuffer("\n".join(self.encoder.vocab).encode("utf-8"), dtype=np.uint8)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "NgramModel":
        path = Path(path)
        if not path.is_file():
            raise NgramError(f"{path}: n-gram model file does not exist (train one with `curate train-reference`)")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: np.ascontiguousarray(data[name]) for name in data.files}
            header = json.loads(bytes(arrays["header"]).decode())
            n = header["order"]
            tables = [[arrays[f"{name}{k}"] for k in range(1, n + 1)] for name in ("keys", "prob", "ctx", "gamma")]
            tok = header["tokenizer"]
        except (OSError, ValueError, KeyError) as e:
            raise NgramError(f"{path}: not an n-gram model written by `curate train-reference`: {e}") from e
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise NgramError(f"{path}: unsupported model format {header.get('format')!r} v{header.get('version')}")
        if tok["kind"] == "words":
            raw = bytes(arrays["vocab"]).decode("utf-8")
            encoder: WordEncoder | TokenizerEncoder = WordEncoder(raw.split("\n") if raw else [])
        else:
            from continua.tokenizer import TokenizerError

            try:
                encoder = TokenizerEncoder(tok["path"])
            except TokenizerError as e:
                raise NgramError(f"{path}: the model was trained with tokenizer {tok['path']}, "
                                 f"which cannot be loaded: {e}") from e
            if encoder.tokenizer.vocab_size != tok["vocab_size"]:
                raise NgramError(f"{path}: tokenizer {tok['path']} has {encoder.tokenizer.vocab_size} tokens, "
                                 f"the model was trained with {tok['vocab_size']}")
        info = {k: v for k, v in header.items() if k not in ("format", "version", "order", "tokenizer", "n_symbols")}
        return cls(n, encoder, *tables, info)


# ---------------------------------------------------------------------------------------- training


@dataclass
class _Types:
    """Distinct n-grams of one order: key, raw count, context key, suffix key, suffix starts with <s>."""

    key: np.ndarray
    count: np.ndarray
    ctx: np.ndarray
    suffix: np.ndarray
    suffix_bos: np.ndarray

    @staticmethod
    def merge(parts: list["_Types"]) -> "_Types":
        if len(parts) == 1:
            return parts[0]
        cat = {f: np.concatenate([getattr(p, f) for p in parts]) for f in ("key", "count", "ctx", "suffix", "suffix_bos")}
        key, first, inv = np.unique(cat["key"], return_index=True, return_inverse=True)
        count = np.bincount(inv, weights=cat["count"]).astype(np.int64)
        return _Types(key, count, cat["ctx"][first], cat["suffix"][first], cat["suffix_bos"][first])


def _count_chunk(docs: list[np.ndarray], order: int) -> list[_Types]:
    seq, targets, _ = _pad(docs, order)
    H = _hashes(seq, order)
    out = []
    for k in range(1, order + 1):
        key, first, count = np.unique(H[k - 1][targets], return_index=True, return_counts=True)
        rep = targets[first]
        if k == 1:
            zero = np.zeros(len(key), dtype=np.uint64)
            out.append(_Types(key, count, zero, zero, np.zeros(len(key), dtype=bool)))
        else:
            out.append(_Types(key, count, H[k - 2][rep - 1], H[k - 2][rep], seq[rep - k + 2] == BOS))
    return out


def _discounts(c: np.ndarray) -> tuple[float, float, float]:
    """Chen & Goodman's D1, D2, D3+ from the count-of-counts; sane fixed values when they are degenerate."""
    n1, n2, n3, n4 = (int(np.count_nonzero(c == r)) for r in (1, 2, 3, 4))
    try:
        y = n1 / (n1 + 2 * n2)
        d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    except ZeroDivisionError:
        d = (0.5, 1.0, 1.5)
    if not (0 < d[0] < 1 and 0 < d[1] < 2 and 0 < d[2] < 3):
        d = (min(max(d[0], 0.1), 0.9), min(max(d[1], 0.2), 1.8), min(max(d[2], 0.3), 2.7))
    return d


def _pruned_closure(types: list[_Types], adj: list[np.ndarray], prune: int) -> list[np.ndarray | None]:
    """Per order, which n-grams survive `prune` (None: all). An n-gram of order >= 3 survives when its
    adjusted count reaches `prune` or when it is the suffix or the context of a survivor one order up
    (as KenLM's lmplz keeps them): the kept set stays closed, so the model is exact in ARPA form."""
    n = len(types)
    keep: list[np.ndarray | None] = [None] * n
    if prune <= 1:
        return keep
    needed = np.empty(0, dtype=np.uint64)
    for k in range(n - 1, 1, -1):
        kept = (adj[k] >= prune) | np.isin(types[k].key, needed)
        keep[k] = kept
        needed = np.concatenate([types[k].suffix[kept], types[k].ctx[kept]])
    return keep


def _estimate(types: list[_Types], prune: int = 1) -> tuple[list, list, list, list, list]:
    """Adjusted counts per order, then a(hw) and gamma(h) per order.

    `prune` > 1 drops n-grams of order >= 3 whose adjusted count is below it (most are seen once;
    suffixes and contexts of kept ones stay, see `_pruned_closure`) and adds their a(hw) to gamma(h): each distribution stays normalized, the pruned words are
    predicted by backing off, and contexts left with nothing are dropped (gamma = 1 when missing).
    """
    n = len(types)
    adj: list[np.ndarray] = [np.empty(0)] * n
    adj[n - 1] = types[n - 1].count.astype(np.float64)
    for k in range(n - 1, 0, -1):  # order k from the types of order k+1 (0-based index k)
        upper = types[k]
        weight = np.where(upper.suffix_bos, adj[k], 1.0)  # n-grams starting with <s> keep raw counts
        sfx, inv = np.unique(upper.suffix, return_inverse=True)
        sums = np.bincount(inv, weights=weight)
        lower = types[k - 1]
        if len(sfx) != len(lower.key) or not np.array_equal(sfx, lower.key):
            raise NgramError("n-gram tables are inconsistent (a 64-bit hash collision); retrain with another order")
        adj[k - 1] = sums
    keep = _pruned_closure(types, adj, prune)
    keys, probs, ctxs, gammas, discounts = [], [], [], [], []
    for k in range(n):
        c = adj[k]
        d1, d2, d3 = _discounts(c)
        disc = np.where(c >= 3, d3, np.where(c >= 2, d2, d1))
        cx, inv = np.unique(types[k].ctx, return_inverse=True)
        total = np.bincount(inv, weights=c)
        mass = np.bincount(inv, weights=disc)
        a = (c - disc) / total[inv]
        gamma = mass / total
        key = types[k].key
        if keep[k] is not None:
            drop = ~keep[k]
            gamma = gamma + np.bincount(inv[drop], weights=a[drop], minlength=len(cx))
            alive = np.bincount(inv[~drop], minlength=len(cx)) > 0
            key, a, cx, gamma = key[~drop], a[~drop], cx[alive], gamma[alive]
        keys.append(key)
        probs.append(a.astype(np.float32))
        ctxs.append(cx)
        gammas.append(gamma.astype(np.float32))
        discounts.append([round(d1, 4), round(d2, 4), round(d3, 4)])
    return keys, probs, ctxs, gammas, discounts


def _chunks(texts: Iterable[str], docs_per_chunk: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) >= docs_per_chunk:
            yield batch
            batch = []
    if batch:
        yield batch


def train_ngram(texts: Iterable[str], order: int = 4, tokenizer: str | Path | None = None, min_count: int = 1,
                prune: int = 1, docs_per_chunk: int = 2000,
                progress: Callable[[int, int], None] | None = None) -> NgramModel:
    """Fit the model on reference texts. `min_count` > 1 maps rarer words to <unk> (built-in tokenizer);
    `prune` > 1 drops n-grams of order >= 3 seen fewer times (a smaller model, see `_estimate`).

    Memory: the token ids of the whole corpus (8 bytes a token) plus the distinct n-grams of every
    order (~33 bytes each while counting); counting runs chunk by chunk and merges as it goes.
    `progress(docs, tokens)` is called after each chunk.
    """
    if not 1 <= order <= 8:
        raise NgramError(f"order must be between 1 and 8, got {order}")
    if min_count < 1 or prune < 1:
        raise NgramError(f"min_count and prune must be at least 1, got {min_count} and {prune}")
    encoder: WordEncoder | TokenizerEncoder
    vocab: dict[str, int] = {}
    if tokenizer is not None:
        encoder = TokenizerEncoder(tokenizer)
    chunks: list[list[np.ndarray]] = []
    n_docs = n_tokens = 0
    for batch in _chunks(texts, docs_per_chunk):
        if tokenizer is not None:
            ids = encoder.encode(batch)
        else:  # grow the vocabulary while reading; ids are first-seen order
            ids = []
            for text in batch:
                toks = words(text)
                ids.append(np.fromiter((vocab.setdefault(w, len(vocab) + OFFSET) for w in toks), np.int64, len(toks)))
        chunks.append(ids)
        n_docs += len(ids)
        n_tokens += sum(len(x) for x in ids)
        if progress:
            progress(n_docs, n_tokens)
    if n_docs == 0:
        raise NgramError("the reference corpus holds no documents")
    if tokenizer is None:
        words_ = list(vocab)
        if min_count > 1:  # rare words -> <unk>, the kept ones renumbered densely
            freq = np.bincount(np.concatenate([np.concatenate(c) for c in chunks]), minlength=len(words_) + OFFSET)
            keep = freq[OFFSET:] >= min_count
            remap = np.full(len(words_) + OFFSET, UNK, dtype=np.int64)
            remap[:OFFSET] = np.arange(OFFSET)
            remap[OFFSET:][keep] = np.arange(int(keep.sum())) + OFFSET
            chunks = [[remap[x] for x in c] for c in chunks]
            words_ = [w for w, k in zip(words_, keep) if k]
        encoder = WordEncoder(words_)
    merged: list[list[_Types]] = [[] for _ in range(order)]
    pending = 0
    for c in chunks:
        for k, t in enumerate(_count_chunk(c, order)):
            merged[k].append(t)
        pending += sum(len(x) for x in c)
        if pending > MERGE_TOKENS:  # bound memory: fold the pending chunks into the running tables
            merged = [[_Types.merge(m)] for m in merged]
            pending = 0
    types = [_Types.merge(m) for m in merged]
    keys, probs, ctxs, gammas, discounts = _estimate(types, prune)
    info = {"n_docs": n_docs, "n_tokens": n_tokens, "types": [len(k) for k in keys], "discounts": discounts,
            "min_count": min_count, "prune": prune}
    return NgramModel(order, encoder, keys, probs, ctxs, gammas, info)
