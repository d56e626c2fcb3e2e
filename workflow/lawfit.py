"""`continua law fit SWEEP... --out DIR`: fit the laws of workflow.laws to a sweep's runs and judge
them on held-out runs.

* D-CPT, per validation set and per arm (peak LR x schedule): the loss of each fitted run over
  (N, D, own share), at every evaluation after step 0 (`--points all`, the default: dense early
  evaluation gives the D axis from few runs) or at its end only (`--points final`); the final loss
  of every held-out run of the arm is predicted with a bootstrap interval.
* CPT curve, per validation set and per group of runs with the same base and replay share: the
  whole curve of each run from its LR trace; held-out curves (other LRs or schedules) are
  predicted step by step (MAPE) and their stability-gap depth compared.

`--holdout KEY=VALUE` (or KEY>=VALUE, KEY<=VALUE; repeatable, any matching run is held out) names
the runs the fit never sees: e.g. `--holdout N>=2000000` (larger models), `--holdout fraction=1`
(longer runs), `--holdout schedule=wsd` (an unseen schedule). Without it nothing is held out and
the report says the errors are in-sample only.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from continua.io import read_json, write_json
from workflow.laws import DCPT, Curve, LawError, curve_law, fit_law, make_curve_predict, mae, mape, predict_interval

__all__ = ["parse_holdout", "held_out", "own_share", "fit_sweep", "base_losses", "dcpt_x"]

_PRED = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)\s*(>=|<=|=)\s*(.+)$")


def parse_holdout(items: list[str]) -> list[tuple[str, str, str]]:
    out = []
    for item in items:
        m = _PRED.match(item.strip())
        if not m:
            raise LawError(f"--holdout {item!r}: expected KEY=VALUE, KEY>=VALUE or KEY<=VALUE (e.g. N>=2000000)")
        out.append((m.group(1), m.group(2), m.group(3).strip()))
    return out


def _field(run: dict, key: str):
    if key in run:
        return run[key]
    if key in run.get("grid", {}):
        return run["grid"][key]
    raise LawError(f"--holdout {key}: runs have no such field (use run, N, replay, lr, schedule, model, fraction, steps)")


def _matches(run: dict, pred: tuple[str, str, str]) -> bool:
    key, op, want = pred
    have = _field(run, key)
    try:
        a, b = float(have), float(want.rstrip("%")) / (100 if want.endswith("%") else 1)
    except (TypeError, ValueError):
        if op != "=":
            raise LawError(f"--holdout {key}{op}{want}: {key} is not a number") from None
        return str(have) == want or (isinstance(have, str) and Path(have).name == want)
    return {"=": math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), ">=": a >= b, "<=": a <= b}[op]


def held_out(runs: list[dict], preds: list[tuple[str, str, str]]) -> set[str]:
    return {r["run"] for r in runs if any(_matches(r, p) for p in preds)}


def own_share(run: dict, key: str) -> float:
    """The share of the run's training tokens drawn from this set's distribution."""
    return 1.0 - run["replay"] if run["roles"][key] == "domain" else run["replay"]


def _final(run: dict, key: str) -> float:
    losses = run["losses"].get(key) or []
    if not losses or run["eval_steps"][-1] != run["steps"]:
        raise LawError(f"run {run['run']}: no {key} evaluation at its last step {run['steps']}: is it finished?")
    v = losses[-1]
    return float("nan") if v is None else float(v)


def dcpt_x(n_params: float, tokens: float, share: float) -> np.ndarray:
    """A D-CPT row: N in millions of parameters, D in millions of tokens, the set's own share."""
    return np.array([n_params / 1e6, tokens / 1e6, share], dtype=float)


def base_losses(runs: list[dict]) -> dict[str, dict[str, float]]:
    """{set: {str(N): loss before training}} from the step-0 evaluations (mean over the runs of a size)."""
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r["eval_steps"] and r["eval_steps"][0] == 0:
            for key, vals in r["losses"].items():
                if vals and vals[0] is not None:
                    acc[key][str(r["N"])].append(float(vals[0]))
    return {k: {n: float(np.mean(v)) for n, v in d.items()} for k, d in acc.items()}


def _arm(run: dict) -> tuple[float, str]:
    return (float(run["lr"]), str(run["schedule"]))


def _points(r: dict, key: str, points: str) -> list[tuple[np.ndarray, float]]:
    """D-CPT rows of one run: its final loss, or (points = "all") every evaluation after step 0 at the
    tokens seen so far (denser in D; mid-schedule points are not annealed, so they bias the fit)."""
    s = own_share(r, key)
    if points == "final":
        return [(dcpt_x(r["N"], r["steps"] * r["tokens_per_step"], s), _final(r, key))]
    vals = r["losses"][key]
    return [(dcpt_x(r["N"], st * r["tokens_per_step"], s), float("nan") if v is None else float(v))
            for st, v in zip(r["eval_steps"], vals) if st > 0]


def _fit_dcpt(runs: list[dict], hold: set[str], n_boot: int, say, points: str = "final") -> list[dict]:
    out = []
    keys = sorted({k for r in runs for k in r["roles"]})
    arms = sorted({_arm(r) for r in runs})
    for key in keys:
        for arm in arms:
            mine = [r for r in runs if _arm(r) == arm and key in r["roles"]]
            fit_runs = [r for r in mine if r["run"] not in hold]
            test_runs = [r for r in mine if r["run"] in hold]
            what = f"D-CPT {key} at lr {arm[0]:g} {arm[1]}"
            if len(fit_runs) < 2:  # e.g. a schedule sweep: one run per arm, for the curve law only
                say(f"{what}: {len(fit_runs)} fitted run(s), not fitted (needs two)")
                continue
            rows_of = [(r, x, v) for r in fit_runs for x, v in _points(r, key, points)]
            X = np.array([x for _, x, _ in rows_of]).reshape(-1, 3)
            y = np.array([v for _, _, v in rows_of])
            say(f"fitting {what} on {len(fit_runs)} runs ({len(y)} points, {len(test_runs)} runs held out)")
            fit = fit_law(DCPT, X, y, [r["run"] for r, _, _ in rows_of], n_boot=n_boot, what=what)
            rows = []
            if test_runs:
                Xh = np.array([dcpt_x(r["N"], r["steps"] * r["tokens_per_step"], own_share(r, key)) for r in test_runs])
                pred, lo, hi = predict_interval(fit, DCPT.predict, Xh)
                for r, x, p, a, b in zip(test_runs, Xh, pred, lo, hi):
                    rows.append({"run": r["run"], "N": r["N"], "D": r["steps"] * r["tokens_per_step"], "share": float(x[2]),
                                 "observed": _final(r, key), "predicted": float(p), "lo": float(a), "hi": float(b)})
            finals = np.array([dcpt_x(r["N"], r["steps"] * r["tokens_per_step"], own_share(r, key)) for r in fit_runs])
            in_rows = [{"run": r["run"], "observed": _final(r, key), "predicted": float(p)}
                       for r, p in zip(fit_runs, DCPT.predict(fit.theta, finals.reshape(-1, 3)))]
            out.append({"set": key, "role": mine[0]["roles"][key], "lr": arm[0], "schedule": arm[1], "fit": fit.to_json(),
                        "in_sample": in_rows, "heldout": rows,
                        "heldout_mae": mae([h["predicted"] for h in rows], [h["observed"] for h in rows]) if rows else None})
    return out


def _curve(run: dict, key: str) -> Curve:
    vals = run["losses"][key]
    if any(v is None or not math.isfinite(v) for v in vals):
        raise LawError(f"run {run['run']}: {key} has a missing or non-finite evaluation; drop or re-run it")
    pt = run.get("pt_lrs")
    return Curve(run["run"], np.asarray(run["lrs"], dtype=float), np.asarray(run["eval_steps"], dtype=int),
                 np.asarray(vals, dtype=float), float(run.get("lr_before") or 0.0),
                 np.asarray(pt, dtype=float) if pt else None)


def gap_depth(losses: np.ndarray) -> float:
    """Rise of the worst point over the start (0 when the curve never rises)."""
    return float(max(0.0, np.max(losses) - losses[0]))


def _fit_curves(runs: list[dict], hold: set[str], n_boot: int, say, only_with_heldout: bool) -> list[dict]:
    out = []
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[(r.get("model"), float(r["replay"]), int(r["N"]))].append(r)
    for (model, replay, n), mine in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][1], str(kv[0][0]))):
        fit_runs = [r for r in mine if r["run"] not in hold]
        test_runs = [r for r in mine if r["run"] in hold]
        if len(fit_runs) < 2 or (only_with_heldout and not test_runs):
            continue
        lr_ref = max(max(r["lrs"]) for r in fit_runs)
        for key in sorted(mine[0]["roles"]):
            curves = [_curve(r, key) for r in fit_runs]
            law = curve_law(curves)
            predict = make_curve_predict(curves, lr_ref, law.params)
            X = np.array([(ci, k) for ci, c in enumerate(curves) for k in range(len(c.steps))])
            y = np.concatenate([c.losses for c in curves])
            what = f"curve law {key}, N {n}, replay {replay:g}"
            say(f"fitting {what} on {len(curves)} curves ({len(test_runs)} held out)")
            fit = fit_law(law, X, y, [c.run for c in curves for _ in c.steps], predict=predict, n_boot=n_boot, what=what)
            rows = []
            for r in test_runs:
                c = _curve(r, key)
                Xh = np.c_[np.zeros(len(c.steps), int), np.arange(len(c.steps))]
                pred, lo, hi = predict_interval(fit, make_curve_predict([c], lr_ref, law.params), Xh)
                rows.append({"run": r["run"], "lr": r["lr"], "schedule": r["schedule"], "steps": c.steps.tolist(),
                             "observed": c.losses.tolist(), "predicted": pred.tolist(), "lo": lo.tolist(), "hi": hi.tolist(),
                             "mape": mape(pred, c.losses), "gap_observed": gap_depth(c.losses), "gap_predicted": gap_depth(pred)})
            out.append({"set": key, "N": n, "replay": replay, "model": model, "lr_ref": lr_ref,
                        "runs": [c.run for c in curves], "fit": fit.to_json(), "heldout": rows,
                        "in_sample_mape": mape(predict(fit.theta, X), y)})
    return out


def fit_sweep(runs: list[dict], holdout: list[str], *, n_boot: int = 30, curve_boot: int = 10,
              curves: str = "heldout", points: str = "all", say=lambda m: None) -> dict:
    """Fit D-CPT per set and arm, and the curve law per set and group; returns what fit.json holds."""
    if len(runs) < 2:
        raise LawError(f"the sweep has {len(runs)} run(s); fitting a law needs at least two")
    hold = held_out(runs, parse_holdout(holdout))
    if len(hold) == len(runs):
        raise LawError(f"--holdout {' '.join(holdout)} holds out every run; nothing is left to fit")
    result = {"holdout": holdout, "heldout_runs": sorted(hold), "base": base_losses(runs),
              "roles": {k: v for r in runs for k, v in r["roles"].items()},
              "runs": [{k: r[k] for k in ("run", "N", "replay", "lr", "schedule", "fraction", "steps", "tokens_per_step")}
                       | {"final": {k: _final(r, k) for k in r["roles"]}} for r in runs],
              "points": points, "dcpt": _fit_dcpt(runs, hold, n_boot, say, points)}
    if curves != "none":
        result["curve"] = _fit_curves(runs, hold, curve_boot, say, only_with_heldout=curves == "heldout")
    if not result["dcpt"] and not result.get("curve"):
        raise LawError("no law could be fitted: every arm (LR x schedule) has fewer than two fitted runs and no "
                       "group of runs of one base and share has two curves; add runs or hold out fewer")
    return result


def summary_lines(result: dict) -> list[str]:
    """The held-out errors, one line per fit (in-sample only where nothing was held out)."""
    lines = []
    for d in result["dcpt"]:
        err = (f"held-out MAE {d['heldout_mae']:.4f} nats on {len(d['heldout'])} runs" if d["heldout"]
               else f"in-sample MAE {d['fit']['in_sample_mae']:.4f} (nothing held out)")
        lines.append(f"D-CPT {d['set']} ({d['role']}) lr {d['lr']:g} {d['schedule']}: {d['fit']['n_runs']} runs, {err}")
    for c in result.get("curve", []):
        if c["heldout"]:
            err = "; ".join(f"{h['run']}: MAPE {h['mape']:.2f}%, gap {h['gap_observed']:.3f} observed vs "
                            f"{h['gap_predicted']:.3f} predicted" for h in c["heldout"])
        else:
            err = f"in-sample MAPE {c['in_sample_mape']:.2f}% (nothing held out)"
        lines.append(f"curve {c['set']} N {c['N']} replay {c['replay']:g}: {err}")
    return lines


def write_fit(result: dict, out: Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "fit.json", result)
    from workflow.lawplots import plot_curves, plot_pred_vs_obs

    plot_pred_vs_obs(result, out / "predicted_vs_observed.png")
    if result.get("curve"):
        plot_curves(result, out / "curves_heldout.png")
    return out / "fit.json"


def load_fit(path: Path) -> dict:
    path = Path(path)
    f = path / "fit.json" if path.is_dir() else path
    if not f.is_file():
        raise LawError(f"{path}: no fit.json (run `continua law fit SWEEP --out {path}` first)")
    return read_json(f)
