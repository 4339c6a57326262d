"""The cell-quality filter: a random forest telling real cells from non-cells.

Some crops of a screen are not cells (empty background, debris, a crop centred
between two cells).  Following the paper, a random forest on the same
CellProfiler features (:mod:`deepyeast.analysis.cp_features`) is trained on cells
labelled ``is_cell`` = 1 / 0 (``cell_quality.csv``: ``path,is_cell[,...]``),
with 10-fold cross-validation over ``mtry`` and over down-sampling (every tree
sees either a bootstrap of all rows, or per class as many rows as the rarer
class has; R ``strata``/``sampsize``), choosing by cross-validated balanced
accuracy.  The chosen forest, refitted on all labelled training cells, scores
the test cells; those with P(cell) < ``threshold`` are removed, and each
classifier's per-cell accuracy is reported before and after.

Labelled cells whose path is also a test cell are never used for training.
"""

import csv
import json
import logging

import numpy as np

from deepyeast.analysis.cp_features import read_feature_csv
from deepyeast.utils.io import InputError, atomic_path, atomic_write_text

_log = logging.getLogger(__name__)

DEFAULT_MTRY = (10, 25, 50)
DEFAULT_SAMPLING = ("none", "balanced")
DEFAULT_NTREE = 100
DEFAULT_MAX_LABELLED = 1500
"""Labelled crops used for training at most (a stratified random subset beyond this):
10-fold CV x 3 mtry x 2 samplings = 60 forests, ~1 min on 2 cores at this size."""


def stratified_subset(y, max_rows, seed=1):
    """Indices of at most ``max_rows`` rows keeping each class's share (sorted, seeded).

    y: int labels (N,).  Each class keeps ``round(max_rows * share)`` rows, at least 1.
    """
    y = np.asarray(y)
    if len(y) <= max_rows:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = max(1, int(round(max_rows * len(idx) / len(y))))
        keep.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


def read_quality_labels(path):
    """Read ``path,is_cell[,...]`` -> dict path -> 0/1; errors name the line."""
    labels = {}
    with open(path, newline="", encoding="utf-8") as f:
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


def _read_features(paths_csv):
    all_paths, all_values, names0 = [], [], None
    for p in paths_csv:
        paths, names, values = read_feature_csv(p)
        if names0 is None:
            names0 = names
        elif names != names0:
            raise InputError(f"{p}: feature columns differ from {paths_csv[0]}")
        all_paths += paths
        all_values.append(values)
    values = np.concatenate(all_values) if all_values else np.zeros((0, 0))
    return all_paths, names0, values


def _accuracy(correct, total):
    return {"value": (correct / total) if total else None, "correct": int(correct), "total": int(total)}


def filter_accuracy(table, keep_paths):
    """Accuracy of a predictions table before/after keeping only ``keep_paths``.

    table: :class:`deepyeast.analysis.predictions.Predictions`; keep_paths: set of str.
    Returns ``{"before": {...}, "after": {...}, "removed": int}`` with value/correct/total.
    """
    ok = table.pred == table.label
    kept = np.array([p in keep_paths for p in table.path], dtype=bool)
    return {
        "before": _accuracy(ok.sum(), ok.size),
        "after": _accuracy(ok[kept].sum(), kept.sum()),
        "removed": int((~kept).sum()),
    }


def run_quality_filter(train_features, quality_csv, test_features, predictions=None, out_json=None,
                       out_cells=None, mtry=DEFAULT_MTRY, sampling=DEFAULT_SAMPLING, folds=10, ntree=DEFAULT_NTREE,
                       threshold=0.5, max_labelled=DEFAULT_MAX_LABELLED, n_jobs=2, seed=1, log=None):
    """Train the filter, apply it to the test cells, compare classifiers before/after.

    train_features: list of feature CSVs with the labelled cells (e.g. train and val);
    quality_csv: ``path,is_cell``; test_features: feature CSV of the test cells;
    At most ``max_labelled`` labelled crops train the filter (stratified subset).
    predictions: dict name -> predictions-table CSV (e.g. ``{"network": ..., "random_forest": ...}``),
    every row of which must be a test cell.  Writes ``out_json`` (summary) and
    ``out_cells`` (``path,p_cell,is_cell_pred`` per test cell) atomically; returns the summary.
    """
    log = log or _log.info
    from deepyeast.analysis import rforest
    from deepyeast.analysis.predictions import read_predictions

    quality = read_quality_labels(quality_csv)
    te_paths, te_names, x_te = read_feature_csv(test_features)
    test_set = set(te_paths)
    tr_paths, tr_names, x_tr = _read_features(list(train_features))
    if tr_names != te_names:
        raise InputError(f"{test_features}: feature columns differ from {train_features[0]}")
    use = np.array([p in quality and p not in test_set for p in tr_paths], dtype=bool)
    if not use.any():
        raise InputError(f"{quality_csv}: none of its paths is a (non-test) cell of {list(train_features)}")
    y = np.array([quality[p] for p, u in zip(tr_paths, use) if u], dtype=np.int64)
    x_lab = x_tr[use]
    n_available = len(y)
    if max_labelled and len(y) > max_labelled:
        sub = stratified_subset(y, max_labelled, seed)
        x_lab, y = x_lab[sub], y[sub]
    n_cell, n_non = int(y.sum()), int((1 - y).sum())
    if min(n_cell, n_non) < folds:
        raise InputError(f"{quality_csv}: {n_cell} cells and {n_non} non-cells among the training features; "
                         f"{folds}-fold cross-validation needs at least {folds} of each")
    x_fit, x_test, _ = rforest.impute_features(x_lab, x_te)
    log(f"quality filter: {n_cell} cells, {n_non} non-cells, {folds}-fold CV over mtry {list(mtry)} "
        f"x sampling {list(sampling)}")
    table, best, model = rforest.quality_cv(x_fit, y, mtry=mtry, sampling=sampling, folds=folds, ntree=ntree,
                                            n_jobs=n_jobs, seed=seed)
    log(f"quality filter: best {best}")
    p_cell = rforest.quality_predict(model, x_test)
    is_cell_pred = (p_cell >= threshold).astype(int)
    keep = {p for p, k in zip(te_paths, is_cell_pred) if k}
    summary = {
        "criterion": "cross-validated balanced accuracy (mean of cell and non-cell recall)",
        "folds": int(folds), "ntree": int(ntree), "threshold": float(threshold), "seed": int(seed),
        "n_features": len(tr_names),
        "n_labelled": {"cells": n_cell, "noncells": n_non, "available": n_available},
        "cv_table": table,
        "best": best,
        "test": {"n_cells": len(te_paths), "n_removed": int(len(te_paths) - len(keep)), "n_kept": len(keep)},
        "classifiers": {},
    }
    labelled_test = [(quality[p], k) for p, k in zip(te_paths, is_cell_pred) if p in quality]
    if labelled_test:
        truth, pred = np.array(labelled_test).T
        summary["test"]["filter_vs_labels"] = {
            "accuracy": _accuracy((truth == pred).sum(), truth.size),
            "noncells_removed": _accuracy(((truth == 0) & (pred == 0)).sum(), (truth == 0).sum()),
            "cells_kept": _accuracy(((truth == 1) & (pred == 1)).sum(), (truth == 1).sum()),
        }
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
    if out_cells:
        with atomic_path(out_cells) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(["path", "p_cell", "is_cell_pred"])
                for p, pc, k in zip(te_paths, p_cell, is_cell_pred):
                    w.writerow([p, f"{pc:.6g}", int(k)])
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


def write_quality_result(out_dir, summary, figure_file=None, command=None):
    """The result manifest of the non-cell filter (see :mod:`deepyeast.report.manifest`).

    The full summary (cross-validation table, the filter against the test cells' labels) goes to
    ``details``; the report shows the accuracies before and after removing non-cells.
    """
    from deepyeast.constants import PAPER_RESULTS
    from deepyeast.report.manifest import figure, headline, missing_part, table, write_result

    t = summary["test"]
    lab = summary["n_labelled"]
    best = summary["best"]
    if isinstance(best, dict):
        score = best.get("cv_balanced_accuracy")
        best = f"mtry {best.get('mtry')}, down-sampling {best.get('sampling')}" + (
            f", balanced accuracy {score:.3f}" if isinstance(score, float) else "")
    text = (f"A random forest on CellProfiler features, trained on {lab['cells']:,} crops labelled as cells and "
            f"{lab['noncells']:,} as non-cells (chosen by {summary['folds']}-fold cross-validation: "
            f"{best}), removed {t['n_removed']:,} of the {t['n_cells']:,} test crops as non-cells.")
    metrics, rows, table_rows, missing = {}, [], [], []
    labels = {"network": "Network", "random_forest": "Random forest"}
    for name, prefix in (("network", ""), ("random_forest", "rf_")):
        acc = summary["classifiers"].get(name)
        if acc is None:
            missing.append(missing_part(f"{labels[name].lower()} accuracy after removing non-cells",
                                        f"no {labels[name].lower()} predictions were given",
                                        "--predictions CSV" if name == "network" else "--rf-predictions CSV"))
            continue
        metrics[prefix + "cell_accuracy_filtered"] = acc["after"]
        rows.append(headline(prefix + "cell_accuracy_filtered", f"{labels[name]} accuracy per cell, non-cells removed",
                             "cells", PAPER_RESULTS.get(prefix + "cell_accuracy_filtered")))
        b, a = acc["before"], acc["after"]
        table_rows.append([labels[name], f"{b['value']:.3f} ({b['correct']:,}/{b['total']:,})",
                           f"{a['value']:.3f} ({a['correct']:,}/{a['total']:,})", acc["removed"]])
    tables = [table("Accuracy per cell before and after removing non-cells",
                    ["classifier", "before (right/cells)", "after (right/cells kept)", "cells removed"], table_rows,
                    "Counts are test cells; 'after' counts only the cells the filter kept.")] if table_rows else []
    if "filter_vs_labels" in t:
        f = t["filter_vs_labels"]
        text += (f" On the test crops with a cell/non-cell label it removed {f['noncells_removed']['correct']} of "
                 f"{f['noncells_removed']['total']} non-cells and kept {f['cells_kept']['correct']:,} of "
                 f"{f['cells_kept']['total']:,} cells.")
    figs = [figure(figure_file, "Accuracy per cell of each classifier before and after the filter removed "
                                "non-cells (test cells).")] if figure_file else []
    return write_result(out_dir, "quality", "Removing non-cells (paper: 91% per cell after filtering)", text,
                        metrics=metrics, headline=rows, figures=figs, tables=tables, missing=missing,
                        details=summary, seeds={"seed": summary.get("seed")}, command=command, order=20)


# --------------------------------------------------------------------------- without a non-cell list

NONCELL_OPTION = "NONCELLS=FILE (make), --noncells FILE (analysis/quality_filter.py)"
"""How to supply the non-cells the filter learns from (a ``missing`` entry's option)."""


def read_noncell_list(path):
    """A non-cell list: one archive-relative crop path per line (blank lines and ``#`` comments
    skipped) -> list of str in file order; a path twice is an :class:`InputError` naming the line."""
    from deepyeast.utils.io import open_input

    out, seen = [], {}
    with open_input(path, "non-cell list") as f:
        for lineno, line in enumerate(f, 1):
            rel = line.split("#", 1)[0].strip()
            if not rel:
                continue
            if len(rel.split()) != 1:
                raise InputError(f"{path}:{lineno}: expected one crop path, got {line.strip()!r}")
            if rel in seen:
                raise InputError(f"{path}:{lineno}: {rel} is also on line {seen[rel]}")
            seen[rel] = lineno
            out.append(rel)
    if not out:
        raise InputError(f"{path}: the non-cell list names no crop")
    return out


def write_quality_not_run(out_dir, command=None):
    """The quality filter's manifest when no non-cell list was given: the step is named as not done
    (``missing``, with the option that supplies the list) and its metrics are null."""
    from deepyeast.constants import PAPER_RESULTS
    from deepyeast.report.manifest import headline, missing_part, write_result

    metrics = {"cell_accuracy_filtered": None, "rf_cell_accuracy_filtered": None}
    rows = [headline("cell_accuracy_filtered", "Network accuracy per cell, non-cells removed", "cells",
                     PAPER_RESULTS["cell_accuracy_filtered"]),
            headline("rf_cell_accuracy_filtered", "Random forest accuracy per cell, non-cells removed", "cells",
                     PAPER_RESULTS["rf_cell_accuracy_filtered"])]
    text = ("Not run. The paper's non-cell filter is a random forest that learns from crops picked by eye as "
            "non-cells (118 in the validation set) beside cells both classifiers call right; the published archive "
            "holds no such labels, so the accuracies after removing non-cells are not reported.")
    return write_result(out_dir, "quality", "Removing non-cells (paper: 91% per cell after filtering)", text,
                        metrics=metrics, headline=rows,
                        missing=[missing_part("non-cell filter", "the published archive has no non-cell labels",
                                              NONCELL_OPTION)],
                        command=command, order=20)
