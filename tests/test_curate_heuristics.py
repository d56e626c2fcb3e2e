"""The heuristics' word splitters: regex (built in) and datatrove's spaCy tokenizer agree on prose."""

from __future__ import annotations

import importlib.util
import sys

import pytest
from datatrove.data import Document

from curate.heuristics import HeuristicSignals, RegexWordTokenizer, word_tokenizer

HAS_SPACY = importlib.util.find_spec("spacy") is not None
PROSE = [
    "The patient, a 54-year-old man, was given 3.5 mg of the drug twice a day; his fever fell within 48 hours.",
    "In 1998 the U.S. and e.g. Canada spent 1,234 million dollars on well-known programs... Results varied.",
    "Wikipedia is a free online encyclopedia. It was launched on January 15, 2001, by Jimmy Wales and Larry "
    "Sanger. Its articles are written by volunteers; anyone can edit them (with some restrictions).",
    "Doctors don't always agree: some say the dose isn't enough, others that it's too much! What now?",
] * 5


@pytest.mark.skipif(not HAS_SPACY, reason="spaCy is not installed (pip install 'continua[spacy]')")
def test_regex_word_counts_match_spacy_on_prose():
    spacy_tok = word_tokenizer("spacy")
    regex_tok = word_tokenizer("regex")
    assert type(spacy_tok).__name__ == "SpaCyTokenizer"  # datatrove's own, spacy.blank("en"): no download
    ours = sum(len(regex_tok.word_tokenize(t)) for t in PROSE)
    theirs = sum(len(spacy_tok.word_tokenize(t)) for t in PROSE)
    # the gap here is contractions (spaCy: do n't, is n't, it 's): 15 of 565 words; 0.4% on enwiki
    assert abs(ours - theirs) / theirs < 0.03, (ours, theirs)
    assert len(spacy_tok.sent_tokenize(PROSE[2])) == 3


@pytest.mark.skipif(not HAS_SPACY, reason="spaCy is not installed (pip install 'continua[spacy]')")
def test_spacy_option_runs_the_filters():
    texts = [" ".join(PROSE[:3]) * 4, "Too short.", " ".join(PROSE[i % 4] + f" Item {i}." for i in range(40))]
    for group in ("gopher_quality", "gopher_repetition"):
        out = {}
        for kind in ("regex", "spacy"):
            docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
            out[kind] = [(d.metadata[f"heur_{group}_pass"], d.metadata[f"heur_{group}_reason"])
                         for d in HeuristicSignals(group, kind).run(iter(docs))]
        assert out["regex"] == out["spacy"], group
        if group == "gopher_quality":
            assert out["regex"][1] == (False, "gopher_short_doc")


def test_word_tokenizer_errors(monkeypatch):
    assert isinstance(word_tokenizer("regex"), RegexWordTokenizer)
    with pytest.raises(ValueError, match="unknown 'nltk'"):
        word_tokenizer("nltk")
    monkeypatch.setitem(sys.modules, "spacy", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "spacy" else object())
    with pytest.raises(ValueError, match=r"pip install 'continua\[spacy\]'"):
        word_tokenizer("spacy")
