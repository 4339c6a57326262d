"""The napari widget's work without Qt: layer data in, the cells layer and the protein call out.

The same path as ``deepyeast classify``: the micrograph is made 2 x H x W uint8 by
:func:`deepyeast.data.micrographs.to_two_channel` (so bad input gives the command's one-line
``InputError``), cells are found and classified by
:func:`deepyeast.analysis.classify_screen.classify_micrograph` and the protein is called by the
command's Dirichlet model and flags.
"""

import os

import numpy as np

from deepyeast.utils.io import InputError

__all__ = ["micrograph_from_layers", "cells_layer", "CellsLayer", "load_bundle"]


def micrograph_from_layers(image, protein=None, fmt=None, rgb=False, names=("image", "protein")):
    """Layer data -> uint8 ``2 x H x W`` (marker, protein).

    ``image``: one layer's data: ``C x H x W`` channels (``fmt.channels`` = marker index, protein
    index), ``H x W x C`` with ``rgb``, or ``H x W`` (one channel: the marker when ``protein``
    is given, else refused as the command refuses a single-channel file); ``protein``: a second
    layer's ``H x W`` data or None; ``fmt``: :class:`deepyeast.data.micrographs.MicrographFormat`
    (None: channels 0 and 1, 8-bit data; its ``bits`` as ``--bits``); ``names``: the layers'
    names, for messages.
    """
    from deepyeast.data.micrographs import MicrographFormat

    fmt = MicrographFormat() if fmt is None else fmt
    bits = fmt.bits
    name, protein_name = names
    img = np.asarray(image)
    if rgb and img.ndim == 3:
        img = np.moveaxis(img, -1, 0)
    if protein is None:
        from deepyeast.data.micrographs import to_two_channel

        return to_two_channel(img, name, fmt)
    other = np.asarray(protein)
    for array, what in ((img, name), (other, protein_name)):
        if array.ndim != 2:
            raise InputError(f"{what}: with a separate protein layer each layer must be one channel (H x W), "
                             f"got shape {' x '.join(map(str, array.shape))}")
    if img.shape != other.shape:
        raise InputError(f"{protein_name}: protein layer is {other.shape[1]}x{other.shape[0]} but marker layer "
                         f"{name} is {img.shape[1]}x{img.shape[0]}")
    from deepyeast.data.micrographs import to_uint8

    return np.stack([to_uint8(img, name, bits), to_uint8(other, protein_name, bits)])


_BUNDLES = {}


def load_bundle(path):
    """``(bundle, predictor)`` of the model bundle folder ``path`` (``predictor``:
    :func:`deepyeast.analysis.classify_screen.micrograph_predictor`'s pair), checked as the command checks it
    (:func:`deepyeast.model.read_bundle`: its one-line ``InputError``); kept while the folder's
    bundle.json is unchanged, so a second run does not load the net again."""
    from deepyeast.model import read_bundle
    from deepyeast.model.bundle import BUNDLE_JSON

    if str(path) in ("", "."):
        raise InputError("choose a model bundle folder (e.g. RUN/model, or one written by deepyeast convert-keras)")
    folder = os.path.realpath(os.fspath(path))
    meta = os.path.join(folder, BUNDLE_JSON)
    stamp = os.stat(meta).st_mtime_ns if os.path.isfile(meta) else None
    cached = _BUNDLES.get(folder)
    if cached is None or stamp is None or cached[0] != stamp:
        from deepyeast.analysis.classify_screen import micrograph_predictor

        bundle = read_bundle(os.fspath(path))
        _BUNDLES.clear()
        _BUNDLES[folder] = cached = (stamp, bundle, micrograph_predictor(bundle))
    return cached[1], cached[2]


class CellsLayer:
    """What the widget adds: ``data`` int32 H x W labels (cell k = row k - 1 of ``features``, 0 background),
    ``features`` a dict of (M,) columns: ``index`` (the label, 1..M: napari's key from label to row),
    ``cell`` (the cell's label in the segmentation or the given Labels layer), ``class``, ``probability``
    (of that class), ``prob_<class>`` for every class, ``x``, ``y`` (centroid, pixels), ``area``,
    ``padded``, and ``ood_score``, ``ood`` where the bundle has out-of-distribution statistics: flagged
    cells are left out of the call), ``colors`` {label: RGBA} by class,
    ``call`` the protein's call (dict), ``classes`` the bundle's class names."""

    def __init__(self, data, features, colors, call, classes):
        self.data, self.features, self.colors, self.call, self.classes = data, features, colors, call, classes


def class_color_table(classes):
    """{class name: RGBA floats}: the colours of the project's figures (tab10 / tab20 by class index)."""
    from deepyeast.analysis.interpret.tsne import class_colors

    return dict(zip(classes, class_colors(len(classes))))


def cells_layer(bundle, micrograph, mask=None, predictor=None, name="micrograph", border="pad"):
    """Classify the cells of one micrograph (:func:`micrograph_from_layers`'s output) -> :class:`CellsLayer`.

    ``mask``: a Labels layer's data (int H x W) to use instead of segmenting the marker.
    """
    from deepyeast.analysis.classify_screen import classify_micrograph

    if mask is not None:
        mask = np.asarray(mask)
        if not np.issubdtype(mask.dtype, np.integer):
            raise InputError(f"{name}: the cells layer must hold integer labels, got {mask.dtype}")
    seg, cells, calls = classify_micrograph(bundle, micrograph, mask=mask, predictor=predictor, name=name,
                                            border=border)
    classes = list(bundle.classes)
    lookup = np.zeros(int(seg.max(initial=0)) + 1, np.int32)
    lookup[cells.cell] = np.arange(1, cells.n_cells + 1, dtype=np.int32)
    data = lookup[seg]
    palette = class_color_table(classes)
    columns = {"index": np.arange(1, cells.n_cells + 1), "cell": cells.cell, "class": [classes[k] for k in cells.pred],
               "probability": cells.probs[np.arange(cells.n_cells), cells.pred].astype(float)}
    columns.update({f"prob_{c}": cells.probs[:, k].astype(float) for k, c in enumerate(classes)})
    columns.update(x=cells.x, y=cells.y, area=cells.area, padded=cells.padded)
    if np.isfinite(cells.ood_score).any() or cells.ood.any():  # the bundle has out-of-distribution statistics
        columns.update(ood_score=cells.ood_score.astype(float), ood=cells.ood)
    features = {name: np.asarray(values) for name, values in columns.items()}
    colors = {i + 1: palette[classes[k]] for i, k in enumerate(cells.pred)}
    return CellsLayer(data, features, colors, protein_call(calls, classes), classes)


def protein_call(calls, classes):
    """The call of the one protein of ``calls`` (:class:`deepyeast.analysis.classify_screen.ScreenCalls`) as a
    dict: ``class`` (None without cells), ``n_cells`` (those called), ``n_ood`` (left out as out of
    distribution), ``top1_share``, ``second``, ``top2_share``,
    ``p_call``, the flags (``few_cells``, ``low_confidence``, ``possible_dual``, ``no_cells``) and
    ``post_<class>``, the posterior's MAP shares."""
    f = calls.flags
    pred = int(calls.pred[0])
    top2 = int(f["top2"][0])
    call = {"class": classes[pred] if pred >= 0 else None, "n_cells": int(calls.n_cells[0]),
            "n_ood": int(calls.n_ood[0]),
            "top1_share": float(f["top1_share"][0]), "second": classes[top2] if top2 >= 0 else None,
            "top2_share": float(f["top2_share"][0]), "p_call": float(f["p_call"][0])}
    call.update({flag: bool(f[flag][0]) for flag in ("few_cells", "low_confidence", "possible_dual", "no_cells")})
    call.update({f"post_{c}": float(calls.posterior[0, k]) for k, c in enumerate(classes)})
    return call
