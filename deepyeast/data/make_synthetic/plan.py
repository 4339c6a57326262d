"""The plan of a synthetic screen: how many proteins and cells of each class go to each split.

Class sizes follow the published training split (``REAL_TRAIN_CLASS_CELLS``); cells per
protein are drawn log-normal; proteins are assigned to splits whole, so no protein is in two.
"""

import math

import numpy as np

from deepyeast.constants import CLASS_NAMES, PAPER_SPLIT_SIZES, SPLITS, TRANSFER_CLASS_NAMES

REAL_TRAIN_CLASS_CELLS = (6924, 6935, 2692, 6195, 2770, 6547, 6661, 7014, 6440, 1683, 4713, 6426)
"""Cells per class in the published train list; the synthetic class mix follows it."""

SIZES = {
    # split cells (train, val, test) for the main and the transfer set; cells per protein (median, log-sd)
    "tiny": dict(main=(300, 100, 100), transfer=(48, 24, 36), cells=(9, 0.35), transfer_cells=(12, 0.3), mixed=3),
    "small": dict(main=(2100, 400, 400), transfer=(120, 60, 120), cells=(20, 0.9), transfer_cells=(40, 0.4),
                  mixed=6),
    # demo: 18,000 training cells, because the net learns from distinct cells, not from passes over
    # few: after 450 iterations at batch 100, 1,000 validation cells scored 0.586 with 6,000
    # training cells (7.5 passes) and 0.801 with 18,000 (2.5 passes); generating them costs seconds
    "demo": dict(main=(18000, 1000, 1000), transfer=(400, 200, 400), cells=(24, 1.15), transfer_cells=(100, 0.5),
                 mixed=15),
    "paper": dict(main=tuple(PAPER_SPLIT_SIZES[s] for s in SPLITS), transfer=(4000, 2000, 4000), cells=(24, 1.15),
                  transfer_cells=(120, 0.55), mixed=40),
}
"""Screen sizes: cells per split of the main and transfer sets, the per-protein
cell count distribution (log-normal median and sigma; the paper's lists have
~50 cells per protein on average and ~80% of proteins with >= 10 cells), and the
number of proteins localised to two compartments (``mixed``: held out of every split)."""

FIELD_SIZE = 512
"""Side of a full field, pixels; a well's last, sparser field may be imaged smaller."""
CELLS_PER_FULL_FIELD = (35, 55)
PATCH = 88          # side of the square a single cell is rendered in, pixels
NONCELL_SHARE = 0.07
MIXED_PAIRS = (("nucleus", "cytoplasm"), ("cytoplasm", "mitochondrion"), ("cell periphery", "cytoplasm"),
               ("nucleolus", "nucleus"), ("vacuole", "cytoplasm"), ("ER", "Golgi"))
"""Compartment pairs of the mixed proteins (common dual localisations in yeast GFP screens: a
cytoplasmic pool beside an organelle, nucleus with nucleolus, ER with Golgi); cycled in order."""
MIXED_FRACTION = (0.35, 0.65)
"""Range of the first compartment's share of a mixed protein's signal: both are clearly present."""
MIXED_MIN_CELLS = 5
DIM_SHARE = 0.15
TRANSFER_PLATE_OFFSET = 20


# ============================================================================ planning

def _plan_mixed(cfg, seed):
    """The held-out proteins with two compartments: ``(split "mixed", label, cells, second)`` each.

    Their own random stream, so their number does not change the rest of the plan's draws."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 13]))
    out = []
    for i in range(cfg.get("mixed", 0)):
        a, b = MIXED_PAIRS[i % len(MIXED_PAIRS)]
        n = max(MIXED_MIN_CELLS, _draw_count(rng, *cfg["cells"]))
        out.append(("mixed", CLASS_NAMES.index(a), n, CLASS_NAMES.index(b)))
    return out


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
    ``mixed_with`` (the second compartment of a protein localised to two, else
    None; such proteins have ``split`` "mixed" and are in no split list),
    ``mixture_fraction`` (the share of compartment ``label`` in a mixed protein's
    signal, else None), ``noncell_share``, ``difficulty``, ``seed`` (int for the protein's own RNG).
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
        planned = []  # (split, label, cells, second compartment or None)
        for split, total in zip(SPLITS, counts):
            targets = _apportion(total, shares)
            for label in range(n_classes):
                remaining = targets[label]
                while remaining > 0:
                    n = min(_draw_count(rng, *cell_dist), remaining)
                    if remaining - n < 2:
                        n = remaining
                    planned.append((split, label, n, None))
                    remaining -= n
        if set_name == "main":
            planned += _plan_mixed(cfg, seed)
        order = rng.permutation(len(planned))  # wells in random order: plate says nothing about class
        for slot, idx in enumerate(order):
            split, label, n, second = planned[idx]
            plate = slot // 384 + 1 + (TRANSFER_PLATE_OFFSET if set_name == "transfer" else 0)
            row, col = (slot % 384) // 24 + 1, slot % 24 + 1
            well = f"{row:03d}{col:03d}000"
            dim = bool(rng.random() < DIM_SHARE * difficulty)
            expression = float(rng.uniform(18, 40) if dim else np.clip(rng.lognormal(math.log(110), 0.45), 40, 400))
            mixture = None if second is None else float(rng.uniform(*MIXED_FRACTION))
            proteins.append(dict(
                set=set_name, split=split, label=int(label), plate=int(plate), well=well,
                protein=f"plate{plate:02d}/{well}", n_cells=int(n), expression=expression, dim=dim,
                mixed_with=second, mixture_fraction=mixture,
                noncell_share=float(rng.uniform(0.0, 2 * NONCELL_SHARE) * difficulty),
                difficulty=float(difficulty),
                seed=int(rng.integers(2**63 - 1)),
            ))
    proteins.sort(key=lambda p: (p["set"], p["plate"], p["well"]))
    return proteins
