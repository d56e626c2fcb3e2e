"""Scaling laws of continual pre-training, fitted with scipy on short proxy runs.

Two forms (the papers are listed in ../shared/docs/laws.md):

* **D-CPT** (Que et al. 2024): the loss of one validation set after CPT, from model size N, CPT
  tokens D and the set's own share s of the training tokens (the domain share 1 - replay for a
  domain set, the replay share for a general set):
  ``L(N, D, s) = E + A / N^alpha + B s^eta / D^beta + C / (s + eps)^gamma``.
  N is in millions of parameters, D in millions of tokens, so the parameters are O(1).
* **CPT curve** (Wang et al. 2025, "Learning Dynamics in Continual Pre-Training", eq. of sec. 3, on
  Tissue et al. 2024's LR-annealing law): the whole validation curve of a run from its learning-rate trace,
  ``L(t) = L0 + A (S1_pt + S1_cpt)^-alpha - C1 S2_pt - C2 S2_cpt + B (1 - (1 + E S1_cpt)^-beta)``.
  S1 is the forward area (sum of the LRs, in units of a reference peak LR) and S2 the annealing area
  with momentum (m_i = lam m_{i-1} + (lr_{i-1} - lr_i), S2 = sum m_i), each split into the part of the
  base model's pre-training (pt) and of the CPT run so far (cpt). The momentum runs on from the
  pre-training trace into CPT, so the annealing the base ended with keeps paying for a while, and a
  re-warmup drives S2_cpt negative: that is the stability gap. The last term is the distribution
  shift, a saturating power law in the CPT forward area alone (the paper finds it independent of the
  starting point and of model size); B is signed (negative: the set improves, a domain set;
  positive: it is forgotten, a general set). The paper's lam is 0.999; here lam is fitted (short
  proxy runs), bounded to [0, 0.999].
  When the base's own pre-training LR trace is known (a continua `train run` export: its
  metrics.jsonl), S1_pt and S2_pt are computed from it, the pre-training warmup left out of S2
  (Tissue et al. count annealing from the peak). When it is not (a downloaded base), S1_pt is
  fitted (parameter S0), S2_pt and the momentum carried over are taken as 0. C1 S2_pt is a constant
  for curves of one base, so C1 is fitted only when the curves come from bases with different
  pre-training traces; otherwise it folds into L0.

Fitting practice of the papers: residuals on log loss with a robust loss (scipy least_squares,
soft_l1), several starts, bootstrap over runs (not points) for intervals, and the error reported on
held-out runs, never only in-sample.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import least_squares
from scipy.signal import lfilter

__all__ = ["LawError", "Law", "Fit", "DCPT", "CURVE", "LAWS", "Curve", "curve_features", "curve_law", "pt_areas", "make_curve_predict", "fit_law",
           "predict_interval", "mae", "mape"]


class LawError(ValueError):
    """Data a law cannot be fitted to, or a question it cannot answer (one line, names the run or set)."""


@dataclass(frozen=True)
class Law:
    """One functional form: names, bounds and starting points of its parameters, and its prediction."""

    name: str
    params: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    starts: tuple[tuple[float, ...], ...]
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (theta, X rows) -> loss per row
    columns: tuple[str, ...]


def _dcpt(theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    E, A, alpha, B, eta, beta, C, gamma, eps = theta
    n, d, s = X[:, 0], X[:, 1], X[:, 2]
    return E + A / n**alpha + B * s**eta / d**beta + C / (s + eps) ** gamma


DCPT = Law(
    name="dcpt",
    params=("E", "A", "alpha", "B", "eta", "beta", "C", "gamma", "eps"),
    lower=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1e-3),
    upper=(20.0, 50.0, 3.0, 50.0, 3.0, 3.0, 50.0, 3.0, 2.0),
    starts=tuple((E, A, a, B, 1.0, b, C, g, 0.1) for E in (0.5, 2.0) for A, a in ((1.0, 0.3), (3.0, 0.7))
                 for B, b in ((0.5, 0.3), (2.0, 0.6)) for C, g in ((0.1, 0.5), (0.5, 0.2))),
    predict=_dcpt,
    columns=("N_M", "D_M", "share"),
)


@dataclass
class Curve:
    """One run's validation curve of one set: the LR of every optimizer step and the evaluated steps."""

    run: str
    lrs: np.ndarray  # lrs[i] = LR of optimizer step i + 1 (steps 1..T)
    steps: np.ndarray  # evaluated steps (0 = before training)
    losses: np.ndarray | None = None  # observed loss at `steps` (None when only predicting)
    lr_before: float = 0.0  # the LR the base model's training ended at (used when pt_lrs is unknown)
    pt_lrs: np.ndarray | None = None  # the base model's own pre-training LR trace, when known


def _momentum(drops: np.ndarray, lam: float, m0: float = 0.0) -> np.ndarray:
    """m_i = lam m_{i-1} + drops_i, starting from m_0 = m0."""
    if not len(drops):
        return np.zeros(0)
    m, _ = lfilter([1.0], [1.0, -lam], drops, zi=[lam * m0])
    return m


def pt_areas(curve: Curve, lr_ref: float, lam: float) -> tuple[float | None, float, float, float]:
    """(S1_pt, S2_pt, momentum at the end of pre-training, its last LR), in units of `lr_ref`.

    S1_pt is None when the trace is unknown (the law fits it); S2_pt and the momentum are then 0.
    The pre-training warmup (steps up to the peak) adds nothing to S2: annealing counts from the peak.
    """
    if curve.pt_lrs is None or not len(curve.pt_lrs):
        return None, 0.0, 0.0, curve.lr_before / lr_ref
    pt = np.asarray(curve.pt_lrs, dtype=float) / lr_ref
    drops = np.r_[0.0, pt[:-1] - pt[1:]]
    drops[: int(np.argmax(pt)) + 1] = 0.0
    m = _momentum(drops, lam)
    return float(pt.sum()), float(m.sum()), float(m[-1]), float(pt[-1])


def curve_features(curve: Curve, lr_ref: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(S1_cpt, S2_cpt) at each evaluated step, in units of `lr_ref`; the momentum of S2 runs on from
    the end of pre-training (a re-warmup makes it negative: the stability gap)."""
    _, _, m0, last = pt_areas(curve, lr_ref, lam)
    lrs = np.asarray(curve.lrs, dtype=float) / lr_ref
    prev = np.concatenate([[last], lrs[:-1]])
    m = _momentum(prev - lrs, lam, m0)
    s1 = np.concatenate([[0.0], np.cumsum(lrs)])
    s2 = np.concatenate([[0.0], np.cumsum(m)])
    idx = np.asarray(curve.steps, dtype=int)
    if idx.size and (idx.min() < 0 or idx.max() > len(lrs)):
        raise LawError(f"run {curve.run}: evaluated step {int(idx.max())} is past its {len(lrs)} logged LRs")
    return s1[idx], s2[idx]


# every parameter of the curve law: (lower, upper, starting values); S0 and C1 only where identifiable
_CURVE_PARAMS = {
    "L0": (0.0, 20.0, (1.0,)), "A": (0.0, 50.0, (1.0,)), "alpha": (0.0, 3.0, (0.3, 0.8)),
    "S0": (1e-2, 1e4, (1.0, 30.0)), "C1": (0.0, 20.0, (0.1,)), "C2": (0.0, 20.0, (0.05, 0.5)),
    "B": (-20.0, 20.0, (-0.5, 0.5)), "E": (1e-3, 100.0, (0.2, 2.0)), "beta": (0.05, 3.0, (1.0,)),
    "lam": (0.0, 0.999, (0.5, 0.95)),
}
_PAIRED = (("alpha", "S0"), ("E", "lam"))  # starting values that vary together, not as a product


def _curve_law(names: tuple[str, ...]) -> Law:
    groups: list[tuple[str, ...]] = []
    for n in names:
        pair = next((p for p in _PAIRED if n in p and all(q in names for q in p)), None)
        if pair is None:
            groups.append((n,))
        elif pair[0] == n:
            groups.append(pair)
    choices = []
    for g in groups:
        vals = [_CURVE_PARAMS[n][2] for n in g]
        choices.append([tuple(v[i] for v in vals) for i in range(max(len(v) for v in vals))] if len(g) > 1
                       else [(v,) for v in vals[0]])
    starts = []
    for combo in itertools.product(*choices):
        flat = dict(zip([n for g in groups for n in g], [x for c in combo for x in c]))
        starts.append(tuple(flat[n] for n in names))
    return Law(name="curve", params=names, lower=tuple(_CURVE_PARAMS[n][0] for n in names),
               upper=tuple(_CURVE_PARAMS[n][1] for n in names), starts=tuple(starts), predict=_needs_curves,
               columns=("curve", "position"))


def curve_law(curves: Sequence[Curve]) -> Law:
    """The curve law's parameters for these curves: S0 when a base's pre-training trace is unknown,
    C1 when the curves come from at least two different pre-training traces."""
    names = ["L0", "A", "alpha"]
    if any(c.pt_lrs is None for c in curves):
        names.append("S0")
    traces = {tuple(np.round(np.asarray(c.pt_lrs, dtype=float), 12)) for c in curves if c.pt_lrs is not None}
    if len(traces) >= 2:
        names.append("C1")
    return _curve_law(tuple(names + ["C2", "B", "E", "beta", "lam"]))


def make_curve_predict(curves: Sequence[Curve], lr_ref: float, params: Sequence[str] | None = None
                       ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The curve law over `curves`: X rows are (curve index, position in its eval list); theta is in
    the order of `params` (default: curve_law(curves).params)."""
    names = tuple(params) if params is not None else curve_law(curves).params

    def predict(theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        p = dict(zip(names, theta))
        out = np.empty(len(X))
        for ci in np.unique(X[:, 0]):
            sel = X[:, 0] == ci
            curve = curves[int(ci)]
            s1_pt, s2_pt, _, _ = pt_areas(curve, lr_ref, p["lam"])
            if s1_pt is None:
                if "S0" not in p:
                    raise LawError(f"run {curve.run}: its base's pre-training LR trace is unknown, but the law was "
                                   "fitted on bases whose traces were known")
                s1_pt = p["S0"]
            s1, s2 = curve_features(curve, lr_ref, p["lam"])
            s1, s2 = s1[X[sel, 1]], s2[X[sel, 1]]
            out[sel] = (p["L0"] + p["A"] * (s1_pt + s1) ** (-p["alpha"]) - p.get("C1", 0.0) * s2_pt - p["C2"] * s2
                        + p["B"] * (1.0 - (1.0 + p["E"] * s1) ** (-p["beta"])))
        return out

    return predict


def _needs_curves(theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    raise LawError("the curve law predicts from LR traces: use make_curve_predict(curves, lr_ref)")


CURVE = _curve_law(("L0", "A", "alpha", "S0", "C2", "B", "E", "beta", "lam"))  # a base whose pre-training is unknown

LAWS = {"dcpt": DCPT, "curve": CURVE}


@dataclass
class Fit:
    """A fitted law: parameters, bootstrap draws, and how well it fits the points it saw."""

    law: str
    params: dict[str, float]
    theta: np.ndarray
    boot: np.ndarray  # (draws, params): refits on runs resampled with replacement
    n_points: int
    n_runs: int
    in_sample_mae: float
    starts_converged: int
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        lo, hi = (np.percentile(self.boot, q, axis=0) if len(self.boot) else self.theta for q in (5, 95))
        return {"law": self.law, "params": self.params, "n_points": self.n_points, "n_runs": self.n_runs,
                "in_sample_mae": self.in_sample_mae, "starts_converged": self.starts_converged,
                "params_90ci": {k: [float(a), float(b)] for k, a, b in zip(self.params, lo, hi)},
                "boot": self.boot.tolist(), **self.extra}


def _check(y: np.ndarray, runs: Sequence[str], what: str) -> None:
    bad = ~np.isfinite(y) | (y <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise LawError(f"{what}: run {runs[i]} has a loss of {y[i]} (not a finite positive number); "
                       "a diverged or unfinished run cannot be fitted: drop it or re-run it")
    if len(set(runs)) < 2:
        raise LawError(f"{what}: {len(set(runs))} run(s); a law needs at least two proxy runs that differ "
                       "(several shares, sizes or schedules)")


def _solve(law: Law, predict, X: np.ndarray, y: np.ndarray, starts, f_scale: float,
           scout_nfev: int = 150, polish_nfev: int = 1500) -> tuple[np.ndarray, float, int]:
    """Best of several robust least-squares starts on log loss: every start runs a short scout, the
    two best are polished to convergence."""
    lo, hi = np.array(law.lower), np.array(law.upper)
    logy = np.log(y)

    def resid(theta):
        pred = predict(theta, X)
        return np.log(np.maximum(pred, 1e-6)) - logy

    def run(x0, nfev):
        try:
            res = least_squares(resid, np.clip(np.asarray(x0, dtype=float), lo + 1e-9, hi - 1e-9), bounds=(lo, hi),
                                loss="soft_l1", f_scale=f_scale, max_nfev=nfev, x_scale="jac")
        except (ValueError, FloatingPointError):
            return None
        return res if np.all(np.isfinite(res.fun)) else None

    scouts = [r for r in (run(x0, scout_nfev) for x0 in starts) if r is not None]
    if not scouts:
        raise LawError(f"{law.name}: no start of the fit converged to finite losses")
    scouts.sort(key=lambda r: r.cost)
    polished = [r for r in (run(r.x, polish_nfev) for r in scouts[:2]) if r is not None] if polish_nfev else []
    polished = polished or scouts[:1]
    best = min(polished, key=lambda r: r.cost)
    return best.x, float(best.cost), sum(bool(r.success) for r in polished)


def fit_law(law: Law, X: np.ndarray, y: np.ndarray, runs: Sequence[str], *, predict=None, n_boot: int = 50,
            seed: int = 0, f_scale: float = 0.01, what: str = "") -> Fit:
    """Fit `law` to points X -> y (one row per evaluation; `runs` names each row's run).

    The best of all starting points is kept; the bootstrap resamples whole runs with replacement and
    refits from the best parameters (a run's points are not independent).
    """
    X, y = np.asarray(X), np.asarray(y, dtype=float)
    what = what or law.name
    _check(y, runs, what)
    predict = predict or law.predict
    theta, _, ok = _solve(law, predict, X, y, law.starts, f_scale)
    names = sorted(set(runs))
    run_idx = np.array([names.index(r) for r in runs])
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(names), len(names))
        rows = np.concatenate([np.flatnonzero(run_idx == p) for p in pick])
        if len(set(pick.tolist())) < 2:
            continue
        try:
            th, _, _ = _solve(law, predict, X[rows], y[rows], [theta], f_scale, scout_nfev=300, polish_nfev=0)
        except LawError:
            continue
        boot.append(th)
    pred = predict(theta, X)
    return Fit(law.name, {k: float(v) for k, v in zip(law.params, theta)}, theta,
               np.asarray(boot).reshape(-1, len(theta)), len(y), len(names), float(np.mean(np.abs(pred - y))), ok)


def predict_interval(fit: Fit, predict, X: np.ndarray, level: float = 90.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point prediction, lower, upper) at X; the band is the bootstrap's central `level`%."""
    point = predict(fit.theta, X)
    if not len(fit.boot):
        return point, point, point
    draws = np.stack([predict(th, X) for th in fit.boot])
    a = (100.0 - level) / 2
    return point, np.percentile(draws, a, axis=0), np.percentile(draws, 100 - a, axis=0)


def mae(pred: np.ndarray, obs: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred) - np.asarray(obs))))


def mape(pred: np.ndarray, obs: np.ndarray) -> float:
    """Mean absolute percentage error, in percent."""
    obs = np.asarray(obs, dtype=float)
    return float(100.0 * np.mean(np.abs(np.asarray(pred) - obs) / obs))
