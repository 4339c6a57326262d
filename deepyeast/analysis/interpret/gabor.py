"""Figure S4's comparison with Gabor filters, in our reading: the network's first-layer filters
against a bank of Gabor filters, and the neurons' outputs against CellProfiler's Gabor texture.

The paper names a comparison with Gabor filters in Figure S4 but does not give its procedure (nor
does the authors' code), so this is the natural reading, said as such in the report:

1. **Filters.**  Each of conv1's filters (C_in x k x k weights; DeepYeast: 64 x 2 x 3 x 3, one
   3 x 3 kernel per input channel, marker and protein) is fitted per input channel by the Gabor
   filter of a bank (:func:`gabor_bank`) with the largest |cosine similarity|; the fit of the filter
   is the fraction of its squared weights the fitted Gabors (each scaled by least squares) explain,
   ``R^2 = sum_c |w_c|^2 r_c^2 / sum_c |w_c|^2`` (1: every channel's kernel is a Gabor filter).
   A 3 x 3 kernel has 9 weights and a bank has hundreds of shapes, so any kernel fits somewhat:
   the same fit of random filters drawn from the untrained net's distribution (conv1's filler is
   Gaussian, zero-mean, i.i.d.; the cosine ignores its scale) is the chance level beside it.
2. **Activations.**  Per layer, each neuron's strongest |Pearson r| to one of CellProfiler's Gabor
   texture features (``*Texture_Gabor_*`` columns; ours: marker and protein at 3 and 5 px, best of
   4 angles), beside its strongest |r| to any CellProfiler feature (Figure 3D's correlation).
"""

import itertools

import numpy as np

from deepyeast.utils.plotting import plt, save_figure

GABOR_WAVELENGTHS = (2.0, 3.0, 4.0, 6.0, 8.0, 16.0)
"""Wavelengths of the bank, pixels (2: the finest a pixel grid holds; 16: nearly flat on 3 x 3)."""
GABOR_SIGMAS = (0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
"""Widths of the Gaussian envelope, pixels."""
GABOR_ASPECTS = (0.5, 1.0)
"""Envelope aspect ratios (across / along the stripes)."""
GABOR_ANGLES = 8
"""Orientations, evenly over 180 degrees."""
GABOR_PHASES = 8
"""Phase offsets, evenly over 360 degrees (even, odd and everything between)."""
RANDOM_FILTERS = 5000
"""Random filters of the chance level."""
GABOR_FEATURE = "Texture_Gabor_"
"""Substring naming CellProfiler's Gabor texture features in a feature table."""


def gabor_kernel(size, wavelength, sigma, angle, phase, aspect=1.0):
    """One Gabor filter on a ``size`` x ``size`` grid centred on the middle pixel -> float64 size x size.

    ``g(x, y) = exp(-(x'^2 + aspect^2 y'^2) / (2 sigma^2)) cos(2 pi x' / wavelength + phase)`` with
    ``x' = x cos(angle) + y sin(angle)``, ``y' = -x sin(angle) + y cos(angle)``; lengths in pixels,
    angles in radians.
    """
    half = (size - 1) / 2
    y, x = np.mgrid[-half:half + 1, -half:half + 1]
    xr = x * np.cos(angle) + y * np.sin(angle)
    yr = -x * np.sin(angle) + y * np.cos(angle)
    return np.exp(-(xr ** 2 + aspect ** 2 * yr ** 2) / (2 * sigma ** 2)) * np.cos(2 * np.pi * xr / wavelength + phase)


def gabor_bank(size):
    """Every Gabor filter of the bank's parameter grid on a ``size`` x ``size`` grid.

    Returns ``(kernels, params)``: float64 K x size*size, each row of unit norm (kernels that vanish
    on the grid are left out), and a list of K dicts (wavelength, sigma, aspect, angle, phase).
    """
    kernels, params = [], []
    for lam, sigma, aspect, a, p in itertools.product(GABOR_WAVELENGTHS, GABOR_SIGMAS, GABOR_ASPECTS,
                                                      range(GABOR_ANGLES), range(GABOR_PHASES)):
        angle, phase = np.pi * a / GABOR_ANGLES, 2 * np.pi * p / GABOR_PHASES
        g = gabor_kernel(size, lam, sigma, angle, phase, aspect).ravel()
        norm = np.linalg.norm(g)
        if norm > 1e-6:
            kernels.append(g / norm)
            params.append(dict(wavelength=lam, sigma=sigma, aspect=aspect, angle=angle, phase=phase))
    return np.array(kernels), params


def best_gabor_fit(kernels, bank):
    """Per kernel, the bank's Gabor filter of largest |cosine similarity|.

    ``kernels``: float N x D (flattened k x k kernels); ``bank``: float K x D unit rows
    (:func:`gabor_bank`).  Returns ``(r, index, amplitude)``: float64 N |cosine| (0 for an all-zero
    kernel), int N row of the bank, float64 N least-squares scale (``kernel ~ amplitude * bank[index]``).
    """
    k = np.asarray(kernels, dtype=np.float64)
    norms = np.linalg.norm(k, axis=1)
    dots = k @ bank.T
    index = np.argmax(np.abs(dots), axis=1)
    amplitude = dots[np.arange(len(k)), index]
    r = np.divide(np.abs(amplitude), norms, out=np.zeros(len(k)), where=norms > 0)
    return r, index, amplitude


def filter_fit(weights, bank):
    """Gabor fit of each filter of a convolution layer.

    ``weights``: float C_out x C_in x k x k (a ``.caffemodel``'s convolution weights).  Returns a dict:
    ``r2`` float64 C_out (the fraction of each filter's squared weights its per-channel Gabors
    explain), ``r`` float64 C_out x C_in (per channel |cosine|), ``index`` int C_out x C_in (bank rows),
    ``amplitude`` float64 C_out x C_in.
    """
    w = np.asarray(weights, dtype=np.float64)
    c_out, c_in = w.shape[:2]
    r, index, amplitude = best_gabor_fit(w.reshape(c_out * c_in, -1), bank)
    energy = (w.reshape(c_out, c_in, -1) ** 2).sum(axis=2)
    r, index, amplitude = (a.reshape(c_out, c_in) for a in (r, index, amplitude))
    total = energy.sum(axis=1)
    r2 = np.divide((energy * r ** 2).sum(axis=1), total, out=np.zeros(c_out), where=total > 0)
    return dict(r2=r2, r=r, index=index, amplitude=amplitude)


def random_filter_fit(shape, bank, n=RANDOM_FILTERS, seed=0):
    """:func:`filter_fit`'s ``r2`` of ``n`` random filters of ``shape`` (C_in x k x k), i.i.d. Gaussian
    weights as the untrained net's conv1 (its gaussian filler) -> float64 n."""
    rng = np.random.default_rng(seed)
    return filter_fit(rng.standard_normal((n, *shape)), bank)["r2"]


def compare_filters(weights, seed=0, n_random=RANDOM_FILTERS):
    """The filter half of Figure S4: the trained filters' Gabor fit beside random filters'.

    ``weights``: C_out x C_in x k x k.  Returns ``(summary, fit, random_r2, bank)``; ``summary`` holds
    ``n_filters``, ``kernel``, ``bank_size``, ``r2_median``, ``r2_median_random``, ``random_r2_p95`` and
    ``fraction_above_random_p95`` (the trained filters fitting better than 95% of random ones).
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise ValueError(f"convolution weights must be C_out x C_in x k x k, got shape {w.shape}")
    bank, _params = gabor_bank(w.shape[2])
    fit = filter_fit(w, bank)
    random_r2 = random_filter_fit(w.shape[1:], bank, n_random, seed)
    p95 = float(np.percentile(random_r2, 95))
    summary = dict(n_filters=int(w.shape[0]), kernel=int(w.shape[2]), in_channels=int(w.shape[1]),
                   bank_size=int(len(bank)), n_random=int(n_random), r2_median=float(np.median(fit["r2"])),
                   r2_median_random=float(np.median(random_r2)), random_r2_p95=p95,
                   fraction_above_random_p95=float(np.mean(fit["r2"] > p95)))
    return summary, fit, random_r2, bank


def gabor_columns(names):
    """Indices of CellProfiler's Gabor texture features among feature ``names`` (list of int)."""
    return [j for j, n in enumerate(names) if GABOR_FEATURE in n]


def plot_gabor_figure(weights, fit, random_r2, bank, layer_r, stem, n_show=16, channel_names=("marker", "protein")):
    """Figure S4 (our reading) as ``stem.{png,pdf}``.

    Left: the ``n_show`` conv1 filters of largest weight norm, each input channel's kernel beside its
    fitted Gabor (amplitude x bank row; one colour scale per filter).  Middle: histograms of the Gabor
    fit R^2 of the trained and of random filters.  Right (``layer_r``: dict layer -> (median strongest
    |r| to a Gabor texture feature, median strongest |r| to any CellProfiler feature), may be empty):
    those medians per layer.
    """
    w = np.asarray(weights, dtype=np.float64)
    c_out, c_in, k, _ = w.shape
    order = np.argsort(-np.linalg.norm(w.reshape(c_out, -1), axis=1))[:n_show]
    fig = plt.figure(figsize=(16, 7))
    outer = fig.add_gridspec(1, 3, width_ratios=(1.3, 1, 1), wspace=0.25)
    cols = 2
    rows = int(np.ceil(len(order) / cols))
    left = outer[0].subgridspec(rows, cols * (2 * c_in + 1), wspace=0.1, hspace=0.35)
    for i, f in enumerate(order):
        vmax = np.abs(w[f]).max() or 1.0
        r0, c0 = divmod(i, cols)
        for c in range(c_in):
            fitted = fit["amplitude"][f, c] * bank[fit["index"][f, c]].reshape(k, k)
            for j, (img, kind) in enumerate(((w[f, c], "w"), (fitted, "G"))):
                ax = fig.add_subplot(left[r0, c0 * (2 * c_in + 1) + 2 * c + j])
                ax.imshow(img, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
                ax.set_xticks([])
                ax.set_yticks([])
                if r0 == 0:
                    ax.set_title(f"{channel_names[c][0] if c < len(channel_names) else c}:{kind}", fontsize=7, pad=2)
                if c == 0 and j == 0:
                    ax.set_ylabel(f"#{f}\nR²={fit['r2'][f]:.2f}", fontsize=7)
    mid = fig.add_subplot(outer[1])
    bins = np.linspace(0, 1, 41)
    mid.hist(random_r2, bins=bins, density=True, alpha=0.5, color="grey", label=f"random ({len(random_r2):,})")
    mid.hist(fit["r2"], bins=bins, density=True, alpha=0.7, color="C3", label=f"conv1, trained ({c_out})")
    mid.axvline(np.percentile(random_r2, 95), color="k", ls=":", lw=1, label="random, 95th percentile")
    mid.set_xlabel("Gabor fit R² (fraction of the filter's squared weights)")
    mid.set_ylabel("density")
    mid.set_title("conv1 filters against a Gabor bank")
    mid.legend(fontsize=7)
    right = fig.add_subplot(outer[2])
    if layer_r:
        names = list(layer_r)
        x = np.arange(len(names))
        right.plot(x, [layer_r[n][0] for n in names], "o-", color="C2", label="Gabor texture features")
        right.plot(x, [layer_r[n][1] for n in names], "s--", color="C0", label="any CellProfiler feature")
        right.set_xticks(x)
        right.set_xticklabels(names, rotation=45, fontsize=7)
        right.set_ylim(0, 1)
        right.set_ylabel("median over neurons of the strongest |Pearson r|")
        right.legend(fontsize=7)
    else:
        right.text(0.5, 0.5, "no CellProfiler Gabor texture features given", ha="center", va="center", fontsize=8)
        right.axis("off")
    right.set_title("Neuron outputs against Gabor texture")
    fig.suptitle("Figure S4 (our reading): the network's filters and neurons against Gabor filters")
    fig.subplots_adjust(left=0.04, right=0.98, top=0.9, bottom=0.12)
    return save_figure(fig, stem)
