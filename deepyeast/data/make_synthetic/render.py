"""Whole two-channel micrographs of a protein's cells (red marker, green protein), with masks.

* Cells are ellipses (semi-axes 9-17 px, random orientation); ~45% carry a bud
  (a smaller ellipse on the long axis), as in an asynchronous culture.  Each
  cell has a nucleus (~0.3 of the cell radius, off-centre) and a large vacuole
  on the other side.  Cells are placed at random, a third of them touching a
  neighbour, so neighbours intrude at crop edges.
* Red = cytosolic mCherry marker: fills the cytoplasm and nucleus, excluded
  from the vacuole (a dark hole), brightness varying per cell.
* Green = the GFP-tagged protein, with a pattern set by its compartment (see
  ``_PATTERNS``), scaled by the protein's expression level (log-normal, with a
  share of dim proteins barely above the camera noise) and a per-cell factor.
  All cells also carry weak green autofluorescence following the cytoplasm.
  A protein localised to two compartments (``mixed_with``) shows both patterns,
  weighted by its ``mixture_fraction``.
* Optics and camera: per-cell defocus (most in focus, some strongly blurred),
  uneven illumination (vignetting plus a tilt), background offset, shot noise
  and read noise, quantised to 8 bits with saturation.
* Non-cells (~7% of crops, listed in ``cell_quality.csv`` with ``is_cell=0``):
  empty background, debris (autofluorescent blobs in both channels) and bad
  segmentations (a centre between two cells or on a cell's edge).  They carry
  the protein's label, like the noise in the real data.
"""

import math

import numpy as np

from deepyeast.constants import CLASS_NAMES, IMAGE_SIZE, TRANSFER_CLASS_NAMES
from deepyeast.data.make_synthetic.patterns import _blur, _Cell, _dots, _green, _marker
from deepyeast.data.make_synthetic.plan import CELLS_PER_FULL_FIELD, FIELD_SIZE, PATCH

# ============================================================================ fields

def field_size_for(n_crops, full=FIELD_SIZE):
    """Side of a field holding ``n_crops`` cells at full-field density (multiple of 32, 192..full)."""
    area_per_cell = full * full / np.mean(CELLS_PER_FULL_FIELD)
    side = int(math.ceil(math.sqrt(n_crops * area_per_cell) / 32.0)) * 32
    return int(min(max(side, 192), full))


def _place_cells(rng, n, field_size, radii):
    """Centres (int y, x) for n cells; a third placed touching an earlier cell.

    Most cells keep a crop's half-width from the field edge; ~7% may sit
    closer, so their crops need padding as in real screens.
    """
    centres = []
    for i in range(n):
        r = radii[i] if rng.random() < 0.07 else IMAGE_SIZE // 2
        for _ in range(60):
            if centres and rng.random() < 0.35:
                j = int(rng.integers(len(centres)))
                ang = rng.uniform(0, 2 * math.pi)
                d = radii[i] + radii[j] + rng.uniform(-1.5, 2.5)
                cy, cx = centres[j][0] + d * math.sin(ang), centres[j][1] + d * math.cos(ang)
            else:
                cy, cx = rng.uniform(r, field_size - r, 2)
            if not (r <= cy <= field_size - r and r <= cx <= field_size - r):
                continue
            if all((cy - y) ** 2 + (cx - x) ** 2 >= (0.9 * (radii[i] + radii[k])) ** 2
                   for k, (y, x) in enumerate(centres)):
                centres.append((int(round(cy)), int(round(cx))))
                break
    return centres


def _paste(canvas, patch, cy, cx):
    h, w = canvas.shape
    y0, x0 = cy - PATCH // 2, cx - PATCH // 2
    ya, yb, xa, xb = max(y0, 0), min(y0 + PATCH, h), max(x0, 0), min(x0 + PATCH, w)
    if ya < yb and xa < xb:
        canvas[ya:yb, xa:xb] += patch[ya - y0:yb - y0, xa - x0:xb - x0]


def _paste_label(mask, inside, k, cy, cx):
    h, w = mask.shape
    y0, x0 = cy - PATCH // 2, cx - PATCH // 2
    ya, yb, xa, xb = max(y0, 0), min(y0 + PATCH, h), max(x0, 0), min(x0 + PATCH, w)
    if ya < yb and xa < xb:
        win = mask[ya:yb, xa:xb]
        win[(win == 0) & inside[ya - y0:yb - y0, xa - x0:xb - x0]] = k


def render_field(rng, protein, n_crops, field_size=FIELD_SIZE):
    """Render one micrograph of a protein's well.

    Returns ``(image uint8 2 x S x S, centres list of (y, x, is_cell, kind), mask uint16 S x S)``
    where the centres are what a segmentation would hand to the crop step
    (cells, plus non-cells: ``empty``, ``debris``, ``badseg``).
    """
    names = CLASS_NAMES if protein["set"] == "main" else TRANSFER_CLASS_NAMES
    name = names[protein["label"]]
    style = protein["_style"]
    second = None if protein.get("mixed_with") is None else names[protein["mixed_with"]]
    n_non = int(rng.binomial(n_crops, protein["noncell_share"]))
    n_cells = n_crops - n_non
    bud_prob = 0.85 if name == "bud neck" else 0.45
    cells = [_Cell(rng, bud_prob) for _ in range(n_cells)]
    centres = _place_cells(rng, n_cells, field_size, [c.a + 2 for c in cells])
    cells = cells[:len(centres)]
    red = np.zeros((field_size, field_size), np.float32)
    green = np.zeros((field_size, field_size), np.float32)
    mask = np.zeros((field_size, field_size), np.uint16)
    marker_level = float(rng.uniform(55, 120))
    autofluor = float(rng.uniform(2.0, 6.0))
    base_focus = float(rng.uniform(0.3, 0.8))
    # a condition screen's micrograph (deepyeast.data.make_synthetic.condition): extra defocus, an exposure
    # factor, and per cell other compartments (a relocalised share, a wrong-compartment pull)
    optics = protein.get("_optics") or {}
    base_focus += float(optics.get("defocus", 0.0))
    exposure = float(optics.get("exposure", 1.0))
    others = protein.get("_others") or ()
    out = []
    for k, (cell, (cy, cx)) in enumerate(zip(cells, centres), 1):
        r = rng.random()
        d = protein.get("difficulty", 1.0)
        focus = base_focus + (rng.uniform(0.8, 1.6) if r < 0.15 * d else rng.uniform(1.6, 3.0) if r < 0.2 * d else 0.0)
        m = _marker(cell, rng) * marker_level * float(rng.lognormal(0, 0.25)) * exposure
        cell_name, cell_style = name, style
        if others:
            u = rng.random()
            for share, other_name, other_style in others:
                if u < share:
                    cell_name, cell_style = other_name, other_style
                    break
                u -= share
        g = _green(cell, rng, protein["set"], (cell_name, cell_style), protein.get("mixture_fraction"),
                   protein.get("difficulty", 1.0), (second, protein.get("_style_b")))
        g = g * protein["expression"] * exposure * float(rng.lognormal(0, 0.35)) + autofluor * exposure * cell.cyto
        _paste(red, _blur(m.astype(np.float32), focus), cy, cx)
        _paste(green, _blur(g.astype(np.float32), focus), cy, cx)
        _paste_label(mask, cell.cell > 0.5, k, cy, cx)
        out.append((cy, cx, 1, "cell"))
    # non-cells
    for _ in range(n_non):
        kind = rng.choice(["empty", "debris", "badseg"], p=[0.35, 0.35, 0.3])
        if kind == "badseg" and len(centres) >= 1:
            i = int(rng.integers(len(centres)))
            cy, cx = centres[i]
            near = [j for j, (y, x) in enumerate(centres) if j != i and (y - cy) ** 2 + (x - cx) ** 2 < 40 ** 2]
            if near and rng.random() < 0.6:
                y, x = centres[near[0]]
                cy, cx = (cy + y) // 2, (cx + x) // 2
            else:
                ang = rng.uniform(0, 2 * math.pi)
                d = cells[i].a * rng.uniform(0.8, 1.3)
                cy, cx = int(cy + d * math.sin(ang)), int(cx + d * math.cos(ang))
            out.append((min(max(cy, 0), field_size - 1), min(max(cx, 0), field_size - 1), 0, "badseg"))
            continue
        # a free spot away from cells
        for _ in range(40):
            cy, cx = (int(v) for v in rng.integers(20, field_size - 20, 2))
            if all((cy - y) ** 2 + (cx - x) ** 2 > 30 ** 2 for y, x in centres):
                break
        if kind == "debris":
            k = int(rng.integers(1, 4))
            pts = rng.normal(0, 3, (k, 2)).astype(np.float32)
            blob = _dots(pts, float(rng.uniform(1.5, 4.0)), rng.uniform(0.4, 1.0, k))
            blob = blob / max(float(blob.max()), 1e-6)
            _paste(red, blob * float(rng.uniform(20, 120)), cy, cx)
            _paste(green, blob * float(rng.uniform(20, 150)), cy, cx)
        out.append((cy, cx, 0, str(kind)))
    # optics and camera: vignetting + tilt (smooth, so computed coarse and resized), shot + read noise
    import cv2
    g = np.linspace(-0.5, 0.5, 16, dtype=np.float32)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    oy, ox = rng.uniform(-0.2, 0.2, 2)
    coarse = 1.0 - float(rng.uniform(0.1, 0.4)) * ((yy - oy) ** 2 + (xx - ox) ** 2) * 2 \
        + float(rng.uniform(-0.1, 0.1)) * yy + float(rng.uniform(-0.1, 0.1)) * xx
    illum = cv2.resize(coarse.astype(np.float32), (field_size, field_size), interpolation=cv2.INTER_LINEAR)
    gain = float(rng.uniform(0.6, 1.4))
    read2 = float(rng.uniform(1.5, 3.0)) ** 2
    img = np.empty((2, field_size, field_size), np.uint8)
    for c, (canvas, bg) in enumerate(((red, rng.uniform(6, 14)), (green, rng.uniform(5, 12)))):
        signal = canvas * illum
        signal += np.float32(bg)
        sd = np.sqrt(np.maximum(signal, 0) * np.float32(gain) + np.float32(read2))
        signal += sd * rng.standard_normal(signal.shape, np.float32)
        np.clip(signal, 0, 255, out=signal)
        img[c] = np.rint(signal)
    return img, out, mask


# ============================================================================ proteins -> crops
