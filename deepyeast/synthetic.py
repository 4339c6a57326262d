"""A synthetic yeast screen: whole micrographs rendered per protein, cropped like real data.

Why: the real DeepYeast archive cannot be downloaded everywhere, yet every step
of the project must run end to end.  This module renders fields of budding
yeast cells (default 512 x 512 pixels) the way a high-content screen images
them, then sends them through the crop step of :mod:`deepyeast.crops`, so the
output is an archive root in the published layout.

What a field looks like
-----------------------
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
* Optics and camera: per-cell defocus (most in focus, some strongly blurred),
  uneven illumination (vignetting plus a tilt), background offset, shot noise
  and read noise, quantised to 8 bits with saturation.
* Non-cells (~7% of crops, listed in ``cell_quality.csv`` with ``is_cell=0``):
  empty background, debris (autofluorescent blobs in both channels) and bad
  segmentations (a centre between two cells or on a cell's edge).  They carry
  the protein's label, like the noise in the real data.

Rendering rules of the compartments (the biology they imitate)
-------------------------------------------------------------
cell periphery: thin ring under the cell outline (plasma-membrane proteins),
  patchy for some proteins (eisosome-like domains).
cytoplasm: diffuse fill, excluded from the vacuole, partly from the nucleus.
endosome: a few dots hugging the vacuole (late endosome / prevacuolar
  compartment sits next to the vacuole).
ER: ring around the nucleus (the nuclear envelope is part of the ER) plus
  patches under the plasma membrane (cortical ER).
Golgi: a few (2-7) larger, unevenly bright puncta scattered in the cytoplasm
  (yeast Golgi cisternae are dispersed, not stacked).
mitochondrion: tubules along the cell cortex, fragmented into dots for some
  proteins.
nuclear periphery: ring around the nucleus only, punctate (nuclear pores).
nucleolus: a crescent on one side of the nucleus, pressed against the
  nuclear envelope.
nucleus: filled nuclear disk, for some proteins with a dimmer nucleolar side.
peroxisome: several small bright dots scattered through the cytoplasm.
spindle pole: one or two tiny dots on the nuclear edge (duplicated spindle pole
  bodies in budded cells, one facing the bud).
vacuole: the vacuolar membrane as a large ring, or the lumen filled.
Transfer classes: actin as cortical patches concentrated in the bud plus faint
  cables; bud neck as a bar across the mother-bud junction (a cap at the
  incipient bud site in unbudded cells); lipid particle as a few round droplets
  near the cortex and nucleus; microtubule as a spindle line through the
  nucleus with short astral filaments.

Difficulty (on purpose, as in the paper): the punctate classes share dot
counts and sizes and differ mainly in where dots sit (vacuole rim, nuclear
edge, cortex, anywhere); nucleus and nucleolus differ by the crescent;
expression, defocus, size, budding and rotation vary a lot per cell, so global
intensity statistics separate classes only partly.
"""

import json
import math
import os
import sys
from multiprocessing import get_context

import numpy as np

from .constants import CLASS_NAMES, IMAGE_SIZE, SPLITS, TRANSFER_CLASS_NAMES
from .crops import crop_cells, crop_name, write_crop
from .archive import write_class_doc, write_split_list
from .io_utils import atomic_path, atomic_write_text

REAL_TRAIN_CLASS_CELLS = (6924, 6935, 2692, 6195, 2770, 6547, 6661, 7014, 6440, 1683, 4713, 6426)
"""Cells per class in the published train list; the synthetic class mix follows it."""

SIZES = {
    # split cells (train, val, test) for the main and the transfer set; cells per protein (median, log-sd)
    "tiny": dict(main=(300, 100, 100), transfer=(48, 24, 36), cells=(9, 0.35), transfer_cells=(12, 0.3)),
    "small": dict(main=(2100, 400, 400), transfer=(120, 60, 120), cells=(20, 0.9), transfer_cells=(40, 0.4)),
    # demo: 18,000 training cells, because the net learns from distinct cells, not from passes over
    # few: after 450 iterations at batch 100, 1,000 validation cells scored 0.586 with 6,000
    # training cells (7.5 passes) and 0.801 with 18,000 (2.5 passes); generating them costs seconds
    "demo": dict(main=(18000, 1000, 1000), transfer=(400, 200, 400), cells=(24, 1.15), transfer_cells=(100, 0.5)),
    "paper": dict(main=(65000, 12500, 12500), transfer=(4000, 2000, 4000), cells=(24, 1.15),
                  transfer_cells=(120, 0.55)),
}
"""Screen sizes: cells per split of the main and transfer sets, and the per-protein
cell count distribution (log-normal median and sigma; the paper's lists have
~50 cells per protein on average and ~80% of proteins with >= 10 cells)."""

FIELD_SIZE = 512
"""Side of a full field, pixels; a well's last, sparser field may be imaged smaller."""
CELLS_PER_FULL_FIELD = (35, 55)
PATCH = 88          # side of the square a single cell is rendered in, pixels
NONCELL_SHARE = 0.07
MIXTURE_SHARE = 0.3  # of nucleus- and cytoplasm-labelled proteins
DIM_SHARE = 0.15
TRANSFER_PLATE_OFFSET = 20


# ============================================================================ planning

def _draw_count(rng, median, sigma, cap=800):
    return int(np.clip(round(rng.lognormal(math.log(median), sigma)), 1, cap))


def _apportion(total, shares):
    """Split ``total`` cells over classes by ``shares`` (largest remainder), at least 1 each."""
    exact = np.asarray(shares, float) * total
    out = np.maximum(np.floor(exact).astype(int), 1)
    for k in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if out.sum() >= total:
            break
        out[k] += 1
    return [int(v) for v in out]


def plan_screen(size="tiny", seed=0, difficulty=1.0):
    """Plan the proteins of a screen.

    Returns a list of dicts, one per protein: ``set`` ("main"/"transfer"),
    ``split``, ``label``, ``plate``, ``well`` (the protein id field, e.g.
    ``"007013000"``), ``protein`` (``plateNN/well``), ``n_cells`` (crops incl.
    non-cells), ``expression`` (peak green counts), ``dim`` (bool),
    ``mixture_fraction`` (nuclear share of a nucleus+cytoplasm mixture, or
    None), ``noncell_share``, ``difficulty``, ``seed`` (int for the protein's own RNG).
    ``difficulty`` scales the shares of dim proteins, defocused cells and
    non-cells and the cytosolic haze (1.0 = default; 0 = none of them).
    Deterministic per ``(size, seed, difficulty)``.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    cfg = SIZES[size]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    proteins = []
    for set_name, n_classes, shares, counts, cell_dist in (
            ("main", len(CLASS_NAMES), REAL_TRAIN_CLASS_CELLS, cfg["main"], cfg["cells"]),
            ("transfer", len(TRANSFER_CLASS_NAMES), (1,) * len(TRANSFER_CLASS_NAMES), cfg["transfer"],
             cfg["transfer_cells"])):
        shares = np.asarray(shares, float) / np.sum(shares)
        planned = []
        for split, total in zip(SPLITS, counts):
            targets = _apportion(total, shares)
            for label in range(n_classes):
                remaining = targets[label]
                while remaining > 0:
                    n = min(_draw_count(rng, *cell_dist), remaining)
                    if remaining - n < 2:
                        n = remaining
                    planned.append((split, label, n))
                    remaining -= n
        order = rng.permutation(len(planned))  # wells in random order: plate says nothing about class
        for slot, idx in enumerate(order):
            split, label, n = planned[idx]
            plate = slot // 384 + 1 + (TRANSFER_PLATE_OFFSET if set_name == "transfer" else 0)
            row, col = (slot % 384) // 24 + 1, slot % 24 + 1
            well = f"{row:03d}{col:03d}000"
            dim = bool(rng.random() < DIM_SHARE * difficulty)
            expression = float(rng.uniform(18, 40) if dim else np.clip(rng.lognormal(math.log(110), 0.45), 40, 400))
            mixture = None
            if set_name == "main" and CLASS_NAMES[label] in ("nucleus", "cytoplasm") and rng.random() < MIXTURE_SHARE:
                mixture = float(rng.uniform(0.55, 0.9) if CLASS_NAMES[label] == "nucleus" else rng.uniform(0.1, 0.45))
            proteins.append(dict(
                set=set_name, split=split, label=int(label), plate=int(plate), well=well,
                protein=f"plate{plate:02d}/{well}", n_cells=int(n), expression=expression, dim=dim,
                mixture_fraction=mixture, noncell_share=float(rng.uniform(0.0, 2 * NONCELL_SHARE) * difficulty),
                difficulty=float(difficulty),
                seed=int(rng.integers(2**63 - 1)),
            ))
    proteins.sort(key=lambda p: (p["set"], p["plate"], p["well"]))
    return proteins


# ============================================================================ geometry helpers

_Y, _X = np.mgrid[0:PATCH, 0:PATCH].astype(np.float32) - PATCH / 2


def _ell_sd(cy, cx, a, b, th):
    """Approximate signed distance (pixels, negative inside) to an ellipse in patch coordinates."""
    dy, dx = _Y - cy, _X - cx
    c, s = math.cos(th), math.sin(th)
    u = (dx * c + dy * s) / a
    v = (dy * c - dx * s) / b
    return (np.sqrt(u * u + v * v) - 1.0) * math.sqrt(a * b)


def _inside(sd):
    return np.clip(0.5 - sd, 0.0, 1.0)


def _ring(sd, w, offset=0.0):
    t = (sd + offset) / w
    return np.exp(-t * t)


def _texture(rng, scale=6):
    """Smooth random field in [0, 1], features ~PATCH/scale pixels."""
    import cv2
    small = rng.random((scale, scale)).astype(np.float32)
    return cv2.resize(small, (PATCH, PATCH), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _blur(img, sigma):
    import cv2
    if sigma <= 0.05:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigma)


def _splat(points, weights=None):
    """Add point masses (bilinear) at (y, x) patch coordinates -> PATCH x PATCH image."""
    out = np.zeros((PATCH, PATCH), np.float32)
    if len(points) == 0:
        return out
    p = np.asarray(points, np.float32) + PATCH / 2 - 0.5
    w = np.ones(len(p), np.float32) if weights is None else np.asarray(weights, np.float32)
    y0 = np.floor(p[:, 0]).astype(int)
    x0 = np.floor(p[:, 1]).astype(int)
    fy, fx = p[:, 0] - y0, p[:, 1] - x0
    for dy, dx, ww in ((0, 0, (1 - fy) * (1 - fx)), (1, 0, fy * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < PATCH) & (xx >= 0) & (xx < PATCH)
        np.add.at(out, (yy[ok], xx[ok]), (w * ww)[ok])
    return out


def _dots(points, sigma, amps):
    """Gaussian dots of peak ~amps at points (sigma in pixels)."""
    img = _blur(_splat(points, amps), sigma)
    return img * (2 * math.pi * sigma * sigma)


def _sample_where(rng, weight, k):
    """k random (y, x) patch positions drawn with probability ~ weight (sub-pixel jitter)."""
    flat = weight.ravel().astype(np.float64)
    total = flat.sum()
    if k <= 0 or total <= 0:
        return np.zeros((0, 2), np.float32)
    idx = rng.choice(flat.size, size=k, p=flat / total)
    y, x = np.divmod(idx, PATCH)
    return np.stack([y, x], 1).astype(np.float32) - PATCH / 2 + 0.5 + rng.uniform(-0.5, 0.5, (k, 2)).astype(np.float32)


# ============================================================================ one cell

class _Cell:
    """Geometry of one cell in patch coordinates (mother centre at the patch centre)."""

    def __init__(self, rng, bud_prob=0.45):
        self.a = float(rng.uniform(11.5, 17.0))
        self.b = self.a * float(rng.uniform(0.78, 1.0))
        self.th = float(rng.uniform(0, math.pi))
        self.sd_mother = _ell_sd(0.0, 0.0, self.a, self.b, self.th)
        self.budded = bool(rng.random() < bud_prob)
        d = np.array([math.sin(self.th), math.cos(self.th)], np.float32) * (1 if rng.random() < 0.5 else -1)
        self.bud_dir = d
        if self.budded:
            self.rb = self.a * float(rng.uniform(0.35, 0.75))
            dist = self.a + self.rb * 0.75
            self.bud_c = d * dist
            self.neck = d * self.a
            self.sd_bud = _ell_sd(self.bud_c[0], self.bud_c[1], self.rb * 1.05, self.rb * 0.9, self.th)
            self.sd = np.minimum(self.sd_mother, self.sd_bud)
        else:
            self.rb = 0.0
            self.sd = self.sd_mother
        self.cell = _inside(self.sd)
        # nucleus off-centre, vacuole on the other side
        ang = float(rng.uniform(0, 2 * math.pi))
        u = np.array([math.sin(ang), math.cos(ang)], np.float32)
        self.rn = self.a * float(rng.uniform(0.26, 0.36))
        self.nc = u * self.a * float(rng.uniform(0.25, 0.45))
        self.rv = self.a * float(rng.uniform(0.35, 0.55))
        self.vc = -u * self.a * float(rng.uniform(0.15, 0.35))
        gap = float(np.linalg.norm(self.nc - self.vc)) - self.rn - self.rv
        if gap < 1.0:
            self.rv = max(self.rv + gap - 1.0, 0.3 * self.a)
        self.sd_nuc = _ell_sd(self.nc[0], self.nc[1], self.rn, self.rn * float(rng.uniform(0.85, 1.0)), ang)
        self.sd_vac = _ell_sd(self.vc[0], self.vc[1], self.rv, self.rv * float(rng.uniform(0.8, 1.0)), ang)
        self.nuc = _inside(self.sd_nuc) * self.cell
        self.vac = _inside(self.sd_vac) * self.cell
        self.cyto = self.cell * (1.0 - self.vac) * (1.0 - self.nuc)
        self.extent = self.a + (2 * self.rb + 2 if self.budded else 0)


def _marker(cell, rng):
    """Cytosolic mCherry: cytoplasm and nucleus, dark vacuole, mild texture."""
    tex = 0.85 + 0.3 * _texture(rng, 5)
    return (cell.cyto + 0.85 * cell.nuc + 0.12 * cell.vac) * tex


def _cytoplasm_fill(cell, rng, nuc_level):
    return (cell.cyto + nuc_level * cell.nuc + 0.05 * cell.vac) * (0.8 + 0.4 * _texture(rng, 5))


def _in_cyto(cell, margin=1.5):
    return (cell.sd < -margin) * (1 - cell.vac) * (1 - cell.nuc)


def _pat_cell_periphery(cell, rng, st):
    ring = _ring(cell.sd, st["w"], 1.0) * cell.cell
    if st["patchy"]:
        ring *= 0.35 + 0.65 * _texture(rng, 9)
    return ring


def _pat_cytoplasm(cell, rng, st):
    return _cytoplasm_fill(cell, rng, st["nuc_level"])


def _pat_endosome(cell, rng, st):
    k = 1 + rng.poisson(st["k"])
    near_vac = ((cell.sd_vac > 0.3) & (cell.sd_vac < 3.5)).astype(np.float32) * (cell.sd < -1.5)
    k_near = rng.binomial(k, 0.8)
    pts = np.concatenate([_sample_where(rng, near_vac, k_near), _sample_where(rng, _in_cyto(cell), k - k_near)])
    return _dots(pts, st["sigma"], rng.uniform(0.5, 1.0, len(pts)))


def _pat_er(cell, rng, st):
    peri = _ring(cell.sd_nuc, st["w"])
    cort = _ring(cell.sd, 1.1, 1.6) * (_texture(rng, 10) > st["gaps"])
    return (peri + st["cort"] * cort) * cell.cell


def _pat_golgi(cell, rng, st):
    k = 1 + rng.poisson(st["k"])
    pts = _sample_where(rng, _in_cyto(cell, 2.0), k)
    return _dots(pts, st["sigma"] * float(rng.uniform(0.85, 1.2)), rng.uniform(0.3, 1.0, k))


def _pat_mitochondrion(cell, rng, st):
    pts = []
    n_tub = 2 + rng.poisson(st["k"])
    start_w = ((cell.sd > -4.5) & (cell.sd < -2.0)).astype(np.float32) * (1 - cell.vac)
    for p in _sample_where(rng, start_w, n_tub):
        ang = rng.uniform(0, 2 * math.pi)
        y, x = float(p[0]), float(p[1])
        for _ in range(int(rng.integers(8, 26))):
            ang += rng.normal(0, 0.35)
            ny, nx = y + math.sin(ang), x + math.cos(ang)
            iy, ix = int(round(ny + PATCH / 2 - 0.5)), int(round(nx + PATCH / 2 - 0.5))
            if not (0 <= iy < PATCH and 0 <= ix < PATCH) or cell.sd[iy, ix] > -1.0 or cell.vac[iy, ix] > 0.5:
                ang += math.pi * 0.7
                continue
            y, x = ny, nx
            pts.append((y, x))
    pts = np.asarray(pts, np.float32).reshape(-1, 2)
    if st["fragmented"] and len(pts):
        pts = pts[:: int(st["fragmented"])]
    w = np.ones(len(pts), np.float32) * (1.0 if st["fragmented"] else 0.45)
    return _dots(pts, 0.9, w)


def _pat_nuclear_periphery(cell, rng, st):
    ring = _ring(cell.sd_nuc, st["w"]) * (0.5 + 0.5 * _texture(rng, 12))
    return ring + st["fill"] * cell.nuc


def _crescent(cell, rng, thick):
    ang = rng.uniform(0, 2 * math.pi)
    d = np.array([math.sin(ang), math.cos(ang)], np.float32)
    proj = ((_Y - cell.nc[0]) * d[0] + (_X - cell.nc[1]) * d[1]) / cell.rn
    return cell.nuc * np.clip((proj - (1 - 2 * thick)) * cell.rn / 1.5 + 0.5, 0, 1)


def _pat_nucleolus(cell, rng, st):
    return _crescent(cell, rng, st["thick"]) + st["fill"] * cell.nuc


def _pat_nucleus(cell, rng, st):
    fill = cell.nuc * (0.8 + 0.3 * _texture(rng, 8))
    if st["nucleolus_dark"]:
        fill = fill * (1 - 0.6 * _crescent(cell, rng, 0.35))
    return fill + st["haze"] * cell.cyto


def _pat_peroxisome(cell, rng, st):
    k = 1 + rng.poisson(st["k"])
    pts = _sample_where(rng, _in_cyto(cell, 1.5) + 0.3 * cell.nuc, k)
    return _dots(pts, st["sigma"], rng.uniform(0.6, 1.0, k))


def _pat_spindle_pole(cell, rng, st):
    edge = ((cell.sd_nuc > -0.8) & (cell.sd_nuc < 0.8)).astype(np.float32)
    pts = _sample_where(rng, edge, 1)
    if cell.budded and rng.random() < 0.75 and len(pts):
        # duplicated SPB: second one on the nuclear edge facing the bud
        facing = edge * np.clip((_Y * cell.bud_dir[0] + _X * cell.bud_dir[1]), 0, None)
        pts = np.concatenate([pts, _sample_where(rng, facing, 1)])
    return _dots(pts, st["sigma"], rng.uniform(0.7, 1.0, len(pts))) + st["fill"] * cell.nuc


def _pat_vacuole(cell, rng, st):
    if st["membrane"]:
        return _ring(cell.sd_vac, st["w"]) * cell.cell
    return cell.vac * (0.8 + 0.3 * _texture(rng, 8))


def _pat_actin(cell, rng, st):
    cortex = ((cell.sd > -2.5) & (cell.sd < -0.6)).astype(np.float32)
    if cell.budded:
        cortex = cortex * np.where(cell.sd_bud < 0, 4.0, 1.0).astype(np.float32)
    k = 3 + rng.poisson(st["k"])
    img = _dots(_sample_where(rng, cortex, k), 0.85, rng.uniform(0.5, 1.0, k))
    t = np.linspace(-cell.a * 0.8, cell.a * 0.8, 24)[:, None]
    cable = t * cell.bud_dir[None, :] + rng.normal(0, 2, (1, 2))
    return img + _dots(cable.astype(np.float32), 0.8, np.full(len(cable), 0.2))


def _pat_bud_neck(cell, rng, st):
    perp = np.array([-cell.bud_dir[1], cell.bud_dir[0]], np.float32)
    if cell.budded:
        half = min(cell.rb, cell.b) * 0.7
        t = np.linspace(-half, half, 16)[:, None]
        pts = np.concatenate([cell.neck + t * perp + s * cell.bud_dir for s in (-0.8, 0.8)])
    else:  # incipient bud site: a small cap on the cortex
        t = np.linspace(-3, 3, 8)[:, None]
        pts = cell.bud_dir * (cell.a - 1.5) + t * perp
    return _dots(pts.astype(np.float32), 0.9, np.full(len(pts), 0.5))


def _pat_lipid_particle(cell, rng, st):
    k = 1 + rng.poisson(st["k"])
    where = ((cell.sd > -5) & (cell.sd < -1.5)).astype(np.float32) + _ring(cell.sd_nuc, 1.5, -1.5)
    return _dots(_sample_where(rng, where * (1 - cell.vac), k), st["sigma"], rng.uniform(0.7, 1.0, k))


def _pat_microtubule(cell, rng, st):
    axis = cell.bud_dir if cell.budded else np.array([math.sin(a := rng.uniform(0, 6.3)), math.cos(a)], np.float32)
    length = cell.rn * float(rng.uniform(0.8, 2.6))
    t = np.linspace(-length / 2, length / 2, max(int(length * 1.5), 4))[:, None]
    spindle = cell.nc + t * axis
    pts = [spindle]
    for end in (spindle[0], spindle[-1]):
        if rng.random() < 0.6:
            ang = rng.uniform(0, 2 * math.pi)
            d = np.array([math.sin(ang), math.cos(ang)], np.float32)
            s = np.linspace(0, rng.uniform(4, 11), 10)[:, None]
            pts.append(end + s * d)
    pts = np.concatenate(pts).astype(np.float32)
    return _dots(pts, 0.8, np.full(len(pts), 0.35)) + _dots(spindle[[0, -1]].astype(np.float32), 0.8, [0.6, 0.6])


_PATTERNS = {
    ("main", "cell periphery"): _pat_cell_periphery,
    ("main", "cytoplasm"): _pat_cytoplasm,
    ("main", "endosome"): _pat_endosome,
    ("main", "ER"): _pat_er,
    ("main", "Golgi"): _pat_golgi,
    ("main", "mitochondrion"): _pat_mitochondrion,
    ("main", "nuclear periphery"): _pat_nuclear_periphery,
    ("main", "nucleolus"): _pat_nucleolus,
    ("main", "nucleus"): _pat_nucleus,
    ("main", "peroxisome"): _pat_peroxisome,
    ("main", "spindle pole"): _pat_spindle_pole,
    ("main", "vacuole"): _pat_vacuole,
    ("transfer", "actin"): _pat_actin,
    ("transfer", "bud neck"): _pat_bud_neck,
    ("transfer", "lipid particle"): _pat_lipid_particle,
    ("transfer", "microtubule"): _pat_microtubule,
}
"""(set, class name) -> rendering rule; the biology is described in the module docstring."""


def _protein_style(name, rng):
    """Per-protein parameters of a class's pattern (proteins of one class differ)."""
    u = rng.uniform
    st = {
        "cell periphery": dict(w=u(0.9, 1.6), patchy=bool(rng.random() < 0.4)),
        "cytoplasm": dict(nuc_level=u(0.5, 1.0)),
        "endosome": dict(k=u(1.5, 5.0), sigma=u(0.8, 1.3)),
        "ER": dict(w=u(0.7, 1.2), cort=u(0.4, 0.9), gaps=u(0.3, 0.6)),
        "Golgi": dict(k=u(1.5, 5.5), sigma=u(1.1, 1.9)),
        "mitochondrion": dict(k=u(1, 4), fragmented=int(rng.choice([0, 0, 3, 5]))),
        "nuclear periphery": dict(w=u(0.7, 1.2), fill=u(0.0, 0.25)),
        "nucleolus": dict(thick=u(0.3, 0.6), fill=u(0.0, 0.3)),
        "nucleus": dict(nucleolus_dark=bool(rng.random() < 0.3), haze=u(0.0, 0.15)),
        "peroxisome": dict(k=u(2.0, 7.0), sigma=u(0.7, 1.15)),
        "spindle pole": dict(sigma=u(0.6, 1.0), fill=u(0.0, 0.2)),
        "vacuole": dict(membrane=bool(rng.random() < 0.5), w=u(0.8, 1.4)),
        "actin": dict(k=u(5, 12)),
        "bud neck": dict(),
        "lipid particle": dict(k=u(1.5, 5), sigma=u(1.1, 1.8)),
        "microtubule": dict(),
    }[name]
    st["haze_all"] = float(u(0.0, 0.1))
    return st


def _green(cell, rng, set_name, name, style, mixture, difficulty=1.0):
    if mixture is not None:
        nuc = _pat_nucleus(cell, rng, dict(nucleolus_dark=False, haze=0.0))
        cyt = _cytoplasm_fill(cell, rng, 0.0)
        g = mixture * nuc / max(nuc.max(), 1e-6) + (1 - mixture) * cyt / max(cyt.max(), 1e-6)
    else:
        g = _PATTERNS[(set_name, name)](cell, rng, style)
    peak = float(g.max())
    if peak > 0:
        g = g / peak
    return g + style["haze_all"] * difficulty * cell.cyto


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
    out = []
    for k, (cell, (cy, cx)) in enumerate(zip(cells, centres), 1):
        r = rng.random()
        d = protein.get("difficulty", 1.0)
        focus = base_focus + (rng.uniform(0.8, 1.6) if r < 0.15 * d else rng.uniform(1.6, 3.0) if r < 0.2 * d else 0.0)
        m = _marker(cell, rng) * marker_level * float(rng.lognormal(0, 0.25))
        g = _green(cell, rng, protein["set"], name, style, protein["mixture_fraction"], protein.get("difficulty", 1.0))
        g = g * protein["expression"] * float(rng.lognormal(0, 0.35)) + autofluor * cell.cyto
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

def _render_protein(job):
    """Worker: render all fields of one protein, crop them, write PNGs; returns crop rows."""
    protein, root, field_size, save_dir = job
    import cv2
    cv2.setNumThreads(1)
    rng = np.random.default_rng(protein["seed"])
    names = CLASS_NAMES if protein["set"] == "main" else TRANSFER_CLASS_NAMES
    protein = dict(protein, _style=_protein_style(names[protein["label"]], rng))
    n = protein["n_cells"]
    per_field = int(rng.integers(CELLS_PER_FULL_FIELD[0], CELLS_PER_FULL_FIELD[1] + 1))
    n_fields = max(1, math.ceil(n / per_field))
    counts = [n // n_fields + (1 if i < n % n_fields else 0) for i in range(n_fields)]
    rows, fields = [], []
    for field, count in enumerate(counts):
        rows_before = len(rows)
        side = field_size_for(count, field_size)
        image, centres, mask = render_field(rng, protein, count, side)
        pts = np.array([(y, x) for y, x, _, _ in centres], float).reshape(-1, 2)
        crops, kept, padded = crop_cells(image, pts, IMAGE_SIZE, "pad")
        for k, (crop, i, pad) in enumerate(zip(crops, kept, padded)):
            rel = crop_name(protein["plate"], protein["well"], field, i + 1, k)
            write_crop(root, rel, crop)
            rows.append((rel, centres[i][2], centres[i][3], bool(pad)))
        if save_dir is not None:
            base = f"plate{protein['plate']:02d}_{protein['well']}_f{field}"
            import tifffile
            tifffile.imwrite(os.path.join(save_dir, base + ".tif"), image, photometric="minisblack")
            fields.append((base + ".tif", [(i + 1, y, x, q) for i, (y, x, q, _) in enumerate(centres)],
                           rows[rows_before:]))
    return protein["protein"], rows, fields


def _write_screen_root(root, proteins, set_name, field_size, workers, save_fields, progress):
    names = CLASS_NAMES if set_name == "main" else TRANSFER_CLASS_NAMES
    prefix = "HOwt_" if set_name == "main" else "HOwt_transfer_"
    mine = [p for p in proteins if p["set"] == set_name]
    save_dir = None
    if save_fields:
        save_dir = os.path.join(root, "fields")
        os.makedirs(save_dir, exist_ok=True)
    jobs = [(p, root, field_size, save_dir if i < save_fields else None) for i, p in enumerate(mine)]
    by_protein = {}
    saved = []
    if workers > 1 and len(jobs) > 1:
        with get_context("fork").Pool(workers) as pool:
            for pid, rows, fields in _progress(pool.imap(_render_protein, jobs, chunksize=2), len(jobs), progress,
                                               set_name):
                by_protein[pid] = rows
                saved.extend((pid, f) for f in fields)
    else:
        for pid, rows, fields in _progress(map(_render_protein, jobs), len(jobs), progress, set_name):
            by_protein[pid] = rows
            saved.extend((pid, f) for f in fields)
    lists = {s: [] for s in SPLITS}
    quality = []
    for p in mine:
        for rel, is_cell, kind, _ in by_protein[p["protein"]]:
            lists[p["split"]].append((rel, p["label"]))
            quality.append((rel, is_cell, kind))
    for s in SPLITS:
        write_split_list(os.path.join(root, f"{prefix}{s}.txt"), lists[s])
    write_class_doc(os.path.join(root, f"{prefix}doc.txt"), names)
    atomic_write_text(os.path.join(root, "cell_quality.csv"),
                      "path,is_cell,kind\n" + "".join(f"{r},{q},{k}\n" for r, q, k in quality))
    lines = ["protein,split,label,class,mixture_classes,mixture_fraction,expression,dim,n_cells"]
    for p in mine:
        mix = p["mixture_fraction"]
        lines.append(",".join([p["protein"], p["split"], str(p["label"]), names[p["label"]],
                               "nucleus+cytoplasm" if mix is not None else "", f"{mix:.3f}" if mix is not None else "",
                               f"{p['expression']:.1f}", str(int(p["dim"])), str(len(by_protein[p["protein"]]))]))
    atomic_write_text(os.path.join(root, "proteins.csv"), "\n".join(lines) + "\n")
    if save_dir is not None:
        _write_field_tables(save_dir, saved, {p["protein"]: p for p in mine}, names)
    n_padded = sum(r[3] for rows in by_protein.values() for r in rows)
    return {"n_crops": len(quality), "n_noncells": sum(1 for q in quality if q[1] == 0), "n_padded": int(n_padded),
            "n_proteins": len(mine), "per_split": {s: len(v) for s, v in lists.items()}}


def _write_field_tables(save_dir, saved, proteins, names):
    """images.csv + centres.csv for saved fields, so crop_cells.py can redo the crops."""
    img_lines = ["image,plate,protein,label,split"]
    cen_lines = ["image,x,y,cell,is_cell"]
    for pid, (tif, centres, _rows) in saved:
        p = proteins[pid]
        img_lines.append(f"{tif},{p['plate']},{p['well']},{p['label']},{p['split']}")
        cen_lines.extend(f"{tif},{x},{y},{cell},{q}" for cell, y, x, q in centres)
    atomic_write_text(os.path.join(save_dir, "images.csv"), "\n".join(img_lines) + "\n")
    atomic_write_text(os.path.join(save_dir, "centres.csv"), "\n".join(cen_lines) + "\n")


def _progress(iterable, total, enabled, desc):
    if enabled and sys.stderr.isatty():
        from tqdm import tqdm
        return tqdm(iterable, total=total, desc=f"synthetic {desc}", unit="protein")
    return iterable


# ---- non-cell list (issue 12.2; self-contained: port as one piece) --------------------------
NONCELL_LIST = "noncells.txt"
"""The synthetic screen's stand-in for the paper's hand-picked non-cells (main root)."""
PAPER_N_NONCELLS = 118
"""Non-cells the paper picked by eye from its validation set."""


def write_noncell_list(root, seed=0, n_max=PAPER_N_NONCELLS):
    """Write ``root/noncells.txt``: known non-cells of the validation split, one path per line.

    The paper's quality filter learns from 118 non-cells picked by eye in the
    validation set; the published archive has no such list.  Here the generator's
    own non-cells (``cell_quality.csv``, ``is_cell=0``) of ``HOwt_val.txt`` play
    that part: all of them, or a seeded sample of ``n_max`` (in list order) when
    there are more.  Returns the number of paths written.
    """
    with open(os.path.join(root, "HOwt_val.txt"), encoding="utf-8") as f:
        val = [line.split()[0] for line in f if line.strip()]
    with open(os.path.join(root, "cell_quality.csv"), encoding="utf-8") as f:
        next(f)
        non = {row.split(",")[0] for row in f if row.split(",")[1] == "0"}
    picked = [p for p in val if p in non]
    if len(picked) > n_max:
        keep = np.sort(np.random.default_rng([seed, n_max]).choice(len(picked), n_max, replace=False))
        picked = [picked[i] for i in keep]
    atomic_write_text(os.path.join(root, NONCELL_LIST), "".join(p + "\n" for p in picked))
    return len(picked)
# ---- end of the non-cell list --------------------------------------------------------------


def make_screen(out_dir, size="tiny", seed=0, workers=None, field_size=FIELD_SIZE, save_fields=0, progress=True,
                difficulty=1.0):
    """Generate a synthetic screen under ``out_dir``.

    Writes ``out_dir/main`` (``HOwt_{train,val,test}.txt``, ``HOwt_doc.txt``,
    ``noncells.txt``: see :func:`write_noncell_list`) and
    ``out_dir/transfer`` (``HOwt_transfer_*.txt``, ``HOwt_transfer_doc.txt``),
    each with ``plateNN/*.png`` crops, ``proteins.csv`` and ``cell_quality.csv``,
    plus ``out_dir/screen.json`` (parameters and counts).  Each root is written
    atomically.  ``save_fields`` > 0 also keeps the micrographs of the first
    that many proteins of each set as TIFF in ``<root>/fields`` with
    ``images.csv``/``centres.csv`` for ``data_prep/crop_cells.py``.
    ``workers``: processes (default: all CPUs).  Deterministic per
    ``(size, seed, field_size, difficulty)`` whatever the number of workers.
    ``difficulty``: see :func:`plan_screen`.
    Returns the summary dict written to ``screen.json``.
    """
    workers = workers or os.cpu_count() or 1
    proteins = plan_screen(size, seed, difficulty)
    summary = {"size": size, "seed": seed, "difficulty": difficulty, "field_size": field_size,
               "image_size": IMAGE_SIZE}
    os.makedirs(out_dir, exist_ok=True)
    for set_name in ("main", "transfer"):
        with atomic_path(os.path.join(out_dir, set_name)) as tmp:
            os.makedirs(tmp)
            summary[set_name] = _write_screen_root(tmp, proteins, set_name, field_size, workers, save_fields, progress)
            if set_name == "main":
                summary[set_name]["n_listed_noncells"] = write_noncell_list(tmp, seed)  # issue 12.2
    atomic_write_text(os.path.join(out_dir, "screen.json"), json.dumps(summary, indent=2) + "\n")
    return summary


# ============================================================================ gallery

def example_crops(set_name, label, n=2, seed=0, dim=False):
    """``n`` in-focus-ish cell crops (uint8 n x 2 x 64 x 64) of one class, freshly rendered."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11, label, set_name == "main"]))
    names = CLASS_NAMES if set_name == "main" else TRANSFER_CLASS_NAMES
    protein = dict(set=set_name, label=label, expression=15.0 if dim else 120.0, mixture_fraction=None,
                   noncell_share=0.0, _style=_protein_style(names[label], rng))
    image, centres, _ = render_field(rng, protein, 8, 256)
    pts = np.array([(y, x) for y, x, _, _ in centres], float)
    crops, _, padded = crop_cells(image, pts, IMAGE_SIZE, "skip")
    return crops[:n]


def make_gallery(out_png, seed=0, per_class=2):
    """Figure with ``per_class`` example crops per class (12 main + 4 transfer), like the paper's Fig. 1B."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    classes = [("main", i, n) for i, n in enumerate(CLASS_NAMES)] + \
              [("transfer", i, n) for i, n in enumerate(TRANSFER_CLASS_NAMES)]
    ncol = 4
    nrow = math.ceil(len(classes) / ncol)
    fig, axes = plt.subplots(nrow, ncol * per_class, figsize=(ncol * per_class * 1.3, nrow * 1.55))
    for ax in axes.ravel():
        ax.axis("off")
    for k, (set_name, label, name) in enumerate(classes):
        crops = example_crops(set_name, label, per_class, seed)
        r, c0 = divmod(k, ncol)
        for j, crop in enumerate(crops):
            rgb = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
            rgb[..., 0] = crop[0] / max(float(crop[0].max()), 1.0) * 0.8
            rgb[..., 1] = crop[1] / max(float(crop[1].max()), 1.0)
            ax = axes[r, c0 * per_class + j]
            ax.imshow(rgb, interpolation="nearest")
            if j == 0:
                ax.set_title(name + (" (transfer)" if set_name == "transfer" else ""), fontsize=7, loc="left")
    fig.suptitle("Synthetic screen: two example cells per class (red: cytosolic marker, green: protein)", fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return out_png
