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


# --------------------------------------------------------------------------- flags and plate maps

QC_OUTLIER = 3.5
"""A micrograph is flagged by a measure when it lies more than this many robust standard deviations
(1.4826 x the median absolute deviation) from the screen's median on the measure's suspicious side
(:data:`QC_WORSE`; cells and focus on a log scale, as they vary by factors)."""
QC_MIN_IMAGES = 5
"""Fewest micrographs for the outlier rule (a median of fewer says little about the screen)."""
SATURATED_MAX = 0.01
"""Saturated share above which a micrograph is flagged whatever the screen (1% of its pixels clipped)."""
QC_LOG = ("n_cells", "focus")


def qc_flags(values):
    """Per micrograph, the QC measures that flag it (see :data:`QC_OUTLIER`, :data:`SATURATED_MAX`).

    ``values``: dict measure -> float array (n,) (keys of :data:`QC_COLUMNS`; NaN = not measured).
    Returns a list of n str, the flagging measures ``;``-joined in :data:`QC_COLUMNS` order ("" = none).
    A micrograph without cells is always flagged by ``n_cells``.
    """
    n = len(next(iter(values.values()))) if values else 0
    hit = {m: np.zeros(n, bool) for m in QC_COLUMNS}
    for m in QC_COLUMNS:
        v = np.asarray(values[m], float)
        if m in QC_LOG:
            v = np.log1p(np.clip(v, 0, None))
        ok = np.isfinite(v)
        if ok.sum() >= QC_MIN_IMAGES:
            med = np.median(v[ok])
            mad = 1.4826 * np.median(np.abs(v[ok] - med))
            if mad > 0:
                z = (v - med) / mad
                with np.errstate(invalid="ignore"):
                    hit[m] |= (z > QC_OUTLIER) if QC_WORSE[m] == "high" else (z < -QC_OUTLIER)
    with np.errstate(invalid="ignore"):
        hit["n_cells"] |= np.asarray(values["n_cells"], float) == 0
        hit["saturated"] |= np.asarray(values["saturated"], float) > SATURATED_MAX
    return [";".join(m for m in QC_COLUMNS if hit[m][i]) for i in range(n)]


def outline_sample(values, per_measure=2, most=10):
    """Micrographs to show with their segmentation outlines: the ``per_measure`` most suspicious by each
    measure in turn (:func:`worst_first`), each once, at most ``most``.

    ``values``: as :func:`qc_flags`.  Returns a list of ``(index, measure)``, the measure that picked it.
    """
    picked, seen = [], set()
    for m in QC_COLUMNS:
        for i in worst_first(values[m], m)[:per_measure]:
            if int(i) not in seen and len(picked) < most:
                seen.add(int(i))
                picked.append((int(i), m))
    return picked


PLATE_FORMATS = ((2, 3), (4, 6), (8, 12), (16, 24), (32, 48))
"""Standard plates (rows, columns): 6, 24, 96, 384 and 1536 wells."""


def well_position(name):
    """A well name -> (row, column), both 0-based: ``A1``, ``B03``, ``A/1``, ``AF48``; None when it is none.

    Rows are letters (A = 0 ... Z = 25, AA = 26 ...), columns the number after them (1 = 0)."""
    import re

    m = re.fullmatch(r"\s*([A-Za-z]{1,2})[/_-]?0*(\d{1,3})\s*", str(name or ""))
    if m is None or int(m.group(2)) < 1:
        return None
    row = 0
    for ch in m.group(1).upper():
        row = row * 26 + (ord(ch) - ord("A") + 1)
    return row - 1, int(m.group(2)) - 1


def plate_maps(images, flagged_cells):
    """Per plate, cells and flagged cells per well, on the plate's grid.

    ``images``: the micrograph dicts of a classified screen (``plate``, ``well``, ``n_cells``);
    ``flagged_cells``: int (n,) flagged cells of each micrograph (out of distribution, or all its
    cells when QC flags it).  Returns a list, by plate, of dicts: ``plate`` (int or None), ``shape``
    (rows, columns: the smallest standard plate holding every well, else their extent), ``cells`` and
    ``flagged`` float arrays of that shape (NaN = no micrograph of that well), ``wells`` (names on
    the grid), ``unplaced`` (well names that are no row letter + column number).  Micrographs without
    a well are left out; a screen without wells gives an empty list.
    """
    by_plate = {}
    for im, bad in zip(images, flagged_cells):
        if not im.get("well"):
            continue
        p = by_plate.setdefault(im.get("plate"), {"wells": {}, "unplaced": set()})
        pos = well_position(im["well"])
        if pos is None:
            p["unplaced"].add(im["well"])
            continue
        w = p["wells"].setdefault(pos, [im["well"], 0, 0])
        w[1] += int(im["n_cells"])
        w[2] += int(bad)
    out = []
    for plate in sorted(by_plate, key=lambda x: -1 if x is None else x):
        p = by_plate[plate]
        if not p["wells"]:
            out.append({"plate": plate, "shape": (0, 0), "cells": np.zeros((0, 0)), "flagged": np.zeros((0, 0)),
                        "wells": {}, "unplaced": sorted(p["unplaced"])})
            continue
        need = (max(r for r, _ in p["wells"]) + 1, max(c for _, c in p["wells"]) + 1)
        shape = next((f for f in PLATE_FORMATS if f[0] >= need[0] and f[1] >= need[1]), need)
        cells, flagged = np.full(shape, np.nan), np.full(shape, np.nan)
        for (r, c), (_, n, bad) in p["wells"].items():
            cells[r, c], flagged[r, c] = n, bad
        out.append({"plate": plate, "shape": shape, "cells": cells, "flagged": flagged,
                    "wells": {pos: w[0] for pos, w in p["wells"].items()}, "unplaced": sorted(p["unplaced"])})
    return out
