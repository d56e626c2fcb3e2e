"""datatrove's heuristic quality filters recorded as columns (pass + reason), never dropping.

The filters count words with a `WordTokenizer`. `[curate] word_tokenizer` picks it:

* "regex" (default): `RegexWordTokenizer`, no dependency, splits words and punctuation the way
  spaCy's blank English model does on prose (word counts within 0.5% on enwiki, 0.02% on PubMed
  abstracts; +40% on Python source, where spaCy keeps `self.x` and `__init__` whole) and ~30x faster.
* "spacy": datatrove's own `SpaCyTokenizer` (`spacy.blank("en")` plus a sentencizer: no model
  download, only `pip install 'continua[spacy]'`), the tokenizer the published thresholds were set with.
"""

from __future__ import annotations

import re

import regex
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter, get_filter_result
from datatrove.utils.text import TERMINAL_PUNCTUATION
from datatrove.utils.word_tokenizers import WordTokenizer, simple_span_tokenize, strip_strings

GROUPS = ("gopher_quality", "gopher_repetition", "c4", "fineweb")
WORD_TOKENIZERS = ("regex", "spacy")


class RegexWordTokenizer(WordTokenizer):
    """Offline word/sentence splitter approximating spaCy's blank English tokenizer on prose.

    Words (with inner apostrophes), numbers with inner separators (3.5, 1,234), abbreviations
    (U.S., e.g.) and ellipses are single tokens; other punctuation marks are tokens of their own.
    The last text's words are cached: the Gopher and FineWeb filters each split the same
    document in turn, and splitting is most of their cost.
    """

    _WORD = re.compile(r"(?:[^\W\d_]\.){2,}|\w+(?:['’]\w+)*(?:(?<=\d)[.,:/]\d+)*|\.{2,}|[^\w\s]")
    _last: tuple[str, list[str]] = ("", [])

    def __init__(self) -> None:
        super().__init__("en")
        self._sent = regex.compile(
            rf"(?:(?:\p{{Lu}}\.)|.)+?[{regex.escape(''.join(TERMINAL_PUNCTUATION))}\n]+[\"'”]?", regex.UNICODE)

    def word_tokenize(self, text: str) -> list[str]:
        last_text, last_words = RegexWordTokenizer._last
        if text is last_text or text == last_text:
            return last_words
        words = self._WORD.findall(text)
        RegexWordTokenizer._last = (text, words)
        return words

    def sent_tokenize(self, text: str) -> list[str]:
        return strip_strings(self._sent.findall(text))

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return list(simple_span_tokenize(text, self.sent_tokenize(text)))


def make_filter(group: str, tokenizer: WordTokenizer) -> BaseFilter:
    """The datatrove filter of a heuristic group, with its published default thresholds."""
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)

    if group == "gopher_quality":
        return GopherQualityFilter(language=tokenizer)
    if group == "gopher_repetition":
        return GopherRepetitionFilter(language=tokenizer)
    if group == "c4":  # C4BadWordsFilter is left out: it downloads word lists
        return C4QualityFilter(language=tokenizer)
    if group == "fineweb":
        return FineWebQualityFilter(language=tokenizer)
    raise ValueError(f"unknown heuristic group {group!r} (known: {', '.join(GROUPS)})")


def word_tokenizer(kind: str) -> WordTokenizer:
    """The word splitter named by `[curate] word_tokenizer`; spaCy loads lazily in the worker."""
    if kind == "regex":
        return RegexWordTokenizer()
    if kind == "spacy":
        import importlib.util

        if importlib.util.find_spec("spacy") is None:
            raise ValueError("[curate] word_tokenizer = \"spacy\" needs spaCy: pip install 'continua[spacy]' "
                             "(no model download: datatrove uses spacy.blank(\"en\"))")
        from datatrove.utils.word_tokenizers import SpaCyTokenizer

        return SpaCyTokenizer("en")
    raise ValueError(f"[curate] word_tokenizer: unknown {kind!r} (known: {', '.join(WORD_TOKENIZERS)})")


class HeuristicSignals(PipelineStep):
    """Adds `heur_<group>_pass` (bool) and `heur_<group>_reason` ("" when passing) for one filter."""

    name = "🧮 heuristic signals"
    type = "📊 - SCORER"

    def __init__(self, group: str, tokenizer: str = "regex"):
        super().__init__()
        self.group = group
        self.filter = make_filter(group, word_tokenizer(tokenizer))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            with self.track_time():
                probe = Document(text=doc.text, id=doc.id, metadata={})  # some filters rewrite the text
                passed, reason = get_filter_result(self.filter.filter(probe))
            doc.metadata[f"heur_{self.group}_pass"] = bool(passed)
            doc.metadata[f"heur_{self.group}_reason"] = "" if passed else (reason or "failed")
            self.stat_update("pass" if passed else f"fail_{reason}")
            yield doc
