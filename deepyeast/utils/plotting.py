"""Figures: matplotlib's file-only Agg backend, chosen once here, and the one way to save a figure.

Every plotting module does ``from deepyeast.utils.plotting import plt, save_figure``.
:func:`save_figure` writes ``BASE.png`` (and by default ``BASE.pdf``) atomically and closes
the figure; :func:`crop_rgb` turns a 2-channel crop into the red/green picture every figure
shows; :func:`crop_strip` draws a row of them as one picture.
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from deepyeast.utils.io import atomic_path  # noqa: E402

__all__ = ["plt", "save_figure", "crop_rgb", "crop_strip", "NETWORK_COLOR", "FOREST_COLOR"]

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


def crop_strip(ax, crops, titles=(), gap=4, title_size=6, marker_gain=0.8, stretch=True):
    """Draw ``crops`` side by side in ``ax`` as one picture, each titled, on white, without ticks or frame.

    One image in one axes instead of an axes per crop: a figure of a few hundred crops draws and
    saves several times faster, and looks the same but for the frame around each crop.

    ``crops``: uint8 C x H x W arrays of one size (see :func:`crop_rgb`); ``titles``: a text above
    each of the first crops (fewer titles than crops leave the rest untitled); ``gap``: white pixels
    between crops.  Returns the x position (data units) of each crop's centre.
    """
    rgbs = [crop_rgb(c, stretch=stretch, marker_gain=marker_gain) for c in crops]
    if not rgbs:
        ax.axis("off")
        return []
    h, w = rgbs[0].shape[:2]
    if any(r.shape[:2] != (h, w) for r in rgbs):
        raise ValueError(f"crop_strip: crops of different sizes {sorted({r.shape[:2] for r in rgbs})}")
    strip = np.ones((h, len(rgbs) * (w + gap) - gap, 3), dtype=np.float32)
    centres = []
    for k, rgb in enumerate(rgbs):
        x0 = k * (w + gap)
        strip[:, x0:x0 + w] = rgb
        centres.append(x0 + (w - 1) / 2.0)
    ax.imshow(strip, interpolation="nearest")
    for x, text in zip(centres, titles):
        ax.text(x, -1.0, text, fontsize=title_size, ha="center", va="bottom")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return centres
