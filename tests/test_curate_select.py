"""`curate select`, duplicate marks, `curate stats` and cluster executors (built, never submitted)."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from continua.recipe import load_recipe
from continua.score_table import scan_scores, selection_path
from curate.cli import main
from curate.select import SelectSpec, decide, parse_fraction, parse_tokens
from helpers_curate import make_tokenizer, styled_texts, train_tiny_classifier, write_jsonl, write_recipe


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A scored source with 3 exact copies and 1 near-copy, fastText + token counts, dedup on."""
    tmp = tmp_path_factory.mktemp("sel")
    tok = make_tokenizer(tmp / "tok")
    model = train_tiny_classifier(tmp)
    texts = styled_texts("med", 30, 4) + styled_texts("gen", 30, 4)
    near = texts[3].replace(" the ", " a ", 1)
    assert near != texts[3]
    data = write_jsonl(tmp / "d.jsonl", texts + [texts[0], texts[0], texts[40], near])
    recipe = write_recipe(tmp / "r.toml", {"d": [data]}, tok, {"style": model}, [])
    text = recipe.read_text().replace("[curate]\n", '[curate]\ndedup = ["exact", "minhash"]\n')
    recipe.write_text(text)
    assert main(["score", str(recipe), "--tasks", "2"]) == 0
    return {"recipe": recipe, "curate": tmp / "out" / "curate", "texts": texts}


def test_duplicate_marks(scored):
    df = scan_scores(scored["curate"], "d").collect().sort("row")
    assert df.height == 64
    assert df.filter(pl.col("dup_exact"))["row"].to_list() == [60, 61, 62]
    clusters = df.filter(pl.col("dup_minhash_cluster").is_not_null())
    # copies of row 0, of row 40 and the near-copy of row 3 are clustered with their originals
    groups = sorted(sorted(g) for g in clusters.group_by("dup_minhash_cluster").agg("row")["row"].to_list())
    assert groups == [[0, 60, 61], [3, 63], [40, 62]]
    # the first in input order keeps: never a document dropped as an exact copy
    assert clusters.filter(pl.col("dup_minhash_keep"))["row"].sort().to_list() == [0, 3, 40]
    assert not df.filter(pl.col("dup_exact") & pl.col("dup_minhash_keep") & pl.col("dup_minhash_cluster").is_not_null()).height


def test_select_top_fraction_drops_duplicates_first(scored, capsys):
    assert main(["select", str(scored["recipe"]), "--source", "d", "--by", "fasttext_style", "--top", "50%"]) == 0
    sel = pl.read_parquet(selection_path(scored["curate"], "d"))
    assert sel.columns == ["doc_id", "kept", "reason", "score"]
    assert sel.height == 64
    reasons = dict(sel.group_by("reason").len().iter_rows())
    assert reasons["duplicate_exact"] == 3 and reasons["duplicate_minhash"] == 1
    assert reasons["kept"] == 30 and reasons["below_top_50%"] == 30  # ceil(0.5 * 60 unique)
    kept = sel.filter(pl.col("kept"))
    assert kept["score"].min() >= sel.filter(pl.col("reason") == "below_top_50%")["score"].max()
    assert "total kept" in capsys.readouterr().out


def test_select_token_target_and_range_and_formula(scored):
    frame = scan_scores(scored["curate"], "d")
    total_unique = frame.filter(~pl.col("dup_exact") & pl.col("dup_minhash_keep")).select(pl.col("n_tokens").sum()).collect().item()
    target = total_unique // 3
    d = decide(frame, SelectSpec(by="fasttext_style", tokens=target))
    kept_tokens = d.filter(pl.col("kept"))["n_tokens"].sum()
    assert target - 200 < kept_tokens <= target  # never over; short by less than one document
    d = decide(frame, SelectSpec(by="fasttext_style", min=0.5, drop_duplicates=False))
    assert (d.filter(pl.col("kept"))["score"] >= 0.5).all()
    assert set(d.filter(~pl.col("kept"))["reason"]) <= {"below_min_0.5"}
    # formula: lower is better with --ascending; same ranking as the negated column
    a = decide(frame, SelectSpec(by="1 - fasttext_style", top=0.25, ascending=True))
    b = decide(frame, SelectSpec(by="fasttext_style", top=0.25))
    assert a.filter(pl.col("kept"))["doc_id"].sort().to_list() == b.filter(pl.col("kept"))["doc_id"].sort().to_list()
    p = decide(frame, SelectSpec(by="fasttext_style", min_percentile=75, drop_duplicates=False))
    assert abs(p["kept"].sum() - 16) <= 1


def test_select_errors_name_the_problem(scored):
    with pytest.raises(ValueError, match=r"--by '0.5\*fasttext_style \+ ppl_x': no score column 'ppl_x'"):
        decide(scan_scores(scored["curate"], "d"), SelectSpec(by="0.5*fasttext_style + ppl_x", top=0.1))
    with pytest.raises(ValueError, match="--by .*only numbers"):
        decide(scan_scores(scored["curate"], "d"), SelectSpec(by="__import__('os')", top=0.1))
    with pytest.raises(ValueError, match="choose one"):
        SelectSpec(by="fasttext_style", top=0.1, tokens=5).mode()
    assert parse_tokens("5B") == 5_000_000_000 and parse_tokens("300M") == 300_000_000 and parse_tokens("20k") == 20_000
    assert parse_fraction("10%") == pytest.approx(0.1) and parse_fraction("0.25") == 0.25
    with pytest.raises(ValueError):
        parse_fraction("150%")


def test_stats_writes_markdown_and_histograms(scored, capsys):
    assert main(["select", str(scored["recipe"]), "--source", "d", "--by", "fasttext_style", "--top", "10%"]) == 0
    assert main(["stats", str(scored["recipe"])]) == 0
    md = (scored["curate"] / "stats.md").read_text()
    assert "| d | 64 |" in md and "dropped duplicate_exact: 3 docs" in md and "kept kept: 6 docs" in md
    png = scored["curate"] / "plots" / "hist_fasttext_style.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
    assert "curate stats" in capsys.readouterr().out


def test_slurm_and_ray_executors_are_built_not_submitted(tmp_path):
    from datatrove.executor import RayPipelineExecutor, SlurmPipelineExecutor

    from curate.pipeline import build_executor, build_steps

    data = write_jsonl(tmp_path / "d.jsonl", styled_texts("gen", 3, 0))
    recipe_file = write_recipe(tmp_path / "r.toml", {"d": [data]}, None, None, ["c4"])
    recipe_file.write_text(recipe_file.read_text() + '\n[curate.slurm]\npartition = "cpu"\ntime = "02:00:00"\n'
                           'cpus_per_task = 4\nqos = "high"\nsbatch_args = { account = "proj" }\n'
                           '[curate.ray]\ncpus_per_task = 2\nmem_per_cpu_gb = 3\n')
    recipe = load_recipe(recipe_file, ["curate.executor=slurm"])
    steps = build_steps(recipe, "d", tmp_path / "c" / "d", show_progress=False)
    ex = build_executor(recipe, steps, tmp_path / "logs", tasks=16, workers=4, job_name="curate-d")
    assert isinstance(ex, SlurmPipelineExecutor)
    assert (ex.partition, ex.time, ex.cpus_per_task, ex.qos, ex.tasks, ex.workers, ex.job_name) == \
        ("cpu", "02:00:00", 4, "high", 16, 4, "curate-d")
    assert ex._sbatch_args == {"account": "proj"} and ex.job_id is None  # nothing submitted
    recipe = load_recipe(recipe_file, ["curate.executor=ray"])
    ex = build_executor(recipe, steps, tmp_path / "logs", tasks=8, workers=2)
    assert isinstance(ex, RayPipelineExecutor)
    assert (ex.cpus_per_task, ex.mem_per_cpu_gb, ex.tasks, ex.workers) == (2, 3, 8, 2)
    with pytest.raises(Exception, match="partition"):
        build_executor(load_recipe(write_recipe(tmp_path / "s.toml", {"d": [data]}, None), ["curate.executor=slurm"]),
                       steps, tmp_path / "logs", 1, 1)


def test_bucket_selection_uses_ccnet_buckets(scored):
    rc = main(["select", str(scored["recipe"]), "--source", "d", "--set", "curate.buckets={fasttext_style=[30,60]}",
               "--bucket", "fasttext_style=head", "--keep-duplicates"])
    assert rc == 0
    sel = pl.read_parquet(selection_path(scored["curate"], "d"))
    assert abs(sel["kept"].sum() - 0.3 * 64) <= 2  # best 30% by fastText score (higher is better)
    assert set(sel.filter(~pl.col("kept"))["reason"]) == {"bucket_fasttext_style_not_head"}
    assert main(["select", str(scored["recipe"]), "--source", "d", "--bucket", "fasttext_style=head"]) == 2


def test_reference_perplexity_column_through_score(tmp_path):
    from curate.ngram import train_ngram

    ref = tmp_path / "ref.npz"
    train_ngram(styled_texts("med", 80, 11), order=3).save(ref)
    data = write_jsonl(tmp_path / "d.jsonl", styled_texts("med", 10, 12) + styled_texts("gen", 10, 12))
    recipe = write_recipe(tmp_path / "r.toml", {"d": [data]}, None, None, [])
    recipe.write_text(recipe.read_text() + f'[curate.ngram_references]\nmed = "{ref}"\n')
    assert main(["score", str(recipe), "--tasks", "2"]) == 0
    df = scan_scores(tmp_path / "out" / "curate", "d").collect().sort("row")
    ppl = df["ppl_ngram_med"].to_list()
    assert all(math.isfinite(p) for p in ppl)
    assert max(ppl[:10]) < min(ppl[10:])  # in-domain text is less perplexing to the reference model
