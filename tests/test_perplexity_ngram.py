"""Reference n-gram model: exact Kneser-Ney numbers, normalization, ranking power, files, step, CLI."""

from __future__ import annotations

import json
import math
import pickle
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from datatrove.data import Document

from curate.config import CurateConfig
from curate.ngram import BOS, EOS, OFFSET, UNK, NgramError, NgramModel, train_ngram, words
from curate.perplexity import NgramPerplexityStep, perplexity_steps
from curate.reference_cli import main as ref_main


def auc(low: np.ndarray, high: np.ndarray) -> float:
    """P(a score of `low` < a score of `high`), ties counted half: ROC AUC with `high` as positives."""
    from curate.classifier import roc_auc

    labels = np.concatenate([np.zeros(len(low), bool), np.ones(len(high), bool)])
    return roc_auc(labels, np.concatenate([low, high]))


def letter_words(n: int) -> list[str]:
    """Distinct digit-free words (the tokenizer maps every digit to 0)."""
    return [f"{chr(97 + i // 676)}{chr(97 + i // 26 % 26)}{chr(97 + i % 26)}" for i in range(n)]


def markov_corpus(seed: int, n_docs: int, vocab: list[str], fanout: int, chain_seed: int) -> list[str]:
    """Documents from a sparse first-order Markov chain over `vocab`: the chain is the 'style'."""
    chain_rng = random.Random(chain_seed)
    nxt = {w: chain_rng.sample(vocab, fanout) for w in vocab}
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        w = rng.choice(vocab)
        out = [w]
        for _ in range(rng.randint(15, 60)):
            w = rng.choice(nxt[w]) if rng.random() < 0.9 else rng.choice(vocab)
            out.append(w)
        docs.append(" ".join(out))
    return docs


# ----------------------------------------------------------------- an independent, slow KN reference


def reference_kn(docs: list[list[int]], n: int, n_symbols: int):
    """Textbook interpolated modified Kneser-Ney with dicts, written from Chen & Goodman directly:
    adjusted count = raw count at the top order or for n-grams starting with <s>, else the number of
    distinct left extensions. Returns p(word, context_tuple)."""
    seqs = [[BOS] * (n - 1) + d + [EOS] for d in docs]
    raw = {k: Counter() for k in range(1, n + 1)}
    for s in seqs:
        for i in range(n - 1, len(s)):
            for k in range(1, n + 1):
                raw[k][tuple(s[i - k + 1:i + 1])] += 1
    adj = {n: raw[n]}
    for k in range(1, n):
        left = Counter(g[1:] for g in raw[k + 1])
        adj[k] = {g: (c if g[0] == BOS else left[g]) for g, c in raw[k].items()}
    disc, ctx_total, ctx_mass = {}, {}, {}
    for k in range(1, n + 1):
        cc = Counter(adj[k].values())
        y = cc[1] / (cc[1] + 2 * cc[2])
        d = (0.0, 1 - 2 * y * cc[2] / cc[1], 2 - 3 * y * cc[3] / cc[2], 3 - 4 * y * cc[4] / cc[3])
        disc[k] = d
        tot, mass = Counter(), Counter()
        for g, c in adj[k].items():
            tot[g[:-1]] += c
            mass[g[:-1]] += d[min(c, 3)]
        ctx_total[k], ctx_mass[k] = tot, mass

    def p(w: int, ctx: tuple) -> float:
        prob = 1.0 / n_symbols
        for k in range(1, n + 1):
            h = ctx[len(ctx) - (k - 1):] if k > 1 else ()
            total = ctx_total[k].get(h, 0)
            if total == 0:
                continue
            c = adj[k].get(h + (w,), 0)
            prob = max(c - disc[k][min(c, 3)], 0) / total + ctx_mass[k][h] / total * prob
        return prob

    return p, disc


@pytest.fixture(scope="module")
def tiny():
    """Zipf-distributed words, so every order has n-grams seen once, twice, three and four times."""
    rng = random.Random(3)
    vocab = "the cell dose of a patient with fever was given and drug".split() + ["r" + w for w in letter_words(60)]
    weights = [1 / (r + 1) ** 1.1 for r in range(len(vocab))]
    texts = [" ".join(rng.choices(vocab, weights, k=rng.randint(1, 14))) for _ in range(300)]
    return texts, vocab


@pytest.mark.parametrize("order", [2, 3, 4])
def test_kn_matches_textbook_reference(tiny, order):
    texts, _ = tiny
    model = train_ngram(texts, order=order)
    ids = [list(map(int, x)) for x in model.encoder.encode(texts)]
    p, disc = reference_kn(ids, order, model.encoder.n_symbols)
    for k in range(1, order + 1):
        assert model.info["discounts"][k - 1] == pytest.approx(list(disc[k][1:]), abs=1e-4)
    held_out = ["the patient was given a drug", "fever of the cell cell cell", "zebra the dose"]
    logp, doc = model.logprobs(model.encoder.encode(held_out))
    expected = []
    for d in model.encoder.encode(held_out):
        s = [BOS] * (order - 1) + list(map(int, d)) + [EOS]
        expected += [math.log(p(s[i], tuple(s[i - order + 1:i]))) for i in range(order - 1, len(s))]
    np.testing.assert_allclose(logp, expected, rtol=1e-5)


@pytest.mark.parametrize("order,min_count", [(1, 1), (2, 1), (3, 1), (3, 40), (4, 1)])
def test_kn_probabilities_sum_to_one(tiny, order, min_count):
    texts, vocab = tiny
    model = train_ngram(texts, order=order, min_count=min_count)
    symbols = [EOS, UNK] + list(range(OFFSET, OFFSET + len(model.encoder.vocab)))
    assert len(symbols) == model.encoder.n_symbols
    if min_count > 1:
        assert len(model.encoder.vocab) < len(vocab)  # rare words really became <unk>
    idx = {w: model.encoder.index[w] for w in model.encoder.vocab}
    contexts = [[], [BOS], [BOS, BOS, idx["the"]], [idx["the"]], [idx["the"], idx["cell"]],
                [idx["patient"], idx["the"], idx["the"]], [UNK, UNK, UNK], [UNK, idx["the"]]]
    for ctx in contexts:
        probs = model.cond_prob(ctx, symbols)
        assert probs.min() > 0
        assert probs.sum() == pytest.approx(1.0, abs=1e-5), ctx


def test_domain_ranks_below_general():
    vocab = letter_words(300)
    domain = markov_corpus(1, 500, vocab, fanout=4, chain_seed=10)
    general = markov_corpus(2, 150, vocab, fanout=4, chain_seed=20)
    model = train_ngram(domain[:350], order=3)
    ppl_domain, ppl_general = model.perplexity(domain[350:]), model.perplexity(general)
    assert auc(ppl_domain, ppl_general) >= 0.9


def test_auc_helper():
    assert auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 1.0
    assert auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 0.0
    assert auc(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5


def test_scores_do_not_depend_on_batch_and_survive_save_load(tiny, tmp_path):
    texts, _ = tiny
    model = train_ngram(texts[:200], order=3)
    batch = texts[200:] + ["completely unseen words here", "", "The THE the 1999 2024"]
    together = model.perplexity(batch)
    alone = np.array([model.perplexity([t])[0] for t in batch])
    np.testing.assert_allclose(together, alone, rtol=1e-12)
    assert np.isfinite(together).all() and (together > 1).all()
    path = tmp_path / "ref.npz"
    model.save(path)
    loaded = NgramModel.load(path)
    np.testing.assert_array_equal(loaded.perplexity(batch), together)
    assert loaded.info["n_docs"] == 200
    with np.load(path, allow_pickle=False) as data:  # plain arrays only, no pickle
        assert set(data.files) >= {"header", "vocab", "keys1", "prob3", "ctx3", "gamma3"}


def test_perplexity_is_exp_of_mean_negative_logprob(tiny):
    texts, _ = tiny
    model = train_ngram(texts, order=3)
    text = "the patient was given a drug"
    ids = [model.encoder.index[w] for w in words(text)] + [EOS]
    ctx = [BOS, BOS]
    logs = []
    for w in ids:
        logs.append(math.log(model.cond_prob(ctx, w)[0]))
        ctx = (ctx + [w])[-2:]
    assert model.perplexity([text])[0] == pytest.approx(math.exp(-sum(logs) / len(logs)), rel=1e-6)


def test_word_tokenizer_normalizes():
    assert words("The Cell, 1984!") == ["the", "cell", ",", "0000", "!"]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(NgramError, match="does not exist"):
        NgramModel.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model")
    with pytest.raises(NgramError, match="bad.npz"):
        NgramModel.load(bad)
    with pytest.raises(NgramError, match="no documents"):
        train_ngram([], order=3)


def test_step_scores_every_document_and_pickles_small(tiny, tmp_path):
    texts, _ = tiny
    path = tmp_path / "ref.npz"
    train_ngram(texts, order=3).save(path)
    steps = perplexity_steps(CurateConfig(ngram_references={"med": path}))
    assert len(steps) == 1 and isinstance(steps[0], NgramPerplexityStep)
    step = steps[0]
    step.batch_docs = 7  # several batches plus a remainder
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts[:30])]
    out = list(step.run(iter(docs)))
    assert [d.id for d in out] == [str(i) for i in range(30)]
    expected = NgramModel.load(path).perplexity(texts[:30])
    np.testing.assert_allclose([d.metadata["ppl_ngram_med"] for d in out], expected)
    assert len(pickle.dumps(step)) < 5000  # the model is not shipped to workers
    with pytest.raises(FileNotFoundError, match="ngram_references.other"):
        perplexity_steps(CurateConfig(ngram_references={"other": tmp_path / "nope.npz"}))


def test_train_reference_cli(tmp_path, capsys):
    ref = tmp_path / "ref.jsonl"
    lines = [json.dumps({"text": t}) for t in markov_corpus(5, 40, letter_words(50), 3, 1)]
    lines.insert(3, "{broken json")
    ref.write_text("\n".join(lines) + "\n")
    out = tmp_path / "m.npz"
    assert ref_main(["train-reference", "--ref", str(ref), "--out", str(out), "--order", "3"]) == 0
    printed = capsys.readouterr().out
    assert "40 documents" in printed and "malformed_json" in printed and "line 4" in printed
    model = NgramModel.load(out)
    assert model.order == 3 and model.info["n_docs"] == 40
    assert ref_main(["train-reference", "--ref", str(tmp_path / "none.jsonl"), "--out", str(out)]) == 2
    with pytest.raises(SystemExit):
        ref_main(["train-reference", "--ref", str(ref), "--out", str(out), "--order", "9"])


def test_subword_tokenizer_model(tmp_path):
    """--tokenizer: n-grams over a `tokenizers` vocabulary; normalized over it, and it round-trips."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    texts = markov_corpus(3, 120, letter_words(40), fanout=3, chain_seed=4)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=80, special_tokens=["<unk>", "</s>"]))
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))
    (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    model = train_ngram(texts[:100], order=3, tokenizer=tmp_path / "tok")
    assert model.encoder.kind == "tokenizer" and model.encoder.n_symbols == tok.get_vocab_size() + 2
    symbols = [EOS, UNK] + list(range(OFFSET, OFFSET + tok.get_vocab_size()))
    first = int(model.encoder.encode([texts[0]])[0][0])
    for ctx in ([], [first], [BOS, first], [first, first]):
        assert model.cond_prob(ctx, symbols).sum() == pytest.approx(1.0, abs=1e-5)
    model.save(tmp_path / "sub.npz")
    loaded = NgramModel.load(tmp_path / "sub.npz")
    np.testing.assert_array_equal(loaded.perplexity(texts[100:]), model.perplexity(texts[100:]))
    (tmp_path / "tok" / "tokenizer.json").unlink()
    with pytest.raises(NgramError, match="tokenizer"):
        NgramModel.load(tmp_path / "sub.npz")


def test_chunked_counting_equals_one_pass(tiny, monkeypatch):
    import curate.ngram as ngram

    texts, _ = tiny
    one = train_ngram(texts, order=4, docs_per_chunk=10_000)
    monkeypatch.setattr(ngram, "MERGE_TOKENS", 50)  # fold tables together every few chunks
    many = train_ngram(texts, order=4, docs_per_chunk=7)
    assert many.info == one.info and many.encoder.vocab == one.encoder.vocab
    for k in range(4):
        for name in ("keys", "prob", "ctx", "gamma"):
            np.testing.assert_array_equal(getattr(many, name)[k], getattr(one, name)[k])


def test_pruning_keeps_distributions_normalized(tiny):
    texts, _ = tiny
    full = train_ngram(texts, order=4)
    pruned = train_ngram(texts, order=4, prune=2)
    assert pruned.info["types"][:2] == full.info["types"][:2]  # unigrams and bigrams are never pruned
    assert pruned.info["types"][3] < full.info["types"][3] / 2
    symbols = [EOS, UNK] + list(range(OFFSET, OFFSET + len(pruned.encoder.vocab)))
    ids = [list(map(int, x)) for x in pruned.encoder.encode(texts[:40])]
    contexts = [[BOS, BOS, BOS]] + [d[i - 3:i] for d in ids for i in range(3, len(d), 4)]
    for ctx in contexts:
        assert pruned.cond_prob(ctx, symbols).sum() == pytest.approx(1.0, abs=1e-5), ctx
    with pytest.raises(NgramError, match="prune"):
        train_ngram(texts, order=3, prune=0)
