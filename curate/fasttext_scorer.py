"""fastText quality scores as a column: P(positive label), never a filter."""

from __future__ import annotations

from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched


class ClassifierError(ValueError):
    """A classifier file that cannot be used: names the file and what is wrong."""


def load_fasttext(path: str | Path):
    """Load a fastText model quietly (fasttext.load_model prints a warning on every call)."""
    from fasttext.FastText import _FastText

    path = Path(path)
    if not path.is_file():
        raise ClassifierError(f"{path}: fastText model file does not exist")
    open(path, "rb").close()  # an unreadable file is a PermissionError naming it, not fastText's "No such file"
    try:
        return _FastText(model_path=str(path))
    except ValueError as e:
        raise ClassifierError(f"{path}: not a fastText model: {e}") from e


def prepare(text: str) -> str:
    """fastText predicts one line: newlines (which it rejects) become spaces."""
    return text.replace("\n", " ").replace("\r", " ")


def positive_probabilities(model, texts: list[str], label: str) -> list[float]:
    """P(label) for each text, from a k=-1 prediction so every label's probability is returned.

    One call of fastText's compiled predict per text, with the line ending its Python `predict`
    would add: that wrapper re-checks for newlines (`prepare` removed them) and builds a NumPy
    array per text, as much work again as reading the line; its list form builds padded arrays
    and measured ~20% slower still.
    """
    predict = model.f.predict
    out = []
    for text in texts:
        p = 0.0  # fastText omits labels whose probability underflows to zero
        for prob, name in predict(prepare(text) + "\n", -1, 0.0, "strict"):
            if name == label:
                p = prob
                break
        out.append(float(p))
    return out


# models loaded in this process, by (path, size, mtime): the check in the main process and an
# in-process worker (workers = 1) share one copy instead of reading a large model file again
_LOADED: dict[tuple[str, int, int], object] = {}


def cached_model(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise ClassifierError(f"{path}: fastText model file does not exist")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _LOADED:
        _LOADED[key] = load_fasttext(path)
    return _LOADED[key]


class FastTextScorer(PipelineStep):
    """Adds `fasttext_<name>` = probability of `__label__<positive_label>` under a supervised model."""

    name = "🤖 fastText score"
    type = "📊 - SCORER"
    _requires_dependencies = [("fasttext", "fasttext-numpy2-wheel")]

    def __init__(self, name: str, model_path: str | Path, positive_label: str = "hq", batch_size: int = 256):
        super().__init__()
        self.column = f"fasttext_{name}"
        self.model_path = Path(model_path)
        self.label = f"__label__{positive_label}"
        self.batch_size = batch_size
        self._model = None

    @property
    def model(self):
        """Loaded on first use in the worker, so the pipeline pickles without the model."""
        if self._model is None:
            model = cached_model(self.model_path)
            if self.label not in model.labels:
                raise ClassifierError(f"{self.model_path}: no label {self.label!r} (labels: {', '.join(model.labels)})")
            self._model = model
        return self._model

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_model"] = None
        return state

    def check(self) -> None:
        """Fail before launching workers when the model is missing or lacks the positive label
        (the loaded model stays in this process's cache for an in-process worker)."""
        _ = self.model
        self._model = None

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for batch in batched(data, self.batch_size):
            with self.track_time("batch"):
                scores = positive_probabilities(self.model, [d.text for d in batch], self.label)
            for doc, p in zip(batch, scores):
                doc.metadata[self.column] = p
                yield doc
