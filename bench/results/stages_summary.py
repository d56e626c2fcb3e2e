"""Summarize the three-stage experiment (bench/results/run_stages.sh): infinite trunk + branches vs cosine per stage.

    python bench/results/stages_summary.py --infinite RUN/train --cosine RUN/train --out DIR

Reads each run's metrics.jsonl (trunk rows carry "stage"; branch rows have kind "branch_eval" / "branch_train"
and "branch": STAGE), its stages.json and recipe.toml (the stages' domains), and writes DIR/stages.md (the tables
printed here), DIR/stages.json (the same numbers) and DIR/stages.png. Numbers at every stage boundary are those of
the model a user would deploy there: the infinite run's annealed branch, the cosine run's end of stage (its LR has
decayed); the infinite trunk's un-annealed loss is shown beside them. Forgetting of a domain = its loss at a later
boundary minus its loss at the end of its own stage; general forgetting is against the base (step 0). The re-warm
spike of a stage = the largest rise of each validation loss above its value at the stage's first evaluation, over
the evaluations in the first `--spike-window` of the stage's trunk steps (0 when the loss only falls).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from continua.io import write_json, write_text
from train.gap import read_metrics


@dataclass
class Stage:
    name: str
    domains: list[str]
    first_step: int  # first trunk optimizer step of the stage
    last_step: int  # last trunk optimizer step of the stage
    evals: list[dict] = field(default_factory=list)  # trunk evaluations inside the stage, by step
    branch_evals: list[dict] = field(default_factory=list)


@dataclass
class Run:
    label: str
    folder: Path
    stages: list[Stage]
    base: dict  # the evaluation at step 0 (the base model)
    rows: list[dict]

    def losses(self, row: dict) -> dict[str, float]:
        return {k.removeprefix("loss/"): v for k, v in row["metrics"].items() if k.startswith("loss/")}


def fail(msg: str) -> None:
    """Missing or inconsistent runs are a usage error (exit 2): nothing is written."""
    print(f"stages_summary: {msg}", file=sys.stderr)
    raise SystemExit(2)


def recipe_domains(folder: Path) -> dict[str, list[str]]:
    path = folder / "recipe.toml"
    if not path.is_file():
        fail(f"{path}: missing (the run's copy of its recipe names each stage's domains)")
    with open(path, "rb") as f:
        stages = tomllib.load(f).get("stages", [])
    if not stages:
        fail(f"{path}: no [[stages]]: not a multi-stage run")
    return {s["name"]: list(s.get("domains", [])) for s in stages}


def load_run(label: str, folder: Path) -> Run:
    metrics = folder / "metrics.jsonl"
    if not metrics.is_file():
        fail(f"{metrics}: missing ({label} run not trained?)")
    if not (folder / "stages.json").is_file():
        fail(f"{folder / 'stages.json'}: missing (train run writes it for a multi-stage recipe)")
    rows = read_metrics(metrics)
    domains = recipe_domains(folder)
    train = [r for r in rows if r.get("kind") == "train"]
    stages: list[Stage] = []
    for name, doms in domains.items():
        steps = [r["step"] for r in train if r.get("stage") == name]
        if not steps:
            fail(f"{metrics}: no train row of stage {name!r}")
        stages.append(Stage(name, doms, min(steps), max(steps)))
    for r in rows:
        if r.get("kind") == "eval" and r["step"] > 0:
            for s in stages:
                if s.first_step - 1 <= r["step"] <= s.last_step and r.get("stage") == s.name:
                    s.evals.append(r)
        elif r.get("kind") == "branch_eval":
            for s in stages:
                if r.get("branch") == s.name:
                    s.branch_evals.append(r)
    base = next((r for r in rows if r.get("kind") == "eval" and r["step"] == 0), None)
    if base is None:
        fail(f"{metrics}: no evaluation at step 0 (the base model)")
    for s in stages:
        s.evals.sort(key=lambda r: r["step"])
        s.branch_evals.sort(key=lambda r: r["step"])
        if not s.evals:
            fail(f"{metrics}: no trunk evaluation in stage {s.name!r}")
    return Run(label, folder, stages, base, rows)


def start_eval(run: Run, k: int) -> dict:
    """The evaluation the stage starts from: the last trunk evaluation at or before its first step - 1."""
    first = run.stages[k].first_step
    before = [r for r in run.rows if r.get("kind") == "eval" and r["step"] <= first - 1]
    return max(before, key=lambda r: r["step"])


def deployable(run: Run, k: int) -> dict:
    """The model a user takes at the end of stage k: the annealed branch if there is one, else the trunk."""
    s = run.stages[k]
    return s.branch_evals[-1] if s.branch_evals else s.evals[-1]


def rise(run: Run, k: int, window: float) -> dict[str, float]:
    """Largest rise of each loss above the stage's starting evaluation, over the trunk evaluations in the first
    `window` of the stage's trunk steps (window 1: the whole stage); 0 when the loss only falls."""
    s = run.stages[k]
    start = run.losses(start_eval(run, k))
    end = s.first_step - 1 + window * (s.last_step - s.first_step + 1)
    early = [r for r in s.evals if s.first_step <= r["step"] <= end]
    if not early:
        fail(f"{run.folder}: no evaluation in the first {window:.0%} of stage {s.name!r} "
             f"(steps {s.first_step}-{end:.0f}): evaluate more often")
    return {src: max(0.0, max(run.losses(r)[src] - v for r in early)) for src, v in start.items()}


def summarize(runs: list[Run], window: float) -> dict:
    found = runs[0].losses(runs[0].base)
    ordered = ["general"] + [d for s in runs[0].stages for d in s.domains]
    sources = [s for s in ordered if s in found] + sorted(set(found) - set(ordered))
    out: dict = {"sources": sources, "runs": {}}
    for run in runs:
        base = run.losses(run.base)
        boundaries, spikes = [], []
        for k, s in enumerate(run.stages):
            dep = run.losses(deployable(run, k))
            trunk = run.losses(s.evals[-1])
            forgetting = {"general": dep["general"] - base["general"]} if "general" in dep else {}
            for j in range(k):
                for d in run.stages[j].domains:
                    forgetting[d] = dep[d] - run.losses(deployable(run, j))[d]
            boundaries.append({"stage": s.name, "domains": s.domains, "trunk_steps": [s.first_step, s.last_step],
                               "branch_steps": [s.branch_evals[0]["step"], s.branch_evals[-1]["step"]]
                               if s.branch_evals else None,
                               "deployable": dep, "trunk": trunk, "forgetting": forgetting})
            spikes.append({"stage": s.name, "start_step": start_eval(run, k)["step"], "rise": rise(run, k, window),
                           "stage_rise": rise(run, k, 1.0)})
        out["runs"][run.label] = {"folder": str(run.folder), "base": base, "boundaries": boundaries,
                                  "spikes": spikes, "optimizer_steps": optimizer_steps(run)}
    return out


def optimizer_steps(run: Run) -> dict[str, int]:
    """Optimizer steps per stage, trunk and branch together (the equal-compute check)."""
    counts: dict[str, int] = {}
    for r in run.rows:
        if r.get("kind") == "train":
            counts[r["stage"]] = counts.get(r["stage"], 0) + 1
        elif r.get("kind") == "branch_train":
            counts[r["branch"]] = counts.get(r["branch"], 0) + 1
    return counts


def tables(summary: dict, window: float) -> str:
    sources = summary["sources"]
    lines = ["Validation loss of the model deployed at each boundary (infinite: the annealed branch, its "
             "un-annealed trunk in brackets; cosine: the end of the stage):", "",
             "| schedule | after stage | optimizer steps | " + " | ".join(sources) + " | forgetting |",
             "|---|---|---|" + "---|" * len(sources) + "---|"]
    for label, run in summary["runs"].items():
        lines.append(f"| {label} | base | 0 | " + " | ".join(f"{run['base'][s]:.3f}" for s in sources) + " | |")
        for b in run["boundaries"]:
            cells = []
            for s in sources:
                cell = f"{b['deployable'][s]:.3f}"
                if b["branch_steps"]:
                    cell += f" ({b['trunk'][s]:.3f})"
                cells.append(cell)
            forgot = ", ".join(f"{d} {v:+.3f}" for d, v in b["forgetting"].items())
            lines.append(f"| {label} | {b['stage']} | {run['optimizer_steps'].get(b['stage'], 0)} | "
                         + " | ".join(cells) + f" | {forgot} |")
    lines += ["", f"Re-warm spike: largest rise of each validation loss above the stage's starting evaluation, "
              f"in the first {window:.0%} of the stage's trunk steps / anywhere in them:", "",
              "| schedule | stage | starts from step | " + " | ".join(sources) + " |",
              "|---|---|---|" + "---|" * len(sources)]
    for label, run in summary["runs"].items():
        for sp in run["spikes"]:
            lines.append(f"| {label} | {sp['stage']} | {sp['start_step']} | "
                         + " | ".join(f"{sp['rise'][s]:+.3f} / {sp['stage_rise'][s]:+.3f}" for s in sources) + " |")
    return "\n".join(lines) + "\n"


def sequence_x(run: Run) -> tuple[list[int], dict[int, tuple[int, int]]]:
    """Each stage's offset on the shared x axis (optimizer steps, trunk and branch, of all earlier stages) and,
    per stage, (first trunk step, first branch step): the two runs line up stage by stage at equal compute."""
    counts = optimizer_steps(run)
    offsets, total = [], 0
    firsts = {}
    for k, s in enumerate(run.stages):
        offsets.append(total)
        total += counts.get(s.name, 0)
        branch = [r["step"] for r in run.rows if r.get("kind") == "branch_train" and r.get("branch") == s.name]
        firsts[k] = (s.first_step, min(branch) if branch else 0)
    return offsets, firsts


def plot(runs: list[Run], sources: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"infinite": "tab:blue", "cosine": "tab:red"}
    shown: dict[str, list[float]] = {src: [] for src in sources}  # losses after the first stage's opening tenth
    fig, axes = plt.subplots(1, len(sources) + 1, figsize=(4.2 * (len(sources) + 1), 3.6))
    for run in runs:
        c = colors.get(run.label)
        offsets, firsts = sequence_x(run)
        trunk_label, branch_label = f"{run.label} trunk" if any(s.branch_evals for s in run.stages) else run.label, \
            f"{run.label} branch"
        for k, s in enumerate(run.stages):
            first, branch_first = firsts[k]
            trunk_len = s.last_step - s.first_step + 1
            pts = [start_eval(run, k)] + [r for r in s.evals if r["step"] >= first]
            xs = [offsets[k] + r["step"] - first + 1 for r in pts]
            bx = [offsets[k] + trunk_len + r["step"] - branch_first + 1 for r in s.branch_evals]
            train = [r for r in run.rows if r.get("kind") == "train" and r.get("stage") == s.name]
            btrain = [r for r in run.rows if r.get("kind") == "branch_train" and r.get("branch") == s.name]
            for ax, src in zip(axes, sources):
                ys = [run.losses(r)[src] for r in pts] + [run.losses(r)[src] for r in s.branch_evals]
                shown[src] += [y for x, y in zip(xs + bx, ys) if x > 0.1 * (offsets[1] if len(offsets) > 1 else 0)]
                ax.plot(xs, ys[:len(xs)], "-o", ms=2.5, color=c, label=trunk_label if k == 0 else None)
                if s.branch_evals:
                    ax.plot([xs[-1]] + bx, [run.losses(r)[src] for r in [pts[-1]] + s.branch_evals], "--s", ms=2.5,
                            color=c, alpha=0.8, label=branch_label if k == 0 else None)
            axes[-1].plot([offsets[k] + r["step"] - first + 1 for r in train], [r["lr"] for r in train], color=c,
                          label=trunk_label if k == 0 else None)
            if btrain:
                axes[-1].plot([offsets[k] + trunk_len + r["step"] - branch_first + 1 for r in btrain],
                              [r["lr"] for r in btrain], "--", color=c, label=branch_label if k == 0 else None)
        for ax in axes:
            for off in offsets[1:]:
                ax.axvline(off, color="grey", lw=0.6, ls=":")
    for ax, src in zip(axes, sources):
        ax.set_title(f"validation loss: {src}")
        if shown[src]:  # the base's first steps (a domain it never saw) would flatten the rest
            lo = min(shown[src] + [run.losses(run.base)[src] for run in runs])  # the base stays in view from below
            hi = max(shown[src])
            ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))
    axes[-1].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("optimizer steps (trunk + branch) since the base")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def differences(pairs: list[dict]) -> str:
    """Infinite (its branch) minus cosine at every boundary, per pair of runs, and the pairs' mean."""
    sources = pairs[0]["sources"]
    lines = ["Deployed model, infinite minus cosine (negative: infinite + anneal is better), per pair of runs "
             "and their mean:", "", "| after stage | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
    stages = [b["stage"] for b in pairs[0]["runs"]["infinite"]["boundaries"]]
    for k, stage in enumerate(stages):
        cells = []
        for src in sources:
            d = [p["runs"]["infinite"]["boundaries"][k]["deployable"][src]
                 - p["runs"]["cosine"]["boundaries"][k]["deployable"][src] for p in pairs]
            cells.append(" / ".join(f"{x:+.3f}" for x in d) + f" (mean {sum(d) / len(d):+.3f})")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--infinite", type=Path, action="append", required=True,
                    help="train folder of an infinite-schedule run (repeat for more seeds, in --cosine's order)")
    ap.add_argument("--cosine", type=Path, action="append", required=True,
                    help="train folder of a cosine re-warm run (repeat for more seeds)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--spike-window", type=float, default=0.2, help="share of each stage's trunk steps searched")
    args = ap.parse_args(argv)
    if len(args.infinite) != len(args.cosine):
        ap.error(f"--infinite and --cosine pair up: got {len(args.infinite)} and {len(args.cosine)}")
    pairs, texts, first_runs = [], [], None
    for i, (inf, cos) in enumerate(zip(args.infinite, args.cosine)):
        runs = [load_run("infinite", inf), load_run("cosine", cos)]
        names = [[s.name for s in r.stages] for r in runs]
        expected = [b["stage"] for b in pairs[0]["runs"]["infinite"]["boundaries"]] if pairs else names[0]
        if names[0] != expected or names[1] != expected:
            fail(f"{inf} and {cos}: stages {names[0]} and {names[1]}, expected the same sequence {expected}")
        summary = summarize(runs, args.spike_window)
        for label, r in summary["runs"].items():
            if any(not math.isfinite(v) for b in r["boundaries"] for v in b["deployable"].values()):
                fail(f"{r['folder']}: a non-finite validation loss")
        pairs.append(summary)
        texts.append(f"### Pair {i + 1}: {inf} vs {cos}\n\n" + tables(summary, args.spike_window))
        first_runs = first_runs or runs
    text = "\n".join(texts) + ("\n" + differences(pairs) if len(pairs) > 1 else "")
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "stages.md", text)
    write_json(args.out / "stages.json", {"pairs": pairs})
    plot(first_runs, pairs[0]["sources"], args.out / "stages.png")
    print(text + f"\nwrote {args.out / 'stages.md'}, {args.out / 'stages.json'}, {args.out / 'stages.png'} (pair 1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
