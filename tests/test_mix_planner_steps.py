"""The planner's domain arithmetic as pure steps: subset size, epochs and resampling, from numbers alone."""

from __future__ import annotations

import pytest

from mix import explain
from mix.config import MixConfig
from mix.planner import SubsetSize, resample_mode, subset_epochs, subset_size
from mix.tables import PlanError

POOL = 10_000  # domain candidate tokens


def test_top_fixes_the_subset_and_the_budget_sets_the_epochs():
    mix = MixConfig(budget="40%", top="10%", score="q")
    size = subset_size(POOL, domain_tokens=3_280, basis=4_000, mix=mix, has_score=True)
    assert (size.rule, size.tokens, size.ranked) == ("top", 1_000, True)
    # a 1,000-token subset in a 4,000-token budget: 4 epochs, each drawing the domain's 82% of the subset
    assert subset_epochs(size, 1_000, 3_280, 4_000, mix) == (4.0, 820)


def test_top_and_epochs_must_agree_and_fit_the_pool():
    with pytest.raises(PlanError):
        subset_size(POOL, 4_000, 4_000, MixConfig(top="10%", epochs=3), has_score=True)  # 1,000 x 3 != 4,000
    size = subset_size(POOL, 4_000, 4_000, MixConfig(top="10%", epochs=4), has_score=True)
    assert size.tokens == 1_000
    with pytest.raises(PlanError):
        subset_size(POOL, 4_000, 4_000, MixConfig(top="20000"), has_score=True)  # more than the pool


def test_fixed_epochs_set_the_subset():
    mix = MixConfig(epochs=2)
    size = subset_size(POOL, 4_000, 4_000, mix, has_score=False)
    assert (size.rule, size.tokens, size.ranked) == ("epochs", 2_000.0, True)
    assert subset_epochs(size, 1_990, 4_000, 4_000, mix) == (2.0, 1_990)  # the epoch count stays as set
    with pytest.raises(PlanError):
        subset_size(POOL, 40_000, 40_000, mix, has_score=False)  # 20,000 tokens per epoch > the pool


def test_a_score_aims_at_auto_epochs_unless_the_subset_gets_too_small():
    size = subset_size(POOL, 4_000, 4_000, MixConfig(auto_epochs=4), has_score=True)
    assert (size.rule, size.tokens) == ("auto", 1_000.0)
    # the subset may not fall below 30% of the pool: 3,000 tokens, so 4,000 / 3,000 = 1.33 epochs
    size = subset_size(POOL, 4_000, 4_000, MixConfig(auto_epochs=4, min_subset_fraction=0.3), has_score=True)
    assert size.tokens == pytest.approx(3_000.0)
    # a budget beyond what 4 epochs of the pool give: the whole pool, repeated more often
    size = subset_size(POOL, 60_000, 60_000, MixConfig(auto_epochs=4), has_score=True)
    assert size.tokens == POOL and subset_epochs(size, POOL, 60_000, 60_000, MixConfig())[0] == 6.0


def test_without_ranking_fresh_data_is_taken_once():
    size = subset_size(POOL, 3_000, 4_000, MixConfig(), has_score=False)
    assert (size.rule, size.tokens, size.ranked) == ("fresh", 3_000.0, False)
    assert subset_epochs(size, 2_990, 3_000, 4_000, MixConfig()) == (pytest.approx(3_000 / 2_990), 2_990)
    big = subset_size(POOL, 25_000, 25_000, MixConfig(), has_score=False)
    assert big.tokens == POOL and subset_epochs(big, POOL, 25_000, 25_000, MixConfig()) == (2.5, POOL)


def test_resampling_redraws_only_a_ranked_subset_read_in_part_over_several_epochs():
    ranked, fresh = SubsetSize("top", 1_000, True), SubsetSize("fresh", 1_000, False)
    assert resample_mode(ranked, 4.0, 820, 1_000, "dynamic") == "dynamic"
    assert resample_mode(ranked, 4.0, 820, 1_000, "fixed") == "sample"
    assert resample_mode(ranked, 4.0, 1_000, 1_000, "dynamic") == "whole"  # the domain share is 1
    assert resample_mode(ranked, 0.8, 820, 1_000, "dynamic") == "sample"  # under one epoch: nothing to re-draw
    assert resample_mode(fresh, 2.5, 820, 1_000, "dynamic") == "whole"


def test_subset_warnings_follow_the_numbers():
    mix = MixConfig(warn_epochs=4, min_subset_docs=100, min_subset_fraction=0.01)
    assert explain.domain_subset_warnings(mix, docs=500, tokens=1_000, pool_tokens=POOL, epochs=4.0) == []
    assert len(explain.domain_subset_warnings(mix, docs=500, tokens=1_000, pool_tokens=POOL, epochs=6.0)) == 1
    assert len(explain.domain_subset_warnings(mix, docs=500, tokens=1_000, pool_tokens=POOL, epochs=0.5)) == 1
    assert len(explain.domain_subset_warnings(mix, docs=50, tokens=50, pool_tokens=POOL, epochs=6.0)) == 2
