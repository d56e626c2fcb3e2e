"""Budget and amount parsing, presets, score expressions: the small pure parts of `mix`."""

from __future__ import annotations

import polars as pl
import pytest

from continua.schema import RecipeError
from continua.score_formula import columns_in, score_expr
from mix.budget import BudgetError, human_tokens, parse_amount
from mix.presets import PRESETS, get_preset


@pytest.mark.parametrize("text,tokens", [
    ("500M", 500_000_000), ("2B", 2_000_000_000), ("1.5K", 1500), ("123456", 123456), ("2b", 2_000_000_000),
    ("1_000_000", 1_000_000), ("2e9", 2_000_000_000), (" 7 M ", 7_000_000), ("1T", 10**12), (123456, 123456),
])
def test_absolute_amounts(text, tokens):
    a = parse_amount(text)
    assert not a.is_relative
    assert a.tokens == tokens
    assert a.resolve(999) == tokens  # the reference does not matter for absolute counts


@pytest.mark.parametrize("text,fraction,resolved", [("40%", 0.4, 400), ("100%", 1.0, 1000), ("2.5%", 0.025, 25),
                                                     ("250%", 2.5, 2500)])
def test_percentages_resolve_against_the_reference(text, fraction, resolved):
    a = parse_amount(text)
    assert a.is_relative and a.fraction == pytest.approx(fraction)
    assert a.resolve(1000) == resolved


@pytest.mark.parametrize("junk", ["", "abc", "40%%", "-5M", "0", "0%", "5X", "M", "1.2.3B", "%", "ten", True, "nan"])
def test_junk_budgets_raise_clear_errors(junk):
    with pytest.raises(BudgetError) as e:
        parse_amount(junk)
    assert "budget" in str(e.value)


@pytest.mark.parametrize("huge", ["1e400", "1e400%", "9e99T", "2e18", 1e300])
def test_budgets_beyond_any_corpus_are_one_clear_error_not_an_overflow(huge):
    with pytest.raises(BudgetError, match="larger than any corpus or budget"):
        parse_amount(huge)


def test_mix_plan_with_an_overflowing_budget_is_one_line_and_exit_2(tmp_path, capsys):
    from mix.cli import main

    (tmp_path / "d.jsonl").write_text('{"text": "a"}\n')
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[run]\nout_dir = "{tmp_path / "out"}"\n[data.sources.d]\npaths = ["d.jsonl"]\nrole = "domain"\n')
    assert main(["plan", str(recipe), "--budget", "1e400"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1e400" in err[0] and "larger than any corpus or budget" in err[0], err


def test_budget_error_is_a_recipe_error_and_names_the_value():
    with pytest.raises(RecipeError, match="'lots'"):
        parse_amount("lots")


def test_human_tokens():
    assert human_tokens(1_234_567) == "1.23M"
    assert human_tokens(20e9) == "20B"
    assert human_tokens(512) == "512"


def test_llama1_preset_matches_the_study():
    p = PRESETS["llama1"]
    assert sum(p.weights.values()) == pytest.approx(1.0)
    assert p.web_share == pytest.approx(0.82)
    assert p.replay_weights()["Wikipedia"] == pytest.approx(0.045)
    assert sum(p.replay_weights().values()) == pytest.approx(0.18)


def test_redpajama_preset_is_normalized():
    p = PRESETS["redpajama"]
    assert sum(p.weights.values()) == pytest.approx(1.0)
    assert 0.8 < p.web_share < 0.9


def test_custom_preset_must_sum_to_one():
    with pytest.raises(RecipeError, match="sum to 1, they sum to 0.9"):
        get_preset(None, {"web": 0.6, "wiki": 0.3}, ["web"])
    p = get_preset(None, {"web": 0.7, "wiki": 0.3}, ["web"])
    assert p.name == "custom" and p.web_share == pytest.approx(0.7)


def test_custom_preset_needs_known_web_groups_and_no_named_preset():
    with pytest.raises(RecipeError, match="preset_web"):
        get_preset(None, {"web": 0.7, "wiki": 0.3}, [])
    with pytest.raises(RecipeError, match="not in"):
        get_preset(None, {"web": 0.7, "wiki": 0.3}, ["cc"])
    with pytest.raises(RecipeError, match="choose one"):
        get_preset("llama1", {"web": 0.7, "wiki": 0.3}, ["web"])
    with pytest.raises(RecipeError, match="unknown.*llama1"):
        get_preset("llama9", {}, [])


def test_score_expression_combines_columns():
    df = pl.DataFrame({"fasttext_q": [1.0, 0.0], "ppl_ngram_med": [2.0, 4.0]})
    expr = score_expr("0.5*fasttext_q - 0.5*ppl_ngram_med", df.columns)
    assert df.select(expr).to_series().to_list() == [-0.5, -2.0]
    assert columns_in("0.5*fasttext_q - 0.5*ppl_ngram_med") == ["fasttext_q", "ppl_ngram_med"]
    assert df.select(score_expr("-(fasttext_q)", df.columns)).to_series().to_list() == [-1.0, -0.0]


def test_score_expression_errors_name_the_available_columns():
    with pytest.raises(RecipeError, match=r"no score column 'fasttext_x' \(available: fasttext_q, ppl\)"):
        score_expr("fasttext_x", ["fasttext_q", "ppl"])
    with pytest.raises(RecipeError, match="only numbers"):
        score_expr("__import__('os')", ["fasttext_q"])
    with pytest.raises(RecipeError, match="not an expression"):
        score_expr("fasttext_q +", ["fasttext_q"])
