"""CCNet buckets: fractions follow the percentiles, direction, ties, missing values, errors."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from curate.buckets import add_buckets, ccnet_buckets


def frame(values) -> pl.LazyFrame:
    return pl.LazyFrame({"doc_id": [str(i) for i in range(len(values))], "ppl_ngram_med": values})


@pytest.mark.parametrize("percentiles", [(30, 60), (10, 50), (50, 90)])
def test_fractions_match_percentiles(percentiles):
    values = np.random.default_rng(0).lognormal(5, 1, size=1000)
    out = ccnet_buckets(frame(values), "ppl_ngram_med", percentiles).collect()
    counts = out["bucket_ppl_ngram_med"].value_counts().to_dict(as_series=False)
    got = dict(zip(counts["bucket_ppl_ngram_med"], counts["count"]))
    p1, p2 = percentiles
    assert got == {"head": p1 * 10, "middle": (p2 - p1) * 10, "tail": 1000 - p2 * 10}
    head = out.filter(pl.col("bucket_ppl_ngram_med") == "head")["ppl_ngram_med"]
    rest = out.filter(pl.col("bucket_ppl_ngram_med") != "head")["ppl_ngram_med"]
    assert head.max() < rest.min()  # head = lowest perplexity


def test_higher_is_better_flips_and_ties_stay_together():
    out = ccnet_buckets(pl.LazyFrame({"s": [0.9, 0.8, 0.5, 0.5, 0.5, 0.1, 0.2, 0.3, 0.4, 0.95]}), "s",
                        lower_is_better=False).collect()
    b = dict(zip(out["s"], out["bucket_s"]))
    assert b[0.95] == b[0.9] == b[0.8] == "head"
    assert b[0.5] == "middle" and (out.filter(pl.col("s") == 0.5)["bucket_s"] == "middle").all()
    assert b[0.1] == b[0.2] == b[0.3] == b[0.4] == "tail"


def test_missing_scores_get_no_bucket_and_do_not_count():
    values = [float(v) for v in range(1, 11)] + [None, float("nan")]
    out = ccnet_buckets(frame(values), "ppl_ngram_med").collect()
    buckets = out["bucket_ppl_ngram_med"].to_list()
    assert buckets[-2:] == [None, None]
    assert buckets[:10] == ["head"] * 3 + ["middle"] * 3 + ["tail"] * 4


def test_add_buckets_uses_recipe_table_and_checks_it():
    lf = frame([1.0, 2.0, 3.0, 4.0]).with_columns(fasttext_med=pl.Series([0.1, 0.2, 0.3, 0.4]))
    out = add_buckets(lf, {"ppl_ngram_med": [25, 50], "fasttext_med": [25, 50]}).collect()
    assert out["bucket_ppl_ngram_med"].to_list() == ["head", "middle", "tail", "tail"]
    assert out["bucket_fasttext_med"].to_list() == ["tail", "tail", "middle", "head"]
    with pytest.raises(ValueError, match="buckets.ppl_lm_x.*no column"):
        add_buckets(lf, {"ppl_lm_x": [30, 60]})
    with pytest.raises(ValueError, match="two percentiles"):
        add_buckets(lf, {"ppl_ngram_med": [30]})
    with pytest.raises(ValueError, match="0 < first < second < 100"):
        ccnet_buckets(lf, "ppl_ngram_med", (60, 30))
