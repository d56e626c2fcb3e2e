"""`curate`: score every document of a recipe's sources, train quality classifiers, select, report."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from continua.exitcodes import run_command
from continua.recipe import RecipeError, add_recipe_arguments, load_recipe
from continua.version import add_version_argument

DESCRIPTION = """\
Score documents for quality, then select by score. Subcommands:

  score             run the datatrove scoring pipeline over every [data.sources] entry and write
                    curate/SOURCE/scores/*.parquet (one row per document, nothing dropped), rejects
                    and stats.json; a re-run scores only pieces not scored yet (interrupted, or of
                    files added or edited since) and redoes dedup and stats; runs on the local
                    executor, a Ray cluster, or as dependent Slurm jobs ([curate] executor)
  train-classifier  train a DCLM-style bigram fastText classifier (positive vs negative examples)
                    and report held-out precision/recall/F1/ROC AUC (MODEL.metrics.json)
  select            keep documents by a score column or formula: threshold, top fraction or token
                    target, after removing marked duplicates; writes curate/SOURCE/selection.parquet
  stats             per-source counts, tokens, rejects, selection and score histograms (stats.md, PNG)
  train-reference   fit a reference n-gram LM for perplexity scoring ([curate] ngram_references)
  export-arpa       write such a model as an ARPA file (KenLM, SRILM; same perplexities)
"""


def _add_recipe(p: argparse.ArgumentParser) -> None:
    add_recipe_arguments(p, "curate.tasks=8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("score", help="score every document of the recipe's sources (resumable)",
                       description="Run reader -> token count -> fastText -> perplexity -> heuristics -> "
                       "score table for each source with datatrove. Scoring never drops a document: "
                       "unreadable items are written to curate/SOURCE/rejects/ and counted in stats.json. "
                       "A re-run scores only the pieces not scored yet: those of an interrupted run and of files added or "
                       "edited since; removed files are dropped; dedup and stats are made again over all.")
    _add_recipe(p)
    p.add_argument("--source", action="append", default=None, help="score only this source (repeatable)")
    p.add_argument("--tasks", type=int, default=None,
                   help="datatrove tasks per source (default: [curate] tasks; 0 = one per available core)")
    p.add_argument("--workers", type=int, default=None,
                   help="tasks run at once (default: [curate] workers; 0 = the available cores)")
    p.add_argument("--restart", action="store_true",
                   help="delete existing outputs of the scored sources and start afresh")
    p.add_argument("--out", type=Path, default=None, help="curate folder (default: [curate] out or OUT_DIR/curate)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show datatrove's full task logs in the terminal (always in curate/SOURCE/logs/logs/)")
    p.add_argument("--dry-run", type=Path, default=None, metavar="FOLDER",
                   help="executor = slurm: write the sbatch scripts and a submit.sh to FOLDER/SOURCE, submit nothing")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("train-classifier", help="train a bigram fastText quality classifier",
                       description="Train a supervised fastText classifier (__label__hq vs __label__lq) from "
                       "positive/negative example files (--pos/--neg, JSONL/Parquet/datasets), or from two "
                       "recipe sources (--pos-source/--neg-source with --recipe; negatives sampled to balance). "
                       "A held-out fraction measures precision, recall, F1 and ROC AUC.")
    p.add_argument("--pos", nargs="+", type=Path, default=[], help="files of positive (high-quality) examples")
    p.add_argument("--neg", nargs="+", type=Path, default=[], help="files of negative examples")
    p.add_argument("--recipe", type=Path, default=None, help="recipe whose sources --pos-source/--neg-source name")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="recipe override (with --recipe)")
    p.add_argument("--pos-source", default=None, help="recipe source used as positives")
    p.add_argument("--neg-source", default=None, help="recipe source used as negatives")
    p.add_argument("--out", type=Path, required=True, help="model file to write (e.g. quality.bin)")
    p.add_argument("--text-field", default="text", help="text field of --pos/--neg files (default: text)")
    p.add_argument("--max-per-class", type=int, default=None, help="use at most this many examples per class")
    p.add_argument("--balance", action="store_true",
                   help="sample the larger class down to the smaller (always on with --neg-source)")
    p.add_argument("--epochs", type=int, default=0,
                   help="0 (default) = auto: enough to see 30,000 examples, 5 to 100 (too few leave every score ~0.5)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--word-ngrams", type=int, default=2)
    p.add_argument("--dim", type=int, default=32, help="embedding size (default 32)")
    p.add_argument("--bucket", type=int, default=200_000,
                   help="hashed n-gram rows; the model file is about bucket x dim x 4 bytes (default 200k: ~25 MB; "
                        "2M x 100 gave 820 MB at the same held-out AUC)")
    p.add_argument("--min-count", type=int, default=1)
    p.add_argument("--valid-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="fastText threads (default: all cores; 1 is deterministic)")
    p.set_defaults(func=cmd_train_classifier)

    p = sub.add_parser("select", help="keep documents by score: threshold, top fraction or token target",
                       description="Read curate/SOURCE/scores lazily, drop marked duplicates (dup_exact, "
                       "dup_minhash_keep), then keep documents by --min/--max on a column or formula, the "
                       "--top fraction (e.g. 10%%) or the best documents up to --tokens (e.g. 5B). Writes "
                       "curate/SOURCE/selection.parquet (doc_id, kept, reason).")
    _add_recipe(p)
    p.add_argument("--source", required=True, help="source to select from")
    p.add_argument("--by", default=None,
                   help="score column or formula, e.g. fasttext_q or '0.7*fasttext_q+0.3*ppl_x' (higher is better)")
    p.add_argument("--top", default=None, help="keep this fraction of documents, e.g. 10%% or 0.1")
    p.add_argument("--tokens", default=None, help="keep the best documents up to this many tokens, e.g. 5B, 300M")
    p.add_argument("--min", type=float, default=None, help="keep documents with score >= this")
    p.add_argument("--max", type=float, default=None, help="keep documents with score <= this")
    p.add_argument("--min-percentile", type=float, default=None, help="keep documents at or above this percentile (0-100)")
    p.add_argument("--ascending", action="store_true", help="lower scores are better (e.g. perplexity)")
    p.add_argument("--keep-duplicates", action="store_true", help="do not drop documents marked as duplicates")
    p.add_argument("--bucket", action="append", default=[], metavar="COLUMN=head[,middle]",
                   help="keep only these CCNet buckets of a [curate] buckets column, e.g. ppl_ngram_med=head")
    p.add_argument("--out", type=Path, default=None, help="curate folder (default from the recipe)")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("stats", help="report counts, tokens, rejects, selection and score histograms",
                       description="Per source: documents, tokens, rejects by reason, kept/dropped by reason "
                       "(when `curate select` ran) and a PNG histogram per score column; printed as a table "
                       "and written to curate/stats.md.")
    _add_recipe(p)
    p.add_argument("--out", type=Path, default=None, help="curate folder (default from the recipe)")
    p.set_defaults(func=cmd_stats)

    from curate.reference_cli import add_commands

    add_commands(sub)
    return parser


def _curate_dir(recipe, out: Path | None) -> Path:
    from continua.layout import curate_dir

    return Path(out) if out else curate_dir(recipe)


def cmd_score(args: argparse.Namespace) -> int:
    from continua.console import make_console
    from continua.exitcodes import FAILED, INTERRUPTED
    from continua.lock import LockHeld
    from continua.procs import Interrupted, stop_workers_on_signal
    from curate.executors import StageFailed
    from curate.pipeline import run_source
    from curate.slurm import SharedFolderError
    from curate.stats import print_source_stats

    recipe = load_recipe(args.recipe, args.overrides)
    cdir = _curate_dir(recipe, args.out)
    sources = args.source or list(recipe.data.sources)
    if not sources:
        raise RecipeError(f"{args.recipe}: no [data.sources] to score")
    if (args.tasks or 0) < 0 or (args.workers or 0) < 0:
        raise RecipeError("--tasks and --workers must be at least 1")
    from curate.cores import parallelism

    tasks, workers = parallelism(recipe.curate, args.tasks, args.workers)
    console = make_console(stderr=True)
    if recipe.data.tokenizer is None:
        console.print("[yellow]warning:[/yellow] no [data] tokenizer in the recipe: n_tokens stays empty, "
                      "and `mix` and `curate select --tokens` need it")
    results = {}
    try:
        with stop_workers_on_signal():
            for source in sources:
                console.print(f"[bold]curate score[/bold] {source}: {tasks} task(s), {workers} worker(s), "
                              f"{recipe.curate.executor} executor -> {cdir / source}")
                t0 = time.perf_counter()
                results[source] = run_source(recipe, source, cdir, tasks, min(workers, tasks), restart=args.restart,
                                             dry_run=args.dry_run, verbose=args.verbose)
                if results[source].stats is not None:
                    r = results[source].stats
                    console.print(f"  {source}: {r['scored']:,} scored, {r['rejected']:,} rejected in "
                                  f"{time.perf_counter() - t0:.1f} s (logs: {cdir / source / 'logs'}); "
                                  f"{len(results[source].scored_pieces)} of {r['pieces']} piece(s) read this run, "
                                  f"the others kept")
    except (LockHeld, StageFailed, SharedFolderError) as e:
        print(f"curate score: error: {e}", file=sys.stderr)
        return FAILED
    except Interrupted as e:
        print(f"curate score: interrupted ({e}); finished pieces are kept: run the same command again to resume",
              file=sys.stderr)
        return INTERRUPTED
    done = {k: r.stats for k, r in results.items() if r.stats is not None}
    if done:
        print_source_stats(done, cdir)
    for source, r in results.items():
        for sub in r.submissions:
            where = f"{args.dry_run / source / sub.script}" if args.dry_run else f"job {sub.job_id}"
            console.print(f"{source}: {sub.job_name} -> {where}")
        if r.submissions and args.dry_run:
            console.print(f"{source}: nothing submitted (--dry-run); submit with {args.dry_run / source / 'submit.sh'}")
        elif r.stats is None:
            console.print(f"{source}: {len(r.submissions)} Slurm job(s) submitted (each waits for the one before); "
                          f"stats.json and dedup.parquet appear when the last one finishes")
    return 0


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from curate.classifier import TrainParams, read_texts, sample, train_classifier
    from curate.stats import print_classifier_metrics

    params = TrainParams(epochs=args.epochs, lr=args.lr, word_ngrams=args.word_ngrams, dim=args.dim, bucket=args.bucket,
                         min_count=args.min_count, valid_fraction=args.valid_fraction, seed=args.seed)
    if args.threads:
        params.threads = args.threads
    balance = args.balance
    if args.pos_source or args.neg_source:
        if not (args.recipe and args.pos_source and args.neg_source):
            raise RecipeError("--pos-source and --neg-source go together, with --recipe RECIPE")
        from continua.documents import iter_documents

        recipe = load_recipe(args.recipe, args.overrides)
        for name in (args.pos_source, args.neg_source):
            if name not in recipe.data.sources:
                raise RecipeError(f"{args.recipe}: no source '{name}' (known: {', '.join(recipe.data.sources)})")
        pos = [r.text for r in iter_documents(args.pos_source, recipe.data.sources[args.pos_source])]
        neg = [r.text for r in iter_documents(args.neg_source, recipe.data.sources[args.neg_source])]
        balance = True
    else:
        if not args.pos or not args.neg:
            raise RecipeError("give --pos FILE... and --neg FILE..., or --recipe with --pos-source/--neg-source")
        pos = read_texts(args.pos, args.text_field)
        neg = read_texts(args.neg, args.text_field)
    if args.max_per_class:
        pos, neg = sample(pos, args.max_per_class, args.seed), sample(neg, args.max_per_class, args.seed + 1)
    if balance:
        n = min(len(pos), len(neg))
        pos, neg = sample(pos, n, args.seed), sample(neg, n, args.seed + 1)
    metrics = train_classifier(pos, neg, args.out, params)
    print_classifier_metrics(metrics)
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from curate.select import SelectSpec, parse_bucket, parse_fraction, parse_tokens, run_select

    recipe = load_recipe(args.recipe, args.overrides)
    spec = SelectSpec(by=args.by, top=parse_fraction(args.top) if args.top else None,
                      tokens=parse_tokens(args.tokens) if args.tokens else None, min=args.min, max=args.max,
                      min_percentile=args.min_percentile, ascending=args.ascending,
                      drop_duplicates=not args.keep_duplicates, keep_buckets=parse_bucket(args.bucket))
    run_select(_curate_dir(recipe, args.out), args.source, spec, buckets=getattr(recipe.curate, "buckets", None))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from curate.stats import run_stats

    recipe = load_recipe(args.recipe, args.overrides)
    run_stats(_curate_dir(recipe, args.out), list(recipe.data.sources))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(f"curate {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
