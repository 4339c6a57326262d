"""One cell and its green pattern: the rendering rule of each compartment and the biology it imitates.

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

import math

import numpy as np

from deepyeast.data.make_synthetic.plan import PATCH

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


def _green(cell, rng, set_name, pattern, mixture=None, difficulty=1.0, second=None):
    """The protein channel of one cell: its class's pattern (``pattern``: (class name, style)), or
    for a protein localised to two compartments (``second``: the other (class name, style)) both
    patterns, each scaled to peak 1, weighted ``mixture`` : ``1 - mixture``."""
    name, style = pattern
    g = _PATTERNS[(set_name, name)](cell, rng, style)
    if second is not None and second[0] is not None:
        h = _PATTERNS[(set_name, second[0])](cell, rng, second[1])
        g = mixture * g / max(float(g.max()), 1e-6) + (1 - mixture) * h / max(float(h.max()), 1e-6)
    peak = float(g.max())
    if peak > 0:
        g = g / peak
    return g + style["haze_all"] * difficulty * cell.cyto
