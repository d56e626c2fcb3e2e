"""DSIR: replay drawn toward a reference sample resembles it more than a uniform sample does."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from mix_fixtures import GENERAL, MEDICAL, CODE, make_text, make_tokenizer, write_jsonl, write_recipe, write_score_table  # noqa: E402,E501

from continua.recipe import load_recipe  # noqa: E402
from mix.dsir import featurize, gumbel_top_order, kl_divergence, log_importance_weights  # noqa: E402
from mix.planner import make_plan  # noqa: E402


def corpora(seed: int = 0):
    rng = random.Random(seed)
    pool = []
    for i in range(600):  # a raw pool of three kinds of text
        vocab = (MEDICAL, GENERAL, CODE)[i % 3]
        pool.append((f"raw/{i}", make_text(rng, vocab + GENERAL, rng.randint(10, 40))))
    reference = [(f"ref/{i}", make_text(rng, MEDICAL + GENERAL, rng.randint(10, 40))) for i in range(100)]
    return pool, reference


def test_hashed_features_count_unigrams_and_bigrams():
    t = featurize([("a", "Tumor dose, tumor"), ("b", "dose")], buckets=1000)
    d, b, c = t.arrays()
    # doc a: words tumor dose , tumor (4) + bigrams (3) = 7 features; doc b: 1
    assert c[d == 0].sum() == 7 and c[d == 1].sum() == 1
    assert t.totals().sum() == 8 and b.max() < 1000


def test_dsir_sample_is_closer_to_the_reference_than_a_uniform_sample():
    pool, reference = corpora()
    raw = featurize(pool, buckets=10000)
    target = featurize(reference, buckets=10000).totals()
    logw = log_importance_weights(raw, target)
    k = 100
    picked = gumbel_top_order(logw, seed=0)[:k]
    kl_dsir = kl_divergence(target, raw.totals(picked))
    rng = np.random.default_rng(0)
    kl_uniform = [kl_divergence(target, raw.totals(rng.choice(len(pool), k, replace=False))) for _ in range(5)]
    assert kl_dsir < min(kl_uniform)
    assert kl_dsir < 0.8 * np.mean(kl_uniform)
    # and it mostly picked the medical-looking third of the pool
    assert np.mean(picked % 3 == 0) > 0.6


def test_gumbel_order_is_a_seeded_permutation():
    w = np.log(np.array([1.0, 2.0, 3.0, 100.0]))
    a, b = gumbel_top_order(w, 1), gumbel_top_order(w, 1)
    assert np.array_equal(a, b) and sorted(a.tolist()) == [0, 1, 2, 3]
    firsts = [gumbel_top_order(w, s)[0] for s in range(200)]
    assert np.mean(np.array(firsts) == 3) > 0.9  # heavy weight comes first almost always, not always


def test_planner_draws_replay_with_dsir_toward_a_reference_file(tmp_path):
    pool, reference = corpora(1)
    rng = random.Random(2)
    domain = [make_text(rng, MEDICAL, rng.randint(10, 40)) for _ in range(400)]
    files = {"domain": write_jsonl(tmp_path / "domain.jsonl", domain),
             "web": write_jsonl(tmp_path / "web.jsonl", [t for _, t in pool])}
    ref = write_jsonl(tmp_path / "ref.jsonl", [t for _, t in reference])
    tok = make_tokenizer(tmp_path / "tok", domain + [t for _, t in pool])
    curate = tmp_path / "out" / "curate"
    for n, f in files.items():
        write_score_table(curate, n, f, tok)
    sources = {"domain": {"paths": [str(files["domain"])], "role": "domain"},
               "web": {"paths": [str(files["web"])], "role": "general", "group": "Wikipedia"}}
    path = write_recipe(tmp_path / "r.toml", sources, tok,
                        mix={"budget": "100%", "replay": 0.1, "replay_select": "dsir", "dsir_target": "ref.jsonl"})
    res = make_plan(load_recipe(path), log=lambda m: None)
    assert "DSIR" in res.plan["sources"]["web"]["method"]
    assert any(d["step"] == "replay selection" and "ref.jsonl" in d["decision"] for d in res.plan["decisions"])
    chosen = res.selection.filter((pl.col("source") == "web") & (pl.col("split") == "train"))["doc_id"].to_list()
    rows = [int(d.rsplit("#", 1)[1]) for d in chosen]
    assert np.mean(np.array(rows) % 3 == 0) > 0.6  # mostly the medical-looking third


def test_dsir_needs_a_target(tmp_path):
    from continua.schema import RecipeError

    path = write_recipe(tmp_path / "r.toml", {"d": {"paths": [str(write_jsonl(tmp_path / "d.jsonl", ["x"]))]}},
                        make_tokenizer(tmp_path / "tok", ["x y z"]), mix={"replay_select": "dsir"})
    with pytest.raises(RecipeError, match="dsir_target"):
        load_recipe(path)


def test_dsir_target_can_be_a_recipe_source_used_only_as_reference(tmp_path):
    pool, reference = corpora(3)
    rng = random.Random(4)
    domain = [make_text(rng, MEDICAL, rng.randint(10, 40)) for _ in range(300)]
    files = {"domain": write_jsonl(tmp_path / "domain.jsonl", domain),
             "web": write_jsonl(tmp_path / "web.jsonl", [t for _, t in pool]),
             "ref": write_jsonl(tmp_path / "ref.jsonl", [t for _, t in reference])}
    tok = make_tokenizer(tmp_path / "tok", domain + [t for _, t in pool])
    for n in ("domain", "web"):  # the reference needs no score table
        write_score_table(tmp_path / "out" / "curate", n, files[n], tok)
    sources = {"domain": {"paths": [str(files["domain"])], "role": "domain"},
               "web": {"paths": [str(files["web"])], "role": "general"},
               "ref": {"paths": [str(files["ref"])], "role": "general"}}
    path = write_recipe(tmp_path / "r.toml", sources, tok,
                        mix={"budget": "100%", "replay": 0.2, "replay_select": "dsir", "dsir_target": "ref"})
    res = make_plan(load_recipe(path), log=lambda m: None)
    assert set(res.plan["sources"]) == {"domain", "web"}
    assert res.plan["sources"]["web"]["share"] == pytest.approx(0.2, abs=1e-3)
    assert any("reference sample only" in d["decision"] for d in res.plan["decisions"])
    chosen = res.selection.filter((pl.col("source") == "web") & (pl.col("split") == "train"))["doc_id"].to_list()
    rows = np.array([int(d.rsplit("#", 1)[1]) for d in chosen])
    assert np.mean(rows % 3 == 0) > 0.5
