"""What a plan looks like to a person: a rich table per source and a PNG of the mixture."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from continua.console import make_console
from mix.budget import human_tokens
from mix.planfile import read_plan


def load_plan(path: str | Path) -> tuple[dict, Path]:
    """A plan.json, or a folder holding one (the mix folder), its shape checked."""
    path = Path(path)
    if path.is_dir():
        path = path / "plan.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no plan; run `mix plan RECIPE` first")
    return read_plan(path), path


def plan_table(plan: dict) -> Table:
    b = plan["budget"]
    t = plan["train"]
    table = Table(title=f"mix plan '{plan.get('name', '')}': budget {b['given']} = {b['tokens']:,} tokens "
                        f"({b['human']}), {t['expected_steps']:,} steps of {t['tokens_per_step']:,} tokens")
    for col, just in (("source", "left"), ("role", "left"), ("method", "left"), ("documents", "right"),
                      ("tokens", "right"), ("epochs", "right"), ("each doc seen", "right"), ("in budget", "right"),
                      ("share", "right"), ("steps", "right"), ("valid docs", "right")):
        table.add_column(col, justify=just)
    for name, s in plan["sources"].items():
        role = s["role"] + (f" ({s['group']})" if s.get("group") else "")
        table.add_row(name, role, s["method"], f"{s['selected']['docs']:,}", human_tokens(s["selected"]["tokens"]),
                      f"{s['epochs']:.2f}", _times_seen(s), human_tokens(s["target_tokens"]), f"{s['share']:.1%}",
                      f"{s['expected_steps']:,.1f}", f"{s['valid']['docs']:,}")
    table.caption = ("epochs: budget / subset, as the CPT studies count them; each doc seen: how many times a "
                     "selected document is trained on (tokens in budget / selected tokens)")
    return table


def _times_seen(source: dict) -> str:
    """How often each selected document repeats: its source's training tokens over its selected tokens."""
    selected = source["selected"]["tokens"]
    return f"{source['target_tokens'] / selected:.2f}x" if selected else "-"


def band_table(band: dict) -> Table:
    """The kept band of a score-ranked plan beside the rest: size, score range, composition by file."""
    table = Table(title=f"domain ranked by {band['score']} ({band['prefer']}er is better): kept band vs rest")
    for col, just in (("", "left"), ("documents", "right"), ("tokens", "right"), ("score min", "right"),
                      ("median", "right"), ("max", "right"), ("composition by file (documents)", "left")):
        table.add_column(col, justify=just)
    for label in ("band", "rest"):
        s = band[label]
        sc = s["score"] or {}
        files = ", ".join(f"{Path(f['path']).name} {f['docs']:,} ({f['docs'] / max(s['docs'], 1):.0%})"
                          for f in s["by_file"][:4]) + (f", +{len(s['by_file']) - 4} files" if len(s["by_file"]) > 4 else "")
        table.add_row("kept band" if label == "band" else "rest", f"{s['docs']:,}", human_tokens(s["tokens"]),
                      *(f"{sc[k]:.4g}" if k in sc else "-" for k in ("min", "median", "max")), escape(files))
    return table


def print_band(band: dict, console: Console) -> None:
    console.print(band_table(band))
    for label in ("band", "rest"):
        console.print(f"[bold]{'kept band' if label == 'band' else 'rest'}: examples[/bold]")
        for ex in band[label]["examples"]:
            console.print(f"  {band['score']} = {ex['score']:.4g}  {escape(Path(ex['path']).name)}:{ex['row'] + 1}  "
                          f"[dim]{escape((ex['text'] or '')[:150])}[/dim]", highlight=False)


def print_plan(plan: dict, console: Console | None = None) -> None:
    console = console or wide_console()
    console.print(plan_table(plan))
    if plan.get("band"):
        print_band(plan["band"], console)
    for w in plan.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {escape(w)}")


def wide_console() -> Console:
    """Stdout console; when not a terminal (logs, pipes) wide enough that no table is clipped."""
    return make_console()


def plot_plan(plan: dict, out: Path) -> Path:
    """Left: tokens per source stacked by epoch (1st pass, 2nd pass, ...); right: budget shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(plan["sources"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    max_epochs = max([math.ceil(s["epochs"]) for s in plan["sources"].values()] + [1])
    top = max([s["target_tokens"] for s in plan["sources"].values()] + [1])
    scale, unit = next((v, u) for v, u in ((1e9, "B"), (1e6, "M"), (1e3, "K"), (1, "")) if top >= v or v == 1)
    cmap = plt.get_cmap("viridis", max(max_epochs, 2))
    for e in range(max_epochs):
        heights, bottoms = [], []
        for n in names:
            s = plan["sources"][n]
            per_epoch = s["epoch_tokens"] or s["selected"]["tokens"]
            done = min(e * per_epoch, s["target_tokens"])
            heights.append(max(0, min(per_epoch, s["target_tokens"] - done)) / scale)
            bottoms.append(done / scale)
        ax1.bar(names, heights, bottom=bottoms, color=cmap(e), label=f"epoch {e + 1}", edgecolor="white")
    ax1.set_ylabel(f"training tokens ({unit})" if unit else "training tokens")
    ax1.set_title("tokens by source and epoch")
    ax1.legend(fontsize=8, ncol=2)
    bottom = 0.0
    colors = plt.get_cmap("tab10")
    for i, n in enumerate(names):
        share = plan["sources"][n]["share"]
        ax2.bar(["budget"], [share * 100], bottom=[bottom], color=colors(i % 10), label=f"{n} {share:.1%}")
        bottom += share * 100
    ax2.set_ylabel("share of the budget (%)")
    ax2.set_ylim(0, 100)
    ax2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    b = plan["budget"]
    fig.suptitle(f"budget {b['given']} = {human_tokens(b['tokens'])} tokens")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out
