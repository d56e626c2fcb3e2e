"""The embedded demo: raw text to a continually pre-trained checkpoint, with no download and no user data.

    continua demo [--out runs/demo]

1. builds three real corpora from this very install (workflow.demo_corpus): general English
   (docstrings and docs), domain code (Python source), reference code (the standard library);
2. trains a byte-level BPE tokenizer on them;
3. pre-trains a tiny Llama on the general text (recipes/demo/pretrain.toml): the "base model";
4. trains a fastText quality classifier (standard library vs domain code), scores the corpora,
   plans a 40% budget mixture and builds shards (recipes/demo/cpt.toml);
5. continually pre-trains the base model into code, evaluating on both validation sets;
6. prints the headline: domain and general validation loss before and after, and where the
   report and checkpoint are.
Every step is one of the toolkit's own commands, printed before it runs, so the demo doubles as
the walkthrough of the three-step workflow. Re-running resumes: finished steps are skipped.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from workflow.demo_corpus import CorpusCaps, build_demo_corpora, train_demo_tokenizer
from continua.io import read_json, write_json

RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "demo"
console = Console()


def run(cmd: list[str]) -> None:
    """Run one toolkit command as a user would type it; stop the demo if it fails."""
    shown = " ".join(shlex.quote(c) for c in cmd)
    console.print(f"\n[bold cyan]$ {shown}[/]")
    exe = {"curate": "curate.cli", "mix": "mix.cli", "train": "train.cli"}[cmd[0]]
    code = subprocess.call([sys.executable, "-c", f"import sys; from {exe} import main; sys.exit(main())", *cmd[1:]])
    if code != 0:  # the step's own code (75: interrupted, run the demo again to resume)
        print(f"continua demo: step ended with exit {code}: {shown}", file=sys.stderr)
        raise SystemExit(code)


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
    run(["mix", "build", str(pre), *pre_sets])
    run(["train", "run", str(pre), *pre_sets])
    base = out / "pretrain" / "train" / "export"

    # Stage 1: continual pre-training into code, the three-step workflow
    classifier = out / "classifier" / "code_quality.bin"
    if not classifier.exists():
        run(["curate", "train-classifier", "--pos", str(out / "data" / "stdlib.jsonl"),
             "--neg", str(out / "data" / "code.jsonl"), "--balance", "--dim", "32", "--bucket", "200000",
             "--out", str(classifier)])
    cpt = RECIPES / "cpt.toml"
    cpt_sets = sets(out) + [
        "--set", f'data.sources.code.paths=["{out / "data" / "code.jsonl"}"]',
        "--set", f'curate.classifiers.code_quality="{classifier}"',
        "--set", f'model.path="{base}"',
        "--set", f'run.out_dir="{out / "cpt"}"',
    ] + extra
    run(["curate", "score", str(cpt), *cpt_sets])
    run(["mix", "plan", str(cpt), *cpt_sets])
    run(["mix", "build", str(cpt), *cpt_sets])
    run(["train", "run", str(cpt), *cpt_sets])
    run(["train", "report", str(out / "pretrain" / "train"), str(out / "cpt" / "train"), "--out", str(out / "report")])

    table = Table(title="continua demo: validation loss (nats/token) of the base model before and after CPT")
    for col in ("evaluation set", "before CPT", "after CPT", "change"):
        table.add_column(col, justify="right" if col != "evaluation set" else "left")
    for name, (before, after) in headline(out / "cpt" / "train").items():
        table.add_row(name, f"{before:.3f}", f"{after:.3f}", f"{after - before:+.3f}")
    console.print(table)
    gap = out / "cpt" / "train" / "gap.json"
    console.print(f"report:     {out / 'report' / 'report.md'}")
    console.print(f"checkpoint: {out / 'cpt' / 'train' / 'export'} (transformers.AutoModelForCausalLM.from_pretrained)")
    if gap.exists():
        console.print(f"stability gap metrics: {gap}")
    console.print(f"demo finished in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
