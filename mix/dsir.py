"""DSIR (Xie et al. 2023): pick replay documents whose n-gram statistics resemble a reference sample.

Each document becomes a bag of hashed features: lower-cased word-punctuation tokens and their
adjacent pairs (unigrams + bigrams), hashed into `buckets` bins. Two bag-of-bins models (add-one
smoothed) are fitted, one on the raw pool we select from and one on the target sample; a
document's log importance weight is sum over its features of (log p_target - log p_raw). Drawing
k documents by Gumbel top-k on those weights samples without replacement in proportion to the
weights, so the selection leans toward the target without collapsing onto a handful of documents.

Hashing and counting run in polars over chunks of texts (vectorized, bounded memory): only the
per-document sparse counts (document, bin, count) are kept, never the texts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import polars as pl

WORD_PATTERN = r"\w+|[^\w\s]+"  # nltk's wordpunct_tokenize, as in the DSIR reference code
HASH_SEED = 7919
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: h(a b) = h(a) * _MIX + h(b) (mod 2^64)


@dataclass
class FeatureTable:
    """Sparse hashed n-gram counts of a list of documents: rows (doc, bin, count)."""

    buckets: int
    doc_ids: list[str] = field(default_factory=list)
    doc: list[np.ndarray] = field(default_factory=list)
    bin: list[np.ndarray] = field(default_factory=list)
    count: list[np.ndarray] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.doc:
            z = np.zeros(0, np.int64)
            return z, z, z
        return np.concatenate(self.doc), np.concatenate(self.bin), np.concatenate(self.count)

    @property
    def num_docs(self) -> int:
        return len(self.doc_ids)

    def totals(self, docs: np.ndarray | None = None) -> np.ndarray:
        """Feature counts summed over all documents (or over the document indices `docs`)."""
        d, b, c = self.arrays()
        if docs is not None:
            keep = np.zeros(self.num_docs, dtype=bool)
            keep[docs] = True
            mask = keep[d]
            b, c = b[mask], c[mask]
        return np.bincount(b, weights=c, minlength=self.buckets)


def _chunk_features(texts: list[str], buckets: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(doc, bin, count) for one chunk of texts, doc counted from 0 within the chunk.

    Words are split and hashed in polars; a bigram's hash is mixed from its two word hashes in
    numpy (no bigram strings are built), then (doc, bin) pairs are counted."""
    words = (
        pl.DataFrame({"text": texts}, schema={"text": pl.String})
        .with_row_index("d")
        .select(pl.col("d"), pl.col("text").str.to_lowercase().str.extract_all(WORD_PATTERN).alias("w"))
        .explode("w")
        .drop_nulls("w")
        .select(pl.col("d"), pl.col("w").hash(HASH_SEED).alias("h"))
    )
    d = words["d"].to_numpy().astype(np.int64)
    h = words["h"].to_numpy()
    same = d[1:] == d[:-1]  # adjacent words of the same document form a bigram
    bigram = (h[:-1] * _MIX + h[1:])[same]
    code = np.concatenate([d * buckets + (h % np.uint64(buckets)).astype(np.int64),
                           d[:-1][same] * buckets + (bigram % np.uint64(buckets)).astype(np.int64)])
    c, counts = np.unique(code, return_counts=True)
    return (c // buckets).astype(np.int32), (c % buckets).astype(np.int32), counts.astype(np.int32)


def featurize(items: Iterable[tuple[str, str]], buckets: int, chunk_docs: int = 2048) -> FeatureTable:
    """Hashed unigram+bigram counts of (doc_id, text) pairs, read in chunks."""
    table = FeatureTable(buckets)
    for chunk in _chunks(items, chunk_docs):
        base = table.num_docs
        ids, texts = zip(*chunk)
        d, b, c = _chunk_features(list(texts), buckets)
        table.doc_ids.extend(ids)
        table.doc.append(d.astype(np.int64) + base)
        table.bin.append(b)
        table.count.append(c)
    return table


def _chunks(items: Iterable[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    chunk: list[tuple[str, str]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def smoothed(counts: np.ndarray) -> np.ndarray:
    """Add-one smoothed distribution over the bins."""
    return (counts + 1.0) / (counts.sum() + counts.size)


def log_importance_weights(raw: FeatureTable, target_counts: np.ndarray) -> np.ndarray:
    """log w(x) = sum over x's features of (log p_target - log p_raw), one value per raw document."""
    log_ratio = np.log(smoothed(target_counts)) - np.log(smoothed(raw.totals()))
    d, b, c = raw.arrays()
    return np.bincount(d, weights=c * log_ratio[b], minlength=raw.num_docs)


def gumbel_keys(log_weights: np.ndarray, seed: int) -> np.ndarray:
    """log w + Gumbel noise: the documents with the k largest keys are a sample of k without
    replacement with probabilities proportional to w (the Gumbel top-k trick)."""
    rng = np.random.default_rng(seed)
    return log_weights + rng.gumbel(size=log_weights.size)


def gumbel_top_order(log_weights: np.ndarray, seed: int) -> np.ndarray:
    """Document indices in Gumbel top-k order: any prefix is a weighted sample without replacement."""
    return np.argsort(-gumbel_keys(log_weights, seed), kind="stable")


def kl_divergence(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """KL(p || q) of two smoothed bin distributions (how far q is from p)."""
    p, q = smoothed(p_counts), smoothed(q_counts)
    return float(np.sum(p * (np.log(p) - np.log(q))))
