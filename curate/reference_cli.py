"""`curate train-reference`: fit the reference n-gram model that `[curate] ngram_references` scores with.

Registered on the `curate` command by `add_commands(subparsers)`; the handler is stored as the
parser default `func` and returns the exit code. Also runnable alone:
`python -m curate.reference_cli train-reference --ref medical.jsonl --out med.ngram.npz`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterator

from continua.documents import InputError, Record, iter_source
from continua.recipe import SourceConfig
from curate.ngram import NgramError, train_ngram


def _texts(paths: list[Path], text_field: str, max_docs: int | None,
           rejects: dict[tuple[str, str], list[int]]) -> Iterator[str]:
    """Readable reference texts; unreadable items are tallied in `rejects[(reason, path)] = [count, first line]`."""
    cfg = SourceConfig(paths=paths, text_field=text_field)
    n = 0
    for item in iter_source("reference", cfg):
        if not isinstance(item, Record):
            rejects.setdefault((item.reason, item.path), [0, item.row + 1])[0] += 1
            continue
        if max_docs is not None and n >= max_docs:
            return
        n += 1
        yield item.text


def run_train_reference(args: argparse.Namespace) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from continua.console import make_console

    console = make_console(stderr=True)
    rejects: dict[tuple[str, str], list[int]] = {}
    if args.tokenizer is not None and args.min_count > 1:
        console.print("[red]error:[/red] --min-count applies to the built-in word tokenizer, not --tokenizer")
        return 2
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("reading reference", total=None)

            def progress(docs: int, tokens: int) -> None:
                bar.update(task, description=f"reading reference: {docs:,} documents, {tokens:,} tokens")

            model = train_ngram(_texts(args.ref, args.text_field, args.max_docs, rejects), order=args.order,
                                tokenizer=args.tokenizer, min_count=args.min_count, prune=args.prune,
                                progress=progress)
            bar.update(task, description="writing model")
            model.save(args.out)
    except (InputError, NgramError, OSError) as e:
        console.print(f"[red]error:[/red] {e}")
        return 2
    info = model.info
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB): order {model.order}, "
          f"{info['n_docs']:,} documents, {info['n_tokens']:,} tokens, vocabulary {model.encoder.n_symbols:,} "
          f"symbols ({model.encoder.kind})")
    for k, (types, d) in enumerate(zip(info["types"], info["discounts"]), start=1):
        print(f"  order {k}: {types:,} n-grams, discounts D1={d[0]} D2={d[1]} D3+={d[2]}")
    if rejects:
        print(f"skipped {sum(n for n, _ in rejects.values()):,} unreadable items: " +
              "; ".join(f"{n} x {why} in {path} (first at line {line})" for (why, path), (n, line) in rejects.items()))
    return 0


def run_export_arpa(args: argparse.Namespace) -> int:
    from curate.arpa import write_arpa
    from curate.ngram import NgramModel

    try:
        counts = write_arpa(NgramModel.load(args.model), args.out)
    except (NgramError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: " + ", ".join(f"{c:,} {k}-grams" for k, c in counts.items()))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    e = subparsers.add_parser(
        "export-arpa", help="write a reference model from `curate train-reference` as an ARPA file (KenLM, SRILM)",
        description="Write the model as ARPA: KenLM's build_binary turns it into a .binary, and "
                    "`[curate] ngram_references` accepts .arpa and .binary files (same perplexities).")
    e.add_argument("model", type=Path, help="model file from `curate train-reference` (.npz)")
    e.add_argument("out", type=Path, help="ARPA file to write")
    e.set_defaults(func=run_export_arpa)
    p = subparsers.add_parser(
        "train-reference", help="fit a reference n-gram LM for perplexity scoring (Guo et al. / CCNet)",
        description="Fit an interpolated modified Kneser-Ney n-gram model on high-quality reference text. "
                    "Score documents with it via `[curate] ngram_references = {NAME = \"MODEL\"}`: column "
                    "ppl_ngram_NAME, lower = closer to the reference.")
    p.add_argument("--ref", type=Path, nargs="+", required=True, metavar="FILE",
                   help="reference corpus: .jsonl[.gz], .parquet, folders of them, or a saved datasets folder")
    p.add_argument("--text-field", default="text", help="field holding the text (default: text)")
    p.add_argument("--out", type=Path, required=True, metavar="MODEL", help="model file to write (.npz)")
    p.add_argument("--order", type=int, default=4, choices=range(2, 7), metavar="N",
                   help="n-gram order, 2-6 (default 4; 3-5 is usual)")
    p.add_argument("--tokenizer", type=Path, default=None, metavar="PATH",
                   help="tokenizer.json or model folder (default: built-in normalizing word tokenizer)")
    p.add_argument("--min-count", type=int, default=1,
                   help="words seen fewer times become <unk> (built-in tokenizer only; default 1 keeps all)")
    p.add_argument("--prune", type=int, default=1, metavar="N",
                   help="drop n-grams of order >= 3 seen fewer than N times (N=2 removes singletons: a much "
                        "smaller model; their probability mass moves to backing off). Default 1 keeps all")
    p.add_argument("--max-docs", type=int, default=None, help="use only the first N readable documents")
    p.set_defaults(func=run_train_reference)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="curate", description=__doc__.splitlines()[0])
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
