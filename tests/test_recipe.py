"""Recipes: unknown keys, wrong types and missing files are errors naming the key and the file."""

from pathlib import Path

import pytest

from continua.recipe import RecipeError, load_recipe, parse_overrides


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_valid_recipe_resolves_paths_relative_to_recipe(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    r = load_recipe(write(tmp_path, '[data.sources.med]\npaths = ["d.jsonl"]\n[mix]\nbudget = "40%"\n'))
    assert r.data.sources["med"].paths == [tmp_path / "d.jsonl"]
    assert r.mix.budget == "40%"
    assert r.train.seq_len > 0  # defaults filled in
    assert r.out_dir == Path.cwd() / "out"  # outputs land where the command runs


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "[mix]\nbudgett = 1\n")
    with pytest.raises(RecipeError, match=r"r\.toml.*unknown key 'mix\.budgett'"):
        load_recipe(path)


def test_unknown_section(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown section \[mixx\]"):
        load_recipe(write(tmp_path, "[mixx]\nbudget = 1\n"))


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(RecipeError, match=r"key 'train\.steps' must be an integer"):
        load_recipe(write(tmp_path, '[train]\nsteps = "many"\n'))


def test_missing_file_names_key_and_path(tmp_path):
    with pytest.raises(RecipeError, match=r"key 'data\.sources\.med\.paths\[0\]' names a path that does not exist"):
        load_recipe(write(tmp_path, '[data.sources.med]\npaths = ["nope.jsonl"]\n'))


def test_missing_required_key(tmp_path):
    with pytest.raises(RecipeError, match=r"missing required key 'data\.sources\.med\.paths'"):
        load_recipe(write(tmp_path, "[data.sources.med]\nrole = 'domain'\n"))


def test_invalid_literal(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(RecipeError, match=r"'data\.sources\.med\.role' must be one of"):
        load_recipe(write(tmp_path, '[data.sources.med]\npaths = ["d.jsonl"]\nrole = "web"\n'))


def test_invalid_toml_names_file(tmp_path):
    with pytest.raises(RecipeError, match=r"r\.toml: not valid TOML"):
        load_recipe(write(tmp_path, "[mix\n"))


def test_overrides_win_and_are_typed(tmp_path):
    r = load_recipe(write(tmp_path, "[train]\nsteps = 5\n"), ["train.steps=7", "mix.budget=2B", "optim.lr=1e-3"])
    assert r.train.steps == 7 and r.mix.budget == "2B" and r.optim.lr == pytest.approx(1e-3)
    with pytest.raises(RecipeError, match="unknown key 'train.stepz'"):
        load_recipe(write(tmp_path, ""), ["train.stepz=1"])


def test_parse_overrides_rejects_malformed():
    with pytest.raises(RecipeError):
        parse_overrides(["nokey"])
    with pytest.raises(RecipeError):
        parse_overrides(["steps=1"])


def test_resolved_recipe_round_trips_through_toml(tmp_path):
    import tomllib

    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    r = load_recipe(write(tmp_path, '[data.sources.med]\npaths = ["d.jsonl"]\n'))
    again = tomllib.loads(r.to_toml())
    assert again["data"]["sources"]["med"]["paths"] == [str(tmp_path / "d.jsonl")]
    assert again["train"]["steps"] == r.train.steps


def test_a_non_ascii_source_name_and_odd_strings_round_trip(tmp_path):
    """Written back with tomli-w: a bare `médical` key or a control character would make unreadable TOML."""
    folder = tmp_path / "dónnées 😀"
    folder.mkdir()
    (folder / "d.jsonl").write_text('{"text": "x"}\n')
    text = ('[run]\nname = "tab\\there \\"quoted\\" \\\\ back"\n'
            '[data.sources."médical"]\npaths = ["dónnées 😀/d.jsonl"]\ntext_field = "texte_ü"\n'
            '[mix]\nbudget = "40%"\n')
    r = load_recipe(write(tmp_path, text))
    assert list(r.data.sources) == ["médical"]
    again = tmp_path / "again.toml"
    again.write_text(r.to_toml(), encoding="utf-8")
    back = load_recipe(again)
    assert back.to_dict() == r.to_dict()
    assert back.run.name == 'tab\there "quoted" \\ back'


def test_toml_value_overrides_read_back_as_the_same_string(tmp_path):
    from continua.recipe import toml_value

    for value in ["plain", "é 😀", 'q"uote\\', "new\nline", "x = 1"]:
        assert parse_overrides([f"run.name={toml_value(value)}"]) == {"run": {"name": value}}
    assert parse_overrides([f"train.steps={toml_value(7)}"]) == {"train": {"steps": 7}}


def test_each_stage_declares_its_own_sections_in_recipe_order():
    """The base defines [run] and [data]; every other section comes from the stage that owns it."""
    from continua.recipe import section_types

    owners = {name: cls.__module__ for name, cls in section_types().items()}
    assert owners == {"run": "continua.recipe", "data": "continua.recipe", "curate": "curate.config",
                      "mix": "mix.config", "model": "train.config", "optim": "train.config",
                      "schedule": "train.config", "eval": "train.config", "train": "train.config",
                      "parallel": "train.config"}


def test_recipe_pickles_and_compares_by_its_sections(tmp_path):
    """datatrove pickles the recipe into every worker (and Slurm job): it must come back equal."""
    import pickle

    r = load_recipe(write(tmp_path, "[train]\nsteps = 5\n"), ["mix.budget=2B"])
    back = pickle.loads(pickle.dumps(r))
    assert back == r and back.train.steps == 5 and back.mix.budget == "2B" and back.path == r.path
    assert list(back.to_dict()) == ["run", "data", "curate", "mix", "model", "optim", "schedule", "eval", "train",
                                    "parallel"]
    assert load_recipe(write(tmp_path, "[train]\nsteps = 6\n")) != r


def test_a_recipe_without_registered_stages_says_where_sections_come_from(tmp_path, monkeypatch):
    import continua.recipe as recipe_module

    monkeypatch.setattr(recipe_module, "section_types", lambda: dict(recipe_module.BASE_SECTIONS))
    with pytest.raises(RecipeError, match=r"unknown section \[mix\] \(known sections: run, data\); no stage declared"):
        load_recipe(write(tmp_path, '[mix]\nbudget = "40%"\n'))


def test_replace_swaps_a_section_and_leaves_the_original_alone(tmp_path):
    import dataclasses

    from continua.recipe import recipe_from_dict

    recipe = recipe_from_dict({"train": {"steps": 3}}, base_dir=tmp_path)
    other = recipe.replace(train=dataclasses.replace(recipe.train, steps=7))
    assert (recipe.train.steps, other.train.steps) == (3, 7)
    assert other.mix == recipe.mix and other.path == recipe.path
    with pytest.raises(TypeError, match="no section"):
        recipe.replace(nosuch=1)
