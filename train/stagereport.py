"""A sequence's report: every validation set across the stages, boundaries and switches marked, branches beside.

One table row per stage and set: the loss at the stage's boundary, its worst point in the stage (a
re-warm spike, or an earlier domain being forgotten), its end on the trunk and on the stage's branch;
and one figure (stages.png) with the trunk's curves, a dotted line at each stage boundary, a dashed one
at each switch, and each branch's final evaluation as a star.
"""

from __future__ import annotations

from pathlib import Path

from continua.io import atomic_path, read_json
from train.gap import read_metrics

__all__ = ["stage_table", "plot_stages", "write_stage_report"]


def stage_table(run_dir: Path) -> list[dict]:
    """Rows: stage, set, boundary (start), worst (and its step), trunk end, branch end (None without a branch),
    per validation loss, from gap.json's `stages` (train.gap.stage_gaps, written as the run finishes)."""
    out = []
    for st in read_json(Path(run_dir) / "gap.json").get("stages", []):
        branch = st.get("branch", {}).get("metrics", {})
        for key, m in sorted(st["sets"].items()):
            if not key.startswith("loss/"):
                continue
            out.append({"stage": st["stage"], "set": key.split("/", 1)[1], "start_step": m["start_step"],
                        "start": m["start"], "worst": m["worst"], "worst_step": m["worst_step"], "end": m["final"],
                        "end_step": m["final_step"], "branch_end": branch.get(key)})
    return out


def plot_stages(run_dir: Path, path: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    timeline = read_json(run_dir / "stages.json")
    evals = [r for r in rows if r.get("kind") == "eval"]
    keys = sorted({k for r in evals for k in r.get("metrics", {}) if k.startswith("loss/")})
    fig, ax = plt.subplots(figsize=(10, 5))
    for i, key in enumerate(keys):
        pts = sorted({int(r["step"]): r["metrics"][key] for r in evals if key in r["metrics"]}.items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=f"C{i % 10}", marker=".", lw=1.4, label=key)
        for r in rows:
            if r.get("kind") == "branch_eval" and key in r.get("metrics", {}):
                ax.plot([r["step"]], [r["metrics"][key]], marker="*", ms=11, color=f"C{i % 10}", ls="none")
    for st in timeline["stages"]:
        ax.axvline(st["first_step"] - 1, color="0.35", ls=":", lw=1)
        ax.annotate(st["name"], (st["first_step"] - 1, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -3),
                    textcoords="offset points", va="top", fontsize=9, color="0.25")
        for sw in st["switches"]:
            if sw["segment"] == "trunk":
                ax.axvline(sw["step"] - 1, color="0.55", ls="--", lw=0.9)
    ax.set_xlabel("trunk step (stars: each stage's annealed branch, at its last step)")
    ax.set_ylabel("validation loss")
    ax.set_title(f"{run_dir.name}: {len(timeline['stages'])} stages (dotted: stage starts; dashed: blend switches)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path or run_dir / "stages.png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write_stage_report(run_dir: Path, say=print) -> Path:
    """stages.png, and the table and the switches said line by line (how `train run` ends a sequence)."""
    for st in read_json(Path(run_dir) / "stages.json")["stages"]:
        for sw in st["switches"]:
            say(f"stage {st['name']}: switched to blend {sw['blend']} at step {sw['step']} ({sw['segment']}): "
                f"{sw['why']}")
    for r in stage_table(run_dir):
        branch = f", branch {r['branch_end']:.4f}" if r["branch_end"] is not None else ""
        say(f"stage {r['stage']:<12} {r['set']:<12} start {r['start']:.4f} (step {r['start_step']}), worst "
            f"{r['worst'] if r['worst'] is None else round(r['worst'], 4)} (step {r['worst_step']}), "
            f"end {r['end']:.4f}{branch}")
    return plot_stages(run_dir)
