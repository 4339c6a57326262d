"""Cells embedded by t-SNE at every layer, coloured by compartment (paper Figure 3B)."""

import math

import numpy as np

from deepyeast.analysis.interpret.neurons import _standardize
from deepyeast.utils.plotting import plt, save_figure


TSNE_MODES = ("fast", "paper")
"""t-SNE settings: ``paper`` = scikit-learn's defaults on the features as they are (the paper ran
scikit-learn's t-SNE with its defaults); ``fast`` = our quicker settings (a documented deviation)."""


def tsne_embedding(features, seed=0, mode="fast", perplexity=30.0, pca_dims=50, max_iter=500, threads=1):
    """2-D t-SNE (scikit-learn, Barnes-Hut) of N x F features -> float32 N x 2.

    ``mode="paper"``: ``sklearn.manifold.TSNE(random_state=seed)`` with every other parameter at
    the installed scikit-learn's default (perplexity 30, early exaggeration 12, learning rate
    "auto", 1,000 iterations, PCA initialisation since 1.2; the paper's 0.18 started from random
    points with learning rate 1,000), on the raw features.
    ``mode="fast"`` (default): features standardized, reduced to ``pca_dims`` principal
    components when wider (the usual t-SNE preprocessing), ``max_iter`` 500 (half the default;
    1,000 cells converge well before), which halves the time.
    In both, perplexity is capped at (N - 1) / 3 so that a few cells still embed, and OpenMP
    is limited to ``threads``: on a busy 2-core machine two spinning OpenMP threads made one
    embedding 7x slower (70 s vs 9.4 s).
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits
    if mode not in TSNE_MODES:
        raise ValueError(f"t-SNE mode must be one of {', '.join(TSNE_MODES)}, not {mode!r}")
    x = np.asarray(features, dtype=np.float64)
    with threadpool_limits(limits=threads):
        if mode == "fast":
            x = _standardize(x)
            if x.shape[1] > pca_dims and x.shape[0] > pca_dims:
                x = PCA(pca_dims, random_state=seed).fit_transform(x)
        cap = max(1.0, (x.shape[0] - 1) / 3)
        if mode == "paper":
            tsne = TSNE(random_state=seed) if perplexity <= cap else TSNE(perplexity=cap, random_state=seed)
        else:
            tsne = TSNE(2, perplexity=min(perplexity, cap), init="pca", random_state=seed, max_iter=max_iter)
        return tsne.fit_transform(x).astype(np.float32)


def class_colors(n):
    """``n`` distinguishable RGBA colours (tab20 for up to 20 classes)."""
    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
    return [cmap(i) for i in range(n)]


def plot_tsne_grid(embeddings, labels, class_names, stem, title=None):
    """Figure 3B (and 4B): one t-SNE panel per layer, points coloured by class."""
    blobs = list(embeddings)
    cols = min(4, len(blobs))
    rows = math.ceil(len(blobs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows + 0.8), squeeze=False)
    colors = class_colors(len(class_names))
    for ax, blob in zip(axes.flat, blobs):
        xy = embeddings[blob]
        for k, name in enumerate(class_names):
            sel = labels == k
            ax.scatter(xy[sel, 0], xy[sel, 1], s=3, color=colors[k], label=name, rasterized=True)
        ax.set_title(blob)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(blobs):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], marker="o", ls="", color=colors[k], label=n) for k, n in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(class_names)), fontsize=8, frameon=False)
    fig.suptitle(title or f"t-SNE of {len(labels)} cells per layer, coloured by compartment")
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    save_figure(fig, stem)

