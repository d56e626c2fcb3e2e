"""`continua law choose FIT --tolerance 0.05`: the replay share and peak LR (an arm: LR x schedule)
that minimise the predicted domain loss at the full budget, subject to the predicted general loss
staying within the tolerance of the base model's.

Prints the choice with bootstrap intervals beside the proxies, writes DIR/recommendation.toml
(recipe keys: [mix] replay, [optim] lr, [schedule] name), DIR/choice.json and DIR/front.png
(predicted replay front per arm, the observed runs at the target size and budget, and the merge
front of `continua merge` when given). When the sweep holds runs at the target size and budget (the
full grid, held out of the fit), the choice is also judged against the best feasible run of it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from continua.io import write_json, write_text
from workflow.lawfit import dcpt_x, load_fit
from workflow.laws import DCPT, Fit, LawError, predict_interval

__all__ = ["choose", "target_of", "fit_from_json"]

SHARES = np.round(np.arange(0.0, 0.951, 0.01), 2)


def fit_from_json(d: dict) -> Fit:
    p = d["fit"]
    theta = np.array([p["params"][k] for k in DCPT.params])
    return Fit("dcpt", p["params"], theta, np.asarray(p.get("boot", []), dtype=float).reshape(-1, len(theta)),
               p["n_points"], p["n_runs"], p["in_sample_mae"], p["starts_converged"])


def target_of(result: dict, params: float | None, tokens: float | None) -> tuple[float, float]:
    """(N, D) to decide for: by default the largest model of the sweep and the full budget of its runs."""
    runs = result["runs"]
    n = float(params) if params else float(max(r["N"] for r in runs))
    if tokens:
        return n, float(tokens)
    full = [r["steps"] * r["tokens_per_step"] / r["fraction"] for r in runs]
    return n, float(np.median(full))


def _base_general(result: dict, n: float, key: str, given: float | None) -> float:
    if given is not None:
        return float(given)
    by_n = result["base"].get(key, {})
    for k, v in by_n.items():
        if math.isclose(float(k), n, rel_tol=1e-6):
            return float(v)
    raise LawError(f"no step-0 {key} loss of a {n:.0f}-parameter base in the sweep: pass --base-general "
                   "(the base model's general loss before CPT)")


def choose(result: dict, tolerance: float, params: float | None = None, tokens: float | None = None,
           base_general: float | None = None) -> dict:
    """Evaluate every arm's fitted D-CPT laws over the replay shares the fitted runs span (in steps of
    0.01, within 0..0.95: a law is not trusted outside the shares it saw) and pick the best feasible point."""
    if not tolerance >= 0:
        raise LawError(f"--tolerance {tolerance}: must be >= 0 nats")
    n, d = target_of(result, params, tokens)
    roles = result["roles"]
    domain = sorted(k for k, v in roles.items() if v == "domain")
    general = sorted(k for k, v in roles.items() if v == "general")
    if not domain or not general:
        raise LawError("the sweep needs a domain and a general validation set to choose a replay share")
    limits = {k: _base_general(result, n, k, base_general) + tolerance for k in general}
    arms = sorted({(e["lr"], e["schedule"]) for e in result["dcpt"]})
    fitted = [r["replay"] for r in result["runs"] if r["run"] not in set(result["heldout_runs"])]
    shares = SHARES[(SHARES >= min(fitted) - 1e-9) & (SHARES <= max(fitted) + 1e-9)]  # no extrapolation in share
    fronts, best = [], None
    for lr, sched in arms:
        fits = {e["set"]: fit_from_json(e) for e in result["dcpt"] if e["lr"] == lr and e["schedule"] == sched}
        if not set(domain + general) <= set(fits):
            continue
        dom = [predict_interval(fits[k], DCPT.predict, np.stack([dcpt_x(n, d, 1 - r) for r in shares])) for k in domain]
        gen = [predict_interval(fits[k], DCPT.predict, np.stack([dcpt_x(n, d, r) for r in shares])) for k in general]
        dom_p, dom_lo, dom_hi = (np.mean([x[i] for x in dom], axis=0) for i in range(3))
        feasible = np.all([g[0] <= limits[k] for g, k in zip(gen, general)], axis=0)
        front = {"label": f"lr {lr:g} {sched}", "lr": lr, "schedule": sched, "replay": shares.tolist(),
                 "domain": dom_p.tolist(), "domain_lo": dom_lo.tolist(), "domain_hi": dom_hi.tolist(),
                 "general": gen[0][0].tolist(), "general_lo": gen[0][1].tolist(), "general_hi": gen[0][2].tolist(),
                 "feasible": feasible.tolist(), "chosen": None}
        if feasible.any():
            i = int(np.flatnonzero(feasible)[np.argmin(dom_p[feasible])])
            front["chosen"] = {"replay": float(shares[i]), "domain": float(dom_p[i]), "domain_lo": float(dom_lo[i]),
                               "domain_hi": float(dom_hi[i]), "general": float(gen[0][0][i]),
                               "general_lo": float(gen[0][1][i]), "general_hi": float(gen[0][2][i]),
                               "general_upper_within": bool(all(g[2][i] <= limits[k] for g, k in zip(gen, general)))}
            if best is None or front["chosen"]["domain"] < best[1]["domain"]:
                best = (front, front["chosen"])
        fronts.append(front)
    if not fronts:
        raise LawError("no arm (LR x schedule) has fitted laws for every domain and general set")
    if best is None:
        lowest = min((min(f["general"]), f["label"], f["replay"][int(np.argmin(f["general"]))]) for f in fronts)
        raise LawError(f"no replay share in [{shares[0]:g}, {shares[-1]:g}] (the fitted runs' range) keeps the predicted {general[0]} within {tolerance:g} nats of the "
                       f"base ({min(limits.values()) - tolerance:.4f}): the lowest predicted is {lowest[0]:.4f} "
                       f"({lowest[1]}, replay {lowest[2]:g}); raise --tolerance or add runs with more replay")
    front, pick = best
    out = {"target": {"N": n, "D": d}, "tolerance": tolerance, "limits": limits, "domain_sets": domain,
           "general_sets": general, "choice": {"replay": pick["replay"], "lr": front["lr"], "schedule": front["schedule"],
                                               **{k: v for k, v in pick.items() if k != "replay"}},
           "fronts": fronts}
    out["grid_check"] = _grid_check(result, n, d, limits, domain, general, out["choice"])
    return out


def _grid_check(result: dict, n: float, d: float, limits: dict, domain: list[str], general: list[str], choice: dict) -> dict | None:
    """The observed runs at the target (N, D): the best feasible one, and the run nearest the choice."""
    at = [r for r in result["runs"] if math.isclose(r["N"], n, rel_tol=1e-6)
          and math.isclose(r["steps"] * r["tokens_per_step"], d, rel_tol=0.2)]  # D of the full budget is
    # estimated from the proxies' fractions, whose step counts are floored (a 10% run of 127 steps runs 12)
    if not at:
        return None
    dom = {r["run"]: float(np.mean([r["final"][k] for k in domain])) for r in at}
    ok = [r for r in at if all(r["final"][k] <= limits[k] for k in general)]
    same_arm = [r for r in at if r["lr"] == choice["lr"] and r["schedule"] == choice["schedule"]] or at
    near = min(same_arm, key=lambda r: (abs(r["replay"] - choice["replay"]), dom[r["run"]]))
    out = {"runs": [{"run": r["run"], "replay": r["replay"], "lr": r["lr"], "schedule": r["schedule"],
                     "domain": dom[r["run"]], **{k: r["final"][k] for k in general},
                     "feasible": r in ok} for r in at],
           "nearest_to_choice": {"run": near["run"], "replay": near["replay"], "domain": dom[near["run"]],
                                 "feasible": near in ok}}
    if ok:
        b = min(ok, key=lambda r: dom[r["run"]])
        out["best_feasible"] = {"run": b["run"], "replay": b["replay"], "lr": b["lr"], "domain": dom[b["run"]]}
        out["regret"] = dom[near["run"]] - dom[b["run"]]
    return out


def recommendation_toml(c: dict) -> str:
    ch = c["choice"]
    return (f"# continua law choose: lowest predicted domain loss at N = {c['target']['N']:.0f} parameters, "
            f"D = {c['target']['D']:.0f} tokens,\n# predicted general loss within {c['tolerance']:g} nats of the base.\n"
            f"# predicted domain loss {ch['domain']:.4f} [{ch['domain_lo']:.4f}, {ch['domain_hi']:.4f}], "
            f"general {ch['general']:.4f} [{ch['general_lo']:.4f}, {ch['general_hi']:.4f}] (90% bootstrap)\n\n"
            f"[mix]\nreplay = {ch['replay']:g}\n\n[optim]\nlr = {ch['lr']:g}\n\n[schedule]\nname = \"{ch['schedule']}\"\n")


def choose_command(args) -> int:
    from continua.console import make_console
    from rich.table import Table

    from workflow.lawplots import plot_front
    from workflow.merge import load_merge

    result = load_fit(args.fit)
    c = choose(result, args.tolerance, args.params, args.tokens, args.base_general)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    merge = load_merge(args.merge) if args.merge else None
    c["merge"] = merge
    write_json(out / "choice.json", c)
    write_text(out / "recommendation.toml", recommendation_toml(c))
    gk = c["general_sets"][0]
    proxies = [] if not c["grid_check"] else [{"general": r[gk], "domain": r["domain"], "replay": r["replay"]}
                                              for r in c["grid_check"]["runs"]]
    base = (c["limits"][gk] - c["tolerance"], 0.0)
    plot_front(c["fronts"], proxies, merge and merge["points"], base, c["tolerance"], out / "front.png")
    con = make_console()
    t = Table(title=f"predicted at N={c['target']['N']:.0f}, D={c['target']['D']:.0f} tokens (90% bootstrap bands)")
    for col in ("arm", "replay", "domain", "general", f"general <= {c['limits'][gk]:.4f}"):
        t.add_column(col, justify="right")
    for f in c["fronts"]:
        for i, r in enumerate(f["replay"]):
            if round(r * 100) % 5 == 0 or (f["chosen"] and r == f["chosen"]["replay"]):
                star = " *" if f["chosen"] and r == f["chosen"]["replay"] and f["lr"] == c["choice"]["lr"] else ""
                t.add_row(f["label"], f"{r:.2f}{star}", f"{f['domain'][i]:.4f} [{f['domain_lo'][i]:.4f}, {f['domain_hi'][i]:.4f}]",
                          f"{f['general'][i]:.4f} [{f['general_lo'][i]:.4f}, {f['general_hi'][i]:.4f}]",
                          "yes" if f["feasible"][i] else "no")
    con.print(t)
    ch = c["choice"]
    con.print(f"choice: replay {ch['replay']:g}, lr {ch['lr']:g}, schedule {ch['schedule']}: predicted domain "
              f"{ch['domain']:.4f}, general {ch['general']:.4f}" +
              ("" if ch["general_upper_within"] else " (the band's upper end exceeds the tolerance)"))
    g = c["grid_check"]
    if g and g.get("best_feasible"):
        con.print(f"against the observed grid at this size and budget: best feasible {g['best_feasible']['run']} "
                  f"(domain {g['best_feasible']['domain']:.4f}); nearest run to the choice {g['nearest_to_choice']['run']} "
                  f"(domain {g['nearest_to_choice']['domain']:.4f}): regret {g['regret']:+.4f} nats")
    con.print(f"wrote {out / 'recommendation.toml'}, {out / 'choice.json'}, {out / 'front.png'}")
    return 0


def fit_command(args) -> int:
    from continua.console import make_console

    from workflow.lawfit import fit_sweep, summary_lines, write_fit
    from workflow.sweep import load_sweeps

    con = make_console(stderr=True)
    runs = load_sweeps(args.sweeps)["runs"]
    result = fit_sweep(runs, args.holdout, n_boot=args.boot, curve_boot=max(2, args.boot // 3), curves=args.curves,
                       points=args.points,
                       say=lambda m: con.print(f"[cyan]law fit[/]: {m}", highlight=False))
    path = write_fit(result, args.out)
    for line in summary_lines(result):
        print(line)
    con.print(f"wrote {path}, {path.parent / 'predicted_vs_observed.png'}")
    return 0


def add_law_command(sub) -> None:
    """Register `continua law fit` and `continua law choose`."""
    p = sub.add_parser("law", help="fit CPT scaling laws to a sweep and choose replay share and LR from them")
    lsub = p.add_subparsers(dest="law_command", required=True)
    f = lsub.add_parser("fit", help="fit D-CPT and curve laws to sweeps; report held-out errors",
                        description=(__import__("workflow.lawfit", fromlist=["x"]).__doc__ or "").split("\n\n")[0])
    f.add_argument("sweeps", type=Path, nargs="+", metavar="SWEEP", help="sweep folders (or their sweep.json)")
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--holdout", action="append", default=[], metavar="KEY=VALUE",
                   help="runs the fit never sees (repeatable): N>=2000000, fraction=1, schedule=wsd, run=NAME")
    f.add_argument("--boot", type=int, default=30, help="bootstrap refits over runs for the intervals (default 30)")
    f.add_argument("--curves", choices=("heldout", "all", "none"), default="heldout",
                   help="fit the curve law for groups with a held-out run (default), every group, or none")
    f.add_argument("--points", choices=("all", "final"), default="all",
                   help="D-CPT rows per fitted run: every evaluation after step 0 (default: dense in D) or its final loss")
    f.set_defaults(func=fit_command)
    c = lsub.add_parser("choose", help="replay share and LR that meet a forgetting tolerance at the full budget",
                        description=__doc__.split("\n\n")[0])
    c.add_argument("fit", type=Path, metavar="FIT", help="a `law fit` folder")
    c.add_argument("--tolerance", type=float, required=True, help="allowed rise of the general loss over the base (nats)")
    c.add_argument("--params", type=float, help="model size to decide for (default: the sweep's largest)")
    c.add_argument("--tokens", type=float, help="CPT tokens to decide for (default: the full budget of the sweep's runs)")
    c.add_argument("--base-general", type=float, help="the base model's general loss (default: measured at step 0)")
    c.add_argument("--merge", type=Path, help="a `continua merge` folder: its front is drawn beside the replay front")
    c.add_argument("--out", type=Path, required=True)
    c.set_defaults(func=choose_command)
