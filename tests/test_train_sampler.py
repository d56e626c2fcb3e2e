"""The training sampler honours the plan's token shares, epochs, resampling, ranks and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from train_fixtures import make_shards, make_tokenizer

from mix.manifest import Manifest
from train.data import DeviceBatches, Sampler, planned_steps

SEQ = 32


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory, tok):
    folder = tmp_path_factory.mktemp("shards")
    # med: 3 epochs over its docs; web: a replay share of 1/4 of the total
    make_shards(folder, tok, {"med": {"docs": 40, "epochs": 3.0},
                              "web": {"docs": 60, "role": "general", "target_tokens": 0}})
    m = Manifest.load(folder)
    m.sources["web"].target_tokens = m.sources["med"].target_tokens // 3
    m.save(folder)
    return folder


def test_shares_match_plan_in_total_and_in_every_batch(shards):
    m = Manifest.load(shards)
    batch = 8
    steps = planned_steps(m, batch, SEQ)
    assert steps == sum(s.target_tokens for s in m.sources.values()) // (batch * SEQ)
    s = Sampler(shards, m, SEQ, batch, seed=1)
    prev = s.counts.copy()
    for _ in range(steps):
        b = s.next_batch()
        assert b.shape == (batch, SEQ + 1) and b.dtype == np.int64
        per_batch = s.counts - prev
        prev = s.counts.copy()
        assert np.all(np.abs(per_batch - s.shares * batch) <= 1.0)  # each batch: every share to one sequence
    got = s.tokens_by_source()
    total = sum(got.values())
    target_total = sum(e.target_tokens for e in m.sources.values())
    for name, e in m.sources.items():
        assert abs(got[name] / total - e.target_tokens / target_total) < 0.01
        assert abs(got[name] - e.target_tokens) / e.target_tokens < 0.01 + batch * SEQ / e.target_tokens


def test_windows_overlap_by_one_and_follow_the_epoch_order(shards):
    m = Manifest.load(shards)
    m.sources["web"].target_tokens = 0  # only med
    s = Sampler(shards, m, SEQ, 1, seed=3)
    stream = s.streams[0]
    order = stream.order(0)
    assert sorted(order.tolist()) == list(range(stream.docs.num_docs))  # fixed: a permutation of all docs
    assert not np.array_equal(stream.order(1), order)  # a fresh order every epoch
    expected = np.concatenate([stream.docs.doc(int(i)) for i in order]).astype(np.int64)
    n_windows = expected.size // SEQ - 1
    windows = [s.next_batch()[0] for _ in range(n_windows)]
    for a, b in zip(windows, windows[1:]):
        assert a[-1] == b[0]
    flat = np.concatenate([windows[0]] + [w[1:] for w in windows[1:]])
    assert np.array_equal(flat, expected[: flat.size])


def test_dynamic_resample_draws_a_fresh_subset_each_epoch(shards):
    m = Manifest.load(shards)
    m.sources["med"].resample = "dynamic"
    m.sources["med"].epochs = 4.0
    m.sources["med"].target_tokens = m.sources["med"].train.tokens
    m.sources["med"].epoch_tokens = m.sources["med"].train.tokens // 4  # a quarter of the pool per epoch
    s = Sampler(shards, m, SEQ, 4, seed=0)
    med = s.streams[s.names.index("med")]
    lengths = med.docs.doc_lengths()
    o0, o1 = med.order(0), med.order(1)
    for o in (o0, o1):
        assert len(set(o.tolist())) == o.size < med.docs.num_docs
        assert lengths[o].sum() >= med.epoch_tokens > lengths[o[:-1]].sum()
    assert set(o0.tolist()) != set(o1.tolist())
    assert med.epoch_tokens == m.sources["med"].train.tokens // 4
    m.sources["med"].epoch_tokens = 0  # a manifest without it: target_tokens / epochs
    s = Sampler(shards, m, SEQ, 4, seed=0)
    assert s.streams[s.names.index("med")].epoch_tokens == round(m.sources["med"].train.tokens / 4)


def test_ranks_take_slices_of_the_same_global_batch(shards):
    m = Manifest.load(shards)
    one = Sampler(shards, m, SEQ, 4, seed=5)
    r0, r1 = (Sampler(shards, m, SEQ, 4, seed=5, rank=r, world=2) for r in (0, 1))
    for _ in range(5):
        assert np.array_equal(one.next_batch(), np.concatenate([r0.next_batch(), r1.next_batch()]))
    with pytest.raises(ValueError, match="divisible"):
        Sampler(shards, m, SEQ, 3, seed=5, rank=0, world=2)


def test_a_rank_reads_only_its_own_windows_across_epochs(shards):
    """Ranks deal the whole batch to stay in step, but read tokens only for their slice: over 40 batches
    (several epochs of both sources) rank 1 reads about half the documents a single process reads."""
    m = Manifest.load(shards)
    one = Sampler(shards, m, SEQ, 4, seed=3)
    r1 = Sampler(shards, m, SEQ, 4, seed=3, rank=1, world=2)
    reads = {"one": 0, "r1": 0}
    for name, sampler in (("one", one), ("r1", r1)):
        for stream in sampler.streams:
            real = stream.docs.doc

            def counted(i, real=real, name=name):
                reads[name] += 1
                return real(i)

            stream.docs.doc = counted
    for _ in range(40):
        assert np.array_equal(one.next_batch()[2:], r1.next_batch())
    assert one.state_dict() == r1.state_dict()
    assert reads["r1"] < 0.65 * reads["one"]


def test_device_batches_checkpoint_the_batches_taken_not_the_one_prefetched(shards):
    m = Manifest.load(shards)
    reference = Sampler(shards, m, SEQ, 4, seed=7)
    expected = [reference.next_batch() for _ in range(6)]
    batches = DeviceBatches(Sampler(shards, m, SEQ, 4, seed=7), torch.device("cpu"))
    for i in range(3):
        got = batches.take()
        batches.prefetch()  # batch i + 1 is dealt already
        assert got.dtype == torch.int64 and np.array_equal(got.numpy(), expected[i])
    state = json.loads(json.dumps(batches.state_dict()))
    assert state["dealt"] == 3 * 4 and sum(batches.tokens_by_source().values()) == 3 * 4 * SEQ
    again = Sampler(shards, m, SEQ, 4, seed=7)
    again.load_state_dict(state)
    assert all(np.array_equal(again.next_batch(), expected[i]) for i in range(3, 6))
    assert np.array_equal(batches.take().numpy(), expected[3])  # the prefetched batch is the next one


def test_state_resume_neither_repeats_nor_skips(shards):
    m = Manifest.load(shards)
    full = Sampler(shards, m, SEQ, 4, seed=7)
    reference = [full.next_batch() for _ in range(40)]  # crosses epoch boundaries of both sources
    first = Sampler(shards, m, SEQ, 4, seed=7)
    got = [first.next_batch() for _ in range(17)]
    state = json.loads(json.dumps(first.state_dict()))  # as saved in a checkpoint
    assert all(isinstance(v, int) for vals in state["sources"].values() for v in vals)
    again = Sampler(shards, m, SEQ, 4, seed=7)
    again.load_state_dict(state)
    got += [again.next_batch() for _ in range(23)]
    assert all(np.array_equal(a, b) for a, b in zip(reference, got))
    with pytest.raises(ValueError, match="does not match"):
        Sampler(shards, m, SEQ, 8, seed=7).load_state_dict(state)


def test_plan_too_small_for_one_step_is_an_error(shards):
    m = Manifest.load(shards)
    for e in m.sources.values():
        e.target_tokens = 10
    with pytest.raises(ValueError, match="less than one step"):
        planned_steps(m, 4, SEQ)
