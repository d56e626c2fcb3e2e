"""`mix build`: shards round-trip to the documents, totals match the plan, re-runs resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from mix_fixtures import build_world, write_recipe  # noqa: E402

from continua.documents import iter_documents  # noqa: E402
from continua.recipe import SourceConfig, load_recipe  # noqa: E402
from continua.tokenizer import load_tokenizer  # noqa: E402
from mix.build import build_recipe  # noqa: E402
from mix.cli import main  # noqa: E402
from mix.manifest import Manifest  # noqa: E402
from mix.planner import plan_recipe  # noqa: E402
from mix.shards import ShardSet  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    world = build_world(root, n_domain=1500, n_general=400)
    path = write_recipe(root / "r.toml", world["sources"], world["tok"],
                        mix={"budget": "40%", "top": "10%", "score": "fasttext_q", "preset": "llama1",
                             "shard_tokens": 3000, "valid_fraction": 0.05})
    recipe = load_recipe(path)
    plan_path, result = plan_recipe(recipe, log=lambda m: None)
    logs: list[str] = []
    manifest_path = build_recipe(recipe, log=logs.append)
    return {"world": world, "recipe": recipe, "path": path, "plan": result.plan, "plan_path": plan_path,
            "selection": result.selection, "manifest_path": manifest_path, "logs": logs}


def texts_by_id(world, name: str) -> dict[str, str]:
    return {r.doc_id: r.text for r in iter_documents(name, SourceConfig(paths=[world["files"][name]]))}


def test_manifest_matches_the_plan_and_token_totals_are_within_one_percent(built):
    m = Manifest.load(built["manifest_path"].parent)
    plan = built["plan"]
    assert set(m.sources) == set(plan["sources"])
    for name, s in plan["sources"].items():
        e = m.sources[name]
        assert (e.role, e.epochs, e.target_tokens, e.share, e.resample) == (
            s["role"], s["epochs"], s["target_tokens"], s["share"], s["resample"])
        assert e.train.docs == s["selected"]["docs"] and e.valid.docs == s["valid"]["docs"]
        assert e.train.tokens == pytest.approx(s["selected"]["tokens"], rel=0.01)
        assert e.valid.tokens == pytest.approx(s["valid"]["tokens"], rel=0.01)
        assert ShardSet.open(m.sources[name].train.shards and built["manifest_path"].parent / name / "train").num_tokens \
            == e.train.tokens
    total = sum(e.target_tokens for e in m.sources.values())
    assert total == pytest.approx(plan["budget"]["tokens"], rel=0.01)
    assert m.sources["domain"].target_tokens / total == pytest.approx(0.82, abs=0.005)
    assert m.plan["hash"].startswith("xxh3_128:") and m.tokenizer["eos_token"] == "</s>" and m.tokenizer["add_bos"] is True
    assert m.seed == 0 and not m.warnings
    assert {i["source"] for i in m.inputs} >= {"domain", "wiki"}
    assert all(i["hash"].startswith("xxh3_128:") and i["kind"] in ("scores", "source") for i in m.inputs)


def test_shards_round_trip_to_the_documents_with_bos_and_eos(built):
    world, out = built["world"], built["manifest_path"].parent
    tok = load_tokenizer(world["tok"])
    sel = built["selection"]
    for name in ("domain", "wiki"):
        texts = texts_by_id(world, name)
        for split in ("train", "valid"):
            shards = ShardSet.open(out / name / split)
            wanted = sel.filter((pl.col("source") == name) & (pl.col("split") == split))["doc_id"].to_list()
            expected = sorted("<s>" + texts[d] + "</s>" for d in wanted)
            got = [tok.decode(shards.doc(i).tolist()) for i in range(shards.num_docs)]
            assert sorted(got) == expected  # every planned document exactly once, nothing else
            assert all(shards.doc(i)[-1] == tok.eos_id and shards.doc(i)[0] == tok.bos_id for i in range(shards.num_docs))


def test_documents_are_shuffled_and_shards_respect_the_token_limit(built):
    out = built["manifest_path"].parent
    shards = ShardSet.open(out / "domain" / "train")
    assert len(shards.shards) > 1
    assert all(s.num_tokens <= 3000 for s in shards.shards)
    world = built["world"]
    order = {d: i for i, d in enumerate(texts_by_id(world, "domain"))}
    tok = load_tokenizer(world["tok"])
    by_text = {"<s>" + t + "</s>": order[d] for d, t in texts_by_id(world, "domain").items()}
    positions = [by_text[tok.decode(shards.doc(i).tolist())] for i in range(shards.num_docs)]
    assert positions != sorted(positions)  # not in file order


def test_rerun_skips_complete_sources_and_a_new_plan_rebuilds(built):
    recipe, out = built["recipe"], built["manifest_path"].parent
    shard = out / "wiki" / "train" / "00000.ds"
    before = shard.stat().st_mtime_ns
    logs: list[str] = []
    build_recipe(recipe, log=logs.append)
    assert sum("skipped" in m for m in logs) == len(built["plan"]["sources"])
    assert shard.stat().st_mtime_ns == before
    # an interrupted build leaves no half shard behind: remove one source's completion marker
    (out / "se" / "complete.json").unlink()
    logs.clear()
    build_recipe(recipe, log=logs.append)
    assert not any(m.startswith("se:") and "skipped" in m for m in logs)
    assert (out / "se" / "complete.json").exists()
    assert not list(out.rglob("*.tmp"))


def test_build_with_worker_processes_gives_the_same_shards(built, tmp_path):
    world = built["world"]
    path = write_recipe(world["root"] / "w.toml", world["sources"], world["tok"],
                        mix={"budget": "40%", "top": "10%", "score": "fasttext_q", "preset": "llama1",
                             "shard_tokens": 3000, "valid_fraction": 0.05, "out": str(tmp_path / "mix")})
    assert main(["plan", str(path)]) == 0
    assert main(["build", str(path), "--workers", "2"]) == 0
    a, b = built["manifest_path"].parent, tmp_path / "mix" / "shards"
    for name in built["plan"]["sources"]:
        for split in ("train", "valid"):
            x, y = ShardSet.open(a / name / split), ShardSet.open(b / name / split)
            assert x.num_docs == y.num_docs
            assert all(np.array_equal(x.doc(i), y.doc(i)) for i in range(x.num_docs))
    m = json.loads((b / "manifest.json").read_text())
    assert m["sources"]["domain"]["train"]["shards"][0] == "domain/train/00000.ds"


def test_build_without_a_plan_or_tokenizer_is_a_clear_error(built, tmp_path, capsys):
    world = built["world"]
    path = write_recipe(world["root"] / "np.toml", world["sources"], world["tok"], mix={"out": str(tmp_path / "none")})
    assert main(["build", str(path)]) == 2
    assert "run `mix plan` first" in capsys.readouterr().err


def test_changed_source_files_are_a_clear_error(built, tmp_path, capsys):
    world = built["world"]
    short = tmp_path / "wiki.jsonl"  # same name, so the ids of the first half still match
    lines = Path(world["files"]["wiki"]).read_text().splitlines()
    short.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    sources = dict(world["sources"], wiki=dict(world["sources"]["wiki"], paths=[str(short)]))
    path = write_recipe(world["root"] / "changed.toml", sources, world["tok"],
                        mix={"budget": "40%", "top": "10%", "score": "fasttext_q", "preset": "llama1",
                             "out": str(tmp_path / "mix")})
    assert main(["plan", str(path)]) == 0
    # the plan was made from the full table; the file now holds half the documents
    assert main(["build", str(path)]) == 1  # an input changed: a runtime failure, not a usage error
    assert "planned document(s) were not found" in capsys.readouterr().err


def test_a_shard_that_cannot_be_written_is_one_line_naming_it(tmp_path):
    import resource
    import subprocess

    w = build_world(tmp_path, n_domain=600, n_general=200, dup_groups=0)
    recipe = write_recipe(tmp_path / "r.toml", w["sources"], w["tok"], mix={"budget": "100%"})
    assert main(["plan", str(recipe)]) == 0

    def limit() -> None:  # files may not grow beyond 20 KB: what a full disk does to a write
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    run = subprocess.run([sys.executable, "-m", "mix", "build", str(recipe)], capture_output=True, text=True,
                         preexec_fn=limit, timeout=600)
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    shards = tmp_path / "out" / "mix" / "shards"
    assert len(errors) == 1 and errors[0].startswith(f"mix build: error: {shards}/") and \
        errors[0].endswith(".ds: File too large"), run.stderr[-2000:]
    assert main(["build", str(recipe)]) == 0  # with room again, the same command completes
    assert (shards / "manifest.json").exists()
