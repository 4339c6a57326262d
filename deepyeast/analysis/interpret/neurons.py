"""What single neurons encode (paper Figure 3D): mutual information with the class and the
strongest correlation to a CellProfiler feature, per neuron and layer.

Mutual information is the plug-in estimate on quantile bins, in nats; it is biased upwards by
about (bins - 1)(classes - 1) / (2 N) (0.004 nats for 10 bins, 12 classes, 12,500 cells; much
more on a few hundred cells), so each layer also reports the median MI after shuffling the
labels once.

A conv "neuron" is a channel.  Its output for a cell is summarised by the spatial maximum of
its feature map (``summary="max"``, what the activating patches show) or mean; a fully
connected neuron is its single value.
"""

import numpy as np

from deepyeast.analysis.features import channel_mean_max
from deepyeast.utils.plotting import plt, save_figure


def neuron_outputs(activations, summary="max", rows=None, chunk=256):
    """Per-neuron scalar per cell: float32 N x C from an N x C x H x W blob.

    ``summary``: ``"max"`` or ``"mean"`` over the spatial map (identical for fc
    blobs).  ``rows``: optional index array selecting cells.
    """
    if summary not in ("max", "mean"):
        raise ValueError(f"summary must be 'max' or 'mean', not {summary!r}")
    means, maxima = channel_mean_max(activations, rows, chunk)
    return maxima if summary == "max" else means


def quantile_bins(values, n_bins=10):
    """Discretize a 1-D array into at most ``n_bins`` equal-count bins (int64).

    Bins come from ranks, so tied values always share a bin: a neuron with k
    distinct outputs gets at most k bins.
    """
    from scipy.stats import rankdata
    values = np.asarray(values)
    ranks = rankdata(values, method="min") - 1  # 0-based rank of the first tie
    return (ranks * n_bins // len(values)).astype(np.int64)


def mutual_information_per_neuron(outputs, labels, n_bins=10):
    """Mutual information (nats) between each neuron's binned output and the class.

    ``outputs``: float N x M (one column per neuron); ``labels``: int N.
    Returns float64 M.  The maximum possible value is the class entropy
    (``class_entropy(labels)``).  Same value as scikit-learn's
    ``mutual_info_score(labels, quantile_bins(column))`` per column, computed
    for all columns at once from one contingency table per neuron.
    """
    from scipy.stats import rankdata
    outputs = np.asarray(outputs)
    labels = np.asarray(labels)
    n, m = outputs.shape
    if m == 0:
        return np.zeros(0)
    _, y = np.unique(labels, return_inverse=True)
    n_classes = int(y.max()) + 1
    bins = ((rankdata(outputs, method="min", axis=0) - 1) * n_bins // n).astype(np.int64)  # N x M
    cells = (np.arange(m)[None, :] * n_bins + bins) * n_classes + y[:, None]
    joint = np.bincount(cells.ravel(), minlength=m * n_bins * n_classes).reshape(m, n_bins, n_classes) / n
    p_bin = joint.sum(axis=2, keepdims=True)
    p_class = np.bincount(y, minlength=n_classes)[None, None, :] / n
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / (p_bin * p_class)), 0.0)
    return np.maximum(terms.sum(axis=(1, 2)), 0.0)


def class_entropy(labels):
    """Entropy (nats) of the empirical class distribution of ``labels``."""
    counts = np.bincount(np.asarray(labels))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def strongest_correlations(outputs, features):
    """For each neuron, the feature with the largest |Pearson r|.

    ``outputs``: N x M neuron outputs; ``features``: N x F.  Returns
    ``(index int64 M, r float64 M)`` with the signed r of the chosen feature.
    Constant columns have r = 0 with everything.
    """
    a = _standardize(outputs)
    b = _standardize(features)
    r = a.T @ b / a.shape[0]
    best = np.argmax(np.abs(r), axis=1)
    return best, r[np.arange(r.shape[0]), best]


def _standardize(x):
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    sd = x.std(axis=0)
    return np.divide(x, sd, out=np.zeros_like(x), where=sd > 0)


def plot_neuron_summary(mi_by_blob, r_by_blob, h_class, stem, chance_by_blob=None, cp_mi=None, cp_chance=None):
    """Figure 3D: per layer, the distribution of neurons' class MI and best |r| to CellProfiler.

    ``chance_by_blob``: per layer, the median MI with shuffled labels (drawn as x).  ``cp_mi``: the
    CellProfiler features' MI with the class (same binning), drawn as a last box ("CellProfiler")
    with ``cp_chance`` its shuffled-label median."""
    blobs = list(mi_by_blob)
    boxes = [mi_by_blob[b] for b in blobs]
    names = list(blobs)
    chance = [chance_by_blob[b] for b in blobs] if chance_by_blob else None
    if cp_mi is not None:
        boxes.append(cp_mi)
        names.append("CellProfiler")
        if chance is not None:
            chance.append(np.nan if cp_chance is None else cp_chance)
    n_panels = 2 if r_by_blob else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(0.6 * len(names) * n_panels + 3, 3.6), squeeze=False)
    ax = axes[0, 0]
    ax.boxplot(boxes, showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=45)
    ax.axhline(h_class, ls="--", color="grey", lw=1, label="class entropy (max)")
    if chance is not None:
        ax.plot(range(1, len(names) + 1), chance, "x", color="grey", label="median with shuffled labels")
    ax.set_ylabel("mutual information with class (nats)")
    ax.set_title("Neuron output vs compartment")
    ax.legend(fontsize=8)
    if r_by_blob:
        ax = axes[0, 1]
        ax.boxplot([np.abs(r_by_blob[b]) for b in blobs], showfliers=False)
        ax.set_xticks(range(1, len(blobs) + 1), blobs, rotation=45)
        ax.set_ylim(0, 1)
        ax.set_ylabel("strongest |Pearson r| to a CellProfiler feature")
        ax.set_title("Neuron output vs CellProfiler")
    fig.tight_layout()
    save_figure(fig, stem)

