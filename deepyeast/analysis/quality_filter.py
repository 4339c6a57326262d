"""The cell-quality filter: a random forest telling real cells from non-cells.

Some crops of a screen are not cells (empty background, debris, a crop centred
between two cells).  As in the paper (Parnamaa & Parts 2017, Methods), a random
forest on the CellProfiler features (:mod:`deepyeast.analysis.cp_features`) learns to
tell them apart from a training set built on the validation split:

* cells: for each class, ``per_class`` (100) validation cells picked at random
  (seeded, without replacement) among those that both the network and the
  random forest classify correctly, labelled ``is_cell = 1``;
* non-cells: every cell of a non-cell list (one archive-relative path per line,
  all in the validation split; the paper picked 118 by eye), ``is_cell = 0``.

10-fold cross-validation compares mtry in {2, 110, 218, 326, 435} (capped at the
number of features) x down-sampling of cells {none, balanced} with 100-tree
forests (one Dask task per grid point and fold, :func:`quality_cv`; R through :mod:`deepyeast.analysis.rbridge`);
the point with the highest cross-validated accuracy is chosen (balanced accuracy
reported beside it).  Refitted on the whole training set, the forest classifies
the test cells; those it calls non-cells are removed, and each classifier's
per-cell accuracy is reported before and after.

The published archive has no non-cell list: the user supplies one (``--noncells``;
``NONCELLS=FILE`` in make).  The synthetic screen writes ``noncells.txt`` from
its known non-cells of the validation split.
"""

import csv
import dataclasses
import json
import os

import uuid

import numpy as np

from deepyeast.analysis.evaluate_cells import count
from deepyeast.analysis.cp_features import read_feature_csv
from deepyeast.analysis.rbridge import data_frame_rows, impute_features, init_r, r_ints, r_matrix, r_inputs, session
from deepyeast.utils.io import InputError, atomic_write_text, open_input, write_csv
from deepyeast.utils.run_context import RunContext


PAPER_CELLS_PER_CLASS = 100
"""Validation cells per class, correct by both classifiers, labelled as cells (the paper)."""
PAPER_MTRY = (2, 110, 218, 326, 435)
"""mtry values of the filter's cross-validation (the paper; capped at the feature count)."""
PAPER_SAMPLING = ("none", "balanced")
"""Down-sampling of cells: none, or as many cells as non-cells in every tree."""
PAPER_NTREE = 100
PAPER_FOLDS = 10
NONCELL_OPTION = "NONCELLS=FILE (make), --noncells FILE (analysis/quality_filter.py)"
"""How a user supplies the non-cell list (the published archive has none; a ``missing`` entry's option)."""
NO_LIST_REASON = "the published archive has no non-cell labels"
"""Why the filter is not run when no non-cell list is given (a ``missing`` entry's reason)."""


def read_quality_labels(path):
    """Read ``path,is_cell[,...]`` -> dict path -> 0/1; errors name the line."""
    labels = {}
    with open_input(path, "cell-quality table", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or "path" not in header or "is_cell" not in header:
            raise InputError(f"{path}:1: header must have columns 'path' and 'is_cell', got {header}")
        ip, ic = header.index("path"), header.index("is_cell")
        for lineno, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) <= max(ip, ic):
                raise InputError(f"{path}:{lineno}: too few fields")
            if row[ic] not in ("0", "1"):
                raise InputError(f"{path}:{lineno}: column 'is_cell' must be 0 or 1, got {row[ic]!r}")
            if row[ip] in labels:
                raise InputError(f"{path}:{lineno}: duplicate path {row[ip]!r}")
            labels[row[ip]] = int(row[ic])
    if not labels:
        raise InputError(f"{path}: no rows")
    return labels


def read_noncell_list(path, val_paths=None, val_source="the validation split"):
    """Read a non-cell list: one archive-relative crop path per line -> list of str (file order).

    Blank lines and ``#`` comments (whole lines or after the path) are skipped.  With
    ``val_paths`` (a set) every path must be a cell of the validation split.  A line with
    more than a path, a path twice, a path outside ``val_paths`` or a list naming no crop
    is an :class:`InputError` naming the file and line.
    """
    out, seen = [], {}
    with open_input(path, "non-cell list") as f:
        for lineno, line in enumerate(f, 1):
            rel = line.split("#", 1)[0].strip()
            if not rel:
                continue
            if len(rel.split()) != 1:
                raise InputError(f"{path}:{lineno}: expected one crop path (archive-relative), got {line.strip()!r}")
            if rel in seen:
                raise InputError(f"{path}:{lineno}: {rel} is also on line {seen[rel]}")
            if val_paths is not None and rel not in val_paths:
                raise InputError(f"{path}:{lineno}: {rel!r} is not a cell of {val_source}; the non-cells must be "
                                 "validation cells (archive-relative paths as in HOwt_val.txt)")
            seen[rel] = lineno
            out.append(rel)
    if not out:
        raise InputError(f"{path}: the non-cell list names no crop")
    return out


def pick_training_cells(labels, net_pred, rf_pred, exclude=None, per_class=PAPER_CELLS_PER_CLASS, seed=0,
                        n_classes=None):
    """The paper's cells for the quality filter: per class, ``per_class`` cells both classifiers got right.

    labels, net_pred, rf_pred: int class indices of the same N validation cells (N,);
    exclude: bool (N,), cells never picked (the listed non-cells).  For each class c,
    the candidates are the cells with ``labels == net_pred == rf_pred == c`` and not
    excluded, in input order; ``min(per_class, len(candidates))`` of them are drawn
    without replacement with ``numpy.random.default_rng([seed, c])`` (so a class's
    pick does not depend on the other classes).
    Returns ``(indices int64 sorted, per-class list of dicts class/available/picked)``.
    """
    labels, net_pred, rf_pred = (np.asarray(a, dtype=np.int64) for a in (labels, net_pred, rf_pred))
    if not labels.shape == net_pred.shape == rf_pred.shape:
        raise ValueError(f"shapes differ: labels {labels.shape}, net_pred {net_pred.shape}, rf_pred {rf_pred.shape}")
    exclude = np.zeros(labels.shape, bool) if exclude is None else np.asarray(exclude, bool)
    n_classes = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    picked, info = [], []
    for c in range(n_classes):
        cand = np.flatnonzero((labels == c) & (net_pred == c) & (rf_pred == c) & ~exclude)
        k = min(int(per_class), len(cand))
        pick = np.random.default_rng([int(seed), c]).choice(cand, size=k, replace=False)
        picked.append(pick)
        info.append({"class": c, "available": int(len(cand)), "picked": int(k)})
    return np.sort(np.concatenate(picked)).astype(np.int64), info


def filter_accuracy(table, keep_paths):
    """Accuracy of a predictions table before/after keeping only ``keep_paths``.

    table: :class:`deepyeast.analysis.prediction_table.Predictions`; keep_paths: set of str.
    Returns ``{"before": {...}, "after": {...}, "removed": int}`` with value/correct/total.
    """
    ok = table.pred == table.label
    kept = np.array([p in keep_paths for p in table.path], dtype=bool)
    return {
        "before": count(ok.sum(), ok.size),
        "after": count(ok[kept].sum(), kept.sum()),
        "removed": int((~kept).sum()),
    }


def _val_predictions(net_csv, rf_csv, feature_paths, val_features):
    """The two classifiers' validation tables, aligned with the feature rows -> (rows, labels, net, rf)."""
    from deepyeast.analysis.prediction_table import read_predictions

    net = read_predictions(net_csv, require_all_classes=False)
    rf = read_predictions(rf_csv, require_all_classes=False)
    if net.n_classes != rf.n_classes:
        raise InputError(f"{rf_csv}: {rf.n_classes} classes, {net_csv} has {net.n_classes}")
    rf_at = {p: i for i, p in enumerate(rf.path)}
    missing = [p for p in net.path if p not in rf_at]
    if missing or len(rf_at) != len(net.path):
        extra = missing or [p for p in rf.path if p not in set(net.path)]
        raise InputError(f"{rf_csv}: the forest's validation cells differ from the network's in {net_csv} "
                         f"(e.g. {extra[0]!r})")
    row_of = {p: i for i, p in enumerate(feature_paths)}
    nofeat = [p for p in net.path if p not in row_of]
    if nofeat:
        raise InputError(f"{val_features}: validation cell {nofeat[0]!r} of {net_csv} has no features "
                         f"({len(nofeat)} such cells)")
    j = np.array([rf_at[p] for p in net.path], dtype=np.int64)
    bad = np.flatnonzero(rf.label[j] != net.label)
    if bad.size:
        raise InputError(f"{rf_csv}: cell {net.path[bad[0]]!r} has label {rf.label[j][bad[0]]}, "
                         f"{net_csv} says {net.label[bad[0]]}")
    rows = np.array([row_of[p] for p in net.path], dtype=np.int64)
    return list(net.path), rows, net.label, net.pred, rf.pred[j], net.n_classes


def not_run_summary(reason, option=NONCELL_OPTION, training_set=None):
    """The summary of a filter that could not run: ``{"not_run": {what, reason, option}[, training_set]}``
    (:func:`write_quality_result` turns it into a ``missing`` entry with null metrics)."""
    summary = {"not_run": {"what": "non-cell filter", "reason": reason, "option": option}}
    if training_set is not None:
        summary["training_set"] = training_set
    return summary


# --------------------------------------------------------------------------- the quality forest and its cross-validation

def quality_points(mtry, sampling, n_features):
    """The CV grid (R ``rf_quality_points``): dicts mtry, sampling; mtry capped at
    ``n_features`` (duplicates dropped), mtry varying fastest."""
    with session() as ro:
        pts = ro.r["rf_quality_points"](ro.IntVector([int(m) for m in mtry]), ro.StrVector(list(sampling)),
                                        int(n_features))
        return data_frame_rows(pts)


def quality_fold_task(job, shared):
    """One CV task: the forest of one grid point on all folds but ``job["fold"]``, scored on that fold.

    job: dict point, mtry, sampling, fold, seed; shared: dict token, x, is_cell, fold_ids,
    ntree.  Returns dict point, tp, tn, n1, n0 (R ``rf_quality_fold``).
    """
    with session() as ro:
        r = r_inputs(shared)
        c = ro.r["rf_quality_fold"](r["x"], r["is_cell"], r["fold_ids"], int(job["fold"]), int(job["mtry"]),
                                    job["sampling"], int(shared["ntree"]), 1, int(job["seed"]))
        counts = dict(zip(c.names, (int(v) for v in c)))
    return {"point": job["point"], **counts}


def quality_best(table, sampling=PAPER_SAMPLING):
    """The quality filter's choice among CV rows (R ``rf_quality_best``): highest CV accuracy;
    ties: higher balanced accuracy, then smaller mtry, then the earlier sampling option."""
    order = list(sampling)
    return min(table, key=lambda r: (-r["cv_accuracy"], -r["cv_balanced_accuracy"], r["mtry"],
                                     order.index(r["sampling"])))


@dataclasses.dataclass(frozen=True)
class QualityCV:
    """The filter's cross-validation: ``mtry`` values (capped at the feature count) x
    down-sampling options (``sampling``, of :data:`PAPER_SAMPLING`), ``folds``-fold, forests of
    ``ntree`` trees.  The defaults are the paper's."""

    mtry: tuple = PAPER_MTRY
    sampling: tuple = PAPER_SAMPLING
    folds: int = PAPER_FOLDS
    ntree: int = PAPER_NTREE


def quality_cv(x, is_cell, cv=QualityCV(), context=RunContext()):
    """k-fold CV over mtry x down-sampling of a cell / non-cell forest, one task per point and fold.

    x: float N x F (finite); is_cell: 0/1 per row; ``cv``: :class:`QualityCV`; ``context``:
    the seed, and where the tasks run (``scheduler``, ``jobs``).  The folds are stratified
    (R ``rf_stratified_folds``, seeded); fold f of point p (job i = p + P * (f - 1),
    1-based, of P points) grows its forest with seed + i -- the numbers R's
    ``rf_quality_cv`` gives.  Chosen by CV accuracy (:func:`quality_best`).
    Returns ``(table, best, model)``; ``model`` is the best setting refitted on all
    rows (seed ``seed``), for :func:`quality_predict`.
    """
    from deepyeast.analysis.cluster import TaskRunner

    mtry, sampling, folds, ntree, seed = cv.mtry, cv.sampling, cv.folds, cv.ntree, context.seed
    x = np.asarray(x, np.float64)
    is_cell = np.asarray(is_cell, np.int64)
    points = quality_points(mtry, sampling, x.shape[1])
    with session() as ro:
        y = ro.r["factor"](r_ints(is_cell), levels=ro.IntVector([0, 1]))
        fold_ids = np.array(ro.r["rf_stratified_folds"](y, int(folds), int(seed)), dtype=np.int64)
    jobs_ = [{"point": p + 1, "mtry": points[p]["mtry"], "sampling": points[p]["sampling"], "fold": f + 1,
              "seed": int(seed) + 1 + p + len(points) * f}
             for f in range(int(folds)) for p in range(len(points))]
    shared = {"token": uuid.uuid4().hex, "x": x, "is_cell": is_cell, "fold_ids": fold_ids, "ntree": int(ntree)}
    results = [None] * len(jobs_)
    with TaskRunner(context.scheduler, context.jobs, worker_setup=init_r, log=context.say) as runner:
        data = runner.share(shared)
        for i, res in runner.as_completed(quality_fold_task, jobs_, data):
            results[i] = res
    with session() as ro:
        cols = ("point", "tp", "tn", "n1", "n0")
        flat = ro.IntVector([int(r[c]) for r in results for c in cols])
        res_m = ro.r["matrix"](flat, ncol=len(cols), byrow=True, dimnames=ro.r["list"](ro.NULL, ro.StrVector(cols)))
        r_points = ro.r["rf_quality_points"](ro.IntVector([int(m) for m in mtry]), ro.StrVector(list(sampling)),
                                             x.shape[1])
        table = data_frame_rows(ro.r["rf_quality_table"](r_points, res_m))
    best = quality_best(table, sampling)
    with session() as ro:
        model = ro.r["rf_quality_fit"](r_matrix(x), r_ints(is_cell), int(best["mtry"]), best["sampling"], int(ntree), 1,
                                       int(seed))
    return table, best, model


def quality_predict(model, x, seed=0):
    """``(p_cell float64 N, is_cell int64 N)``: vote fraction for "cell" and the forest's class
    (randomForest's tie rule with ``set.seed(seed)``)."""
    with session() as ro:
        res = ro.r["rf_quality_predict"](model, r_matrix(x), int(seed))
        return (np.asarray(res.rx2("p_cell"), dtype=np.float64), np.asarray(res.rx2("is_cell"), dtype=np.int64))


# --------------------------------------------------------------------------- the filter

@dataclasses.dataclass(frozen=True)
class QualityInputs:
    """The filter's inputs.  ``val_features`` / ``test_features``: feature CSVs
    (``path,<feature>...``) of the validation and test cells; ``net_val`` / ``rf_val``: the
    network's and the forest's predictions tables of the validation cells; ``noncells``: the
    non-cell list (validation cells, one path per line; None: not run); ``predictions``: dict
    name -> predictions-table CSV of test cells (e.g. ``{"network": ..., "random_forest": ...}``);
    ``truth``: optional ``path,is_cell`` table (a synthetic screen's ``cell_quality.csv``) to
    score the filter on the test cells."""

    val_features: str
    net_val: str
    rf_val: str
    noncells: str
    test_features: str
    predictions: dict = None
    truth: str = None


@dataclasses.dataclass(frozen=True)
class QualityOutputs:
    """Where the filter writes (each optional): ``training`` (``path,label,is_cell`` of the
    training set), ``cells`` (``path,p_cell,is_cell_pred`` per test cell), ``json`` (the summary,
    written last)."""

    json: str = None
    cells: str = None
    training: str = None


def run_quality_filter(inputs, outputs=QualityOutputs(), per_class=PAPER_CELLS_PER_CLASS, cv=QualityCV(),
                       context=RunContext()):
    """Build the paper's training set, choose the filter by CV, apply it to the test cells.

    ``inputs``: :class:`QualityInputs`; ``outputs``: :class:`QualityOutputs`; ``per_class``:
    cells per class in the training set; ``cv``: :class:`QualityCV`; ``context``: the seed and
    where the CV forests run.  Returns the summary.

    Without a non-cell list (``noncells`` None), or with fewer than ``folds`` cells or
    non-cells in the training set, nothing is fitted: the summary is
    :func:`not_run_summary`'s (reason and the option that would run it), never an error
    (without a list no file is written: :func:`write_quality_result` records it).
    """
    log, seed = context.say, context.seed
    val_features, net_val, rf_val, noncells, test_features = (inputs.val_features, inputs.net_val, inputs.rf_val,
                                                              inputs.noncells, inputs.test_features)
    predictions, truth = inputs.predictions, inputs.truth
    out_json, out_cells, out_training = outputs.json, outputs.cells, outputs.training
    mtry, sampling, folds, ntree = cv.mtry, cv.sampling, cv.folds, cv.ntree
    if noncells is None:
        log(f"quality filter: not run: {NO_LIST_REASON}; give a non-cell list with {NONCELL_OPTION}")
        return not_run_summary(NO_LIST_REASON)
    from deepyeast.analysis.prediction_table import read_predictions
    from deepyeast.constants import class_names_for

    va_paths, va_names, x_va = read_feature_csv(val_features)
    te_paths, te_names, x_te = read_feature_csv(test_features)
    if va_names != te_names:
        raise InputError(f"{test_features}: feature columns differ from {val_features}")
    paths, rows, labels, net_pred, rf_pred, n_classes = _val_predictions(net_val, rf_val, va_paths, val_features)
    non = read_noncell_list(noncells, set(paths), f"the validation split ({net_val})")
    non_set = set(non)
    is_non = np.array([p in non_set for p in paths], dtype=bool)
    cells, per_class_info = pick_training_cells(labels, net_pred, rf_pred, is_non, per_class, seed, n_classes)
    names = class_names_for(n_classes)
    for info in per_class_info:
        info["name"] = names[info["class"]]
    short = [f"{i['name']} {i['available']}" for i in per_class_info if i["available"] < per_class]
    if short:
        log(f"quality filter: fewer than {per_class} validation cells correct by both classifiers in "
            f"{len(short)} class(es), all taken: {', '.join(short)}")
    non_idx = np.flatnonzero(is_non)
    train_idx = np.concatenate([cells, non_idx])
    y = np.concatenate([np.ones(len(cells), np.int64), np.zeros(len(non_idx), np.int64)])
    x_lab = x_va[rows[train_idx]]
    n_cell, n_non = len(cells), len(non_idx)
    training_set = {"cells_per_class": int(per_class), "cells": n_cell, "noncells": n_non,
                    "noncell_list": os.path.basename(os.fspath(noncells)), "classes": per_class_info}
    if min(n_cell, n_non) < folds:
        # too small a screen or too weak classifiers: reported as not run, never a crash
        reason = (f"{n_cell} cells (correct by both classifiers) and {n_non} non-cells in the training set; "
                  f"{folds}-fold cross-validation needs at least {folds} of each")
        log(f"quality filter: not run: {reason}")
        summary = not_run_summary(reason, f"a longer non-cell list ({NONCELL_OPTION}), or more validation cells "
                                          "classified correctly by both classifiers (a longer training)",
                                  training_set)
        if out_json:
            atomic_write_text(out_json, json.dumps(summary, indent=1) + "\n")
        return summary
    x_fit, x_test, _ = impute_features(x_lab, x_te)
    log(f"quality filter: {n_cell} cells ({per_class} per class at most) + {n_non} non-cells, {folds}-fold CV over "
        f"mtry {list(mtry)} x sampling {list(sampling)}, {ntree} trees")
    table, best, model = quality_cv(x_fit, y, cv, context)
    log(f"quality filter: chosen mtry {best['mtry']}, sampling {best['sampling']}: CV accuracy "
        f"{best['cv_accuracy']:.4f}, balanced accuracy {best['cv_balanced_accuracy']:.4f}")
    p_cell, is_cell_pred = quality_predict(model, x_test, seed)
    keep = {p for p, k in zip(te_paths, is_cell_pred) if k}
    summary = {
        "procedure": "paper: per class, validation cells correct by both classifiers labelled as cells, plus "
                     "the listed non-cells; k-fold CV over mtry x down-sampling; the forest's class decides",
        "criterion": "cross-validated accuracy (balanced accuracy = mean of cell and non-cell recall, beside it)",
        "folds": int(folds), "ntree": int(ntree), "seed": int(seed), "mtry_grid": [int(m) for m in mtry],
        "sampling_grid": list(sampling),
        "n_features": len(va_names),
        "training_set": training_set,
        "cv_table": table,
        "best": best,
        "test": {"n_cells": len(te_paths), "n_removed": int(len(te_paths) - len(keep)), "n_kept": len(keep)},
        "classifiers": {},
    }
    if truth:
        quality = read_quality_labels(truth)
        labelled_test = [(quality[p], k) for p, k in zip(te_paths, is_cell_pred) if p in quality]
        if labelled_test:
            t, pr = np.array(labelled_test).T
            summary["test"]["filter_vs_truth"] = {
                "source": os.path.basename(os.fspath(truth)),
                "accuracy": count((t == pr).sum(), t.size),
                "noncells_removed": count(((t == 0) & (pr == 0)).sum(), (t == 0).sum()),
                "cells_kept": count(((t == 1) & (pr == 1)).sum(), (t == 1).sum()),
            }
    test_set = set(te_paths)
    for name, pred_csv in (predictions or {}).items():
        table_p = read_predictions(pred_csv, require_all_classes=False)
        outside = [p for p in table_p.path if p not in test_set]
        if outside:
            raise InputError(f"{pred_csv}: cell {outside[0]!r} has no features in {test_features} "
                             f"({len(outside)} such rows)")
        summary["classifiers"][name] = filter_accuracy(table_p, keep)
        acc = summary["classifiers"][name]
        log(f"quality filter: {name} accuracy {acc['before']['value']:.4f} -> {acc['after']['value']:.4f} "
            f"({acc['removed']} cells removed)")
    # flat keys the report reads (kept for readers of quality_filter.json)
    for name, prefix in (("network", ""), ("random_forest", "rf_")):
        if name in summary["classifiers"]:
            summary[prefix + "cell_accuracy"] = summary["classifiers"][name]["before"]
            summary[prefix + "cell_accuracy_filtered"] = summary["classifiers"][name]["after"]
    if out_training:
        write_csv(out_training, ([paths[i], int(labels[i]), int(c)] for i, c in zip(train_idx, y)),
                  ["path", "label", "is_cell"])
    if out_cells:
        write_csv(out_cells, ([p, float(pc), int(k)] for p, pc, k in zip(te_paths, p_cell, is_cell_pred)),
                  ["path", "p_cell", "is_cell_pred"])
    if out_json:
        atomic_write_text(out_json, json.dumps(summary, indent=1) + "\n")
    return summary


def plot_filter_accuracy(summary, out_png):
    """Bar chart of each classifier's per-cell accuracy before/after the filter (PNG + PDF beside it)."""
    from deepyeast.utils.plotting import plt, save_figure

    names = list(summary["classifiers"])
    if not names:
        raise ValueError("no classifier predictions in the quality-filter summary")
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    width = 0.38
    for i, name in enumerate(names):
        acc = summary["classifiers"][name]
        for j, (key, colour) in enumerate((("before", "#9aa7b8"), ("after", "#2b6cb0"))):
            v = acc[key]["value"] or 0.0
            ax.bar(i + (j - 0.5) * width, v, width, color=colour, label=f"{key} filtering" if i == 0 else None)
            ax.text(i + (j - 0.5) * width, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n.replace("_", " ") for n in names])
    ax.set_ylabel("per-cell accuracy (test)")
    ax.set_ylim(0, 1.08)
    t = summary["test"]
    ax.set_title(f"Removing non-cells: {t['n_removed']} of {t['n_cells']} test cells", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, out_png)


def _grid_note(summary):
    """The mtry grid against the paper's: its top is the feature count (ours 430, the paper's 435)."""
    grid, n = summary.get("mtry_grid") or [], summary.get("n_features")
    used = sorted({min(int(m), int(n)) for m in grid}) if n else grid
    if not used or list(used) == list(PAPER_MTRY):
        return ""
    return (f" mtry grid as run: {', '.join(map(str, used))} (the paper's {', '.join(map(str, PAPER_MTRY))} with "
            f"its {PAPER_MTRY[-1]} CellProfiler features; ours number {n}, so the grid tops out at {max(used)}).")


def write_quality_result(out_dir, summary, figure_file=None, command=None):
    """The result manifest of the non-cell filter (see :mod:`deepyeast.utils.manifest`).

    The full summary (training set per class, cross-validation table, the filter against the
    test cells' known non-cells) goes to ``details``; the report shows the accuracies before
    and after removing non-cells.  A summary of :func:`not_run_summary` gives null metrics and
    a ``missing`` entry naming the reason and the option that would run the filter.
    """
    from deepyeast.constants import PAPER_N_NONCELLS, PAPER_RESULTS
    from deepyeast.utils.manifest import Result, figure, headline, missing_part, table, write_result

    title = "Removing non-cells (paper: 91% per cell after filtering)"
    labels = {"network": "Network", "random_forest": "Random forest"}
    keys = {"network": "cell_accuracy_filtered", "random_forest": "rf_cell_accuracy_filtered"}
    rows = [headline(keys[name], f"{labels[name]} accuracy per cell, non-cells removed", "cells",
                     PAPER_RESULTS.get(keys[name])) for name in labels]
    if "not_run" in summary:
        nr = summary["not_run"]
        text = (f"The non-cell filter was not run: {nr['reason']}. The paper trained it on "
                f"{PAPER_CELLS_PER_CLASS} validation cells per class that both classifiers got right and "
                f"{PAPER_N_NONCELLS} non-cells picked by eye; give such a list with {nr['option']}.")
        return write_result(out_dir, Result("quality", title, text, metrics={k: None for k in keys.values()},
                            headline=rows, missing=[missing_part(nr["what"], nr["reason"], nr["option"])],
                            details=summary, command=command, order=20))
    t = summary["test"]
    ts = summary["training_set"]
    best = summary["best"]
    sampling = "with the cells down-sampled to the non-cells' number in every tree" \
        if best["sampling"] == "balanced" else "without down-sampling"
    text = (f"As in the paper, a random forest on CellProfiler features learned to tell cells from non-cells: "
            f"{ts['cells']:,} validation cells that both the network and the forest classify correctly (at most "
            f"{ts['cells_per_class']} per class) against the {ts['noncells']:,} non-cells of "
            f"{ts['noncell_list']}. {summary['folds']}-fold cross-validation chose mtry {best['mtry']} {sampling} "
            f"(accuracy {best['cv_accuracy']:.3f}, balanced accuracy {best['cv_balanced_accuracy']:.3f}); "
            f"the filter removed {t['n_removed']:,} of the {t['n_cells']:,} test crops as non-cells.")
    if "filter_vs_truth" in t:
        f = t["filter_vs_truth"]
        text += (f" Of the test crops the screen knows to be non-cells it removed {f['noncells_removed']['correct']}"
                 f" of {f['noncells_removed']['total']}, and it kept {f['cells_kept']['correct']:,} of the "
                 f"{f['cells_kept']['total']:,} real cells.")
    metrics, table_rows, missing = {}, [], []
    for name, key in keys.items():
        acc = summary["classifiers"].get(name)
        if acc is None:
            metrics[key] = None
            missing.append(missing_part(f"{labels[name].lower()} accuracy after removing non-cells",
                                        f"no {labels[name].lower()} predictions were given",
                                        "--predictions CSV" if name == "network" else "--rf-predictions CSV"))
            continue
        metrics[key] = acc["after"]
        b, a = acc["before"], acc["after"]
        table_rows.append([labels[name], f"{b['value']:.3f} ({b['correct']:,}/{b['total']:,})",
                           f"{a['value']:.3f} ({a['correct']:,}/{a['total']:,})", acc["removed"]])
    tables = [table("Accuracy per cell before and after removing non-cells",
                    ["classifier", "before (right/cells)", "after (right/cells kept)", "cells removed"], table_rows,
                    "Counts are test cells; 'after' counts only the cells the filter kept.")] if table_rows else []
    tables.append(table("Cross-validation of the filter",
                        ["mtry", "down-sampling", "CV accuracy", "balanced accuracy"],
                        [[r["mtry"], r["sampling"], round(r["cv_accuracy"], 4), round(r["cv_balanced_accuracy"], 4)]
                         for r in summary["cv_table"]],
                        f"{summary['folds']}-fold cross-validation on the training set ({ts['cells']:,} cells, "
                        f"{ts['noncells']:,} non-cells), {summary['ntree']} trees; chosen by accuracy."
                        + _grid_note(summary)))
    figs = [figure(figure_file, "Accuracy per cell of each classifier before and after the filter removed "
                                "non-cells (test cells).")] if figure_file else []
    return write_result(out_dir, Result("quality", title, text, metrics=metrics, headline=rows, figures=figs,
                                        tables=tables, missing=missing, details=summary,
                                        seeds={"seed": summary.get("seed")}, command=command, order=20))


def write_quality_not_run(out_dir, reason=NO_LIST_REASON, command=None):
    """The quality filter's manifest when it cannot run (by default: no non-cell list was given):
    the step is named as not done (``missing``, with the option that supplies the list) and its
    metrics are null."""
    return write_quality_result(out_dir, not_run_summary(reason), command=command)
