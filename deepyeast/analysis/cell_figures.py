"""Figures of the per-cell evaluation (paper Fig. 2A, 2B, 2D), PNG + PDF.

Every ``plot_*`` function takes an output base path without extension, writes
``BASE.png`` (150 dpi) and ``BASE.pdf`` atomically and returns the two paths.
"""

import numpy as np

from deepyeast.utils.plotting import FOREST_COLOR, NETWORK_COLOR, plt, save_figure


def plot_per_class(result_net, result_rf, metric, out_base):
    """Per-class ``metric`` ("recall": Fig. 2A, "precision": Fig. 2B), network vs forest.

    ``result_*`` are :func:`deepyeast.analysis.evaluate_cells.evaluate_cells` dicts (``result_rf`` may be
    None).  Points are the estimates on all test cells, bars the bootstrap 95% intervals;
    a dashed line of the same colour marks each classifier's median over classes.
    """
    if metric not in ("recall", "precision"):
        raise ValueError(f"metric must be 'recall' or 'precision', not {metric!r}")
    names = result_net["class_names"]
    k = len(names)
    x = np.arange(k)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.62 * k + 2), 4.4))
    series = [("DeepYeast network", result_net, NETWORK_COLOR, -0.12)]
    if result_rf is not None:
        series.append(("Random forest (CellProfiler features)", result_rf, FOREST_COLOR, 0.12))
    for label, res, color, dx in series:
        pc = res["per_class"]
        est, lo, hi = pc[metric], pc[f"{metric}_lo"], pc[f"{metric}_hi"]
        yerr = np.vstack([np.clip(est - lo, 0, None), np.clip(hi - est, 0, None)])
        ax.errorbar(x + dx, est, yerr=np.nan_to_num(yerr), fmt="o", color=color, ms=5, capsize=3, lw=1.2,
                    label=label)
        med = np.nanmedian(est) if np.any(~np.isnan(est)) else np.nan
        if np.isfinite(med):
            ax.axhline(med, color=color, ls="--", lw=1, label=f"median {med:.2f}")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=40, ha="right")
    ax.set_ylabel(metric.capitalize())
    ax.set_xlabel("Compartment")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(-0.6, k - 0.4)
    ax.grid(axis="y", alpha=0.3)
    panel = "A" if metric == "recall" else "B"
    ax.set_title(f"Fig. 2{panel}: {metric} per class (95% stratified bootstrap intervals)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left", ncol=2)
    return save_figure(fig, out_base)


def plot_confusion(rates, class_names, out_base, title="Confusion matrix (% of each true class)"):
    """Fig. 2D: confusion rates (rows = true class, each row sums to 1) as an annotated heat map."""
    rates = np.asarray(rates, dtype=np.float64)
    k = len(class_names)
    if rates.shape != (k, k):
        raise ValueError(f"rates have shape {rates.shape}, expected ({k}, {k})")
    fig, ax = plt.subplots(figsize=(0.55 * k + 2.8, 0.55 * k + 2.0))
    im = ax.imshow(np.nan_to_num(rates), cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            v = rates[i, j]
            if np.isfinite(v) and v >= 0.005:
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if v > 0.5 else "black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticklabels(class_names, fontsize=8)
    ax.set_xlabel("Predicted compartment")
    ax.set_ylabel("True compartment")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    return save_figure(fig, out_base)
