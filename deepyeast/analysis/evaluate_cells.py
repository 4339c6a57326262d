"""Per-cell evaluation: accuracy with counts, Cohen's kappa, confusion rates, and
per-class precision/recall with stratified-bootstrap 95% intervals (paper Fig. 2).

Conventions
-----------
* ``labels``/``preds`` are int class indices, shape (N,); ``n_classes`` = K.
* A confusion matrix is ``C[true, predicted]`` (int64 K x K); "rates" divide each row by
  its total, so row ``t`` is the distribution of predictions for cells of true class ``t``
  (diagonal = recall), as in Figure 2D.
* Counts are reported as ``{"value": correct / total, "correct": int, "total": int}``.

Bootstrap
---------
The stratified bootstrap resamples the test cells *within each true class* with
replacement, so every resample keeps each class's cell count ``n_t``.  For a class ``t``
only the predicted classes of its resampled cells matter, so a resample's confusion row
``t`` is a draw of ``n_t`` cells from the empirical prediction distribution of class ``t``.
``method="indices"`` does this literally (draws cell indices, chunked, vectorized);
``method="multinomial"`` (default) draws each row as ``Multinomial(n_t, C[t] / n_t)``,
which has exactly the same distribution and costs O(B K^2) instead of O(B N).
Percentiles 2.5 / 97.5 of the per-resample statistics give the 95% interval; a
resample in which no cell is predicted as class ``k`` has undefined precision for ``k``
and is left out of that class's percentiles (``precision_undefined`` counts them).
"""

import os

import numpy as np

from deepyeast.constants import PAPER_RESULTS
from deepyeast.utils.manifest import Result, clear_result, figure, headline, table, write_result
from deepyeast.utils.io import InputError, atomic_write_json, write_csv
from deepyeast.utils.run_context import RunContext

DEFAULT_RESAMPLES = 20000
DEFAULT_CI = (2.5, 97.5)


def _as_labels(labels, preds, n_classes):
    labels = np.asarray(labels, dtype=np.int64).ravel()
    preds = np.asarray(preds, dtype=np.int64).ravel()
    if labels.shape != preds.shape:
        raise ValueError(f"labels ({labels.shape[0]}) and preds ({preds.shape[0]}) differ in length")
    for name, a in (("labels", labels), ("preds", preds)):
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise ValueError(f"{name} hold a class outside 0..{n_classes - 1}")
    return labels, preds


def count(correct, total):
    """``{"value", "correct", "total"}`` for ``correct`` out of ``total`` (value None if total is 0)."""
    correct, total = int(correct), int(total)
    return {"value": (correct / total) if total else None, "correct": correct, "total": total}


def accuracy(labels, preds):
    """Fraction of cells with ``pred == label`` as a count dict (see :func:`count`)."""
    labels = np.asarray(labels).ravel()
    preds = np.asarray(preds).ravel()
    if labels.shape != preds.shape:
        raise ValueError("labels and preds differ in length")
    return count(np.sum(labels == preds), labels.size)


def confusion_counts(labels, preds, n_classes):
    """Confusion matrix ``C[true, pred]``, int64 K x K."""
    labels, preds = _as_labels(labels, preds, n_classes)
    return np.bincount(labels * n_classes + preds, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def confusion_rates(counts):
    """Row-normalised confusion (float64 K x K); rows of absent classes are NaN."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):  # an absent class: 0 / 0 = NaN (no x / 0 with x > 0 in a row)
        return counts / totals


def kappa_from_confusion(counts):
    """Cohen's kappa of a confusion matrix: (p_o - p_e) / (1 - p_e).

    ``p_o`` = trace / N; ``p_e`` = sum_k (row_k / N)(col_k / N).  Returns NaN when
    ``p_e == 1`` (both raters use a single class), where kappa is undefined.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    if n == 0:
        return np.nan
    p_o = np.trace(counts) / n
    p_e = float(np.sum(counts.sum(axis=1) * counts.sum(axis=0))) / (n * n)
    if p_e >= 1.0:
        return np.nan
    return float((p_o - p_e) / (1.0 - p_e))


def cohen_kappa(labels, preds, n_classes):
    """Cohen's kappa between true labels and predictions (float)."""
    return kappa_from_confusion(confusion_counts(labels, preds, n_classes))


def precision_recall(counts):
    """Per-class precision and recall of a confusion ``C[true, pred]`` (K x K, or B x K x K).

    precision_k = C[k, k] / sum_t C[t, k]; recall_k = C[k, k] / sum_p C[k, p].
    Undefined ratios (0 / 0) are NaN.  Returns two float64 arrays of shape (..., K).
    """
    counts = np.asarray(counts, dtype=np.float64)
    diag = np.diagonal(counts, axis1=-2, axis2=-1)
    with np.errstate(invalid="ignore"):  # 0 / 0 only: a diagonal entry never exceeds its row or column sum
        precision = diag / counts.sum(axis=-2)
        recall = diag / counts.sum(axis=-1)
    return precision, recall


def stratified_bootstrap_confusions(labels, preds, n_classes, n_resamples=DEFAULT_RESAMPLES, seed=0,
                                    method="multinomial", chunk_size=256):
    """Confusion matrices of ``n_resamples`` stratified bootstrap resamples, int64 B x K x K.

    Every resample keeps each true class's count, so ``out[b].sum(axis=1)`` equals
    ``bincount(labels)`` for all ``b``.  ``method`` is ``"multinomial"`` or ``"indices"``
    (see the module docstring; same distribution).  ``chunk_size`` bounds the memory of
    the index method (chunk_size x N int64 draws at a time).
    """
    labels, preds = _as_labels(labels, preds, n_classes)
    k = n_classes
    rng = np.random.default_rng(seed)
    out = np.zeros((n_resamples, k, k), dtype=np.int64)
    if method == "multinomial":
        counts = confusion_counts(labels, preds, k)
        for t in range(k):
            n_t = int(counts[t].sum())
            if n_t == 0:
                continue
            out[:, t, :] = rng.multinomial(n_t, counts[t] / n_t, size=n_resamples)
    elif method == "indices":
        for t in range(k):
            preds_t = preds[labels == t]
            n_t = preds_t.size
            if n_t == 0:
                continue
            for start in range(0, n_resamples, chunk_size):
                b = min(chunk_size, n_resamples - start)
                draws = rng.integers(n_t, size=(b, n_t))
                codes = preds_t[draws] + (np.arange(b) * k)[:, None]
                out[start:start + b, t, :] = np.bincount(codes.ravel(), minlength=b * k).reshape(b, k)
    else:
        raise ValueError(f"unknown bootstrap method {method!r} (use 'multinomial' or 'indices')")
    return out


def stratified_resample_indices(labels, n_resamples, seed=0):
    """Cell indices of stratified bootstrap resamples, int64 B x N.

    Resample ``b`` lists, class by class, ``n_t`` indices drawn with replacement among the
    cells of class ``t``; it keeps every class's count.  Meant for small N (memory B x N);
    the statistics use :func:`stratified_bootstrap_confusions`.
    """
    labels = np.asarray(labels).ravel()
    rng = np.random.default_rng(seed)
    parts = []
    for t in np.unique(labels):
        idx = np.flatnonzero(labels == t)
        parts.append(idx[rng.integers(idx.size, size=(n_resamples, idx.size))])
    return np.concatenate(parts, axis=1)


def paired_accuracy_difference(correct_a, correct_b, groups=None, n_resamples=DEFAULT_RESAMPLES, seed=0,
                               ci=DEFAULT_CI):
    """Accuracy of classifier A minus that of B on the same cells, with paired bootstrap intervals.

    ``correct_a``, ``correct_b``: bool or 0/1 (N,), whether each classifier got cell ``i`` right
    (same cells, same order).  Every resample draws the same cells for both classifiers, so
    the interval is that of the difference itself, narrower than two separate intervals
    when the classifiers err on the same cells.

    * cells: N cells drawn with replacement.  Only each cell's difference (-1, 0 or +1)
      matters, so a resample is a Multinomial(N, shares of -1/0/+1) draw.
    * groups (e.g. proteins, int or str (N,)): whole groups drawn with replacement (a
      cluster bootstrap), for cells of one protein are not independent; a resample's
      difference is (sum of drawn groups' differences) / (their cell count).

    Returns ``{"value": float, "cells": [lo, hi]}`` plus ``"groups": [lo, hi]`` and
    ``"n_groups"`` when ``groups`` is given; percentiles ``ci`` of ``n_resamples`` resamples.
    """
    a = np.asarray(correct_a, dtype=bool).ravel()
    b = np.asarray(correct_b, dtype=bool).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"correct_a and correct_b must be non-empty and equally long, got {a.size} and {b.size}")
    d = np.subtract(a, b, dtype=np.int64)  # -1, 0 or +1 per cell
    n = d.size
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, np.bincount(d + 1, minlength=3) / n, size=n_resamples)  # columns: -1, 0, +1
    diffs = (draws[:, 2] - draws[:, 0]) / n
    out = {"value": float(d.mean()), "cells": [float(v) for v in np.percentile(diffs, ci)]}
    if groups is not None:
        groups = np.asarray(groups).ravel()
        if groups.shape != d.shape:
            raise ValueError(f"groups has {groups.size} entries for {n} cells")
        _, g = np.unique(groups, return_inverse=True)
        n_groups = int(g.max()) + 1
        sums = np.bincount(g, weights=d)  # g holds every group 0..n_groups-1 (np.unique's inverse)
        sizes = np.bincount(g)
        picks = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_resamples)
        diffs = (picks @ sums) / (picks @ sizes)
        out["groups"] = [float(v) for v in np.percentile(diffs, ci)]
        out["n_groups"] = n_groups
    return out


def bootstrap_precision_recall(labels, preds, n_classes, n_resamples=DEFAULT_RESAMPLES, seed=0,
                               ci=DEFAULT_CI, method="multinomial"):
    """Per-class precision/recall with stratified-bootstrap percentile intervals.

    Returns a dict of float64 arrays (K,): ``precision``, ``recall`` (point estimates on
    all cells), ``precision_lo``/``precision_hi``/``recall_lo``/``recall_hi`` (percentiles
    ``ci`` of the resamples), ``precision_undefined`` (int, resamples where class k was never
    predicted), plus ``accuracy_lo``/``accuracy_hi`` (floats) and the settings used.
    """
    labels, preds = _as_labels(labels, preds, n_classes)
    counts = confusion_counts(labels, preds, n_classes)
    precision, recall = precision_recall(counts)
    boots = stratified_bootstrap_confusions(labels, preds, n_classes, n_resamples, seed, method)
    b_prec, b_rec = precision_recall(boots)
    undefined = np.isnan(b_prec).sum(axis=0)
    lo, hi = ci

    def pct(a, q):
        res = np.full(a.shape[1], np.nan)
        ok = ~np.all(np.isnan(a), axis=0)
        if ok.any():
            res[ok] = np.nanpercentile(a[:, ok], q, axis=0)
        return res

    b_acc = np.trace(boots, axis1=1, axis2=2) / max(labels.size, 1)
    return {
        "precision": precision,
        "recall": recall,
        "precision_lo": pct(b_prec, lo),
        "precision_hi": pct(b_prec, hi),
        "recall_lo": pct(b_rec, lo),
        "recall_hi": pct(b_rec, hi),
        "precision_undefined": undefined.astype(np.int64),
        "accuracy_lo": float(np.percentile(b_acc, lo)),
        "accuracy_hi": float(np.percentile(b_acc, hi)),
        "n_resamples": int(n_resamples),
        "seed": seed,
        "ci_percentiles": [float(lo), float(hi)],
        "method": method,
    }


def evaluate_cells(table, n_resamples=DEFAULT_RESAMPLES, seed=0, method="multinomial"):
    """All per-cell statistics of a :class:`~deepyeast.analysis.prediction_table.Predictions`.

    Returns a dict: ``accuracy`` (count dict + ``lo``/``hi``), ``kappa`` (float),
    ``confusion_counts`` (K x K int64), ``confusion_rates`` (K x K float64),
    ``per_class`` (the dict of :func:`bootstrap_precision_recall`), ``class_counts``
    (cells per true class, int64 K), ``predicted_counts`` (int64 K), ``class_names``.
    """
    k = table.n_classes
    cm = confusion_counts(table.label, table.pred, k)
    boot = bootstrap_precision_recall(table.label, table.pred, k, n_resamples, seed, method=method)
    acc = accuracy(table.label, table.pred)
    acc["lo"], acc["hi"] = boot["accuracy_lo"], boot["accuracy_hi"]
    return {
        "accuracy": acc,
        "kappa": kappa_from_confusion(cm),
        "confusion_counts": cm,
        "confusion_rates": confusion_rates(cm),
        "per_class": boot,
        "class_counts": cm.sum(axis=1),
        "predicted_counts": cm.sum(axis=0),
        "class_names": tuple(table.class_names),
    }


PER_CLASS_COLUMNS = ("classifier", "class", "class_name", "n_cells", "n_predicted", "precision", "precision_lo",
                     "precision_hi", "recall", "recall_lo", "recall_hi")


def per_class_rows(result, classifier):
    """Rows (dicts keyed by :data:`PER_CLASS_COLUMNS`) of one classifier's per-class table."""
    pc = result["per_class"]
    rows = []
    for k, name in enumerate(result["class_names"]):
        rows.append({
            "classifier": classifier, "class": k, "class_name": name,
            "n_cells": int(result["class_counts"][k]), "n_predicted": int(result["predicted_counts"][k]),
            **{key: _num(pc[key][k]) for key in PER_CLASS_COLUMNS[5:]},
        })
    return rows


def _num(x):
    x = float(x)
    return None if np.isnan(x) else x


def write_confusion_csv(path, matrix, class_names):
    """Write a K x K confusion (counts or rates) with true classes as rows, names as header."""
    rows = []
    for k, name in enumerate(class_names):
        rows.append([name] + [(_num(v) if isinstance(v, (float, np.floating)) else int(v)) for v in matrix[k]])
    write_csv(path, rows, ["true \\ predicted"] + list(class_names))


def summary_json(result):
    """The JSON-ready headline of :func:`evaluate_cells` (accuracy with counts and CI, kappa)."""
    return {
        "accuracy": result["accuracy"],
        "kappa": _num(result["kappa"]),
        "n_cells": int(result["class_counts"].sum()),
        "class_counts": {n: int(c) for n, c in zip(result["class_names"], result["class_counts"])},
        "bootstrap": {key: result["per_class"][key] for key in ("n_resamples", "seed", "ci_percentiles", "method")},
    }


CELL_EVAL_FILES = {
    "metrics": "cell_metrics.json",
    "per_class": "per_class.csv",
    "confusion_rates": "confusion_rates.csv",
    "confusion_counts": "confusion_counts.csv",
    "rf_confusion_rates": "rf_confusion_rates.csv",
    "rf_confusion_counts": "rf_confusion_counts.csv",
    "fig2a": "fig2a_recall",
    "fig2b": "fig2b_precision",
    "fig2d": "fig2d_confusion",
    "fig2d_rf": "fig2d_confusion_rf",
}
"""Names written by :func:`run_cell_evaluation` into its output folder (figures as .png and .pdf)."""


def run_cell_evaluation(predictions_path, out_dir, rf_predictions_path=None, split="auto",
                        n_resamples=DEFAULT_RESAMPLES, make_figures=True, require_all_classes=True,
                        context=RunContext()):
    """Evaluate network (and optional random-forest) predictions; write tables, figures, JSON.

    Writes into ``out_dir`` the files of :data:`CELL_EVAL_FILES`; the JSON
    (``cell_metrics.json``) holds ``cell_accuracy``, ``cell_kappa`` and, with a forest table,
    ``rf_cell_accuracy``, ``rf_cell_kappa`` and ``network_minus_forest`` (the accuracy
    difference with paired bootstrap intervals over cells and over proteins,
    :func:`paired_accuracy_difference`), plus inputs, command and seed.  It is written
    last, so its presence marks a finished evaluation.  A class without cells is an error
    unless ``require_all_classes`` is False (its recall is then undefined).  ``context``: the
    bootstrap's seed and the command recorded.  Returns the JSON dict.
    """
    from deepyeast.analysis.prediction_table import read_predictions

    seed, command = context.seed, context.command

    net = read_predictions(predictions_path, split=split, require_all_classes=require_all_classes)
    rf = (read_predictions(rf_predictions_path, split=split, require_all_classes=require_all_classes)
          if rf_predictions_path else None)
    if rf is not None and rf.n_classes != net.n_classes:
        raise InputError(f"{rf_predictions_path}: {rf.n_classes} classes, but {predictions_path} has {net.n_classes}")
    os.makedirs(out_dir, exist_ok=True)
    stale = os.path.join(out_dir, CELL_EVAL_FILES["metrics"])
    if os.path.exists(stale):  # a run killed midway must not leave an old "finished" marker
        os.remove(stale)
    clear_result(out_dir)
    res_net = evaluate_cells(net, n_resamples, seed)
    res_rf = evaluate_cells(rf, n_resamples, seed) if rf is not None else None
    names = net.class_names
    rows = per_class_rows(res_net, "network") + (per_class_rows(res_rf, "random_forest") if res_rf else [])
    write_csv(os.path.join(out_dir, CELL_EVAL_FILES["per_class"]), rows, PER_CLASS_COLUMNS)
    write_confusion_csv(os.path.join(out_dir, CELL_EVAL_FILES["confusion_rates"]), res_net["confusion_rates"], names)
    write_confusion_csv(os.path.join(out_dir, CELL_EVAL_FILES["confusion_counts"]), res_net["confusion_counts"], names)
    if res_rf:
        write_confusion_csv(os.path.join(out_dir, CELL_EVAL_FILES["rf_confusion_rates"]),
                            res_rf["confusion_rates"], names)
        write_confusion_csv(os.path.join(out_dir, CELL_EVAL_FILES["rf_confusion_counts"]),
                            res_rf["confusion_counts"], names)
    figures = {}
    if make_figures:
        from deepyeast.analysis import cell_figures as figs

        figures["fig2a"] = figs.plot_per_class(res_net, res_rf, "recall",
                                               os.path.join(out_dir, CELL_EVAL_FILES["fig2a"]))
        figures["fig2b"] = figs.plot_per_class(res_net, res_rf, "precision",
                                               os.path.join(out_dir, CELL_EVAL_FILES["fig2b"]))
        figures["fig2d"] = figs.plot_confusion(res_net["confusion_rates"], names,
                                               os.path.join(out_dir, CELL_EVAL_FILES["fig2d"]),
                                               title="Fig. 2D: network confusion matrix (% of each true class)")
        if res_rf:
            figures["fig2d_rf"] = figs.plot_confusion(res_rf["confusion_rates"], names,
                                                      os.path.join(out_dir, CELL_EVAL_FILES["fig2d_rf"]),
                                                      title="Random forest confusion matrix (% of each true class)")
    out = {
        "cell_accuracy": res_net["accuracy"],
        "cell_kappa": {"value": _num(res_net["kappa"]), "total": int(net.n_cells)},
        "network": summary_json(res_net),
        "inputs": {"predictions": os.fspath(predictions_path),
                   "rf_predictions": os.fspath(rf_predictions_path) if rf_predictions_path else None,
                   "split": sorted(set(net.split.tolist()))},
        "seed": seed,
        "command": command,
        "figures": {k: [os.path.basename(p) for p in v] for k, v in figures.items()},
    }
    if res_rf:
        out["rf_cell_accuracy"] = res_rf["accuracy"]
        out["rf_cell_kappa"] = {"value": _num(res_rf["kappa"]), "total": int(rf.n_cells)}
        out["random_forest"] = summary_json(res_rf)
        out["same_cells"] = set(net.path.tolist()) == set(rf.path.tolist())
        if out["same_cells"]:
            order = {p: i for i, p in enumerate(rf.path.tolist())}
            idx = np.array([order[p] for p in net.path.tolist()], dtype=np.int64)
            diff = paired_accuracy_difference(net.pred == net.label, rf.pred[idx] == rf.label[idx],
                                              groups=net.protein, n_resamples=n_resamples, seed=seed)
            out["network_minus_forest"] = {
                "value": diff["value"], "cells_ci": diff["cells"], "proteins_ci": diff["groups"],
                "n_cells": int(net.n_cells), "n_proteins": diff["n_groups"],
                "method": "paired bootstrap: the same resampled cells (cells_ci) or whole proteins "
                          "(proteins_ci) for both classifiers; 95% percentile intervals"}
    atomic_write_json(os.path.join(out_dir, CELL_EVAL_FILES["metrics"]), out, indent=2)
    write_cells_result(out_dir, out, res_net, res_rf, net, figures, name="cells")
    return out


FIGURE_CAPTIONS = {
    "fig2a": "Figure 2A: recall per compartment (the share of each compartment's test cells called right), "
             "network vs random forest; bars: 95% stratified bootstrap intervals, dashed: medians.",
    "fig2b": "Figure 2B: precision per compartment (the share of cells called a compartment that belong to it), "
             "network vs random forest; bars: 95% stratified bootstrap intervals, dashed: medians.",
    "fig2d": "Figure 2D: the network's confusion matrix: of the test cells of each true compartment (rows), "
             "the percentage called each compartment (columns).",
    "fig2d_rf": "The random forest's confusion matrix, as Figure 2D.",
}


def write_cells_result(out_dir, out, res_net, res_rf, net, figures, name="cells"):
    """The result manifest of the per-cell evaluation (see :mod:`deepyeast.utils.manifest`)."""
    acc = out["cell_accuracy"]
    text = (f"The network classified {acc['total']:,} test cells of {len(set(net.protein.tolist())):,} proteins; "
            f"{acc['correct']:,} were called right (accuracy {acc['value']:.3f}, 95% interval "
            f"[{acc['lo']:.3f}, {acc['hi']:.3f}] from {res_net['per_class']['n_resamples']:,} stratified "
            f"bootstrap resamples).")
    if res_rf:
        rf = out["rf_cell_accuracy"]
        text += (f" The random forest on CellProfiler features called {rf['correct']:,} of {rf['total']:,} right "
                 f"(accuracy {rf['value']:.3f}).")
    lead = out.get("network_minus_forest")
    if lead:
        text += (f" The network's lead over the forest, {lead['value']:+.3f}, has paired 95% intervals "
                 f"[{lead['cells_ci'][0]:+.3f}, {lead['cells_ci'][1]:+.3f}] resampling cells and "
                 f"[{lead['proteins_ci'][0]:+.3f}, {lead['proteins_ci'][1]:+.3f}] resampling whole proteins "
                 f"({lead['n_proteins']} proteins; cells of one protein are not independent).")
    metrics = {"cell_accuracy": acc, "cell_kappa": out["cell_kappa"]}
    rows = [headline("cell_accuracy", "Network accuracy per cell", "cells", PAPER_RESULTS["cell_accuracy"]),
            headline("cell_kappa", "Network Cohen's kappa per cell", "cells", PAPER_RESULTS["cell_kappa"])]
    if res_rf:
        metrics["rf_cell_accuracy"] = out["rf_cell_accuracy"]
        metrics["rf_cell_kappa"] = out["rf_cell_kappa"]
        rows.append(headline("rf_cell_accuracy", "Random forest accuracy per cell", "cells",
                             PAPER_RESULTS["rf_cell_accuracy"]))
    if lead:
        metrics["network_minus_forest_per_cell"] = lead
    names = res_net["class_names"]
    pn = res_net["per_class"]
    columns = ["compartment", "test cells", "network recall [95% interval]"]
    if res_rf:
        columns.append("forest recall [95% interval]")
    table_rows = []
    for k, cname in enumerate(names):
        row = [cname, int(res_net["class_counts"][k]),
               _ci_text(pn["recall"][k], pn["recall_lo"][k], pn["recall_hi"][k])]
        if res_rf:
            pr = res_rf["per_class"]
            row.append(_ci_text(pr["recall"][k], pr["recall_lo"][k], pr["recall_hi"][k]))
        table_rows.append(row)
    figs = [figure(os.path.basename(paths[0]), FIGURE_CAPTIONS[key]) for key, paths in figures.items()]
    return write_result(
        out_dir, Result(name, "Per-cell accuracy (paper Figure 2)", text, metrics=metrics, headline=rows, figures=figs,
        tables=[table("Recall per compartment", columns, table_rows,
                      "Recall: of the test cells of a compartment, the share called that compartment, with its "
                      "95% stratified bootstrap interval. Precision is in per_class.csv.",
                      file=CELL_EVAL_FILES["per_class"])],
        details={k: v for k, v in out.items() if k not in metrics and k not in ("command", "network_minus_forest")},
        seeds={"seed": out["seed"]}, command=out["command"], order=10))


def _ci_text(value, lo, hi):
    value, lo, hi = (_num(v) for v in (value, lo, hi))
    if value is None:
        return "undefined (no cells)"
    return f"{value:.2f} [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else f"{value:.2f}"
