"""Reports people read: score-run counts, classifier metrics, and `curate stats` (table + PNG + stats.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from continua.console import make_console
from continua.io import read_json, write_text
from continua.score_table import scan_scores, score_files, selection_path


def _console() -> Console:
    return make_console()


def heuristic_pass_rates(frame: pl.LazyFrame) -> dict[str, dict[str, Any]]:
    """Per heuristic group: share of documents passing, and the most common failure reason with its share."""
    schema = frame.collect_schema()
    groups = [c[len("heur_"):-len("_pass")] for c in schema if c.startswith("heur_") and c.endswith("_pass")]
    out: dict[str, dict[str, Any]] = {}
    for g in groups:
        col, reason = f"heur_{g}_pass", f"heur_{g}_reason"
        row = frame.select(pl.col(col).mean().alias("rate"), pl.len().alias("n")).collect().row(0, named=True)
        top = None
        if reason in schema:
            fails = (frame.filter(~pl.col(col)).group_by(reason).agg(pl.len().alias("n"))
                     .sort("n", descending=True).head(1).collect())
            if fails.height:
                top = {"reason": fails[reason][0], "share": fails["n"][0] / max(row["n"], 1)}
        out[g] = {"pass": row["rate"], "top_failure": top}
    return out


def format_pass_rates(rates: dict[str, dict[str, Any]], sep: str = "; ") -> str:
    """`gopher_quality 73.0% (fails most on gopher_short_doc: 12.0%)`, one group after another."""
    parts = []
    for g, r in rates.items():
        text = f"{g} {100 * (r['pass'] or 0):.1f}%"
        if r["top_failure"]:
            text += f" (most fail {r['top_failure']['reason']}: {100 * r['top_failure']['share']:.1f}%)"
        parts.append(text)
    return sep.join(parts) or "-"


def print_source_stats(stats: dict[str, dict[str, Any]], curate_dir: Path | None = None) -> None:
    """One summary per source after `curate score`: documents_in / scored / rejected (by reason) and the
    heuristics' pass rates; datatrove's full logs are in curate/SOURCE/logs/ (or on screen with -v)."""
    t = Table(title="curate score")
    for col in ("source", "documents_in", "scored", "rejected", "rejects by reason", "heuristics pass"):
        t.add_column(col, justify="right" if col in ("documents_in", "scored", "rejected") else "left")
    for source, s in stats.items():
        reasons = ", ".join(f"{k}: {v}" for k, v in s["rejected_by_reason"].items()) or "-"
        rates = "-"
        if curate_dir is not None and score_files(curate_dir, source):
            rates = format_pass_rates(heuristic_pass_rates(scan_scores(curate_dir, source)), sep="\n")
        t.add_row(source, f"{s['documents_in']:,}", f"{s['scored']:,}", f"{s['rejected']:,}", reasons, rates)
    _console().print(t)
    if curate_dir is not None:
        for source in stats:  # the real folders (datatrove keeps its task logs in LOGGING_DIR/logs/)
            folder = Path(curate_dir) / source / "logs" / "logs"
            n = len(list(folder.glob("task_*.log"))) if folder.is_dir() else 0
            if n:
                _console().print(f"{source}: datatrove's task logs in {folder}/ ({n} file{'s' if n != 1 else ''}; "
                                 "`curate score -v` shows them as they run)")


def print_classifier_metrics(metrics: dict[str, Any]) -> None:
    t = Table(title=f"held-out metrics: {metrics['model']}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("train pos / neg", f"{metrics['train']['positive']:,} / {metrics['train']['negative']:,}")
    t.add_row("valid pos / neg", f"{metrics['valid']['positive']:,} / {metrics['valid']['negative']:,}")
    held = metrics.get("held_out")
    q = None
    if held:
        for k in ("precision", "recall", "f1", "accuracy", "roc_auc"):
            t.add_row(k, f"{held[k]:.4f}")
        q = held.get("score_quantiles")
        if q:
            for cls in ("positive", "negative"):
                t.add_row(f"{cls} scores q10/q50/q90", " / ".join(f"{v:.3f}" for v in q[cls]))
    else:
        t.add_row("held out", "none (valid_fraction too small)")
    t.add_row("epochs", str(metrics["params"]["epochs"]))
    _console().print(t)
    _console().print("scores are fastText's P(positive label): rank by them (`curate select --top`, percentiles); "
                     "read them as probabilities only when the held-out quantiles above are spread out")
    if q and q["positive"][1] - q["negative"][1] < 0.1:
        _console().print("[yellow]warning:[/yellow] held-out scores bunch together (medians "
                         f"{q['positive'][1]:.3f} vs {q['negative'][1]:.3f}): an under-trained model; more --epochs "
                         "or a higher --lr spread them")


def score_columns(frame: pl.LazyFrame) -> list[str]:
    """Numeric score columns worth a histogram (fastText, perplexity and other float signals)."""
    schema = frame.collect_schema()
    skip = {"row", "n_chars", "dup_minhash_cluster"}
    return [c for c, dt in schema.items() if dt.is_float() and c not in skip]


def histogram_png(values: dict[str, list[float]], column: str, path: Path) -> None:
    """One PNG: the distribution of `column` for each source, overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for source, vals in values.items():
        if vals:
            ax.hist(vals, bins=50, alpha=0.5, label=f"{source} (n={len(vals):,})")
    ax.set_xlabel(column)
    ax.set_ylabel("documents")
    ax.set_title(f"{column} by source")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def source_summary(curate_dir: Path, source: str) -> dict[str, Any]:
    frame = scan_scores(curate_dir, source)
    agg = frame.select(pl.len().alias("documents"), pl.col("n_tokens").sum().alias("tokens"),
                       pl.col("n_chars").sum().alias("chars")).collect().row(0, named=True)
    stats_file = Path(curate_dir) / source / "stats.json"
    run_stats = read_json(stats_file) if stats_file.exists() else {}
    summary = {"source": source, **agg, "rejected": run_stats.get("rejected"),
               "rejected_by_reason": run_stats.get("rejected_by_reason", {}), "heuristics": heuristic_pass_rates(frame)}
    sel = selection_path(curate_dir, source)
    if sel.exists():
        by_reason = (pl.scan_parquet(sel).join(frame.select("doc_id", "n_tokens"), on="doc_id", how="left")
                     .group_by("kept", "reason").agg(pl.len().alias("documents"), pl.col("n_tokens").sum().alias("tokens"))
                     .sort("kept", "reason", descending=[True, False]).collect())
        summary["selection"] = by_reason.to_dicts()
    return summary


def run_stats(curate_dir: Path, sources: list[str]) -> dict[str, Any]:
    """Print and write curate/stats.md with per-source counts and one histogram PNG per score column."""
    curate_dir = Path(curate_dir)
    scored = [s for s in sources if score_files(curate_dir, s)]
    if not scored:
        raise FileNotFoundError(f"no score tables under {curate_dir}: run `curate score` first")
    summaries = {s: source_summary(curate_dir, s) for s in scored}
    columns: dict[str, dict[str, list[float]]] = {}
    for s in scored:
        frame = scan_scores(curate_dir, s)
        for c in score_columns(frame):
            columns.setdefault(c, {})[s] = frame.select(pl.col(c).drop_nulls()).collect().to_series().to_list()
    plots = {}
    for c, vals in columns.items():
        path = curate_dir / "plots" / f"hist_{c}.png"
        histogram_png(vals, c, path)
        plots[c] = path

    t = Table(title=f"curate stats: {curate_dir}")
    for col in ("source", "documents", "tokens", "rejected", "rejects by reason", "heuristics pass", "selection"):
        t.add_column(col)
    md = [f"# curate stats\n\nFolder: `{curate_dir}`\n",
          "| source | documents | tokens | rejected | rejects by reason | heuristics pass | selection |",
          "| --- | ---: | ---: | ---: | --- | --- | --- |"]
    for s, v in summaries.items():
        rej = ", ".join(f"{k}: {n}" for k, n in v["rejected_by_reason"].items()) or "-"
        sel = "; ".join(f"{'kept' if r['kept'] else 'dropped'} {r['reason']}: {r['documents']:,} docs, "
                        f"{(r['tokens'] or 0):,} tok" for r in v.get("selection", [])) or "-"
        row = [s, f"{v['documents']:,}", f"{(v['tokens'] or 0):,}", f"{v['rejected'] if v['rejected'] is not None else '-'}",
               rej, format_pass_rates(v["heuristics"]), sel]
        t.add_row(*row[:5], format_pass_rates(v["heuristics"], sep="\n"), row[6])
        md.append("| " + " | ".join(row) + " |")
    missing = [s for s in sources if s not in scored]
    if missing:
        md.append(f"\nNot scored yet: {', '.join(missing)}")
        _console().print(f"not scored yet: {', '.join(missing)}")
    if plots:
        md.append("\n## Score histograms\n")
        md.extend(f"![{c}](plots/{p.name})" for c, p in plots.items())
    _console().print(t)
    write_text(curate_dir / "stats.md", "\n".join(md) + "\n")
    return {"sources": summaries, "plots": {c: str(p) for c, p in plots.items()}}
