"""Input patches that most activate a neuron (paper Figure 3A).

A conv unit sees a square of the input, its receptive field: :func:`receptive_field_box`
places it from the blob's :class:`~deepyeast.engine.shapes.BlobGeometry` (the engine's
:meth:`~deepyeast.engine.Net.geometry`); the patch is cut around each of the top cells'
strongest position, zero-padded where it leaves the crop.  An fc unit sees the whole crop.
The top cells come from the whole maps (:func:`top_activating_units`) or, without them, from
the per-channel top activations stored at extraction (:func:`stored_top_units`): the same cells,
positions and values.
"""

import os

import numpy as np

from deepyeast.analysis.features import match_paths
from deepyeast.constants import CLASS_NAMES, N_CLASSES
from deepyeast.data.crop_png import read_crop
from deepyeast.utils.io import InputError
from deepyeast.utils.plotting import crop_strip, plt, save_figure

PATCH_LAYERS = ("conv1", "conv2", "conv4", "conv8", "fc3")
"""Layers 1, 2, 4, 8 and 11 of the net, shown in Figure 3A."""


def receptive_field_box(geometry, row, col):
    """Input-pixel box ``(top, left, side)`` seen by unit (row, col) of a blob.

    ``top``/``left`` may be negative or the box may reach past the image: the
    net pads with zeros there.  For an fc layer the box is the whole image.
    """
    half = (geometry.receptive_field - 1) / 2
    top = geometry.start + row * geometry.jump - half
    left = geometry.start + col * geometry.jump - half
    return int(round(top)), int(round(left)), geometry.receptive_field


def cut_patch(image, top, left, side):
    """Cut a ``side`` x ``side`` patch from ``image`` (C x H x W), zero-padded
    where the box leaves the image.  Returns an array of ``image.dtype``."""
    c, h, w = image.shape
    patch = np.zeros((c, side, side), dtype=image.dtype)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + side, h), min(left + side, w)
    if y1 > y0 and x1 > x0:
        patch[:, y0 - top:y1 - top, x0 - left:x1 - left] = image[:, y0:y1, x0:x1]
    return patch


def load_cell_images(paths, archive_root=None, lmdb_path=None):
    """Cell crops for ``paths``: uint8 N x C x 64 x 64 (C = 2: marker, protein).

    From the PNGs under ``archive_root`` (:func:`deepyeast.data.crop_png.read_crop`) or from a
    Datum LMDB (cells found by :func:`deepyeast.caffe.lmdb.path_of_key`).
    """
    if lmdb_path is not None:  # keys first, then only the wanted records' images
        from deepyeast.caffe.lmdb import iter_datum_lmdb, path_of_key, read_keys
        names = [path_of_key(k) for k in read_keys(lmdb_path)]
        idx = match_paths(paths, names, f"{lmdb_path} (LMDB keys)")
        wanted = set(idx.tolist())
        images = {i: image for i, (_key, image, _label) in enumerate(iter_datum_lmdb(lmdb_path)) if i in wanted}
        return np.stack([images[i] for i in idx]).astype(np.uint8)
    if archive_root is None:
        raise ValueError("give archive_root or lmdb_path to read cell images")
    return np.stack([read_crop(p if os.path.isabs(p) else os.path.join(archive_root, p)) for p in paths])


def top_activating_units(activations, channel, k=8, chunk=256):
    """The ``k`` cells where neuron ``channel`` fires most, one position per cell.

    ``activations``: N x C x H x W.  Returns a list of ``(cell, row, col,
    value)`` sorted by value, highest first; (row, col) is the cell's
    argmax position in the channel's map.
    """
    n, _, h, w = activations.shape
    best_value = np.empty(n, dtype=np.float64)
    best_pos = np.empty(n, dtype=np.int64)
    for i in range(0, n, chunk):
        block = np.asarray(activations[i:i + chunk, channel], dtype=np.float64).reshape(-1, h * w)
        best_pos[i:i + chunk] = block.argmax(axis=1)
        best_value[i:i + chunk] = block.max(axis=1)
    order = np.argsort(-best_value, kind="stable")[:k]
    return [(int(c), int(best_pos[c] // w), int(best_pos[c] % w), float(best_value[c])) for c in order]


def stored_top_units(top, channel, k=8, n_cells=None):
    """:func:`top_activating_units` read from a blob's stored top activations (``read_top``'s dict,
    :class:`~deepyeast.caffe.feature_stream.TopActivations`): the same list, without the maps.
    ``n_cells``: cells in the features folder (asking for more than were stored is an error
    unless every cell was stored)."""
    stored = top["value"].shape[1]
    if k > stored and (n_cells is None or stored < n_cells):
        raise InputError(f"{k} top cells asked for, {stored} stored per channel")
    return [(int(top["cell"][channel, j]), int(top["row"][channel, j]), int(top["col"][channel, j]),
             float(top["value"][channel, j])) for j in range(min(k, top["value"].shape[1]))]


def patches_of_units(units, geometry, images):
    """Input patches (C x rf x rf each) of ``units`` (``(cell, row, col, value)``, e.g. from
    :func:`top_activating_units`): the receptive field around each unit of a conv blob, the whole
    crop for an fc blob.  ``images``: cell index -> C x H x W crop (an array or a dict).
    Returns a list of dicts ``cell, row, col, value, patch``."""
    out = []
    for cell, row, col, value in units:
        if geometry.kind == "fc":
            patch = images[cell]
        else:
            patch = cut_patch(images[cell], *receptive_field_box(geometry, row, col))
        out.append(dict(cell=cell, row=row, col=col, value=value, patch=patch))
    return out


def activating_patches(activations, geometry, channel, images, k=8):
    """Input patches (C x rf x rf each) that most activate one neuron.

    For a conv blob: the receptive-field patch around each of the top-``k``
    cells' maximal position.  For an fc blob: the whole crops with the
    highest outputs.  ``images``: N x C x H x W aligned with ``activations``.
    Returns a list of dicts ``cell, row, col, value, patch``.
    """
    return patches_of_units(top_activating_units(activations, channel, k), geometry, images)


def plot_patches(panels, stem):
    """Figure 3A: one row per (layer, neuron), the top-activating input patches across.

    fc3 neurons are named by the trained net's classes (``deepyeast.constants.CLASS_NAMES``)."""
    n_cols = max(len(p) for _, _, p in panels)
    fig = plt.figure(figsize=(1.0 * n_cols + 1.4, 1.0 * len(panels) + 0.5))
    grid = fig.add_gridspec(len(panels), n_cols)
    for r, (blob, channel, patches) in enumerate(panels):
        ax = fig.add_subplot(grid[r, :max(len(patches), 1)])
        side = patches[0]["patch"].shape[-1] if patches else 0
        crop_strip(ax, [p["patch"] for p in patches], gap=max(1, side // 16), marker_gain=1.0)
        name = CLASS_NAMES[channel] if blob == "fc3" and channel < N_CLASSES else f"#{channel}"
        ax.set_ylabel(f"{blob} {name}\n{side}x{side} px", fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("Input patches that most activate chosen neurons (red: marker, green: protein)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    save_figure(fig, stem)

