"""ARPA files: write continua's n-gram model as ARPA (for KenLM, SRILM) and read ARPA back into one.

The model stores hashed n-grams only; the words come back by inverting the hash chain
(`H(w1..wk) = mix(H(w2..wk) * P + w1 + 1)`, and splitmix64 is a bijection): each k-gram's
unmixed key minus a (k-1)-gram key times P is its first word. That needs every suffix of a
stored n-gram stored too, which training guarantees (pruning keeps suffixes and contexts).

Mapping (exact in both directions, to float precision):

* an n-gram hw gets log10 of its full interpolated probability a(hw) + gamma(h) p(w|h'), and its
  backoff weight log10 gamma(hw) where hw is a context; so ARPA's back-off rule reproduces p(w|h).
* continua pads a document with N-1 <s>: the contexts <s>^j are written as j-grams (probability
  -99, like <s> itself, never predicted), so a reader must start a document from <s>^(N-1)
  (`curate.kenlm_query.KenlmModel` does; with one <s>, as a KenLM model trained by lmplz
  expects, the shorter state backs off to the same n-grams as long as <s> <s> is absent).
* reading: a(hw) = p(hw) - gamma(h) p_arpa(w|h'), gamma(h) = 10^backoff(h); words outside the file
  get p(<unk>). Comment lines `# continua-ngram ...` before `\\data\\` name the tokenizer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TextIO

import numpy as np

from continua.io import atomic_path
from curate.ngram import _M1, _M2, _P, BOS, EOS, OFFSET, UNK, NgramError, NgramModel, WordEncoder, _mix

SPECIAL = {BOS: "<s>", EOS: "</s>", UNK: "<unk>"}
NEVER = -99.0  # log10 probability of <s> and the <s>^j contexts, as KenLM and SRILM write it
_M1_INV, _M2_INV = (np.uint64(pow(int(m), -1, 2**64)) for m in (_M1, _M2))


def _unmix(x: np.ndarray) -> np.ndarray:
    """Inverse of `curate.ngram._mix` (each xorshift and odd multiply undone, last step first)."""
    x = x.copy()
    x ^= (x >> np.uint64(31)) ^ (x >> np.uint64(62))
    x *= _M2_INV
    x ^= (x >> np.uint64(27)) ^ (x >> np.uint64(54))
    x *= _M1_INV
    x ^= (x >> np.uint64(30)) ^ (x >> np.uint64(60))
    return x


def gram_hashes(grams: np.ndarray) -> np.ndarray:
    """The model's key of each row of an (n, k) array of internal ids: the hash `_hashes` gives the k-gram."""
    grams = np.asarray(grams, dtype=np.int64).astype(np.uint64)
    h = _mix(grams[:, -1] + _P)
    for j in range(grams.shape[1] - 2, -1, -1):
        h = _mix(h * _P + grams[:, j] + np.uint64(1))
    return h


def _recover(model: NgramModel) -> list[np.ndarray]:
    """Per order k, the (n_k, k) internal ids of the stored n-grams, row i for keys[k-1][i]."""
    n_ids = np.uint64(model.encoder.n_symbols + 1)  # ids 0 .. n_symbols (BOS, EOS, UNK, vocabulary)
    first = _unmix(model.keys[0]) - _P
    if len(first) and first.max() >= n_ids:
        raise NgramError("the unigram table holds keys that are not words (a corrupt model file)")
    grams = [first.astype(np.int64)[:, None]]
    for k in range(2, model.order + 1):
        lower = model.keys[k - 2] * _P  # suffix key times P, wrapping like the hash does
        order = np.argsort(lower)
        sorted_lower = lower[order]
        y = _unmix(model.keys[k - 1]) - np.uint64(1)
        idx = np.searchsorted(sorted_lower, y, side="right") - 1
        word = y - sorted_lower[idx]  # idx = -1 wraps to the largest: the modular difference still holds
        bad = word >= n_ids
        if bad.any():
            raise NgramError(f"{int(bad.sum())} {k}-grams have no stored suffix: a model pruned by an older "
                             "continua; retrain it with `curate train-reference` to export it")
        grams.append(np.concatenate([word.astype(np.int64)[:, None], grams[k - 2][order[idx]]], axis=1))
    return grams


def _word_list(model: NgramModel) -> list[str]:
    if not isinstance(model.encoder, WordEncoder):
        raise NgramError(f"ARPA export supports the built-in word tokenizer; this model uses "
                         f"{model.encoder.kind} {model.encoder.header().get('path')}")
    return [SPECIAL[i] for i in range(OFFSET)] + model.encoder.vocab


def write_arpa(model: NgramModel, path: str | Path) -> dict[int, int]:
    """Write the model as an ARPA file (atomically); returns the n-gram count per order."""
    names = _word_list(model)
    grams = _recover(model)
    tables = model._tables
    gamma1 = float(model.gamma[0][0])
    uniform = gamma1 / model.encoder.n_symbols
    sections: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    # unigrams: every symbol the model can predict, seen or not, plus <s>
    symbols = np.arange(1, len(names), dtype=np.int64)[:, None]
    full = [tables[0][0].get(gram_hashes(symbols)) + uniform]
    known = {1: (symbols, full[0])}
    for k in range(2, model.order + 1):
        g = grams[k - 1]
        ngram, context = tables[k - 1]
        lower_rows = _row_of(known[k - 1][0], g[:, 1:])
        p = ngram.get(gram_hashes(g)) + context.get(gram_hashes(g[:, :-1])) * known[k - 1][1][lower_rows]
        known[k] = (g, p)
    for k in range(1, model.order + 1):
        g, p = known[k]
        bos = np.full((1, k), BOS, dtype=np.int64)  # <s>^k: a context, never predicted
        g, logp = np.concatenate([bos, g]), np.concatenate([[NEVER], np.log10(p)])
        backoff = np.zeros(len(g))
        if k < model.order:
            backoff = np.log10(tables[k][1].get(gram_hashes(g)))
        sections[k] = [(g, logp, backoff)]
    counts = {k: len(s[0][0]) for k, s in sections.items()}
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(f"# continua-ngram order={model.order} tokenizer=words n_symbols={model.encoder.n_symbols}\n")
        f.write("# documents start from <s> repeated order-1 times; see curate/arpa.py\n\n\\data\\\n")
        f.writelines(f"ngram {k}={c}\n" for k, c in counts.items())
        for k in range(1, model.order + 1):
            f.write(f"\n\\{k}-grams:\n")
            g, logp, backoff = sections[k][0]
            _write_section(f, names, g, logp, backoff if k < model.order else None)
        f.write("\n\\end\\\n")
    return counts


def _row_of(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Index in `table` (an (m, k) id array) of each row of `rows`; every row must be present."""
    keys = gram_hashes(table)
    order = np.argsort(keys)
    want = gram_hashes(rows)
    pos = np.searchsorted(keys[order], want)
    pos = np.minimum(pos, len(order) - 1)
    if not np.array_equal(keys[order][pos], want):
        raise NgramError("an n-gram's suffix is missing from the model; retrain it with `curate train-reference`")
    return order[pos]


def _write_section(f: TextIO, names: list[str], grams: np.ndarray, logp: np.ndarray,
                   backoff: np.ndarray | None) -> None:
    for i in range(len(grams)):
        text = " ".join(names[w] for w in grams[i])
        if backoff is None or backoff[i] == 0.0:
            f.write(f"{logp[i]:.10g}\t{text}\n")
        else:
            f.write(f"{logp[i]:.10g}\t{text}\t{backoff[i]:.10g}\n")


# ------------------------------------------------------------------------------------------ reading


def _read_sections(path: Path) -> tuple[dict[int, int], dict[int, list[tuple[float, list[str], float]]]]:
    counts: dict[int, int] = {}
    sections: dict[int, list[tuple[float, list[str], float]]] = {}
    k = 0
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line or (k == 0 and not counts and line.startswith("#")):
                continue
            if line == "\\data\\":
                continue
            if line.startswith("ngram ") and k == 0:
                order, _, count = line[6:].partition("=")
                counts[int(order)] = int(count)
                continue
            if line.endswith("-grams:") and line.startswith("\\"):
                k = int(line[1:].split("-")[0])
                sections[k] = []
                continue
            if line == "\\end\\":
                break
            if k == 0:
                raise NgramError(f"{path}:{lineno}: not an ARPA file (expected \\data\\ and ngram counts)")
            fields = line.split()
            if len(fields) not in (k + 1, k + 2):
                raise NgramError(f"{path}:{lineno}: a {k}-gram line needs a probability, {k} words and an "
                                 f"optional backoff, got {len(fields)} fields")
            try:
                sections[k].append((float(fields[0]), fields[1:k + 1], float(fields[k + 1]) if len(fields) > k + 1 else 0.0))
            except ValueError as e:
                raise NgramError(f"{path}:{lineno}: {e}") from e
    if not counts:
        raise NgramError(f"{path}: not an ARPA file (no \\data\\ section with ngram counts)")
    for k, c in counts.items():
        if len(sections.get(k, ())) != c:
            raise NgramError(f"{path}: \\data\\ announces {c} {k}-grams, the file holds {len(sections.get(k, ()))}")
    return counts, sections


def read_arpa(path: str | Path) -> NgramModel:
    """An ARPA file as a continua model scored by the numpy engine (texts tokenized by `curate.ngram.words`)."""
    path = Path(path)
    if not path.is_file():
        raise NgramError(f"{path}: ARPA file does not exist")
    counts, sections = _read_sections(path)
    order = max(counts)
    vocab = [w for _, (w,), _ in sections[1] if w not in ("<s>", "</s>", "<unk>")]
    encoder = WordEncoder(vocab)
    ids = {"<s>": BOS, "</s>": EOS, "<unk>": UNK, **encoder.index}
    per_order = []
    for k in range(1, order + 1):
        rows = sections[k]
        try:
            g = np.array([[ids[w] for w in words] for _, words, _ in rows], dtype=np.int64).reshape(len(rows), k)
        except KeyError as e:
            raise NgramError(f"{path}: the {k}-grams use word {e.args[0]!r}, which has no unigram") from None
        logp = np.array([p for p, _, _ in rows], dtype=np.float64)
        bo = np.array([b for _, _, b in rows], dtype=np.float64)
        per_order.append((g, 10.0 ** logp, 10.0 ** bo))
    unk = per_order[0][1][per_order[0][0][:, 0] == UNK]
    p_unk = float(unk[0]) if len(unk) else 10.0 ** -100  # KenLM's value for a missing <unk>
    n_symbols = encoder.n_symbols
    keys, probs, ctxs, gammas = [], [], [], []
    full: list[_Lookup] = []  # per order: n-gram -> full probability (nan when absent)
    backoff: list[_Lookup] = []  # per order: n-gram -> gamma (1 when absent)
    for k, (g, p, bo) in enumerate(per_order, start=1):
        h = gram_hashes(g)
        full.append(_Lookup(h, p, math.nan))
        backoff.append(_Lookup(h[bo != 1.0], bo[bo != 1.0], 1.0))
        target = g[:, -1] != BOS  # n-grams ending in <s> are contexts only
        g, p, h = g[target], p[target], h[target]
        if k == 1:
            a = p - p_unk
            gamma = np.array([p_unk * n_symbols])
            ctx = np.zeros(1, dtype=np.uint64)
        else:
            gam = backoff[k - 2].get(gram_hashes(g[:, :-1]))
            a = p - gam * _arpa_prob(full, backoff, g[:, 1:], p_unk)
            ctx, gamma = backoff[k - 2].keys, backoff[k - 2].values
        sort = np.argsort(h)
        keys.append(h[sort])
        probs.append(a[sort].astype(np.float32))
        ctxs.append(ctx)
        gammas.append(gamma.astype(np.float32))
    info = {"arpa": str(path.resolve()), "types": [int(len(k)) for k in keys]}
    return NgramModel(order, encoder, keys, probs, ctxs, gammas, info)


class _Lookup:
    """Sorted keys -> float64 values (the reader needs exact values; `HashTable` stores float32)."""

    def __init__(self, keys: np.ndarray, values: np.ndarray, missing: float):
        order = np.argsort(keys)
        self.keys, self.values, self.missing = keys[order], values[order], missing

    def get(self, queries: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(self.keys, queries), max(len(self.keys) - 1, 0))
        if not len(self.keys):
            return np.full(len(queries), self.missing)
        return np.where(self.keys[pos] == queries, self.values[pos], self.missing)


def _arpa_prob(full: list[_Lookup], backoff: list[_Lookup], grams: np.ndarray, p_unk: float) -> np.ndarray:
    """p(w | h) by ARPA's back-off rule for each row h..w of `grams` (orders read so far)."""
    k = grams.shape[1]
    p = full[k - 1].get(gram_hashes(grams))
    miss = np.isnan(p)
    if k == 1:
        p[miss] = p_unk
    elif miss.any():
        sub = grams[miss]
        p[miss] = backoff[k - 2].get(gram_hashes(sub[:, :-1])) * _arpa_prob(full, backoff, sub[:, 1:], p_unk)
    return p
