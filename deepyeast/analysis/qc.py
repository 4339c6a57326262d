"""Quality control of screen micrographs: what a person checks before trusting the calls.

Per micrograph (:func:`micrograph_qc`, columns of ``images.csv`` of ``classify_screen.py``):

``n_cells``
    cells found (segmented or in the given mask).
``focus``
    variance of the Laplacian of the marker channel (Pech-Pacheco et al. 2000, "Diatom
    autofocusing in brightfield microscopy"), in (8-bit grey level)^2: sharp cell edges give
    large values, a blurred field small ones.  Comparable between fields of one screen, not
    between microscopes.
``saturated``
    fraction of pixels (0..1) at the top of the 8-bit range (255) in the marker or the protein
    channel: clipped intensities.
``background_marker``, ``background_protein``
    median grey level (0..255) of the pixels outside every cell, per channel.
"""

import numpy as np

QC_COLUMNS = ("n_cells", "focus", "saturated", "background_marker", "background_protein")
"""Per-micrograph QC measures, in the order of ``images.csv``."""

QC_WORSE = {"n_cells": "low", "focus": "low", "saturated": "high", "background_marker": "high",
            "background_protein": "high"}
"""Which end of each measure is the suspicious one (the report shows those micrographs first)."""


def micrograph_qc(micrograph, mask, n_cells):
    """QC measures of one micrograph (see the module doc) -> dict of floats keyed by :data:`QC_COLUMNS`.

    ``micrograph``: uint8 2 x H x W (marker, protein); ``mask``: int H x W labels (0 = background);
    ``n_cells``: cells kept from it.
    """
    from scipy.ndimage import laplace

    micro = np.asarray(micrograph)
    marker = micro[0].astype(np.float32)
    background = np.asarray(mask) == 0
    bg = [float(np.median(micro[c][background])) if background.any() else float("nan") for c in (0, 1)]
    return {"n_cells": float(n_cells), "focus": float(np.var(laplace(marker))),
            "saturated": float(np.mean((micro[0] == 255) | (micro[1] == 255))),
            "background_marker": bg[0], "background_protein": bg[1]}


def worst_first(values, measure):
    """Indices of ``values`` (float array) ordered from the most suspicious by ``measure``, NaN last."""
    v = np.asarray(values, float)
    key = -v if QC_WORSE[measure] == "high" else v
    key = np.where(np.isnan(key), np.inf, key)
    return np.argsort(key, kind="stable")
