"""Compare two classified screens: which proteins change compartment, with a false-discovery rate that holds.

Inputs are classify_screen output folders (:mod:`deepyeast.analysis.classify_screen`); only their
``cells.csv`` is required, and of it only the columns ``image``, ``protein`` and
``prob_0..prob_{K-1}`` (``class``/``pred`` and ``summary.json``'s model classes name the
compartments; other columns are ignored; where an ``ood`` column is present, cells with ``ood``
set are left out and counted).  A side (reference or condition) may hold several replicate
folders; their micrographs are pooled.

The unit is the micrograph
--------------------------
A micrograph's focus, exposure or position shifts all its cells' probabilities together, so cells
are not independent.  Per protein (matched by ``protein``, the ORF, whatever its plate) and side:

* micrograph profile ``x_m`` = the mean probability vector of its ``n_m`` cells (K,);
* the side's profile ``P`` = the cell-weighted mean of its micrographs' profiles (= the mean of
  all its cells' probabilities, the soft counts of the paper's protein call);
* the effect = the total-variation distance ``TV = 0.5 * sum_k |P_cond,k - P_ref,k|`` (0: same
  profile, 1: disjoint), with a bootstrap interval resampling micrographs within each side.

The p-value comes from a null of "no change" built from how micrographs vary within a screen:
each null draw rebuilds both sides from the protein's own cells pooled over both sides (the mean
of a side's number of cells drawn from them, as a normal vector with the pooled cells' mean and
their covariance within micrographs: cell-to-cell variation) plus, for every micrograph, a micrograph
effect drawn from the side's pool of micrograph residuals ``x_m - P`` of all proteins with at
least two micrographs and the same call (focus, exposure and wrong-compartment pulls as they occur
in that screen), scaled so that the pool's cell-sampling share is not counted twice
(:func:`residual_pool`).
``p = (1 + #{TV_null >= TV}) / (1 + draws)``; q-values by Benjamini-Hochberg over the tested
proteins; ``changed`` = q < ``fdr``.  With replicate folders on a side, residuals are taken
around the side's profile over all replicates, so replicate-to-replicate shifts enter the null.

A protein is ``insufficient`` (not tested; p and q empty) with fewer than ``min_micrographs``
micrographs or ``min_cells`` cells on either side (the reason says which).

For comparison, :func:`naive_cell_test` is the per-cell test a lab might run: chi-square on the
cells' calls (2 x K table), Benjamini-Hochberg; it treats cells as independent.
"""

import csv
import dataclasses
import json
import math
import os

import numpy as np

from deepyeast.utils.io import InputError, atomic_write_text, write_csv

__all__ = ["CompareSettings", "ScreenSide", "read_side", "check_classes", "compare_screens", "bh_qvalues",
           "residual_pool", "naive_cell_test", "protein_groups", "summarise", "write_tables", "flow_table",
           "CHANGES_COLUMNS", "METHOD"]


@dataclasses.dataclass(frozen=True)
class CompareSettings:
    """Settings of a comparison.

    fdr : q-value threshold of ``changed`` (Benjamini-Hochberg); min_micrographs, min_cells :
    per side, below either a protein is ``insufficient``; null_draws : draws of the null per
    protein (p-values are multiples of 1 / (draws + 1)); resamples : bootstrap resamples of the
    effect's interval; seed : of every random draw; hits_shown : hits with galleries in the report.
    """

    fdr: float = 0.1
    min_micrographs: int = 2
    min_cells: int = 5
    null_draws: int = 2000
    resamples: int = 1000
    seed: int = 0
    hits_shown: int = 40

    def check(self):
        if not 0 < self.fdr < 1:
            raise InputError(f"--fdr must be in (0, 1), not {self.fdr}")
        if self.min_micrographs < 1 or self.min_cells < 1:
            raise InputError("--min-micrographs and --min-cells must be at least 1")
        if self.null_draws < 1 or self.resamples < 1:
            raise InputError("--null-draws and --resamples must be at least 1")


# --------------------------------------------------------------------------- reading

@dataclasses.dataclass
class ScreenSide:
    """The cells of one side (one or more classify_screen folders), N cells, K classes.

    folders : list of str; protein : object (N,) ORF; micrograph : int64 (N,) index into
    ``micrographs`` (list of (folder index, image)); probs : float64 (N, K); classes : list of K
    names (``class_k`` where no name is known); named : bool (K,) whether the name came from the
    data; n_ood : int cells left out as ``ood``; cells_file : the first folder's cells.csv.
    """

    folders: list
    protein: np.ndarray
    micrograph: np.ndarray
    micrographs: list
    probs: np.ndarray
    classes: list
    named: np.ndarray
    n_ood: int
    cells_file: str


def _truthy(text):
    return text.strip().lower() in ("1", "true", "yes", "y", "t")


def _model_classes(folder):
    """Class names from ``summary.json``'s model (classify_screen's), or None."""
    path = os.path.join(folder, "summary.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            names = (json.load(f).get("model") or {}).get("classes")
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable JSON file ({err})") from None
    return [str(n) for n in names] if isinstance(names, list) and names else None


def _read_cells(folder, rep):
    """One folder's cells.csv -> (protein list, (rep, image) list, probs (N, K), classes, named, n_ood)."""
    path = os.path.join(folder, "cells.csv")
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file (a classify_screen output folder holds cells.csv)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(f"{path}: empty file") from None
        except csv.Error as err:
            raise InputError(f"{path}: not a CSV table ({err})") from None
        col = {name.strip(): i for i, name in enumerate(header)}
        for need in ("image", "protein"):
            if need not in col:
                raise InputError(f"{path}: no '{need}' column (columns: {', '.join(header[:12])})")
        k = 0
        while f"prob_{k}" in col:
            k += 1
        if k < 2:
            raise InputError(f"{path}: no probability columns prob_0..prob_{{K-1}} (need at least two)")
        if any(name.startswith("prob_") and name not in {f"prob_{j}" for j in range(k)} for name in col):
            raise InputError(f"{path}: probability columns are not prob_0..prob_{{K-1}} without a gap")
        pcols = [col[f"prob_{j}"] for j in range(k)]
        ood = col.get("ood")
        pred, cls = col.get("pred"), col.get("class")
        names = _model_classes(folder)
        if names is not None and len(names) != k:
            raise InputError(f"{os.path.join(folder, 'summary.json')}: the model has {len(names)} classes but "
                             f"{path} has {k} probability columns")
        seen = {}
        proteins, images, rows, n_ood = [], [], [], 0
        for line, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) != len(header):
                raise InputError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
            if ood is not None and _truthy(row[ood]):
                n_ood += 1
                continue
            protein = row[col["protein"]].strip()
            if not protein:
                raise InputError(f"{path}:{line}: empty protein")
            try:
                p = [float(row[i]) for i in pcols]
            except ValueError:
                raise InputError(f"{path}:{line}: a probability is not a number") from None
            if not all(math.isfinite(v) and -1e-6 <= v <= 1 + 1e-6 for v in p) or abs(sum(p) - 1) > 1e-3:
                raise InputError(f"{path}:{line}: probabilities must lie in [0, 1] and sum to 1")
            if pred is not None and cls is not None and row[pred].strip():
                try:
                    j = int(row[pred])
                except ValueError:
                    raise InputError(f"{path}:{line}: pred is not a class index") from None
                if not 0 <= j < k:
                    raise InputError(f"{path}:{line}: pred {j} is not a class of {k}")
                name = row[cls].strip()
                if seen.setdefault(j, (name, line))[0] != name:
                    raise InputError(f"{path}:{line}: class {j} is named {name!r} here but "
                                     f"{seen[j][0]!r} on line {seen[j][1]}")
            proteins.append(protein)
            images.append((rep, row[col["image"]]))
            rows.append(p)
    probs = np.asarray(rows, np.float64).reshape(-1, k)
    named = np.zeros(k, bool)
    classes = [f"class_{j}" for j in range(k)]
    if names is not None:
        classes, named[:] = list(names), True
    for j, (name, line) in seen.items():
        if named[j] and classes[j] != name:
            raise InputError(f"{path}:{line}: class {j} is {name!r} but summary.json's model calls it {classes[j]!r}")
        classes[j], named[j] = name, True
    return proteins, images, probs, classes, named, n_ood, path


def read_side(folders, rep_offset=0):
    """Read one side (a list of classify_screen folders) into a :class:`ScreenSide`.

    Bad input raises :class:`InputError` naming the file: no cells.csv, no probability columns,
    replicates whose class sets differ, no cells left.
    """
    folders = [os.fspath(f) for f in folders]
    proteins, images, probs, classes, named, n_ood, first = [], [], [], None, None, 0, None
    for r, folder in enumerate(folders):
        p, im, pr, cl, nm, no, path = _read_cells(folder, rep_offset + r)
        if classes is None:
            classes, named, first = cl, nm, path
        else:
            check_classes(first, classes, named, path, cl, nm)
            for j in range(len(cl)):
                if nm[j] and not named[j]:
                    classes[j], named[j] = cl[j], True
        proteins += p
        images += im
        probs.append(pr)
        n_ood += no
    probs = np.concatenate(probs)
    if not len(probs):
        raise InputError(f"{first}: no cells" + (f" (all {n_ood} flagged ood)" if n_ood else ""))
    index, micro = {}, np.empty(len(images), np.int64)
    for i, key in enumerate(images):
        micro[i] = index.setdefault((key, proteins[i]), len(index))
    micrographs = [key for key, _ in sorted(index, key=index.get)]
    return ScreenSide(folders, np.asarray(proteins, object), micro, micrographs, probs, classes, named, n_ood,
                      first)


def check_classes(file_a, classes_a, named_a, file_b, classes_b, named_b):
    """InputError naming ``file_b`` when its classes differ from ``file_a``'s (count, or a name both know)."""
    if len(classes_a) != len(classes_b):
        raise InputError(f"{file_b}: {len(classes_b)} classes, but {file_a} has {len(classes_a)}: the two screens "
                         "were classified with different models")
    for j, (a, b) in enumerate(zip(classes_a, classes_b)):
        if named_a[j] and named_b[j] and a != b:
            raise InputError(f"{file_b}: class {j} is {b!r} but {a!r} in {file_a}: the two screens were classified "
                             "with different class tables")


# --------------------------------------------------------------------------- statistics

def bh_qvalues(p):
    """Benjamini-Hochberg q-values of p-values ``p`` (float (n,), NaN = not tested, stays NaN)."""
    p = np.asarray(p, float)
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if not ok.size:
        return q
    order = ok[np.argsort(p[ok], kind="stable")]
    m = ok.size
    ranked = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return q


def tv(a, b):
    """Total-variation distance 0.5 * sum |a - b| over the last axis."""
    return 0.5 * np.abs(np.asarray(a) - np.asarray(b)).sum(axis=-1)


@dataclasses.dataclass
class _Group:
    """One protein on one side: micrograph profiles x (M, K), cells per micrograph n (M,), cell rows."""

    x: np.ndarray
    n: np.ndarray
    rows: np.ndarray

    @property
    def profile(self):
        return (self.n[:, None] * self.x).sum(0) / self.n.sum()


def protein_groups(side):
    """protein -> its micrographs on this side (a :class:`_Group`: profiles x (M, K), cells n (M,), cell rows)."""
    order = np.argsort(side.micrograph, kind="stable")
    m_ids, starts = np.unique(side.micrograph[order], return_index=True)
    bounds = list(starts) + [len(order)]
    per = {}
    for i, m in enumerate(m_ids):
        rows = order[bounds[i]:bounds[i + 1]]
        per.setdefault(side.protein[rows[0]], []).append(rows)
    out = {}
    for protein, micros in per.items():
        x = np.stack([side.probs[r].mean(0) for r in micros])
        n = np.asarray([len(r) for r in micros], np.int64)
        out[protein] = _Group(x, n, np.concatenate(micros))
    return out


MIN_POOL = 30
"""Fewest residuals of a compartment's own pool; below it the side's whole pool is used."""


@dataclasses.dataclass
class ResidualPool:
    """A side's micrograph effects (see :func:`residual_pool`): all residuals (R, K), the compartment
    (argmax of its protein's profile) each came from (R,), and the scale applied."""

    residuals: np.ndarray
    call: np.ndarray
    scale: float

    def __len__(self):
        return len(self.residuals)

    def of(self, call):
        """The residuals of proteins called ``call`` when there are at least :data:`MIN_POOL`, else all."""
        own = self.call == call
        return self.residuals[own] if own.sum() >= MIN_POOL else self.residuals


def residual_pool(groups, probs):
    """The side's micrograph effects: residuals of micrographs around their protein's profile.

    From every protein with at least two micrographs, ``e_m = (x_m - P) * sqrt(M / (M - 1))``
    (float (R, K), rows sum to 0), labelled with the protein's call (argmax of ``P``): a
    micrograph effect depends on what the protein looks like (a defocused punctate protein looks
    diffuse, a cytoplasmic one hardly changes), so the null of a protein draws from the residuals
    of proteins with its call (:meth:`ResidualPool.of`).  Each residual holds the micrograph's effect
    and the sampling noise of its own cells; since the null draws cell noise separately, the
    residuals are scaled by ``lam = sqrt(max(0, 1 - V_cells / V_total))``, ``V_total`` = sum of
    ``|e_m|^2``, ``V_cells`` = sum over the same micrographs of ``tr(S) / n_m``, ``S`` the
    covariance of the protein's cells within its micrographs.
    """
    res, call, v_cells = [], [], 0.0
    for g in groups.values():
        m = len(g.n)
        if m < 2:
            continue
        res.append((g.x - g.profile) * math.sqrt(m / (m - 1)))
        call += [int(np.argmax(g.profile))] * m
        v_cells += float(np.sum(_within_trace(g, probs) / g.n))
    if not res:
        return ResidualPool(np.zeros((0, probs.shape[1])), np.zeros(0, np.int64), 0.0)
    res = np.concatenate(res)
    v_total = float((res ** 2).sum())
    lam = math.sqrt(max(0.0, 1.0 - v_cells / v_total)) if v_total > 0 else 0.0
    return ResidualPool(res * lam, np.asarray(call, np.int64), lam)


def _within_trace(g, probs):
    """Trace of the within-micrograph covariance of a protein's cells on one side (pooled over its micrographs)."""
    df = int(g.n.sum() - len(g.n))
    return float((_deviations(g, probs) ** 2).sum()) / df if df > 0 else 0.0


def _null_side(rng, mean, root, n_cells, n_micro_weights, pool, draws):
    """Null profiles of one side (draws, K).

    The cell-sampling part: the mean of ``n_cells`` cells drawn from the protein's pooled cells,
    as a normal vector with their mean ``mean`` (K,) and covariance ``root @ root.T / n_cells``;
    plus, per micrograph (weights ``n_m / n_cells``), a micrograph effect drawn from ``pool``.
    Not clipped to [0, 1]: a residual drawn from another protein keeps its size whatever this
    protein's profile (the null's TV is that of the two sides' difference).
    """
    prof = mean + rng.standard_normal((draws, root.shape[1])) @ root.T / math.sqrt(n_cells)
    if len(pool):
        pick = rng.integers(0, len(pool), size=(draws, len(n_micro_weights)))
        prof = prof + np.tensordot(pool[pick], n_micro_weights, axes=([1], [0]))
    return prof


def _deviations(g, probs):
    """The protein's cells minus their micrograph's mean (n, K)."""
    cells = probs[g.rows]
    return cells - np.repeat(g.x, g.n, axis=0)


def _within_root(groups_and_probs):
    """A square root ``R`` (K, K) of the within-micrograph covariance of a protein's cells over both
    sides (``R @ R.T`` = cov; degrees of freedom: cells minus micrographs)."""
    dev = np.concatenate([_deviations(g, probs) for g, probs in groups_and_probs])
    df = len(dev) - sum(len(g.n) for g, _ in groups_and_probs)
    if df < 1:
        return np.zeros((dev.shape[1], dev.shape[1]))
    lam, vec = np.linalg.eigh(dev.T @ dev / df)
    return vec * np.sqrt(np.clip(lam, 0, None))


def _p_value(null_diff, diff):
    """p-value of the profile difference ``diff`` (K,) against null differences (draws, K).

    The statistic standardises each compartment by its null spread, ``T = sum_k d_k^2 / v_k``
    (``v_k`` the null draws' variance): a change into a compartment where micrographs rarely
    differ counts more than the same change where they often do.  ``p = (1 + #{T_null >= T}) /
    (1 + draws)``.
    """
    v = null_diff.var(axis=0) + 1e-12
    t0 = (null_diff ** 2 / v).sum(axis=1)
    t = float((diff ** 2 / v).sum())
    return float((1 + np.sum(t0 >= t * (1 - 1e-9))) / (1 + len(null_diff)))


def _boot_interval(rng, g, resamples):
    """Bootstrap distribution of a side's profile, resampling micrographs (resamples, K)."""
    m = len(g.n)
    counts = rng.multinomial(m, np.full(m, 1.0 / m), size=resamples).astype(float)
    w = counts * g.n
    return w @ g.x / w.sum(axis=1, keepdims=True)


def naive_cell_test(ref_calls, cond_calls, k):
    """Per-cell chi-square test of a protein's cell calls (int arrays) between two screens: p-value.

    The 2 x K contingency table of calls (compartments no cell was called dropped), Pearson's
    chi-square without continuity correction; 1.0 when only one compartment is called.
    """
    from scipy.stats import chi2_contingency

    table = np.stack([np.bincount(ref_calls, minlength=k), np.bincount(cond_calls, minlength=k)])
    table = table[:, table.sum(0) > 0]
    if table.shape[1] < 2:
        return 1.0
    return float(chi2_contingency(table, correction=False)[1])


def compare_screens(ref, cond, settings=CompareSettings()):
    """Compare two :class:`ScreenSide` s; returns (rows, info).

    ``rows``: one dict per protein in both screens (sorted by protein), the columns of
    :data:`CHANGES_COLUMNS` plus ``p_naive``/``q_naive``/``changed_naive`` (the per-cell test on
    the same tested proteins).  ``info``: the null's calibration (per side: residuals, scale).
    """
    settings.check()
    check_classes(ref.cells_file, ref.classes, ref.named, cond.cells_file, cond.classes, cond.named)
    classes = [c if ref.named[j] or not cond.named[j] else cond.classes[j] for j, c in enumerate(ref.classes)]
    k = len(classes)
    g_ref, g_cond = protein_groups(ref), protein_groups(cond)
    common = sorted(set(g_ref) & set(g_cond))
    if not common:
        raise InputError(f"{cond.cells_file}: no protein in common with {ref.cells_file} (proteins are matched by "
                         "the 'protein' column)")
    pool_ref, pool_cond = residual_pool(g_ref, ref.probs), residual_pool(g_cond, cond.probs)
    rng = np.random.default_rng(settings.seed)
    rows = []
    for protein in common:
        a, b = g_ref[protein], g_cond[protein]
        pa, pb = a.profile, b.profile
        diff = pb - pa
        ra, rb = int(np.argmax(pa)), int(np.argmax(pb))
        gained, lost = int(np.argmax(diff)), int(np.argmin(diff))
        row = dict(protein=protein, ref_micrographs=len(a.n), cond_micrographs=len(b.n),
                   ref_cells=int(a.n.sum()), cond_cells=int(b.n.sum()),
                   ref_call=classes[ra], ref_share=float(pa[ra]), cond_call=classes[rb], cond_share=float(pb[rb]),
                   gained=classes[gained], gained_by=float(diff[gained]), lost=classes[lost],
                   lost_by=float(-diff[lost]), effect=float(tv(pa, pb)), effect_lo=None, effect_hi=None,
                   p=None, q=None, changed=0, insufficient="")
        why = []
        for side, g in (("reference", a), ("condition", b)):
            if len(g.n) < settings.min_micrographs:
                why.append(f"{len(g.n)} micrograph{'s' if len(g.n) != 1 else ''} in the {side} "
                           f"(< {settings.min_micrographs})")
            if g.n.sum() < settings.min_cells:
                why.append(f"{int(g.n.sum())} cells in the {side} (< {settings.min_cells})")
        if why:
            row["insufficient"] = "; ".join(why)
            rows.append(row)
            continue
        mean = np.concatenate([ref.probs[a.rows], cond.probs[b.rows]]).mean(0)
        root = _within_root([(a, ref.probs), (b, cond.probs)])
        call = int(np.argmax(mean))
        na, nb = int(a.n.sum()), int(b.n.sum())
        null_a = _null_side(rng, mean, root, na, a.n / na, pool_ref.of(call), settings.null_draws)
        null_b = _null_side(rng, mean, root, nb, b.n / nb, pool_cond.of(call), settings.null_draws)
        row["p"] = _p_value(null_b - null_a, diff)
        boot = tv(_boot_interval(rng, a, settings.resamples), _boot_interval(rng, b, settings.resamples))
        row["effect_lo"], row["effect_hi"] = (float(v) for v in np.quantile(boot, [0.025, 0.975]))
        row["p_naive"] = naive_cell_test(ref.probs[a.rows].argmax(1), cond.probs[b.rows].argmax(1), k)
        rows.append(row)
    for key, qkey, ckey in (("p", "q", "changed"), ("p_naive", "q_naive", "changed_naive")):
        p = np.asarray([np.nan if r.get(key) is None else r[key] for r in rows])
        q = bh_qvalues(p)
        for r, v in zip(rows, q):
            r[qkey] = None if np.isnan(v) else float(v)
            r[ckey] = int(not np.isnan(v) and v < settings.fdr)
    info = {"classes": classes,
            "null": {name: {"residual_micrographs": len(pool), "scale": pool.scale,
                            "per_compartment": {classes[j]: int(np.sum(pool.call == j)) for j in range(k)},
                            "min_per_compartment": MIN_POOL}
                     for name, pool in (("reference", pool_ref), ("condition", pool_cond))}}
    return rows, info


# --------------------------------------------------------------------------- tables

CHANGES_COLUMNS = ("protein", "ref_micrographs", "cond_micrographs", "ref_cells", "cond_cells", "ref_call",
                   "ref_share", "cond_call", "cond_share", "gained", "gained_by", "lost", "lost_by", "effect",
                   "effect_lo", "effect_hi", "p", "q", "changed", "insufficient")
"""Columns of ``changes.csv`` (see :func:`compare_screens` and the script's doc)."""


def flow_table(rows, classes):
    """Changed proteins counted by (reference call -> condition call): list of (from, to, proteins)."""
    counts = {}
    for r in rows:
        if r["changed"]:
            key = (r["ref_call"], r["cond_call"])
            counts[key] = counts.get(key, 0) + 1
    rank = {c: j for j, c in enumerate(classes)}
    return [(a, b, n) for (a, b), n in sorted(counts.items(), key=lambda kv: (-kv[1], rank[kv[0][0]],
                                                                             rank[kv[0][1]]))]


def summarise(ref, cond, rows, info, settings, command):
    tested = [r for r in rows if not r["insufficient"]]
    return {
        "reference": ref.folders, "condition": cond.folders,
        "classes": info["classes"],
        "cells": {"reference": int(len(ref.probs)), "condition": int(len(cond.probs))},
        "cells_left_out_ood": {"reference": ref.n_ood, "condition": cond.n_ood},
        "proteins": {"reference": int(len(set(ref.protein))), "condition": int(len(set(cond.protein))),
                     "in_both": len(rows), "tested": len(tested), "insufficient": len(rows) - len(tested),
                     "changed": int(sum(r["changed"] for r in rows)),
                     "changed_naive_per_cell_test": int(sum(r.get("changed_naive", 0) for r in rows))},
        "flows": [{"from": a, "to": b, "proteins": n} for a, b, n in flow_table(rows, info["classes"])],
        "warnings": [f"the {side} has {v['residual_micrographs']} micrographs of proteins with two or more: the "
                     f"null of micrograph variation rests on fewer than {MIN_POOL}, so its p-values are rough"
                     for side, v in info["null"].items() if v["residual_micrographs"] < MIN_POOL],
        "null": info["null"],
        "method": METHOD,
        "settings": dataclasses.asdict(settings),
        "command": command,
    }


METHOD = ("The micrograph is the unit. Per protein and screen, each micrograph's profile is the mean compartment "
          "probability of its cells, and the protein's profile the cell-weighted mean of its micrographs. The effect "
          "is the total-variation distance between the two screens' profiles (the share of the protein's "
          "probability mass that sits in a different compartment), with a 95% bootstrap interval resampling "
          "micrographs. The p-value compares the effect with a null of no change: both screens are rebuilt many "
          "times from the protein's own cells pooled over both screens, each micrograph shifted by a micrograph "
          "effect drawn from how micrographs of all proteins vary around their protein within that screen "
          "(focus, exposure, a micrograph pulled toward a wrong compartment). Benjamini-Hochberg q-values over the "
          "tested proteins; changed = q below the FDR. A per-cell test (chi-square on the cells' calls) counts every "
          "cell as independent and reports many false changes when micrographs differ; it is given for comparison "
          "only. A shift of a whole screen (every condition micrograph dimmer, say) is not in this null: it shows as "
          "many proteins changing toward the same compartment; replicate screens of each side bring screen-to-screen "
          "variation into the null.")


def _csv_rows(rows):
    for r in rows:
        yield [r[c] if not isinstance(r[c], float) else float(f"{r[c]:.6g}") for c in CHANGES_COLUMNS]


def write_tables(out_dir, rows, summary):
    """``out_dir/changes.csv`` (:data:`CHANGES_COLUMNS`) and ``out_dir/summary.json``."""
    write_csv(os.path.join(out_dir, "changes.csv"), _csv_rows(rows), list(CHANGES_COLUMNS))
    atomic_write_text(os.path.join(out_dir, "summary.json"), json.dumps(summary, indent=1) + "\n")
