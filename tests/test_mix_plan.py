"""`mix plan` on a miniature of the studies' setup: budgets, subset x epochs, preset shares, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from mix_fixtures import build_world, write_recipe, write_score_table, write_jsonl  # noqa: E402

from continua.recipe import load_recipe  # noqa: E402
from continua.schema import RecipeError  # noqa: E402
from mix.cli import main  # noqa: E402
from mix.planner import make_plan  # noqa: E402
from mix.tables import PlanError  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"))


def recipe(world, mix: dict, sources: dict | None = None, name: str = "r.toml", **kw):
    path = write_recipe(world["root"] / name, sources or world["sources"], world["tok"], mix=mix, **kw)
    return load_recipe(path)


def domain_pool_tokens(world) -> int:
    plan = make_plan(recipe(world, {"budget": "1K"}), log=lambda m: None).plan
    return plan["budget"]["reference_tokens"]


def test_forty_percent_with_a_ten_percent_subset_is_four_epochs(world):
    r = recipe(world, {"budget": "40%", "top": "10%", "score": "fasttext_q"})
    res = make_plan(r, log=lambda m: None)
    p = res.plan
    d = p["sources"]["domain"]
    n = p["budget"]["reference_tokens"]
    assert p["budget"]["tokens"] == round(0.4 * n)
    assert d["selected"]["tokens"] == pytest.approx(0.1 * n, rel=0.01)
    assert d["epochs"] == pytest.approx(4.0, rel=0.01)
    assert d["target_tokens"] == p["budget"]["tokens"]  # no replay: the whole budget is domain
    assert d["share"] == 1.0
    for g in ("wiki", "arxiv", "se"):  # general sources unused, but still give validation sets
        assert p["sources"][g]["target_tokens"] == 0
        assert p["sources"][g]["valid"]["docs"] > 0
    # the subset is the best by the score
    table = world["tables"]["domain"]
    sel = res.selection.filter((pl.col("source") == "domain") & (pl.col("split") == "train"))
    scores = table.join(sel, on="doc_id")["fasttext_q"]
    rest = table.join(sel, on="doc_id", how="anti")["fasttext_q"]
    assert scores.min() >= rest.filter(rest < scores.min()).max()
    assert scores.mean() > table["fasttext_q"].mean()
    assert not any("repeated" in w for w in p["warnings"])  # 4 epochs (not above): no repetition warning
    # expected steps from [train] seq_len x batch_size
    assert p["train"]["tokens_per_step"] == 64 * 4
    assert d["expected_steps"] == pytest.approx(d["target_tokens"] / 256, rel=1e-3)


def test_llama1_preset_gives_82_percent_domain_and_replay_in_preset_proportions(world):
    r = recipe(world, {"budget": "40%", "top": "10%", "score": "fasttext_q", "preset": "llama1"})
    p = make_plan(r, log=lambda m: None).plan
    s = p["sources"]
    total = p["total_target_tokens"]
    assert total == pytest.approx(p["budget"]["tokens"], abs=2)
    assert s["domain"]["target_tokens"] / total == pytest.approx(0.82, abs=1e-3)
    # Wikipedia 4.5 : ArXiv 2.5 : StackExchange 2.0, with GitHub and Books (absent) redistributed proportionally
    assert s["wiki"]["share"] == pytest.approx(0.09, abs=1e-3)
    assert s["arxiv"]["share"] == pytest.approx(0.05, abs=1e-3)
    assert s["se"]["share"] == pytest.approx(0.04, abs=1e-3)
    assert any("GitHub" in w and "redistributed" in w for w in p["warnings"])
    # the studies' 40% example: 4 epochs, each the size of the 10% subset, 82% of each drawn from the
    # subset afresh (resample "dynamic", the default) and 18% replay
    n = p["budget"]["reference_tokens"]
    assert s["domain"]["epochs"] == pytest.approx(4.0, rel=0.02)
    assert s["domain"]["resample"] == "dynamic"
    assert s["domain"]["selected"]["tokens"] == pytest.approx(0.1 * n, rel=0.02)
    assert s["domain"]["epoch_tokens"] == pytest.approx(0.82 * s["domain"]["selected"]["tokens"], rel=0.01)


def test_fixed_resampling_reads_one_sample_of_the_subset_every_epoch(world):
    r = recipe(world, {"budget": "40%", "top": "10%", "score": "fasttext_q", "preset": "llama1", "resample": "fixed"})
    p = make_plan(r, log=lambda m: None).plan
    d, n = p["sources"]["domain"], p["budget"]["reference_tokens"]
    assert d["resample"] == "fixed"
    assert d["selected"]["tokens"] == pytest.approx(0.82 * 0.1 * n, rel=0.02)  # one sample: 82% of the subset
    assert d["epochs"] == pytest.approx(4.0, rel=0.02)
    assert d["target_tokens"] / p["total_target_tokens"] == pytest.approx(0.82, abs=1e-3)


def test_compute_equivalent_replay_cuts_domain_tokens(world):
    r = recipe(world, {"budget": "40%", "replay": 0.05})
    p = make_plan(r, log=lambda m: None).plan
    s = p["sources"]
    total = p["budget"]["tokens"]
    assert s["domain"]["target_tokens"] == pytest.approx(0.95 * total, abs=2)
    replay = sum(s[g]["target_tokens"] for g in ("wiki", "arxiv", "se"))
    assert replay == pytest.approx(0.05 * total, abs=3)
    # no score: a random subset as large as the domain share, one epoch
    assert s["domain"]["epochs"] == pytest.approx(1.0, abs=0.01)


def test_fixed_epochs_choose_the_subset(world):
    p = make_plan(recipe(world, {"budget": "40%", "epochs": 2, "score": "ppl_ngram_med", "prefer": "low"}),
                  log=lambda m: None).plan
    d = p["sources"]["domain"]
    assert d["epochs"] == 2.0
    assert d["selected"]["tokens"] == pytest.approx(0.2 * p["budget"]["reference_tokens"], rel=0.01)


def test_auto_epochs_with_a_score_aim_at_four(world):
    p = make_plan(recipe(world, {"budget": "40%", "score": "fasttext_q"}), log=lambda m: None).plan
    assert p["sources"]["domain"]["epochs"] == pytest.approx(4.0, rel=0.02)


def test_dynamic_resampling_selects_a_pool_for_all_epochs(world):
    p = make_plan(recipe(world, {"budget": "40%", "top": "10%", "score": "fasttext_q", "resample": "dynamic"}),
                  log=lambda m: None).plan
    d = p["sources"]["domain"]
    n = p["budget"]["reference_tokens"]
    # no preset or replay: the domain share is 1, every epoch reads the whole subset: nothing to re-draw
    assert d["resample"] == "fixed"
    assert d["selected"]["tokens"] == pytest.approx(0.1 * n, rel=0.01)
    assert d["epoch_tokens"] == d["selected"]["tokens"]
    assert d["epochs"] == pytest.approx(4.0, rel=0.01)
    with_replay = make_plan(recipe(world, {"budget": "40%", "top": "10%", "score": "fasttext_q", "replay": 0.25,
                                           "resample": "dynamic"}), log=lambda m: None).plan
    d = with_replay["sources"]["domain"]
    assert d["resample"] == "dynamic" and d["selected"]["tokens"] == pytest.approx(0.1 * n, rel=0.01)
    assert d["epoch_tokens"] == pytest.approx(0.75 * d["selected"]["tokens"], rel=0.01)  # a fresh 75% each epoch
    assert any("dynamic" in x["decision"] and "fresh" in x["decision"] for x in with_replay["decisions"])


def test_validation_docs_and_their_exact_copies_never_train(world):
    res = make_plan(recipe(world, {"budget": "100%", "valid_fraction": 0.2, "valid_max_docs": 100000}),
                    log=lambda m: None)
    sel = res.selection
    tables = pl.concat([t.select("doc_id", "text_hash") for t in world["tables"].values()])
    sel = sel.join(tables, on="doc_id")
    valid, train = sel.filter(pl.col("split") == "valid"), sel.filter(pl.col("split") == "train")
    assert valid.height > 0 and train.height > 0
    assert not set(valid["doc_id"]) & set(train["doc_id"])
    assert not set(valid["text_hash"]) & set(train["text_hash"])
    # with 40 texts present three times each, some validation doc has a copy that was withheld
    dups = world["tables"]["domain"].group_by("text_hash").len().filter(pl.col("len") > 1)["text_hash"]
    assert set(valid["text_hash"]) & set(dups)
    assert train["text_hash"].n_unique() == train.height  # exact duplicates removed


def test_validation_sets_hold_each_text_once_when_the_plan_deduplicates(world):
    mix = {"budget": "100%", "valid_fraction": 0.3, "valid_max_docs": 100000}
    tables = pl.concat([t.select("doc_id", "text_hash") for t in world["tables"].values()])
    for dedup, distinct in ((True, True), (False, False)):
        sel = make_plan(recipe(world, dict(mix, dedup=dedup)), log=lambda m: None).selection.join(tables, on="doc_id")
        valid = sel.filter(pl.col("split") == "valid")
        assert valid.height >= 600  # 30% of 3,920 documents, at most one per text
        assert (valid["text_hash"].n_unique() == valid.height) == distinct


def test_validation_split_is_deterministic_and_seeded(world):
    a = make_plan(recipe(world, {"budget": "40%"}), log=lambda m: None).selection
    b = make_plan(recipe(world, {"budget": "40%", "top": "5%", "score": "fasttext_q"}), log=lambda m: None).selection
    c = make_plan(recipe(world, {"budget": "40%"}, seed=3), log=lambda m: None).selection
    v = lambda s: set(s.filter(pl.col("split") == "valid")["doc_id"])  # noqa: E731
    assert v(a) == v(b)  # the strategies never change the validation split
    assert v(a) != v(c)


def test_budget_larger_than_the_data_can_give(world):
    with pytest.raises(PlanError, match="max_epochs = 16"):
        make_plan(recipe(world, {"budget": "2000%"}), log=lambda m: None)
    with pytest.raises(PlanError, match="max_epochs"):
        make_plan(recipe(world, {"budget": "300%", "top": "10%", "score": "fasttext_q"}), log=lambda m: None)


def test_warns_above_four_epochs_and_on_tiny_subsets(world):
    p = make_plan(recipe(world, {"budget": "60%", "top": "10%", "score": "fasttext_q"}), log=lambda m: None).plan
    assert any("repeated" in w for w in p["warnings"])
    p = make_plan(recipe(world, {"budget": "4%", "top": "0.5%", "score": "fasttext_q"}), log=lambda m: None).plan
    assert any("too small to be representative" in w for w in p["warnings"])


def test_top_and_epochs_that_disagree_are_refused(world):
    with pytest.raises(PlanError, match="set only one of top and epochs"):
        make_plan(recipe(world, {"budget": "40%", "top": "10%", "epochs": 2, "score": "fasttext_q"}),
                  log=lambda m: None)


def test_unknown_score_column_names_the_available_ones(world):
    with pytest.raises(RecipeError, match="no score column 'fasttext_medical'.*available: .*fasttext_q"):
        make_plan(recipe(world, {"budget": "40%", "score": "fasttext_medical"}), log=lambda m: None)


def test_preset_without_matching_general_source_is_an_error(world):
    sources = {"domain": world["sources"]["domain"]}
    with pytest.raises(PlanError, match="no general source maps"):
        make_plan(recipe(world, {"budget": "40%", "preset": "llama1"}, sources=sources), log=lambda m: None)


def test_custom_preset_weights_that_do_not_sum_to_one(world):
    with pytest.raises(RecipeError, match="sum to 1"):
        make_plan(recipe(world, {"budget": "40%", "preset_weights": {"Web": 0.8, "Wikipedia": 0.1},
                                 "preset_web": ["Web"]}), log=lambda m: None)


def test_custom_preset(world):
    mix = {"budget": "40%", "preset_weights": {"Web": 0.7, "Wikipedia": 0.2, "ArXiv": 0.1}, "preset_web": ["Web"]}
    p = make_plan(recipe(world, mix), log=lambda m: None).plan
    assert p["sources"]["domain"]["share"] == pytest.approx(0.7, abs=1e-3)
    assert p["sources"]["wiki"]["share"] == pytest.approx(0.2, abs=1e-3)
    assert p["sources"]["arxiv"]["share"] == pytest.approx(0.1, abs=1e-3)
    assert p["sources"]["se"]["share"] == 0.0  # StackExchange is not in this preset


def test_empty_source_is_an_error(world, tmp_path):
    f = write_jsonl(tmp_path / "e.jsonl", ["one doc"])
    write_score_table(world["curate"], "empty", f, world["tok"], empty=True)
    sources = dict(world["sources"], empty={"paths": [str(f)], "role": "general"})
    with pytest.raises(PlanError, match="source 'empty': the score table has no documents"):
        make_plan(recipe(world, {"budget": "40%"}, sources=sources, name="e.toml"), log=lambda m: None)


def test_missing_score_table_is_an_error(world, tmp_path):
    f = write_jsonl(tmp_path / "n.jsonl", ["one doc"])
    sources = dict(world["sources"], unscored={"paths": [str(f)], "role": "general"})
    with pytest.raises(PlanError, match="no score table for source 'unscored'.*curate score"):
        make_plan(recipe(world, {"budget": "40%"}, sources=sources, name="n.toml"), log=lambda m: None)


def test_cli_plan_writes_plan_selection_and_plot(world, capsys):
    path = write_recipe(world["root"] / "cli.toml", world["sources"], world["tok"],
                        mix={"out": str(world["root"] / "cli_mix")})
    rc = main(["plan", str(path), "--budget", "40%", "--top", "10%", "--score", "fasttext_q", "--preset", "llama1"])
    assert rc == 0
    out = world["root"] / "cli_mix"
    plan = json.loads((out / "plan.json").read_text())
    assert plan["budget"]["given"] == "40%"
    assert {"decisions", "warnings", "inputs", "sources", "seed", "selection_hash"} <= set(plan)
    assert all(i["hash"].startswith("xxh3_128:") for i in plan["inputs"])
    for s in plan["sources"].values():
        assert {"role", "available", "selected", "valid", "epochs", "target_tokens", "share", "expected_steps"} <= set(s)
    sel = pl.read_parquet(out / "selection.parquet")
    assert sel.columns == ["doc_id", "source", "split", "repeats", "text_hash"]
    assert (out / "plan.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "domain" in printed and "82.0%" in printed
    assert main(["show", str(out), "--out", str(world["root"] / "show.png")]) == 0
    assert (world["root"] / "show.png").exists()
    assert main(["plan", str(path), "--budget", "lots"]) == 2
    assert "lots" in capsys.readouterr().err


def test_same_recipe_same_plan(world):
    mix = {"budget": "40%", "top": "10%", "score": "fasttext_q", "preset": "llama1"}
    a = make_plan(recipe(world, mix), log=lambda m: None)
    b = make_plan(recipe(world, mix), log=lambda m: None)
    assert a.selection.sort("doc_id").equals(b.selection.sort("doc_id"))
    assert a.plan["sources"] == b.plan["sources"]


def test_curate_duplicate_marks_are_dropped(tmp_path):
    w = build_world(tmp_path, n_domain=300, n_general=50, dup_groups=0)
    table = w["tables"]["domain"]
    marked = table["doc_id"].head(100)
    pl.DataFrame({"doc_id": table["doc_id"], "dup_exact": table["doc_id"].is_in(marked.implode()),
                  "dup_minhash_keep": True}).write_parquet(w["curate"] / "domain" / "dedup.parquet")
    r = load_recipe(write_recipe(tmp_path / "r.toml", w["sources"], w["tok"], mix={"budget": "100%"}))
    res = make_plan(r, log=lambda m: None)
    train = set(res.selection.filter((pl.col("split") == "train") & (pl.col("source") == "domain"))["doc_id"])
    assert not train & set(marked)
    assert any("dup_exact" in d["decision"] for d in res.plan["decisions"])
    assert res.plan["sources"]["domain"]["candidates"]["docs"] <= 300 - 100
    r2 = load_recipe(write_recipe(tmp_path / "r2.toml", w["sources"], w["tok"], mix={"budget": "100%", "dedup": False}))
    train2 = set(make_plan(r2, log=lambda m: None).selection.filter(pl.col("split") == "train")["doc_id"])
    assert train2 & set(marked)  # dedup = false keeps them


@pytest.mark.parametrize("damaged", ["dedup.parquet", "scores/00000.parquet"])
def test_a_truncated_score_artifact_is_one_line_naming_it(tmp_path, capsys, damaged):
    w = build_world(tmp_path, n_domain=100, n_general=30, dup_groups=0)
    table = w["tables"]["domain"]
    pl.DataFrame({"doc_id": table["doc_id"], "dup_exact": False}).write_parquet(w["curate"] / "domain" / "dedup.parquet")
    path = write_recipe(tmp_path / "r.toml", w["sources"], w["tok"], mix={"budget": "100%"})
    target = w["curate"] / "domain" / damaged
    with open(target, "r+b") as f:
        f.truncate(target.stat().st_size // 2)
    capsys.readouterr()
    assert main(["plan", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{target}: not a readable Parquet file" in err[0] and "curate score" in err[0], err


def test_a_damaged_hash_cache_is_only_rebuilt(world):
    from continua.layout import mix_dir
    from mix.planner import HASH_CACHE

    r = recipe(world, {"budget": "40%"})
    cache = mix_dir(r) / HASH_CACHE
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text('{"torn": ')
    assert make_plan(r, log=lambda m: None).plan["budget"]["tokens"] > 0


def test_budget_covering_domain_tokens_adds_replay_on_top(world):
    r = recipe(world, {"budget": "40%", "top": "10%", "score": "fasttext_q", "preset": "llama1",
                       "budget_covers": "domain"})
    p = make_plan(r, log=lambda m: None).plan
    n = p["budget"]["reference_tokens"]
    d = p["sources"]["domain"]
    assert d["target_tokens"] == round(0.4 * n)  # the budget is the domain's: 10% subset x 4 epochs
    assert d["epochs"] == pytest.approx(4.0, rel=0.01)
    assert d["share"] == pytest.approx(0.82, abs=1e-3)
    assert p["budget"]["tokens"] == p["total_target_tokens"]
    assert p["budget"]["tokens"] == pytest.approx(0.4 * n / 0.82, rel=1e-3)


@pytest.mark.parametrize("mix", [{"budget": "40%", "top": "10%", "score": "fasttext_q", "preset": "llama1"},
                                 {"budget": "60%", "resample": "fixed", "score": "fasttext_q", "replay": 0.2},
                                 {"budget": "30%"}])
def test_out_of_core_partitions_and_sampled_thresholds_give_the_same_plan(world, mix, monkeypatch):
    """Many small dedup partitions and a coarse ranking sample change only how the tables are read."""
    import mix.stream as stream

    r = recipe(world, mix)
    whole = make_plan(r, log=lambda m: None)
    monkeypatch.setattr(stream, "PART_ROWS", 97)  # ~40 partitions: copies of a text still meet in one
    monkeypatch.setattr(stream, "SAMPLE", 3)  # thresholds estimated from a third of the rows, then widened
    parts = make_plan(r, log=lambda m: None)
    assert parts.selection.sort("source", "doc_id").equals(whole.selection.sort("source", "doc_id"))
    assert parts.plan["sources"] == whole.plan["sources"]
    assert parts.plan["decisions"] == whole.plan["decisions"]
    assert not list((Path(r.run.out_dir) / "mix").glob(".plan-*"))  # the candidate folder is removed


def test_a_validation_set_smaller_than_asked_after_dedup_is_a_warning_with_the_numbers(world):
    """A source of 60 documents holding 3 texts: 10% asks 6 validation documents, dedup leaves 3."""
    rng = __import__("random").Random(7)
    texts = [f"Copied page {i} about the river and the castle." for i in range(3)] * 20
    rng.shuffle(texts)
    jsonl = write_jsonl(world["root"] / "data" / "copies.jsonl", texts)
    write_score_table(world["curate"], "copies", jsonl, world["tok"])
    sources = world["sources"] | {"copies": {"paths": [str(jsonl)], "role": "general", "group": "Wikipedia"}}
    mix = {"budget": "40%", "valid_fraction": 0.1, "min_valid_docs": 2}
    plan = make_plan(recipe(world, mix, sources, name="copies.toml"), log=lambda m: None).plan
    assert plan["sources"]["copies"]["valid"]["docs"] == 3
    short = [w for w in plan["warnings"] if w.startswith("source 'copies'")]
    assert len(short) == 1 and "validation set of 3 documents, 6 asked" in short[0]
    assert "60 documents hold only 3 distinct texts" in short[0] and "none of its documents" in short[0]
    assert plan["sources"]["copies"]["candidates"]["docs"] == 0
    assert not any(w.startswith("source 'domain'") for w in plan["warnings"])  # its validation set is full
    kept = make_plan(recipe(world, dict(mix, dedup=False), sources, name="copies.toml"), log=lambda m: None).plan
    assert kept["sources"]["copies"]["valid"]["docs"] == 6  # without dedup the 6 asked, copies included
    assert not any(w.startswith("source 'copies'") for w in kept["warnings"])
