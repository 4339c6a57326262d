"""Figures: matplotlib's file-only Agg backend, chosen once here, and the one way to save a figure.

Every plotting module does ``from deepyeast.utils.plotting import plt, save_figure``.
:func:`save_figure` writes ``BASE.png`` (and by default ``BASE.pdf``) atomically and closes
the figure; :func:`crop_rgb` turns a 2-channel crop into the red/green picture every figure
shows.
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from deepyeast.utils.io import atomic_path  # noqa: E402

__all__ = ["plt", "save_figure", "crop_rgb", "NETWORK_COLOR", "FOREST_COLOR"]

NETWORK_COLOR = "#1f5fa8"
FOREST_COLOR = "#d9731a"

_EXTENSIONS = (".png", ".pdf", ".svg")


def save_figure(fig, out_base, dpi=150, formats=("png", "pdf")):
    """Save ``fig`` as ``out_base.<fmt>`` for each format (atomically), close it, return the paths.

    ``out_base`` may carry one of the extensions (``fig.png``); it is replaced by each format's.
    """
    out_base = os.fspath(out_base)
    stem, ext = os.path.splitext(out_base)
    if ext.lower() in _EXTENSIONS:
        out_base = stem
    paths = []
    for fmt in formats:
        path = f"{out_base}.{fmt}"
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def crop_rgb(crop, stretch=True, marker_gain=1.0):
    """uint8 C x H x W crop (marker, protein) -> float H x W x 3 in [0, 1]: red = marker, green = protein.

    ``stretch``: scale each channel by its own maximum so that dim cells stay visible;
    ``marker_gain`` dims (< 1) the red channel after that.
    """
    image = np.asarray(crop, dtype=np.float32)
    rgb = np.zeros(image.shape[1:] + (3,), dtype=np.float32)
    for c in range(min(image.shape[0], 2)):
        top = image[c].max() if stretch else 255.0
        rgb[:, :, c] = image[c] / top if top > 0 else 0.0
    rgb[:, :, 0] *= marker_gain
    return np.clip(rgb, 0.0, 1.0)
