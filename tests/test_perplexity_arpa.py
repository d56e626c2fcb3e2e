"""ARPA export/import and KenLM: continua's probabilities survive ARPA exactly, and kenlm agrees."""

from __future__ import annotations

import importlib.util
import math
import random
import shutil
import subprocess

import numpy as np
import pytest

from curate.arpa import read_arpa, write_arpa
from curate.kenlm_query import KenlmModel, load_reference
from curate.ngram import NgramError, NgramModel, train_ngram
from curate.reference_cli import main as ref_main

HAS_KENLM = importlib.util.find_spec("kenlm") is not None
needs_kenlm = pytest.mark.skipif(not HAS_KENLM, reason="kenlm is not installed (pip install 'continua[kenlm]'; "
                                                       "it builds from source in ~4 min)")


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(5)
    vocab = "the cell dose of a patient with fever was given and drug".split()
    vocab += ["r" + chr(97 + i // 26) + chr(97 + i % 26) for i in range(200)]
    texts = [" ".join(rng.choices(vocab, k=rng.randint(1, 14))) + rng.choice([".", "!", ""]) for _ in range(300)]
    held = ["The patient was given a drug.", "fever of the cell cell cell", "zebra 12 the dose", "", "!!"]
    return texts, held + texts[:40]


CASES = [(1, 1, 1), (2, 1, 1), (3, 1, 1), (4, 1, 1), (3, 5, 2), (4, 1, 2)]  # order, min_count, prune


@pytest.mark.parametrize("order,min_count,prune", CASES)
def test_arpa_round_trip_keeps_every_probability(corpus, tmp_path, order, min_count, prune):
    texts, held = corpus
    model = train_ngram(texts, order=order, min_count=min_count, prune=prune)
    counts = write_arpa(model, tmp_path / "m.arpa")
    assert counts[1] == len(model.encoder.vocab) + 3  # every word, </s>, <unk> and <s>
    back = read_arpa(tmp_path / "m.arpa")
    assert back.order == order and back.encoder.vocab == model.encoder.vocab
    a, _ = model.logprobs(model.encoder.encode(held))
    b, _ = back.logprobs(back.encoder.encode(held))
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(back.perplexity(held), model.perplexity(held), rtol=1e-6)


@needs_kenlm
@pytest.mark.parametrize("order,min_count,prune", [c for c in CASES if c[0] > 1])  # KenLM needs a bigram model
def test_kenlm_perplexity_equals_continua(corpus, tmp_path, order, min_count, prune):
    texts, held = corpus
    model = train_ngram(texts, order=order, min_count=min_count, prune=prune)
    write_arpa(model, tmp_path / "m.arpa")
    km = KenlmModel(tmp_path / "m.arpa")
    assert km.order == order
    ours, _ = model.logprobs(model.encoder.encode(held))
    theirs = np.concatenate([km.logprobs(t) for t in held])
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)  # KenLM stores float32 log10
    np.testing.assert_allclose(km.perplexity(held), model.perplexity(held), rtol=1e-5)


@needs_kenlm
@pytest.mark.skipif(shutil.which("build_binary") is None,
                    reason="KenLM's build_binary is not on PATH (the kenlm pip module cannot write binaries)")
def test_kenlm_binary_through_the_recipe_loader(corpus, tmp_path):
    texts, held = corpus
    model = train_ngram(texts, order=3)
    write_arpa(model, tmp_path / "m.arpa")
    subprocess.run(["build_binary", str(tmp_path / "m.arpa"), str(tmp_path / "m.binary")], check=True,
                   capture_output=True)
    ref = load_reference(tmp_path / "m.binary")
    assert isinstance(ref, KenlmModel)
    np.testing.assert_allclose(ref.perplexity(held), model.perplexity(held), rtol=1e-5)


def test_loader_picks_the_engine_and_errors_name_the_file(corpus, tmp_path, monkeypatch):
    texts, held = corpus
    model = train_ngram(texts, order=3)
    model.save(tmp_path / "m.npz")
    write_arpa(model, tmp_path / "m.arpa")
    assert isinstance(load_reference(tmp_path / "m.npz"), NgramModel)
    monkeypatch.setitem(__import__("sys").modules, "kenlm", None)  # as where kenlm is not installed
    arpa = load_reference(tmp_path / "m.arpa")
    assert isinstance(arpa, NgramModel)  # continua's own reader, no kenlm needed
    np.testing.assert_allclose(arpa.perplexity(held), model.perplexity(held), rtol=1e-6)
    (tmp_path / "m.binary").write_bytes(b"mmap lm")
    with pytest.raises(NgramError, match=r"pip install 'continua\[kenlm\]'"):
        load_reference(tmp_path / "m.binary")
    (tmp_path / "bad.arpa").write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\tthe\n-1.0 a b c d\n\\end\\\n")
    with pytest.raises(NgramError, match=r"bad.arpa:6: a 1-gram line"):
        read_arpa(tmp_path / "bad.arpa")


def test_export_arpa_cli(corpus, tmp_path, capsys):
    texts, held = corpus
    model = train_ngram(texts, order=3)
    model.save(tmp_path / "m.npz")
    assert ref_main(["export-arpa", str(tmp_path / "m.npz"), str(tmp_path / "m.arpa")]) == 0
    assert "3-grams" in capsys.readouterr().out
    np.testing.assert_allclose(read_arpa(tmp_path / "m.arpa").perplexity(held), model.perplexity(held), rtol=1e-6)
    assert ref_main(["export-arpa", str(tmp_path / "missing.npz"), str(tmp_path / "x.arpa")]) == 2
    assert "missing.npz" in capsys.readouterr().err


def test_recipe_names_an_arpa_reference(corpus, tmp_path):
    from datatrove.data import Document

    from curate.config import CurateConfig
    from curate.perplexity import perplexity_steps

    texts, held = corpus
    model = train_ngram(texts, order=3)
    write_arpa(model, tmp_path / "med.arpa")
    (step,) = perplexity_steps(CurateConfig(ngram_references={"med": tmp_path / "med.arpa"}))
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(held)]
    out = [d.metadata["ppl_ngram_med"] for d in step.run(iter(docs))]
    np.testing.assert_allclose(out, model.perplexity(held), rtol=1e-5)
    with pytest.raises(FileNotFoundError, match=r"ngram_references.x: model file .*missing.binary does not exist"):
        perplexity_steps(CurateConfig(ngram_references={"x": tmp_path / "missing.binary"}))


FOREIGN = """\\data\\
ngram 1=6
ngram 2=5
ngram 3=2

\\1-grams:
-1.2\t<unk>
-99\t<s>\t-0.30
-0.9\t</s>
-0.7\tthe\t-0.25
-0.8\tcell\t-0.20
-1.0\tdose\t-0.15

\\2-grams:
-0.4\t<s> the\t-0.1
-0.3\tthe cell\t-0.05
-0.6\tcell dose
-0.5\tdose </s>
-0.35\tcell </s>

\\3-grams:
-0.2\t<s> the cell
-0.25\tthe cell dose

\\end\\
"""


@needs_kenlm
def test_a_kenlm_style_arpa_reads_the_same_in_both_engines(tmp_path):
    """An ARPA as lmplz writes it (one <s>, back-off weights, unseen words): continua's reader = KenLM."""
    path = tmp_path / "foreign.arpa"
    path.write_text(FOREIGN)
    texts = ["the cell dose", "The cell", "dose dose the", "zebra cell dose", "", "cell the cell dose"]
    ours = read_arpa(path)
    km = KenlmModel(path)
    theirs = np.concatenate([km.logprobs(t) for t in texts])
    mine, _ = ours.logprobs(ours.encoder.encode(texts))
    np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    # by hand: p(the | <s>) = 10^-0.4; p(cell | <s> the) = 10^-0.2; p(dose | the cell) = 10^-0.25;
    # p(</s> | cell dose) = back-off(cell dose) = 1, then p(</s> | dose) = 10^-0.5
    np.testing.assert_allclose(mine[:4] / math.log(10), [-0.4, -0.2, -0.25, -0.5], atol=1e-6)
