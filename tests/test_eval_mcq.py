"""MCQ scoring: file formats, errors naming file and line, and log-likelihoods equal to a hand computation."""

from __future__ import annotations

import json
import os
import socket
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from continua.tokenizer import TextTokenizer
from train.mcq import BenchmarkError, build_requests, evaluate_mcq, load_benchmark, loglikelihoods

TEXTS = ["the heart pumps blood through the body", "a question about the lungs and the liver",
         "answer yes or no or maybe", "the kidney filters the blood", "context of the study was small"] * 20


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> TextTokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return TextTokenizer(path=path, eos_token="</s>", bos_token="<s>", add_bos=True)


@pytest.fixture(scope="module")
def model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


MEDQA = [{"id": f"q{i}", "question": f"what does the {w} do", "options": {"A": "pumps blood", "B": "filters",
          "C": "nothing at all", "D": "maybe"}, "answer": "ABCD"[i % 4]} for i, w in enumerate(
          ["heart", "kidney", "liver", "lungs", "body"])]
PUBMED = [{"id": f"p{i}", "split": "test" if i % 2 == 0 else "train_dev", "question": "was the study small",
           "context": "context of the study", "long_answer": "x", "answer": ["yes", "no", "maybe"][i % 3]}
          for i in range(6)]


def test_load_formats(tmp_path):
    items = load_benchmark(write_jsonl(tmp_path / "medqa.jsonl", MEDQA))
    assert len(items) == 5
    assert items[1].prompt == "Question: what does the kidney do\nAnswer:"
    assert items[1].options == ("pumps blood", "filters", "nothing at all", "maybe") and items[1].answer == 1
    pub = load_benchmark(write_jsonl(tmp_path / "pubmedqa.jsonl", PUBMED))
    assert [it.id for it in pub] == ["p0", "p2", "p4"]  # split == "test" only
    assert pub[0].prompt == "Context: context of the study\nQuestion: was the study small\nAnswer:"
    assert pub[0].options == ("yes", "no", "maybe") and [it.answer for it in pub] == [0, 2, 1]
    lst = load_benchmark(write_jsonl(tmp_path / "list.jsonl", [{"question": "q", "options": ["a", "b"], "answer": 1}]))
    assert lst[0].answer == 1 and lst[0].id == "list.jsonl#0"
    orig = load_benchmark(write_jsonl(tmp_path / "orig.jsonl", [
        {"question": "q", "options": {"A": "x", "B": "y"}, "answer": "y", "answer_idx": "B"},
        {"question": "q", "options": {"A": "x", "B": "y"}, "answer": "x"}]))
    assert [it.answer for it in orig] == [1, 0]  # MedQA's original fields: answer_idx, or the answer text
    subset = load_benchmark(tmp_path / "medqa.jsonl", max_items=3)
    assert [it.id for it in subset] == ["q0", "q2", "q4"]  # evenly spread, fixed


@pytest.mark.parametrize("bad, message", [
    ("{not json", "medqa.jsonl:2"),
    (json.dumps({"question": "q", "options": {"A": "x", "B": "y"}, "answer": "E"}), "'answer' must be one of"),
    (json.dumps({"question": "q", "options": {"A": "x", "B": ""}, "answer": "A"}), "non-empty strings"),
    (json.dumps({"question": "", "options": {"A": "x", "B": "y"}, "answer": "A"}), "'question'"),
    (json.dumps({"question": "q", "answer": "A"}), "cannot tell the format"),
    (json.dumps({"question": "q", "context": "c", "answer": "yes"}), "looks like pubmedqa"),
    ("[1, 2]", "expected a JSON object"),
])
def test_bad_items_name_file_and_line(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "medqa.jsonl", [MEDQA[0], bad])
    with pytest.raises(BenchmarkError, match="medqa.jsonl:2") as e:
        load_benchmark(path)
    assert message in str(e.value)


def test_missing_and_empty(tmp_path):
    with pytest.raises(BenchmarkError, match="not found"):
        load_benchmark(tmp_path / "nope.jsonl")
    with pytest.raises(BenchmarkError, match="no usable items"):
        load_benchmark(write_jsonl(tmp_path / "p.jsonl", [PUBMED[1]]))


def hand_scores(model, tokenizer, item) -> list[float]:
    """The harness's recipe written out: BOS + encode(prompt + ' ' + option); sum log p(continuation)."""
    enc = tokenizer.backend.encode
    n_ctx = len(enc(item.prompt, add_special_tokens=False).ids)
    out = []
    for opt in item.options:
        whole = [tokenizer.bos_id] + enc(item.prompt + " " + opt, add_special_tokens=False).ids
        n_cont = len(whole) - 1 - n_ctx
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([whole])).logits[0].double().log_softmax(-1)
        out.append(sum(float(logp[p - 1, whole[p]]) for p in range(len(whole) - n_cont, len(whole))))
    return out


def test_scores_match_hand_computation(tmp_path, model, tokenizer):
    items = load_benchmark(write_jsonl(tmp_path / "m.jsonl", MEDQA)) + \
        load_benchmark(write_jsonl(tmp_path / "p.jsonl", PUBMED))
    res = evaluate_mcq(model, tokenizer, items, torch.device("cpu"), batch_size=3, return_scores=True)
    hand = [hand_scores(model, tokenizer, it) for it in items]
    for got, want in zip(res["scores"], hand):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    acc = np.mean([np.argmax(h) == it.answer for h, it in zip(hand, items)])
    acc_norm = np.mean([np.argmax(np.array(h) / [len(o) for o in it.options]) == it.answer
                        for h, it in zip(hand, items)])
    assert res["count"] == len(items) == 8
    assert res["acc"] == pytest.approx(acc) and res["acc_norm"] == pytest.approx(acc_norm)
    picks = [int(np.argmax(h)) for h in hand]
    assert res["top_answer_share"] == pytest.approx(max(picks.count(i) for i in set(picks)) / len(items))
    # batch size and padding do not change the scores
    res1 = evaluate_mcq(model, tokenizer, items, torch.device("cpu"), batch_size=1, return_scores=True)
    np.testing.assert_allclose(np.concatenate(res1["scores"]), np.concatenate(res["scores"]), rtol=1e-4, atol=1e-5)


def test_requests_bos_no_eos_and_truncation(model, tokenizer):
    item = load_benchmark.__globals__["MCQItem"]("x", "Question: the heart\nAnswer:", ("yes", "no"), 0, "f:1")
    reqs = build_requests(tokenizer, [item])
    assert reqs[0].tokens[0] == tokenizer.bos_id and tokenizer.eos_id not in reqs[0].tokens
    short = build_requests(tokenizer, [item], max_len=4)
    assert all(len(r.tokens) == 5 for r in short) and short[0].tokens[-reqs[0].n_cont:] == reqs[0].tokens[-reqs[0].n_cont:]
    with pytest.raises(BenchmarkError, match="longer than"):
        build_requests(tokenizer, [item], max_len=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TinyLM(torch.nn.Module):
    """A causal toy LM (prefix means of embeddings -> logits), cheap to send to spawned processes."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, 16)
        self.out = torch.nn.Linear(16, vocab)

    def forward(self, input_ids: torch.Tensor):
        h = self.emb(input_ids).cumsum(1) / torch.arange(1, input_ids.size(1) + 1)[None, :, None]
        return types.SimpleNamespace(logits=self.out(h))


def _dist_worker(rank: int, world: int, port: int, model, tokenizer, items, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    calls = {"n": 0}
    hook = model.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    reqs = build_requests(tokenizer, items)
    scores = loglikelihoods(model, reqs, torch.device("cpu"), batch_size=2)
    hook.remove()
    np.save(os.path.join(out_dir, f"scores{rank}.npy"), scores)
    with open(os.path.join(out_dir, f"calls{rank}"), "w") as f:
        f.write(str(calls["n"]))
    dist.destroy_process_group()


def test_distributed_ranks_agree(tmp_path, tokenizer):
    """2 gloo ranks: same number of forward calls each (FSDP-safe), and every rank gets all the scores."""
    items = load_benchmark(write_jsonl(tmp_path / "m.jsonl", MEDQA))[:4]  # 16 requests, 4 batches of 2 a rank
    items += load_benchmark(write_jsonl(tmp_path / "p.jsonl", PUBMED))[:1]  # 19: one rank runs a dummy batch
    lm = TinyLM(tokenizer.vocab_size)  # pure torch: the spawned ranks need not import transformers
    torch.multiprocessing.spawn(_dist_worker, args=(2, _free_port(), lm, tokenizer, items, str(tmp_path)),
                                nprocs=2, join=True)
    single = loglikelihoods(lm, build_requests(tokenizer, items), torch.device("cpu"), batch_size=2)
    for rank in range(2):
        np.testing.assert_allclose(np.load(tmp_path / f"scores{rank}.npy"), single, rtol=1e-5, atol=1e-5)
    assert (tmp_path / "calls0").read_text() == (tmp_path / "calls1").read_text() == "5"


def test_requests_with_one_input_share_a_forward_pass():
    """One-token continuations of one context (PubMedQA's yes/no/maybe) cost one row; scores as if alone."""
    from train.mcq import Request

    lm = TinyLM(32)
    reqs = [Request((1, 2, 3, 4), 1), Request((1, 2, 3, 5), 1), Request((1, 2, 3, 6), 1),
            Request((1, 2, 3, 6, 7), 2), Request((9, 8, 7, 6, 5, 4), 3)]
    rows = []
    hook = lm.register_forward_hook(lambda m, a, kw, out: rows.append(kw["input_ids"].shape[0]), with_kwargs=True)
    shared = loglikelihoods(lm, reqs, torch.device("cpu"), batch_size=8)
    hook.remove()
    assert sum(rows) == 3  # inputs (1,2,3), (1,2,3,6), (9,8,7,6,5): five requests, three rows
    alone = np.array([loglikelihoods(lm, [r], torch.device("cpu"))[0] for r in reqs])
    np.testing.assert_allclose(shared, alone, rtol=1e-6, atol=1e-6)
    assert len(set(np.round(shared[:3], 6))) == 3  # three different tokens scored, not one copied


class FirstOptionLM(torch.nn.Module):
    """Prefers one token everywhere: every option starting with it wins, as a collapsed CPT model answers "no"."""

    def __init__(self, vocab: int, favourite: int) -> None:
        super().__init__()
        self.vocab, self.favourite = vocab, favourite

    def forward(self, input_ids: torch.Tensor):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.favourite] = 10.0
        return types.SimpleNamespace(logits=logits)


def test_one_answer_for_everything_is_visible(tmp_path, tokenizer):
    """A model that answers "no" to every PubMedQA item: top_answer_share 1.0 and acc = the share of "no" labels."""
    rows = [dict(PUBMED[0], id=f"q{i}", answer=a) for i, a in enumerate(["yes", "yes", "no", "maybe", "yes"])]
    items = load_benchmark(write_jsonl(tmp_path / "p.jsonl", rows))
    no = tokenizer.backend.encode(items[0].prompt + " no", add_special_tokens=False).ids[-1]
    res = evaluate_mcq(FirstOptionLM(tokenizer.vocab_size, no), tokenizer, items, torch.device("cpu"))
    assert res["top_answer_share"] == 1.0 and res["acc"] == pytest.approx(1 / 5)


def test_scoring_the_training_model_computes_only_the_logits_it_reads(tmp_path, model, tokenizer):
    """Through train.loss.CausalLMLoss (what `train run` evaluates), the output head runs on the last
    `keep` positions of each batch only, never batch x width x vocabulary; the scores are the plain model's."""
    from train.loss import CausalLMLoss

    items = load_benchmark(write_jsonl(tmp_path / "p.jsonl", PUBMED))  # long shared contexts, 1-token options
    net = CausalLMLoss(model)
    seen = []  # (input width, head positions) of every forward
    pre = net.register_forward_pre_hook(lambda m, a, kw: seen.append([kw["input_ids"].shape[1]]), with_kwargs=True)
    head = model.lm_head.register_forward_hook(lambda m, a, out: seen[-1].append(out.shape[1]))
    got = evaluate_mcq(net, tokenizer, items, torch.device("cpu"), batch_size=2, return_scores=True)
    pre.remove()
    head.remove()
    want = evaluate_mcq(model, tokenizer, items, torch.device("cpu"), batch_size=2, return_scores=True)
    np.testing.assert_allclose(np.concatenate(got["scores"]), np.concatenate(want["scores"]), rtol=1e-5, atol=1e-6)
    assert seen and all(len(s) == 2 for s in seen)
    assert all(kept <= 2 < width for width, kept in seen), seen  # 1-token continuations: 1 or 2 positions kept
