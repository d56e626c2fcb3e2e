"""Causal-LM perplexity: equals the model's own loss, independent of batching and padding, truncates."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import pytest
import torch
from datatrove.data import Document

from curate.config import CurateConfig
from curate.lm_perplexity import LMScorer, LMScorerError, pack_batches
from curate.perplexity import LMPerplexityStep, perplexity_steps

WORDS = "the a patient cell dose fever drug was given with of and to in heart blood pressure high low".split()


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A random 2-layer Llama and a word-level tokenizer saved as a local Hugging Face folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_lm")
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus(200), trainers.WordLevelTrainer(special_tokens=["<pad>", "<s>", "</s>", "<unk>"]))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                     pad_token="<pad>")
    hf_tok.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_single_doc_equals_exp_of_model_loss(tiny_lm):
    scorer = LMScorer(tiny_lm, batch_tokens=512, max_length=64, device="cpu")
    text = corpus(1, seed=5)[0]
    ids = scorer.encode([text])[0]
    assert ids[0] == scorer.tokenizer.bos_token_id and len(ids) == len(text.split()) + 1
    with torch.inference_mode():
        loss = scorer.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    assert scorer.perplexity([text])[0] == pytest.approx(math.exp(loss), rel=1e-5)


def test_batched_equals_unbatched(tiny_lm):
    texts = corpus(25, seed=1)
    batched = LMScorer(tiny_lm, batch_tokens=128, max_length=64, device="cpu")  # several padded batches
    lengths = [len(x) for x in batched.encode(texts)]
    batches = pack_batches(lengths, 128)
    assert len(batches) > 1 and any(len({lengths[i] for i in b}) > 1 for b in batches)  # padding really happens
    one_by_one = np.array([batched.perplexity([t])[0] for t in texts])
    np.testing.assert_allclose(batched.perplexity(texts), one_by_one, rtol=1e-5)


def test_truncation_scores_the_first_max_length_tokens(tiny_lm):
    long_text = " ".join(corpus(6, seed=2))
    short = LMScorer(tiny_lm, batch_tokens=512, max_length=10, device="cpu")
    ids = short.encode([long_text])[0]
    assert len(ids) == 10
    full = LMScorer(tiny_lm, batch_tokens=512, max_length=128, device="cpu")
    logp, count = full.score_ids([ids])
    assert count[0] == 9
    assert short.perplexity([long_text])[0] == pytest.approx(math.exp(-logp[0] / 9), rel=1e-6)


def test_pack_batches_respects_budget_and_covers_everything():
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(300)]
    batches = pack_batches(lengths, 400)
    assert sorted(i for b in batches for i in b) == list(range(300))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 400
    assert pack_batches([500, 3], 100) == [[0], [1]]  # a doc over budget still gets its own batch


def test_step_scores_every_document(tiny_lm):
    cfg = CurateConfig(lm_scorers={"tiny": tiny_lm}, lm_batch_tokens=256, lm_max_length=32, lm_device="cpu")
    (step,) = perplexity_steps(cfg)
    assert isinstance(step, LMPerplexityStep)
    step.batch_docs = 4
    texts = corpus(10, seed=3)
    out = list(step.run(iter(Document(text=t, id=str(i)) for i, t in enumerate(texts))))
    assert [d.id for d in out] == [str(i) for i in range(10)]
    values = np.array([d.metadata["ppl_lm_tiny"] for d in out])
    np.testing.assert_allclose(values, LMScorer(tiny_lm, 256, 32, "cpu").perplexity(texts), rtol=1e-5)
    assert np.isfinite(values).all() and (values > 1).all()
    assert len(pickle.dumps(step)) < 5000  # no weights travel to workers


def test_bad_settings_and_paths(tiny_lm, tmp_path):
    with pytest.raises(LMScorerError, match="lm_batch_tokens"):
        LMScorer(tiny_lm, batch_tokens=8, max_length=64)
    with pytest.raises(LMScorerError, match="at least 2"):
        LMScorer(tiny_lm, batch_tokens=8, max_length=1)
    with pytest.raises(FileNotFoundError, match="lm_scorers.x"):
        perplexity_steps(CurateConfig(lm_scorers={"x": tmp_path / "missing"}))
    with pytest.raises(ValueError, match="column name"):
        perplexity_steps(CurateConfig(lm_scorers={"bad name": tiny_lm}))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LMScorerError, match="no tokenizer.json"):
        LMScorer(empty, device="cpu").perplexity(["x"])


def test_chunked_log_softmax_changes_nothing(tiny_lm, monkeypatch):
    import curate.lm_perplexity as lm

    texts = corpus(12, seed=4)
    whole = LMScorer(tiny_lm, batch_tokens=512, max_length=64, device="cpu").perplexity(texts)
    monkeypatch.setattr(lm, "LOSS_CHUNK_TOKENS", 16)  # one or two rows per slice
    np.testing.assert_allclose(LMScorer(tiny_lm, batch_tokens=512, max_length=64, device="cpu").perplexity(texts),
                               whole, rtol=1e-6)
