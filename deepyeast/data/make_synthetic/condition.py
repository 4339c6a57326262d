"""A pair of synthetic screens, reference and condition, with known relocalised proteins.

Why: comparing two screens (:mod:`deepyeast.analysis.compare_screens`) needs pairs whose truth is known,
with what makes real comparisons hard: micrographs that differ in focus and exposure, some pulled
toward a wrong compartment, and different cell counts.

:func:`plan_pair` draws, from the main-set proteins of :func:`~deepyeast.data.make_synthetic.plan.plan_screen`
(their compartment, expression and own seed), the same proteins in both screens:

* a seeded share of them (``movers``) relocalised in the condition: a share of their cells
  (``moved_share``, uniform in a range) shows another compartment;
* per screen and protein, ``fields`` micrographs (uniform in a range), its cells drawn anew on each
  side (log-normal around the protein's count, scaled by ``cond_cells`` in the condition);
* per micrograph: defocus (share ``defocus_share``; extra blur ``defocus`` pixels), an exposure
  factor (log-normal, sd ``exposure_sd``), and with probability ``pull_share`` a pull: a share
  (``pull_strength``) of its cells shows one wrong compartment.  Both screens carry these effects.

Two outputs of one plan:

* :func:`render_pair` renders the micrographs (two-channel TIFF) of both screens with
  ``images.csv`` tables for ``analysis/classify_screen.py`` (the condition on other plates: proteins
  are matched by name), and ``truth.csv``;
* :func:`simulate_pair` writes, without rendering or a network, the cells.csv tables a classifier
  would give: per cell a probability vector from its true compartment, worse and biased toward
  the cytoplasm on defocused or dim micrographs (:func:`simulate_probs`).  The statistics of a
  comparison can be measured on many such pairs in seconds.

``truth.csv`` (protein, label, class, mover, moved_to, moved_share, ref_micrographs, cond_micrographs,
ref_cells, cond_cells) is what the bench and the tests read; the comparison never reads it.
"""

import dataclasses
import json
import math
import os

import numpy as np

from deepyeast.constants import CLASS_NAMES
from deepyeast.utils.io import atomic_folder, write_csv

__all__ = ["ConditionSettings", "plan_pair", "render_pair", "simulate_pair", "simulate_probs", "read_truth", "score",
           "TRUTH_FILE"]

TRUTH_FILE = "truth.csv"
SHARPNESS = 4.0
"""Logit boost of a cell's true compartment in :func:`simulate_probs`: about 0.8 of a screen's cells called as
their protein's compartment (bench/bench_compare.py measures it; the demo's network scores 0.75 per cell)."""
TILT = 0.4
"""Standard deviation of a micrograph's own logit offset per compartment in :func:`simulate_probs`."""
CYTOPLASM = CLASS_NAMES.index("cytoplasm")


@dataclasses.dataclass(frozen=True)
class ConditionSettings:
    """The condition screen's design (see the module doc); ranges are (low, high), uniform."""

    proteins: int = 60
    movers: float = 0.15
    moved_share: tuple = (0.3, 0.9)
    fields: tuple = (1, 4)
    cells_per_field: float = 12.0
    cond_cells: float = 0.8
    defocus_share: float = 0.2
    defocus: tuple = (1.0, 2.5)
    exposure_sd: float = 0.35
    pull_share: float = 0.1
    pull_strength: tuple = (0.15, 0.4)


def _side_fields(rng, s, n_cells):
    """Micrographs of one protein on one side: list of dicts n_cells, defocus, exposure, pull_to, pull_share."""
    m = int(rng.integers(s.fields[0], s.fields[1] + 1))
    out = []
    for _ in range(m):
        pulled = rng.random() < s.pull_share
        out.append(dict(
            n_cells=max(1, int(round(rng.lognormal(math.log(n_cells), 0.4)))),
            defocus=float(rng.uniform(*s.defocus)) if rng.random() < s.defocus_share else 0.0,
            exposure=float(np.exp(rng.normal(0, s.exposure_sd))),
            pull_to=int(rng.integers(len(CLASS_NAMES))) if pulled else None,
            pull_share=float(rng.uniform(*s.pull_strength)) if pulled else 0.0))
    return out


def plan_pair(size="tiny", seed=0, settings=ConditionSettings()):
    """The plan of a reference/condition pair: list of protein dicts (see the module doc).

    Each: ``protein`` (name), ``label``, ``expression``, ``seed``, ``mover`` (bool), ``moved_to``
    (label or None), ``moved_share``, ``ref`` / ``cond``: lists of micrograph dicts
    (``n_cells``, ``defocus``, ``exposure``, ``pull_to``, ``pull_share``).  A pull never targets the
    protein's own compartment or its mover's target.  Deterministic per (size, seed, settings).
    """
    from deepyeast.data.make_synthetic.plan import plan_screen

    base = [p for p in plan_screen(size, seed) if p["set"] == "main" and p.get("mixed_with") is None]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 20]))
    pick = np.sort(rng.choice(len(base), min(settings.proteins, len(base)), replace=False))
    n_movers = int(round(settings.movers * len(pick)))
    movers = set(rng.choice(len(pick), n_movers, replace=False).tolist())
    out = []
    for j, i in enumerate(pick):
        p = base[i]
        mover = j in movers
        to = None
        if mover:
            to = int(rng.integers(len(CLASS_NAMES) - 1))
            to += to >= p["label"]
        per_field = settings.cells_per_field
        ref = _side_fields(rng, settings, per_field)
        cond = _side_fields(rng, settings, per_field * settings.cond_cells)
        for f in ref + cond:
            while f["pull_to"] is not None and f["pull_to"] in (p["label"], to):
                f["pull_to"] = (f["pull_to"] + 1) % len(CLASS_NAMES)
        out.append(dict(protein=f"Y{p['plate']:02d}{p['well'][:6]}", label=p["label"], expression=p["expression"],
                        noncell_share=p["noncell_share"], seed=p["seed"], mover=mover, moved_to=to,
                        moved_share=float(rng.uniform(*settings.moved_share)) if mover else 0.0, ref=ref, cond=cond))
    return out


def _truth_rows(plan):
    for p in plan:
        yield [p["protein"], p["label"], CLASS_NAMES[p["label"]], int(p["mover"]),
               "" if p["moved_to"] is None else CLASS_NAMES[p["moved_to"]], f"{p['moved_share']:.4f}",
               len(p["ref"]), len(p["cond"]), sum(f["n_cells"] for f in p["ref"]),
               sum(f["n_cells"] for f in p["cond"])]


TRUTH_COLUMNS = ["protein", "label", "class", "mover", "moved_to", "moved_share", "ref_micrographs",
                 "cond_micrographs", "ref_cells", "cond_cells"]


def read_truth(path):
    """``truth.csv`` -> dict protein -> row dict (mover int, moved_share float, micrograph/cell counts int)."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for r in rows:
        for key in ("label", "mover", "ref_micrographs", "cond_micrographs", "ref_cells", "cond_cells"):
            r[key] = int(r[key])
        r["moved_share"] = float(r["moved_share"])
        out[r["protein"]] = r
    return out


def score(rows, truth, key="changed", min_moved=0.5, min_micrographs=2):
    """False-discovery proportion and recall of a comparison's calls against the truth.

    ``rows``: dicts with ``protein`` and ``key`` (0/1); ``truth``: :func:`read_truth`.  Recall is over
    the movers with at least ``min_moved`` of their cells moved and ``min_micrographs`` micrographs
    on each side.  Returns dict fdp (None without calls), calls, false, recall, movers_counted, found.
    """
    called = [r["protein"] for r in rows if r.get(key)]
    false = sum(1 for p in called if not truth[p]["mover"])
    target = {p for p, t in truth.items() if t["mover"] and t["moved_share"] >= min_moved
              and min(t["ref_micrographs"], t["cond_micrographs"]) >= min_micrographs}
    found = len(target & set(called))
    return {"fdp": false / len(called) if called else None, "calls": len(called), "false": false,
            "recall": found / len(target) if target else None, "movers_counted": len(target), "found": found}


# --------------------------------------------------------------------------- micrographs

def _field_compartments(p, side, f):
    """Other compartments of a micrograph's cells: list of (share, label)."""
    others = []
    if side == "cond" and p["mover"]:
        others.append((p["moved_share"], p["moved_to"]))
    if f["pull_to"] is not None:
        others.append((f["pull_share"] * (1 - sum(s for s, _ in others)), f["pull_to"]))
    return others


def _render_protein(job):
    """Worker: render one protein's micrographs on one side; returns images-table rows."""
    import cv2
    import tifffile

    from deepyeast.data.make_synthetic.patterns import _protein_style
    from deepyeast.data.make_synthetic.render import field_size_for, render_field

    p, side, plate, folder = job
    cv2.setNumThreads(1)
    rng = np.random.default_rng(np.random.SeedSequence([p["seed"] % (2 ** 63), side == "cond"]))
    style = _protein_style(CLASS_NAMES[p["label"]], np.random.default_rng(p["seed"]))
    styles = {}
    rows = []
    for k, f in enumerate(p[side]):
        others = []
        for share, label in _field_compartments(p, side, f):
            if label not in styles:
                own = np.random.default_rng([p["seed"] % (2 ** 63), label])
                styles[label] = _protein_style(CLASS_NAMES[label], own)
            others.append((share, CLASS_NAMES[label], styles[label]))
        spec = dict(set="main", label=p["label"], expression=p["expression"], noncell_share=p["noncell_share"],
                    mixture_fraction=None, _style=style, _others=others,
                    _optics=dict(defocus=f["defocus"], exposure=f["exposure"]))
        image, _, _ = render_field(rng, spec, f["n_cells"], field_size_for(f["n_cells"]))
        name = f"{p['protein']}_{side}_f{k}.tif"
        tifffile.imwrite(os.path.join(folder, name), image, photometric="minisblack")
        rows.append([name, plate, p["protein"]])
    return rows


def render_pair(out_dir, size="tiny", seed=0, settings=ConditionSettings(), jobs=1):
    """Render both screens' micrographs under ``out_dir`` (written all at once).

    ``out_dir/reference/`` and ``out_dir/condition/``: ``*.tif`` (2 x S x S uint8, red marker,
    green protein) and ``images.csv`` (image,plate,protein; the condition on other plates);
    ``out_dir/truth.csv``; ``out_dir/pair.json`` (size, seed, settings).  Returns the plan.
    """
    from multiprocessing import get_context

    plan = plan_pair(size, seed, settings)
    with atomic_folder(out_dir) as tmp:
        for side, folder, offset in (("ref", "reference", 1), ("cond", "condition", 51)):
            d = os.path.join(tmp, folder)
            os.makedirs(d)
            tasks = [(p, side, offset + i // 96, d) for i, p in enumerate(plan)]
            if jobs > 1:
                with get_context("fork").Pool(jobs) as pool:
                    rows = pool.map(_render_protein, tasks, chunksize=2)
            else:
                rows = [_render_protein(j) for j in tasks]
            write_csv(os.path.join(d, "images.csv"), [r for rs in rows for r in rs], ["image", "plate", "protein"])
        write_csv(os.path.join(tmp, TRUTH_FILE), _truth_rows(plan), TRUTH_COLUMNS)
        _write_pair_json(tmp, size, seed, settings, "micrographs")
    return plan


def _write_pair_json(folder, size, seed, settings, kind):
    with open(os.path.join(folder, "pair.json"), "w", encoding="utf-8") as f:
        json.dump({"kind": kind, "size": size, "seed": seed, "settings": dataclasses.asdict(settings)}, f, indent=1)


# --------------------------------------------------------------------------- probability tables

def simulate_probs(rng, labels, defocus, exposure, confusable, sharpness=SHARPNESS):
    """Probabilities a classifier might give cells of one micrograph: float (n, K).

    ``labels`` int (n,) the cells' true compartments; ``defocus`` (extra blur, pixels) and
    ``exposure`` (factor) of the micrograph; ``confusable`` int (n,) the compartment each cell is
    most easily mistaken for.  Logits: standard normal per class, + ``sharpness`` x quality on
    the true class (quality falls with defocus and with dim exposure), + 1.2 on ``confusable``,
    + a defocus bias on the cytoplasm (blurred patterns look diffuse), + a micrograph-wide random
    tilt shared by its cells (the micrograph's own look).
    """
    n, k = len(labels), len(CLASS_NAMES)
    quality = 1.0 / (1.0 + 0.45 * defocus) * min(1.0, exposure) ** 0.5
    z = rng.normal(0, 1, (n, k)) + rng.normal(0, TILT, k)
    z[np.arange(n), labels] += sharpness * quality
    z[np.arange(n), confusable] += 1.2
    z[:, CYTOPLASM] += 0.8 * defocus
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _simulate_side(rng, plan, side):
    """cells.csv rows of one side: image, plate, protein, cell, pred, class, prob_0..prob_{K-1}."""
    rows = []
    for i, p in enumerate(plan):
        confusable = (p["label"] + 1 + p["seed"] % (len(CLASS_NAMES) - 1)) % len(CLASS_NAMES)
        for k, f in enumerate(p[side]):
            labels = np.full(f["n_cells"], p["label"], np.int64)
            u = rng.random(f["n_cells"])
            lo = 0.0
            for share, label in _field_compartments(p, side, f):
                labels[(u >= lo) & (u < lo + share)] = label
                lo += share
            conf = np.where(labels == p["label"], confusable, (labels + 3) % len(CLASS_NAMES))
            probs = simulate_probs(rng, labels, f["defocus"], f["exposure"], conf)
            image = f"{p['protein']}_{side}_f{k}.tif"
            plate = (1 if side == "ref" else 51) + i // 96
            for c, pr in enumerate(probs):
                j = int(pr.argmax())
                rows.append([image, plate, p["protein"], c + 1, j, CLASS_NAMES[j]] + [f"{v:.6g}" for v in pr])
    return rows


def simulate_pair(out_dir, size="tiny", seed=0, settings=ConditionSettings()):
    """Write ``out_dir/reference/cells.csv``, ``out_dir/condition/cells.csv`` (classify_screen's columns
    image,plate,protein,cell,pred,class,prob_0..prob_11), ``truth.csv`` and ``pair.json``, all at once.
    Returns the plan."""
    plan = plan_pair(size, seed, settings)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 21]))
    header = ["image", "plate", "protein", "cell", "pred", "class"] + [f"prob_{j}" for j in range(len(CLASS_NAMES))]
    with atomic_folder(out_dir) as tmp:
        for side, folder in (("ref", "reference"), ("cond", "condition")):
            os.makedirs(os.path.join(tmp, folder))
            write_csv(os.path.join(tmp, folder, "cells.csv"), _simulate_side(rng, plan, side), header)
        write_csv(os.path.join(tmp, TRUTH_FILE), _truth_rows(plan), TRUTH_COLUMNS)
        _write_pair_json(tmp, size, seed, settings, "probability tables")
    return plan
