"""Reference models in KenLM's formats: `.arpa` and KenLM `.binary` files queried through the `kenlm`
module (optional extra: `pip install 'continua[kenlm]'`), and `load_reference` which picks the engine
from a `[curate] ngram_references` path.

Texts are tokenized by continua's normalizing word tokenizer (`curate.ngram.words`: lower case, digits
-> 0, words and punctuation), so a KenLM model must be trained on text normalized the same way (e.g. a
continua model exported with `curate export-arpa`, or lmplz run on `words()` output). Each document
starts from <s> repeated order-1 times, as continua pads it; a KenLM model trained by lmplz has no
<s> <s> n-grams, so that state is its usual <s> state. Perplexity is exp(-mean ln p) over the words
and </s>, the same number `NgramModel.perplexity` gives.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import numpy as np

from curate.ngram import NgramError, NgramModel, words

KENLM_SUFFIXES = (".binary", ".bin", ".klm")
LN10 = math.log(10.0)


class Reference(Protocol):
    def perplexity(self, texts: list[str]) -> np.ndarray: ...


def _kenlm():
    try:
        import kenlm
    except ImportError as e:
        raise NgramError("KenLM model files need the kenlm module: pip install 'continua[kenlm]' "
                         "(it builds from source, about 4 minutes)") from e
    return kenlm


class KenlmModel:
    """A `.arpa` or KenLM `.binary` file queried by KenLM's C++ code."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise NgramError(f"{self.path}: KenLM model file does not exist")
        kenlm = _kenlm()
        try:
            self.model = kenlm.Model(str(self.path))
        except (OSError, RuntimeError) as e:
            raise NgramError(f"{self.path}: KenLM cannot read it: {e}") from e
        self.order = int(self.model.order)
        self._state = kenlm.State

    def logprobs(self, text: str) -> list[float]:
        """Natural-log probability of each word of `text` and of </s>."""
        model, State = self.model, self._state
        state = State()
        model.NullContextWrite(state)
        for _ in range(self.order - 1):
            nxt = State()
            model.BaseScore(state, "<s>", nxt)
            state = nxt
        out = []
        for w in words(text) + ["</s>"]:
            nxt = State()
            out.append(model.BaseScore(state, w, nxt) * LN10)
            state = nxt
        return out

    def perplexity(self, texts: list[str]) -> np.ndarray:
        return np.array([math.exp(-sum(lp) / len(lp)) for lp in map(self.logprobs, texts)])


def load_reference(path: str | Path) -> Reference:
    """The scorer for a reference model file: continua's .npz, an ARPA file (KenLM when installed, else
    continua's reader, which gives the same numbers), or a KenLM binary."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in KENLM_SUFFIXES:
        return KenlmModel(path)
    if suffix == ".arpa":
        try:
            _kenlm()
        except NgramError:
            from curate.arpa import read_arpa

            return read_arpa(path)
        return KenlmModel(path)
    return NgramModel.load(path)
