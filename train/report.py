"""Compare training runs: per-set curves with the stability gap marked, LR curves, and a Markdown table.

`train report RUN_DIR... [--out DIR]` reads each run's metrics.jsonl (and gap.json when present,
else computes it), so any finished or interrupted run can be compared without re-running anything.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from continua.io import atomic_path, read_json, write_text
from train.gap import direction, gap_metrics, read_metrics


@dataclass
class RunData:
    """What the report needs from one run dir."""

    name: str
    path: Path
    evals: list[dict]
    trains: list[dict]
    gap: dict = field(default_factory=dict)
    continues: "RunData | None" = None  # the run of this report whose export/checkpoint this one started from

    @property
    def final_step(self) -> int | None:
        steps = [r["step"] for r in self.trains + self.evals if "step" in r]
        return max(steps) if steps else None

    @property
    def tokens(self) -> int | None:
        toks = [r["tokens"] for r in self.trains + self.evals if isinstance(r.get("tokens"), (int, float))]
        return int(max(toks)) if toks else None

    @property
    def wall_s(self) -> float | None:
        times = [r["elapsed_s"] for r in self.trains if isinstance(r.get("elapsed_s"), (int, float))]
        return float(max(times)) if times else None


def _run_name(run_dir: Path) -> str:
    recipe = run_dir / "recipe.toml"
    if recipe.exists():
        try:
            name = tomllib.loads(recipe.read_text(encoding="utf-8")).get("run", {}).get("name")
            if isinstance(name, str) and name:
                return name
        except tomllib.TOMLDecodeError:
            pass
    return run_dir.name


def base_run_dir(run_dir: Path) -> Path | None:
    """The run folder whose `export/` or `checkpoints/step_N` this run's `[model] path` names, if any."""
    recipe = Path(run_dir) / "recipe.toml"
    try:
        path = tomllib.loads(recipe.read_text(encoding="utf-8")).get("model", {}).get("path")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if not isinstance(path, str) or not path:
        return None
    p = Path(path)
    p = p if p.is_absolute() else (Path(run_dir) / p)
    if p.name == "export":
        return p.parent.resolve()
    if p.parent.name == "checkpoints":
        return p.parent.parent.resolve()
    return None


def link_continuations(runs: list[RunData]) -> None:
    """Set `continues` on each run that started from another run of the same report (CPT after pre-training)."""
    by_dir = {r.path.resolve(): r for r in runs}
    for r in runs:
        base = base_run_dir(r.path)
        if base is not None and base in by_dir and by_dir[base] is not r:
            r.continues = by_dir[base]


def _offset(run: RunData, x: str, depth: int = 0) -> float:
    """Where a continuing run starts on its base's axis: the base's last step or token count (chained)."""
    base = run.continues
    if base is None or depth > 32:  # recipes that name each other's exports: no chain to follow
        return 0.0
    end = base.final_step if x == "step" else base.tokens
    return _offset(base, x, depth + 1) + float(end or 0)


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (is this a `train run` output folder?)")
    rows = read_metrics(metrics)
    evals = [r for r in rows if r.get("kind") == "eval"]
    trains = [r for r in rows if r.get("kind") == "train"]
    gap_file = run_dir / "gap.json"
    gap = read_json(gap_file) if gap_file.exists() else gap_metrics(evals)
    return RunData(_run_name(run_dir), run_dir, evals, trains, gap)


def _slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_tokens(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    h, rem = divmod(int(round(s)), 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    _plt().close(fig)
    return path


def _style(i: int, n: int) -> tuple:
    """(color, line style) of run i of n: the 10 default colors, or tab20 and then dash-dots beyond 10."""
    if n <= 10:
        return f"C{i}", "-"
    return _plt().get_cmap("tab20")(i % 20), "-" if i < 20 else "-."


def plot_set(runs: list[RunData], key: str, path: Path, x: str, log_x: bool = False) -> Path:
    """One evaluation set, every run: the curve, its start (dashed), worst (v) and recovery (o) points.

    `log_x` (symlog) spreads out the dense early evaluations where the gap happens. A run that continues
    another run of the report (CPT from a pre-training run's export) is drawn where that run ended, and
    again in a panel of its own, zoomed to its tokens, with its gap marked: a short CPT after a long
    pre-training would otherwise be a squiggle at the end of the axis.
    """
    plt = _plt()
    continuing = [r for r in runs if r.continues is not None and any(key in e["metrics"] for e in r.evals)
                  and any(key in e["metrics"] for e in r.continues.evals)]  # a set the base never saw: one panel
    if not continuing:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        _draw_set(ax, runs, runs, key, x, log_x, offsets=False)
        ax.set_title(f"{key}  (dashed: start; v: worst; o: back to start)")
    else:
        fig, (ax, zoom) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.2, 1]})
        _draw_set(ax, runs, runs, key, x, False, offsets=True, marks=False)
        for r in continuing:
            at = _offset(r, x)
            ax.axvline(at, color="0.4", ls=":", lw=1.2)
            ax.annotate(f"{r.name} starts", (at, 1.0), xycoords=("data", "axes fraction"), ha="right", va="top",
                        fontsize=8, rotation=90, color="0.3")
        ax.set_title(f"{key}: whole history")
        _draw_set(zoom, continuing, runs, key, x, log_x, offsets=False, label_gap=True)
        zoom.set_xlabel(("tokens" if x == "tokens" else "steps") + " since " +
                        ", ".join(sorted({r.continues.name for r in continuing})) + " ended")
        zoom.set_title("zoomed (dashed: start; v: worst; o: back to start)")
    fig.tight_layout()
    return _save(fig, path)


def _draw_set(ax, runs: list[RunData], all_runs: list[RunData], key: str, x: str, log_x: bool, offsets: bool,
              marks: bool = True, label_gap: bool = False) -> None:
    """Curves of `runs` on `ax` (colors by position in `all_runs`); `offsets` shifts continuing runs to where
    their base ended; `marks` draws the start line, worst and recovery points; `label_gap` writes the gap's
    depth beside the worst point."""
    names = {run.name for run in runs}
    for run in runs:
        i = all_runs.index(run)
        pts = sorted((r["step"], r.get("tokens"), r["metrics"][key]) for r in run.evals if key in r["metrics"])
        if not pts:
            continue
        shift = _offset(run, x) if offsets else 0.0
        color, ls = _style(i, len(all_runs))
        xs = [(p[0] if x == "step" else p[1]) + shift for p in pts]
        ax.plot(xs, [p[2] for p in pts], ls, color=color, lw=1.4, marker=".", ms=4, label=run.name)
        g = run.gap.get("sets", {}).get(key)
        if not g or not marks:
            continue
        ax.axhline(g["start"], color=color, ls="--", lw=0.8, alpha=0.8)
        for step_key, marker in (("worst_step", "v"), ("recovery_step", "o")):
            step = g.get(step_key)
            if step is None or (step_key == "worst_step" and not g.get("gap")):
                continue
            match = [p for p in pts if p[0] == step]
            if match:
                px = (match[0][0] if x == "step" else match[0][1]) + shift
                ax.plot([px], [match[0][2]], marker, color=color, ms=9, mfc="none", mew=1.6)
                if label_gap and step_key == "worst_step" and g.get("gap_depth") is not None:
                    ax.annotate(f"  gap {g['gap_depth']:.3f} at step {step}", (px, match[0][2]), fontsize=8,
                                color=color, va="center")
    if log_x:
        xs_all = [v for line in ax.get_lines() if line.get_label() in names for v in line.get_xdata() if v > 0]
        ax.set_xscale("symlog", linthresh=min(xs_all) if xs_all else 1.0)
        ax.set_xlim(left=0)  # step 0 sits at the left edge, the first evaluation one decade right
    ax.set_xlabel("training tokens" if x == "tokens" else "step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_lr(runs: list[RunData], path: Path) -> Path | None:
    """The learning rate each run actually used (from its train lines), one line per run."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    drawn = False
    for i, run in enumerate(runs):
        pts = sorted((r["step"], r["lr"]) for r in run.trains if isinstance(r.get("lr"), (int, float)))
        if pts:
            color, ls = _style(i, len(runs))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, color=color, lw=1.4, label=run.name)
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _final(run: RunData, key: str):
    g = run.gap.get("sets", {}).get(key)
    return g["final"] if g else None


def render(runs: list[RunData], keys: list[str], set_plots: dict[str, str], lr_plot: str | None,
           stage_plots: dict[str, str] | None = None) -> str:
    """The Markdown: an overview table (finals, tokens, wall time), one gap table per evaluation set, and for a
    run of several stages its stages (boundaries, ends, branches)."""
    lines = ["# Training report", "", "Runs: " + ", ".join(f"`{r.name}` ({r.path})" for r in runs), ""]
    head = ["run", "steps", "tokens", "wall time"] + [f"final {k}" for k in keys]
    lines += ["## Overview", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        cells = [r.name, _fmt(r.final_step), _fmt_tokens(r.tokens), _fmt_time(r.wall_s)]
        cells += [_fmt(_final(r, k)) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for key in keys:
        better = "lower" if direction(key) == "lower" else "higher"
        lines += [f"## {key} ({better} is better)", ""]
        lines += ["| run | start | worst (step) | gap depth | recovery step (tokens) | final | final change | outcome |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in runs:
            g = r.gap.get("sets", {}).get(key)
            if not g:
                lines.append(f"| {r.name} | - | - | - | - | - | - | not evaluated |")
                continue
            if not g["gap"]:
                recovery = "no gap"
            elif g["recovery_step"] is None:
                recovery = "not recovered"
            else:
                recovery = f"{g['recovery_step']} ({_fmt_tokens(g.get('recovery_tokens'))})"
            worst = "-" if g["worst"] is None else f"{_fmt(g['worst'])} ({g['worst_step']})"
            depth = _fmt(g["gap_depth"]) + (f" (noise {_fmt(g['noise'])})" if g.get("noise") else "")
            lines.append(f"| {r.name} | {_fmt(g['start'])} | {worst} | {depth} | {recovery} | "
                         f"{_fmt(g['final'])} | {g['final_change']:+.4f} | {g['outcome']} |")
        lines.append("")
        if key in set_plots:
            lines += [f"![{key}]({set_plots[key]})", ""]
    wc = [(r, r.gap.get("weight_change")) for r in runs if r.gap.get("weight_change")]
    if wc:
        lines += ["## Relative weight change, bottom / top layers", "",
                  "| run | first (step) | max (step) | final (step) |", "|---|---|---|---|"]
        for r, w in wc:
            lines.append(f"| {r.name} | {w['first']:.3f} ({w['first_step']}) | {w['max']:.3f} ({w['max_step']}) | "
                         f"{w['final']:.3f} ({w['final_step']}) |")
        lines.append("")
    lines += _stage_sections(runs, stage_plots or {})
    lines += ["## Learning rate", ""]
    lines += [f"![learning rate]({lr_plot})", ""] if lr_plot else ["No `lr` in the train lines of these runs.", ""]
    return "\n".join(lines)


def _stage_sections(runs: list[RunData], stage_plots: dict[str, str]) -> list[str]:
    """Per run of several stages: each curve from each stage's boundary to its end, and its branch's end."""
    lines = []
    for r in runs:
        stages = r.gap.get("stages")
        if not stages:
            continue
        lines += [f"## Stages of `{r.name}`", "", "| stage | set | boundary (step) | worst (step) | end (step) | "
                  "change | branch end |", "|---|---|---|---|---|---|---|"]
        for st in stages:
            branch = st.get("branch", {}).get("metrics", {})
            for key, g in st["sets"].items():
                worst = "-" if g["worst"] is None else f"{_fmt(g['worst'])} ({g['worst_step']})"
                lines.append(f"| {st['stage']} | {key} | {_fmt(g['start'])} ({g['start_step']}) | {worst} | "
                             f"{_fmt(g['final'])} ({g['final_step']}) | {g['final_change']:+.4f} | "
                             f"{_fmt(branch.get(key))} |")
        lines.append("")
        if r.name in stage_plots:
            lines += [f"![stages of {r.name}]({stage_plots[r.name]})", ""]
    return lines


def write_report(run_dirs: list[Path], out_dir: Path, x: str = "auto", log_x: bool = False,
                 labels: list[str] | None = None) -> Path:
    """Plots (one PNG per evaluation set, one for the LR) and report.md in `out_dir`; returns report.md.

    `labels` name the runs in legends and tables (default: each run's [run] name)."""
    if not run_dirs:
        raise ValueError("train report needs at least one run dir")
    runs = [load_run(Path(d)) for d in run_dirs]
    for r, label in zip(runs, labels or []):
        r.name = label
    seen: dict[str, int] = {}
    for r in runs:  # two runs with the same [run] name: tell them apart by folder
        seen[r.name] = seen.get(r.name, 0) + 1
    for r in runs:
        if seen[r.name] > 1:
            r.name = f"{r.name} ({r.path.parent.name}/{r.path.name})"
    link_continuations(runs)
    if x == "auto":
        has_tokens = all(isinstance(e.get("tokens"), (int, float)) for r in runs for e in r.evals)
        x = "tokens" if has_tokens else "step"
    keys = sorted({k for r in runs for k in r.gap.get("sets", {})}, key=lambda k: (direction(k) != "lower", k))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_plots = {}
    for key in keys:
        name = f"eval_{_slug(key)}.png"
        plot_set(runs, key, out_dir / name, x, log_x)
        set_plots[key] = name
    lr_path = plot_lr(runs, out_dir / "lr.png")
    stage_plots = {}
    for r in runs:
        if r.gap.get("stages") and (r.path / "stages.json").is_file():
            from train.stagereport import plot_stages

            stage_plots[r.name] = plot_stages(r.path, out_dir / f"stages_{_slug(r.name)}.png").name
    text = render(runs, keys, set_plots, lr_path.name if lr_path else None, stage_plots)
    report = out_dir / "report.md"
    write_text(report, text)
    return report


def print_report(report: Path) -> None:
    """report.md's tables in the terminal (rich Markdown; the plot images are left to the file)."""
    from rich.markdown import Markdown

    from continua.console import make_console
    from continua.progress import is_terminal

    text = report.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("![")]
    if not is_terminal(sys.stdout):  # a log: the Markdown itself is the most readable form, never clipped
        print("\n".join(lines), flush=True)
        return
    make_console().print(Markdown("\n".join(lines)))
