"""The embedded demo: raw text to a continually pre-trained checkpoint, with no download and no user data.

    continua demo [--out runs/demo]

1. builds three real corpora from this very install (workflow.demo_corpus): general English
   (docstrings and docs), domain code (Python source), reference code (the standard library);
2. trains a byte-level BPE tokenizer on them;
3. pre-trains a tiny Llama on the general text (recipes/demo/pretrain.toml): the "base model";
4. fits Guo et al.'s selector, a reference n-gram model of the standard library (80% of its
   files; the other 20% are held out), prints how well it ranks held-out standard-library code
   above the domain code (ROC AUC), scores the corpora, plans a 40% budget mixture of the
   lowest-perplexity quarter of the domain, prints what that quarter is made of, and builds shards
   (recipes/demo/cpt.toml); it also trains the fastText classifier some strategy recipes read;
5. continually pre-trains the base model into code, evaluating on both validation sets;
6. prints the headline: domain and general validation loss before and after, and where the
   report and checkpoint are.
Every step is one of the toolkit's own commands, printed before it runs, so the demo doubles as
the walkthrough of the three-step workflow. Re-running resumes: finished steps are skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from rich.table import Table

from workflow.demo_corpus import CorpusCaps, build_demo_corpora, train_demo_tokenizer
from continua.console import make_console
from continua.documents import iter_documents
from continua.io import atomic_open, read_json, write_json
from continua.recipe import SourceConfig

RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "demo"
console = make_console()


def run(cmd: list[str]) -> None:
    """Run one toolkit command as a user would type it; stop the demo if it fails."""
    shown = " ".join(shlex.quote(c) for c in cmd)
    console.print(f"\n[bold cyan]$ {shown}[/]")
    exe = {"curate": "curate.cli", "mix": "mix.cli", "train": "train.cli"}[cmd[0]]
    code = subprocess.call([sys.executable, "-c", f"import sys; from {exe} import main; sys.exit(main())", *cmd[1:]])
    if code != 0:  # the step's own code (75: interrupted, run the demo again to resume)
        print(f"continua demo: step ended with exit {code}: {shown}", file=sys.stderr)
        raise SystemExit(code)


EXPECTED_PLAN_WARNINGS = ("may be too small", "groups without a source")


def explain_plan_warnings(plan_file: Path) -> None:
    """Say which of `mix plan`'s warnings the demo expects (its corpora are small on purpose, and one general
    source stands for every replay group of LLaMA-1's mixture), so they do not read as a problem."""
    warnings = read_json(plan_file).get("warnings", []) if plan_file.is_file() else []
    expected = [w for w in warnings if any(key in w for key in EXPECTED_PLAN_WARNINGS)]
    if expected:
        console.print(f"[dim]demo: the {len(expected)} warning{'s' if len(expected) > 1 else ''} above "
                      f"({'; '.join(k for k in EXPECTED_PLAN_WARNINGS if any(k in w for w in expected))}) "
                      f"{'are' if len(expected) > 1 else 'is'} expected here: the demo's corpora are a few MB on purpose and one general source "
                      "stands for all replay groups. On your own data, read them.[/]")


def corpus_step(out: Path, caps: CorpusCaps) -> dict:
    data = out / "data"
    done = data / "corpora.json"
    if done.exists():
        return read_json(done)
    console.print("[bold]Building the demo corpora from the installed Python packages[/]")
    stats = build_demo_corpora(data, caps)
    write_json(done, stats)
    return stats


def tokenizer_step(out: Path, max_chars: int = 4_000_000) -> Path:
    folder = out / "tokenizer"
    if (folder / "tokenizer.json").exists():
        return folder
    console.print("[bold]Training the demo's byte-level BPE tokenizer (vocabulary 8192)[/]")

    def texts():
        budget = max_chars
        for name in ("general", "code"):
            share = budget // 2
            with open(out / "data" / f"{name}.jsonl", encoding="utf-8") as f:
                for line in f:
                    text = json.loads(line)["text"]
                    yield text
                    share -= len(text)
                    if share <= 0:
                        break

    return train_demo_tokenizer(texts(), folder)


def split_reference(out: Path, heldout_fraction: float = 0.2) -> tuple[Path, Path]:
    """stdlib.jsonl -> reference/stdlib_ref.jsonl (fits the selector) + stdlib_heldout.jsonl (measures it),
    by a hash of each document's id, so the split is the same on every re-run."""
    folder = out / "reference"
    ref, held = folder / "stdlib_ref.jsonl", folder / "stdlib_heldout.jsonl"
    if ref.exists() and held.exists():
        return ref, held
    folder.mkdir(parents=True, exist_ok=True)
    with open(out / "data" / "stdlib.jsonl", encoding="utf-8") as f, atomic_open(ref) as fr, atomic_open(held) as fh:
        for line in f:
            doc_id = json.loads(line)["id"]
            bucket = int(hashlib.sha1(doc_id.encode()).hexdigest()[:8], 16) / 16**8
            (fh if bucket < heldout_fraction else fr).write(line)
    return ref, held


def texts_of(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def selector_report(model_path: Path, heldout: Path, domain: Path, mix_folder: Path) -> dict:
    """The selector's ROC AUC (held-out reference vs domain) and the chosen subset's make-up by package."""
    import polars as pl

    from curate.ngram import NgramModel

    model = NgramModel.load(model_path)
    held, docs = texts_of(heldout), texts_of(domain)
    auc = model.ranking_auc([d["text"] for d in held], [d["text"] for d in docs])
    chosen = set(pl.read_parquet(mix_folder / "selection.parquet")
                 .filter((pl.col("source") == "code") & (pl.col("split") == "train"))["doc_id"].to_list())
    packages: dict[str, list[int]] = {}
    for rec in iter_documents("code", SourceConfig(paths=[domain])):  # the doc_ids the plan knows
        row = packages.setdefault(docs[rec.row].get("package", "?"), [0, 0])
        row[0 if rec.doc_id in chosen else 1] += 1
    return {"auc": auc, "heldout_docs": len(held), "domain_docs": len(docs), "selected_docs": len(chosen),
            "packages": sorted(packages.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))}


def print_selector(rep: dict) -> None:
    console.print(f"\n[bold]quality signal[/]: perplexity under the standard-library reference model; held-out "
                  f"standard-library files ({rep['heldout_docs']}) ranked above the domain's {rep['domain_docs']} "
                  f"files with ROC AUC [bold]{rep['auc']:.3f}[/] (0.5 = random)")
    table = Table(title=f"selected subset: {rep['selected_docs']} of {rep['domain_docs']} domain files, by package")
    for col in ("package", "selected", "left out"):
        table.add_column(col, justify="left" if col == "package" else "right")
    for pkg, (kept, rest) in rep["packages"][:12]:
        table.add_row(pkg, str(kept), str(rest))
    if len(rep["packages"]) > 12:
        more = rep["packages"][12:]
        table.add_row(f"{len(more)} more packages", str(sum(k for _, (k, _r) in more)), str(sum(r for _, (_k, r) in more)))
    console.print(table)


def sets(out: Path) -> list[str]:
    """Overrides that point a demo recipe at this demo's folder (the recipes default to runs/demo)."""
    return ["--set", f'data.tokenizer="{out / "tokenizer"}"',
            "--set", f'data.sources.general.paths=["{out / "data" / "general.jsonl"}"]']


def headline(run_dir: Path) -> dict[str, tuple[float, float]]:
    """First and last value of every validation loss of a run."""
    evals = [json.loads(line) for line in open(run_dir / "metrics.jsonl", encoding="utf-8")]
    evals = [e for e in evals if e.get("kind") == "eval"]
    first, last = evals[0]["metrics"], evals[-1]["metrics"]
    return {k: (first[k], last[k]) for k in first if k.startswith("loss/") and k in last}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="continua demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo folder (default: runs/demo)")
    ap.add_argument("--general-chars", type=int, default=CorpusCaps.general_chars)
    ap.add_argument("--code-chars", type=int, default=CorpusCaps.code_chars)
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="extra override for both training stages, e.g. train.steps=50")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    started = time.time()
    caps = CorpusCaps(general_chars=args.general_chars, code_chars=args.code_chars)
    stats = corpus_step(out, caps)
    for name, s in stats.items():
        console.print(f"  {name:8s} {s['documents']:6d} documents {s['characters']:>11,d} characters  {s['path']}")
    tokenizer_step(out)
    extra = [x for kv in args.extra for x in ("--set", kv)]

    # Stage 0: the base model, pre-trained on general text
    pre = RECIPES / "pretrain.toml"
    pre_sets = sets(out) + ["--set", f'run.out_dir="{out / "pretrain"}"'] + extra
    run(["curate", "score", str(pre), *pre_sets])
    run(["mix", "plan", str(pre), *pre_sets])
    explain_plan_warnings(out / "pretrain" / "mix" / "plan.json")
    run(["mix", "build", str(pre), *pre_sets])
    run(["train", "run", str(pre), *pre_sets])
    base = out / "pretrain" / "train" / "export"

    # Stage 1: continual pre-training into code, the three-step workflow
    classifier = out / "classifier" / "code_quality.bin"
    if not classifier.exists():
        run(["curate", "train-classifier", "--pos", str(out / "data" / "stdlib.jsonl"),
             "--neg", str(out / "data" / "code.jsonl"), "--balance", "--dim", "32", "--bucket", "200000",
             "--out", str(classifier)])
    reference = out / "reference" / "stdlib.ngram.npz"
    ref_docs, heldout = split_reference(out)
    if not reference.exists():
        run(["curate", "train-reference", "--ref", str(ref_docs), "--out", str(reference)])
    cpt = RECIPES / "cpt.toml"
    cpt_sets = sets(out) + [
        "--set", f'data.sources.code.paths=["{out / "data" / "code.jsonl"}"]',
        "--set", f'curate.ngram_references.ref="{reference}"',
        "--set", f'model.path="{base}"',
        "--set", f'run.out_dir="{out / "cpt"}"',
    ] + extra
    run(["curate", "score", str(cpt), *cpt_sets])
    run(["mix", "plan", str(cpt), *cpt_sets])
    explain_plan_warnings(out / "cpt" / "mix" / "plan.json")
    selector = selector_report(reference, heldout, out / "data" / "code.jsonl", out / "cpt" / "mix")
    write_json(out / "reference" / "selector.json", selector)
    print_selector(selector)
    run(["mix", "build", str(cpt), *cpt_sets])
    run(["train", "run", str(cpt), *cpt_sets])
    run(["train", "report", str(out / "pretrain" / "train"), str(out / "cpt" / "train"), "--out", str(out / "report")])

    table = Table(title="continua demo: validation loss (nats/token) of the base model before and after CPT")
    for col in ("evaluation set", "before CPT", "after CPT", "change"):
        table.add_column(col, justify="right" if col != "evaluation set" else "left")
    for name, (before, after) in headline(out / "cpt" / "train").items():
        table.add_row(name, f"{before:.3f}", f"{after:.3f}", f"{after - before:+.3f}")
    console.print(table)
    console.print(f"selector:   ROC AUC {selector['auc']:.3f} (held-out standard library vs domain code); "
                  f"kept {selector['selected_docs']} of {selector['domain_docs']} domain files")
    gap = out / "cpt" / "train" / "gap.json"
    console.print(f"report:     {out / 'report' / 'report.md'}")
    console.print(f"checkpoint: {out / 'cpt' / 'train' / 'export'} (transformers.AutoModelForCausalLM.from_pretrained)")
    if gap.exists():
        console.print(f"stability gap metrics: {gap}")
    console.print(f"demo finished in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
