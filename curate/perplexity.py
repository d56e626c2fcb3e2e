"""datatrove steps that add perplexity columns: ppl_ngram_NAME (reference n-gram) and ppl_lm_NAME (causal LM).

Scoring never drops a document: every document comes out, in order, with one float added to its
metadata (selection by percentile or CCNet bucket is a later step on the score table). Models load
lazily on first use, so the steps pickle cheaply to datatrove workers.
"""

from __future__ import annotations

from abc import abstractmethod
from functools import cached_property
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from curate.config import CurateConfig
from curate.lm_perplexity import LMScorer
from curate.kenlm_query import Reference, load_reference


class _PerplexityStep(PipelineStep):
    """Buffers `batch_docs` documents, scores their texts in one call, yields them in input order."""

    type = "📈 - SCORE"
    _lazy: tuple[str, ...] = ()

    def __init__(self, column: str, batch_docs: int):
        super().__init__()
        self.column, self.batch_docs = column, batch_docs

    @abstractmethod
    def score(self, texts: list[str]) -> np.ndarray:
        """One perplexity per text, same order."""

    def _flush(self, batch: list[Document]) -> DocumentsPipeline:
        with self.track_time("batch"):
            scores = self.score([d.text for d in batch])
        for doc, value in zip(batch, scores):
            doc.metadata[self.column] = float(value)
            self.stat_update("scored" if np.isfinite(value) else "no_score")
            yield doc

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        batch: list[Document] = []
        for doc in data or ():
            batch.append(doc)
            if len(batch) >= self.batch_docs:
                yield from self._flush(batch)
                batch = []
        if batch:
            yield from self._flush(batch)

    def __getstate__(self):
        state = dict(self.__dict__)
        for lazy in self._lazy:
            state.pop(lazy, None)
        return state


class NgramPerplexityStep(_PerplexityStep):
    """ppl_ngram_NAME: perplexity under a reference n-gram model (Guo et al.); lower = more like the reference."""

    name = "reference n-gram perplexity"
    _lazy = ("model",)

    def __init__(self, name: str, model_path: str | Path, batch_docs: int = 1024):
        super().__init__(f"ppl_ngram_{name}", batch_docs)
        self.model_path = Path(model_path)

    @cached_property
    def model(self) -> Reference:
        return load_reference(self.model_path)

    def score(self, texts: list[str]) -> np.ndarray:
        return self.model.perplexity(texts)


class LMPerplexityStep(_PerplexityStep):
    """ppl_lm_NAME: perplexity under a local causal LM (Ankner et al.)."""

    name = "causal LM perplexity"
    _lazy = ("scorer",)

    def __init__(self, name: str, model_path: str | Path, batch_tokens: int = 16384, max_length: int = 1024,
                 device: str = "auto", batch_docs: int = 512, allow_pickle: bool = False):
        super().__init__(f"ppl_lm_{name}", batch_docs)
        self.model_path, self.batch_tokens, self.max_length, self.device = Path(model_path), batch_tokens, max_length, device
        self.allow_pickle = allow_pickle
        LMScorer(self.model_path, batch_tokens, max_length, device, allow_pickle)  # check now, not in a worker

    @cached_property
    def scorer(self) -> LMScorer:
        return LMScorer(self.model_path, self.batch_tokens, self.max_length, self.device, self.allow_pickle)

    def score(self, texts: list[str]) -> np.ndarray:
        return self.scorer.perplexity(texts)


def _check_name(kind: str, name: str) -> None:
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"[curate] {kind}: name {name!r} must be letters, digits and '_' (it becomes a column name)")


def perplexity_steps(cfg: CurateConfig) -> list[PipelineStep]:
    """One step per `[curate] ngram_references` and `lm_scorers` entry; errors name the recipe key."""
    steps: list[PipelineStep] = []
    for name, path in cfg.ngram_references.items():
        _check_name("ngram_references", name)
        if not Path(path).is_file():
            raise FileNotFoundError(f"[curate] ngram_references.{name}: model file {path} does not exist "
                                    "(train it with `curate train-reference`, or name a KenLM .arpa / .binary file)")
        steps.append(NgramPerplexityStep(name, path))
    for name, path in cfg.lm_scorers.items():
        _check_name("lm_scorers", name)
        if not (Path(path).is_dir() or Path(path).suffix == ".gguf" and Path(path).is_file()):
            raise FileNotFoundError(f"[curate] lm_scorers.{name}: {path} is neither a local model folder nor a "
                                    ".gguf file (the same kinds of path as [model] path)")
        steps.append(LMPerplexityStep(name, path, cfg.lm_batch_tokens, cfg.lm_max_length, cfg.lm_device,
                                      allow_pickle=cfg.lm_allow_pickle))
    return steps
