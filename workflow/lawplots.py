"""Plots of fitted laws: predicted vs observed finals, held-out curves with their bands, and the
replay front (general vs domain loss over shares) beside the proxies and the merge front."""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    """The figure as a PNG written atomically (a plot is never half-written), then closed."""
    from continua.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_pred_vs_obs(result: dict, path: Path) -> Path:
    """Final losses: in-sample fits (dots) and held-out runs (crosses with their 90% bands)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 6))
    lo, hi = float("inf"), float("-inf")
    for d in result["dcpt"]:
        label = f"{d['set']} lr {d['lr']:g}"
        obs = [r["observed"] for r in d["in_sample"]]
        pred = [r["predicted"] for r in d["in_sample"]]
        ax.scatter(obs, pred, s=12, alpha=0.6, label=f"{label} (fit)")
        if d["heldout"]:
            o = [r["observed"] for r in d["heldout"]]
            p = [r["predicted"] for r in d["heldout"]]
            err = [[max(0.0, r["predicted"] - r["lo"]) for r in d["heldout"]],  # a bootstrap band need not hold the point fit
                   [max(0.0, r["hi"] - r["predicted"]) for r in d["heldout"]]]
            ax.errorbar(o, p, yerr=err, fmt="x", ms=7, capsize=3, label=f"{label} (held out)")
            obs, pred = obs + o, pred + p
        if obs:
            lo, hi = min(lo, *obs, *pred), max(hi, *obs, *pred)
    if lo < hi:
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("observed final loss (nats/token)")
    ax.set_ylabel("D-CPT predicted final loss")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)
    else:  # a curve-law-only fit (e.g. a schedule sweep: one run per arm)
        ax.set_title("no D-CPT fit: fewer than two runs per arm")
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_curves(result: dict, path: Path) -> Path:
    """Held-out curves: observed points and the curve law's prediction with its band, one panel per set."""
    plt = _plt()
    sets = sorted({c["set"] for c in result["curve"] if c["heldout"]}) or ["(none held out)"]
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4), squeeze=False)
    for ax, key in zip(axes[0], sets):
        for c in result["curve"]:
            if c["set"] != key:
                continue
            for h in c["heldout"]:
                line = ax.plot(h["steps"], h["predicted"], lw=1.2, label=f"{h['run']} predicted ({h['mape']:.1f}%)")[0]
                ax.fill_between(h["steps"], h["lo"], h["hi"], color=line.get_color(), alpha=0.2)
                ax.plot(h["steps"], h["observed"], "o", ms=3, color=line.get_color())
        ax.set_title(key)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_front(fronts: list[dict], proxies: list[dict], merge: list[dict] | None, base: tuple[float, float] | None,
               tolerance: float | None, path: Path) -> Path:
    """General loss (x) vs domain loss (y): each arm's predicted replay front, observed runs, the merge front."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    for f in fronts:
        line = ax.plot(f["general"], f["domain"], lw=1.4, label=f"predicted replay front, {f['label']}")[0]
        ax.fill_between(f["general"], f["domain_lo"], f["domain_hi"], color=line.get_color(), alpha=0.15)
        if f.get("chosen"):
            ax.plot([f["chosen"]["general"]], [f["chosen"]["domain"]], "*", ms=14, color=line.get_color())
    if proxies:
        ax.scatter([p["general"] for p in proxies], [p["domain"] for p in proxies], s=18, c="k", marker="o",
                   label="observed runs at the target size and budget")
        for p in proxies:
            ax.annotate(f"r{p['replay']:g}", (p["general"], p["domain"]), fontsize=6)
    if merge:
        ax.plot([m["general"] for m in merge], [m["domain"] for m in merge], "s-", ms=4, lw=1, color="tab:red",
                label="merge front (1-l) base + l CPT")
    if base:
        ax.axvline(base[0], color="grey", lw=0.8, ls=":")
        if tolerance is not None:
            ax.axvline(base[0] + tolerance, color="grey", lw=0.8, ls="--", label=f"base general + tolerance {tolerance:g}")
    ax.set_xlabel("general validation loss (nats/token)")
    ax.set_ylabel("domain validation loss (nats/token)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(plt, fig, path)
