"""The demo: its corpora come from continua's own base install only (what else is installed changes
nothing), and the warnings its small setup is known to raise are said to be expected."""

from __future__ import annotations

import json

from workflow.demo_corpus import CorpusCaps, base_install_packages, build_demo_corpora

SOURCE = '"""{doc}"""\n\n\ndef f{i}(x):\n    """{doc} This function returns its argument plus {i}, for the test corpus."""\n    return x + {i}\n'


def fake_site(root, packages: list[str], files: int = 6):
    for pkg in packages:
        for i in range(files):
            doc = f"The {pkg} package module number {i} explains how {pkg} works in plain English words. " * 5
            path = root / pkg / f"mod{i}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(SOURCE.format(doc=doc, i=i) + "# padding line of code\n" * 20)
    return root


def test_the_corpora_ignore_packages_outside_the_base_install(tmp_path):
    caps = CorpusCaps(general_chars=20_000, code_chars=20_000, reference_chars=50_000, per_package_fraction=0.6)
    stdlib = fake_site(tmp_path / "stdlib", ["json", "email"])
    site = fake_site(tmp_path / "site", ["numpy", "torch"])
    before = build_demo_corpora(tmp_path / "a", caps, site, stdlib, packages={"numpy", "torch"})
    fake_site(site, ["zzz_extra", "aaa_notebook"])  # installed later: test extras, a notebook, ...
    after = build_demo_corpora(tmp_path / "b", caps, site, stdlib, packages={"numpy", "torch"})
    for name in ("general", "code"):
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
        assert before[name]["documents"] == after[name]["documents"] > 0
    every = build_demo_corpora(tmp_path / "c", caps, site, stdlib, packages=None)
    seen = {json.loads(x)["package"] for x in (tmp_path / "c" / "code.jsonl").read_text().splitlines()}
    assert {"zzz_extra", "aaa_notebook"} & seen  # without the filter they would have changed the corpus
    assert every["code"]["documents"] >= before["code"]["documents"]


def test_base_install_is_continuas_requirements_followed_recursively():
    base = base_install_packages()
    assert base is not None
    assert {"torch", "numpy", "datatrove", "transformers", "gguf", "polars"} <= base
    assert "huggingface_hub" in base  # a requirement of a requirement
    assert not {"pytest", "ray", "spacy", "lm_eval"} & base  # the test extras are not the base install


def test_the_demo_says_which_plan_warnings_it_expects(tmp_path, capsys):
    from workflow.demo import explain_plan_warnings

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"warnings": [
        "domain subset of 35 documents / 30,000 tokens may be too small to be representative (...)",
        "preset 'llama1' groups without a source: Books (4.5%); their share is redistributed proportionally"]}))
    explain_plan_warnings(plan)
    out = " ".join(capsys.readouterr().out.split())
    assert "the 2 warnings above (may be too small; groups without a source) are expected here" in out
    plan.write_text(json.dumps({"warnings": ["domain subset is repeated 9.00 times (> 4)"]}))
    explain_plan_warnings(plan)  # a warning the demo does not expect is left to speak for itself
    explain_plan_warnings(tmp_path / "missing.json")
    assert capsys.readouterr().out == ""
