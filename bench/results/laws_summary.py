"""Summarise the laws experiment (bench/results/run_laws.sh) as the Markdown tables of docs/results.md.

    python bench/results/laws_summary.py --out /work/runs-laws

Reads OUT/fit, fit-n, fit-sched (continua law fit), choice, choice-n (continua law choose), merge
(continua merge) and the sweeps; writes OUT/summary.md and OUT/summary.json. Every number is read
from those files: nothing here is typed in.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load(p: Path) -> dict:
    return json.loads(p.read_text())


def compute(runs: list[dict], names: set[str]) -> float:
    """Training compute 6 N D of the named runs (FLOPs)."""
    return float(sum(6 * r["N"] * r["steps"] * r["tokens_per_step"] for r in runs if r["run"] in names))


def dcpt_table(fit: dict, title: str) -> tuple[list[str], dict]:
    lines = [f"**{title}** (held out: `{' '.join(fit['holdout'])}`, {len(fit['heldout_runs'])} runs)", "",
             "| set | peak LR | runs fitted | held-out runs | held-out MAE (nats) | worst held-out error | in-sample MAE |",
             "|---|---|---|---|---|---|---|"]
    errs = []
    for d in fit["dcpt"]:
        e = [abs(h["predicted"] - h["observed"]) for h in d["heldout"]]
        errs += e
        lines.append(f"| {d['set']} | {d['lr']:g} | {d['fit']['n_runs']} | {len(e)} | "
                     f"{d['heldout_mae']:.4f} | {max(e):.4f} | {d['fit']['in_sample_mae']:.4f} |" if e else
                     f"| {d['set']} | {d['lr']:g} | {d['fit']['n_runs']} | 0 | - | - | {d['fit']['in_sample_mae']:.4f} |")
    overall = float(np.mean(errs)) if errs else None
    lines += ["", f"Mean absolute error over all held-out final losses: **{overall:.4f} nats** ({len(errs)} predictions)."
              if errs else "Nothing held out.", ""]
    lines += ["| held-out run | set | observed | predicted [90% band] |", "|---|---|---|---|"]
    for d in fit["dcpt"]:
        for h in d["heldout"]:
            lines.append(f"| {h['run']} | {d['set']} | {h['observed']:.4f} | {h['predicted']:.4f} [{h['lo']:.4f}, {h['hi']:.4f}] |")
    return lines + [""], {"mae": overall, "n": len(errs)}


def choice_lines(c: dict, fit: dict, runs: list[dict], title: str) -> tuple[list[str], dict]:
    ch, g = c["choice"], c["grid_check"]
    lines = [f"**{title}**: tolerance {c['tolerance']:g} nats over the base's general loss "
             f"({', '.join(f'{k} <= {v:.4f}' for k, v in c['limits'].items())}), target N = {c['target']['N']:.0f}, "
             f"D = {c['target']['D']:.0f} tokens.", "",
             f"Choice: replay **{ch['replay']:g}**, peak LR **{ch['lr']:g}** ({ch['schedule']}); predicted domain "
             f"{ch['domain']:.4f} [{ch['domain_lo']:.4f}, {ch['domain_hi']:.4f}], general {ch['general']:.4f} "
             f"[{ch['general_lo']:.4f}, {ch['general_hi']:.4f}].", ""]
    out = {"replay": ch["replay"], "lr": ch["lr"]}
    if g:
        lines += ["| full-grid run (observed) | replay | peak LR | domain | " + " | ".join(c["general_sets"]) + " | feasible |",
                  "|---|---|---|---|" + "---|" * len(c["general_sets"]) + "---|"]
        for r in sorted(g["runs"], key=lambda r: (r["lr"], r["replay"])):
            lines.append(f"| {r['run']} | {r['replay']:g} | {r['lr']:g} | {r['domain']:.4f} | "
                         + " | ".join(f"{r[k]:.4f}" for k in c["general_sets"]) + f" | {'yes' if r['feasible'] else 'no'} |")
        if g.get("best_feasible"):
            b, n = g["best_feasible"], g["nearest_to_choice"]
            lines += ["", f"Best feasible run of the full grid: {b['run']} (domain {b['domain']:.4f}); the grid run nearest "
                      f"the choice: {n['run']} (domain {n['domain']:.4f}, {'feasible' if n['feasible'] else 'NOT feasible'}): "
                      f"**{g['regret']:+.4f} nats** from the best."]
            out.update(regret=g["regret"], best=b["run"], nearest=n["run"], nearest_feasible=n["feasible"])
    fitted = {r["run"] for r in fit["runs"]} - set(fit["heldout_runs"])
    grid = {r["run"] for r in g["runs"]} if g else set()
    share = compute(fit["runs"], fitted) / compute(fit["runs"], grid) if grid else None
    if share is not None:
        lines += ["", f"Compute of the runs the law was fitted on: **{100 * share:.0f}%** of the full grid's (6ND)."]
        out["compute_share"] = share
    return lines + [""], out


def curve_lines(fit: dict) -> tuple[list[str], dict]:
    lines = ["| held-out run | set | fitted on | MAPE (step by step) | gap depth observed | predicted | ratio |",
             "|---|---|---|---|---|---|---|"]
    mapes, ratios = [], []
    for c in fit.get("curve", []):
        for h in c["heldout"]:
            ratio = h["gap_predicted"] / h["gap_observed"] if h["gap_observed"] > 0 else None
            mapes.append(h["mape"])
            if ratio is not None:
                ratios.append(ratio)
            lines.append(f"| {h['run']} | {c['set']} | {', '.join(c['runs'])} | {h['mape']:.2f}% | {h['gap_observed']:.4f} | "
                         f"{h['gap_predicted']:.4f} | {'-' if ratio is None else f'{ratio:.2f}'} |")
    return lines + [""], {"mape_mean": float(np.mean(mapes)) if mapes else None, "gap_ratios": ratios}


def merge_lines(m: dict, c: dict) -> list[str]:
    gk = c["general_sets"][0]
    lines = ["| point | general | domain |", "|---|---|---|"]
    for p in m["points"]:
        lines.append(f"| merge l = {p['lambda']:.2f} | {p['general']:.4f} | {p['domain']:.4f} |")
    if c["grid_check"]:
        for r in sorted(c["grid_check"]["runs"], key=lambda r: (r["lr"], r["replay"])):
            lines.append(f"| replay {r['replay']:g}, LR {r['lr']:g} | {r[gk]:.4f} | {r['domain']:.4f} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/work/runs-laws"))
    args = ap.parse_args(argv)
    o = args.out
    fit, fit_n = load(o / "fit" / "fit.json"), load(o / "fit-n" / "fit.json")
    runs = fit["runs"]
    sizes = sorted({r["N"] for r in runs})
    md = [f"Base sizes N = {', '.join(f'{n:,}' for n in sizes)} parameters; base losses before CPT: "
          + "; ".join(f"{k}: " + ", ".join(f"{float(v):.3f}" for _, v in sorted(d.items(), key=lambda kv: float(kv[0])))
                      for k, d in fit["base"].items()), ""]
    summary = {"sizes": sizes}
    for f, title, key in ((fit, "Fit A: held out the large base's full-budget runs (4-10x longer D)", "fit"),
                          (fit_n, "Fit B: held out every run of the large base (larger N and longer D)", "fit-n")):
        lines, s = dcpt_table(f, title)
        md += lines
        summary[key] = s
    for name, f, title in (("choice", fit, "Choice from fit A"), ("choice-n", fit_n, "Choice from fit B")):
        if (o / name / "choice.json").exists():
            lines, s = choice_lines(load(o / name / "choice.json"), f, runs, title)
            md += lines
            summary[name] = s
    if (o / "fit-sched" / "fit.json").exists():
        lines, s = curve_lines(load(o / "fit-sched" / "fit.json"))
        md += ["**Curve law, held-out schedules**", ""] + lines
        summary["curve"] = s
    if (o / "merge" / "merge.json").exists() and (o / "choice" / "choice.json").exists():
        md += ["**Merge front vs replay front** (the large base, full budget)", ""]
        md += merge_lines(load(o / "merge" / "merge.json"), load(o / "choice" / "choice.json"))
    (o / "summary.md").write_text("\n".join(md))
    (o / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
