"""The paper's Results, item by item, ours beside theirs (a report section in the paper's order).

Every other analysis reports its headline numbers; this one reads their outputs and sets each
further figure and number the paper's Results give (``deepyeast/constants.py``, the ``PAPER_*``
facts) beside the same quantity of this run, with a true/false line for each claim the paper
makes in words.  Where the paper gives no number the paper cell is empty; where this run cannot
have the quantity the row says so.  In the paper's order:

1. per-class recall and precision of network and forest (Figure 2A, 2B) with the paper's counts,
   its claims that the network wins recall in every compartment and precision in all but the
   nucleolus, the forest's kappa;
2. the top confusions (Figure 2D's text) and the misclassified cells of each (true, called) pair
   (Figure 2C; every pair: the paper's Files S4/S5);
3. the forest's chosen setting and features, the non-cell filter's cross-validation and removals,
   the chosen training snapshot;
4. protein-level accuracy against the number of cells per protein (Figure S2) and the wrong
   protein calls;
5. proteins with two compartments: the nucleus + cytoplasm subset as the paper's metric, every
   other pair apart;
6. the nearest cells to chosen points of the t-SNE map (Figure 3C).

Inputs are the files the pipeline's other steps write (named by :func:`run_paper_results`'s
arguments); outputs go to one folder, ``result.json`` last.
"""

import csv
import dataclasses
import json
import os

import numpy as np

from deepyeast.analysis.evaluate_cells import confusion_counts, count, kappa_from_confusion, precision_recall
from deepyeast.constants import (MIN_CELLS_PER_PROTEIN, PAPER_CHOSEN_ITERATION, PAPER_CLAIMS, PAPER_CLASS_CELLS,
                                 PAPER_CLASS_RECALL, PAPER_CONFUSIONS, PAPER_FOREST, PAPER_MIXED_NUCLEUS_CYTOPLASM,
                                 PAPER_MIXED_PAIR, PAPER_NONCELL_FILTER, PAPER_PRECISION_EXCEPTIONS,
                                 PAPER_PROTEIN_ERRORS, PAPER_RESULTS)
from deepyeast.utils.manifest import Result, clear_result, count_metric, figure, missing_part, table, write_result
from deepyeast.utils.io import InputError, atomic_write_json

__all__ = ["per_class_comparison", "paper_claims", "top_confusions", "misclassified_gallery", "accuracy_by_cells",
           "mixed_pair_summary", "tsne_neighbours", "chosen_iteration", "PaperInputs", "run_paper_results",
           "RESULT_NAME"]

RESULT_NAME = "paper"
NOT_AVAILABLE = "not available on this data"
GALLERY_CELLS = 8
"""Misclassified cells shown per (true, called) pair in Figure 2C; the all-pairs figure shows 4."""
OUR_READING = ("Figure S4's comparison with Gabor filters, whose procedure the paper does not give: in our reading "
               "(the first layer's filters fitted by a bank of Gabor filters beside random filters, and the neurons' "
               "strongest correlation to CellProfiler's Gabor texture features) it is in the interpretation section")
"""What of the paper's Results this replication reproduces only in its own reading of an unstated procedure."""
CELL_BINS = (1, 2, 5, 10, 20, 50, 100)
"""Lower edges of the cells-per-protein bins of Figure S2."""


def _count_text(c, total=None):
    """``0.649 (447/689)`` for a count pair or a count dict; empty for None."""
    if c is None:
        return ""
    if isinstance(c, dict):
        c, total = c["correct"], c["total"]
    return f"{c / total:.3f} ({c:,}/{total:,})" if total else "— (0/0)"


# ------------------------------------------------------------------------ Figure 2A/2B: per class


def per_class_comparison(net, rf=None):
    """Per-class counts of network (and forest) predictions tables on the same cells.

    ``net``, ``rf``: :class:`~deepyeast.analysis.prediction_table.Predictions`.  Returns a dict:
    ``class_names``, ``n_cells`` (int K), for each classifier ``"network"``/``"random_forest"``
    ``{"confusion": int K x K, "recall": float K, "precision": float K, "n_predicted": int K,
    "kappa": float}`` (NaN where undefined).
    """
    k = net.n_classes
    out = {"class_names": list(net.class_names), "classifiers": {}}
    for name, t in (("network", net), ("random_forest", rf)):
        if t is None:
            continue
        if t.n_classes != k:
            raise InputError(f"{t.source}: {t.n_classes} classes, but {net.source} has {k}")
        c = confusion_counts(t.label, t.pred, k)
        precision, recall = precision_recall(c)
        out["classifiers"][name] = {"confusion": c, "recall": recall, "precision": precision,
                                    "n_predicted": c.sum(axis=0), "kappa": float(kappa_from_confusion(c))}
    out["n_cells"] = out["classifiers"]["network"]["confusion"].sum(axis=1)
    return out


def paper_claims(cmp):
    """The paper's claims about the per-class comparison, checked: ``{key: {claim, holds, paper, ours}}``.

    ``holds`` is None without a forest, or where a compartment has no test cells (recall undefined)
    or no cell called it (precision undefined) for either classifier; ``ours`` names the
    compartments where the forest is at least as good as the network.
    """
    names = cmp["class_names"]
    clf = cmp["classifiers"]
    out = {}
    for key, metric, paper_exceptions in (("network_wins_recall_every_class", "recall", ()),
                                          ("network_wins_precision_all_but_nucleolus", "precision",
                                           PAPER_PRECISION_EXCEPTIONS)):
        entry = {"claim": PAPER_CLAIMS[key], "paper": list(paper_exceptions), "holds": None, "ours": None}
        if "random_forest" in clf:
            a, b = clf["network"][metric], clf["random_forest"][metric]
            undefined = [names[i] for i in range(len(names)) if not (np.isfinite(a[i]) and np.isfinite(b[i]))]
            losses = [names[i] for i in range(len(names)) if np.isfinite(a[i]) and np.isfinite(b[i]) and a[i] <= b[i]]
            entry["ours"] = losses
            entry["undefined"] = undefined
            if not undefined:
                entry["holds"] = sorted(losses) == sorted(paper_exceptions)
        out[key] = entry
    return out


def per_class_rows(cmp):
    """Rows of the per-class table: compartment, test cells (ours, paper), network recall (ours, paper),
    forest recall, network precision, forest precision (counts right/total)."""
    names = cmp["class_names"]
    net = cmp["classifiers"]["network"]
    rf = cmp["classifiers"].get("random_forest")
    rows = []
    for i, name in enumerate(names):
        n = int(cmp["n_cells"][i])
        paper_recall = PAPER_CLASS_RECALL.get(name)
        paper_n = PAPER_CLASS_CELLS.get(name)
        row = [name, n, f"{paper_n:,}" if paper_n else "", _count_text(int(net["confusion"][i, i]), n),
               _count_text(*paper_recall) if paper_recall else ""]
        row.append(_count_text(int(rf["confusion"][i, i]), n) if rf else "")
        row.append(_count_text(int(net["confusion"][i, i]), int(net["n_predicted"][i])))
        row.append(_count_text(int(rf["confusion"][i, i]), int(rf["n_predicted"][i])) if rf else "")
        rows.append(row)
    return rows


def per_class_metrics(cmp):
    """Metric objects for metrics.json: per classifier, recall and precision per compartment as counts."""
    names = cmp["class_names"]
    out = {}
    for clf, prefix in (("network", ""), ("random_forest", "rf_")):
        res = cmp["classifiers"].get(clf)
        if res is None:
            continue
        c = res["confusion"]
        out[prefix + "recall_per_class"] = {n: count(c[i, i], c[i].sum()) for i, n in enumerate(names)}
        out[prefix + "precision_per_class"] = {n: count(c[i, i], c[:, i].sum()) for i, n in enumerate(names)}
    return out


# ------------------------------------------------------------------------ Figure 2C/2D: confusions


def top_confusions(confusion, class_names, n=10):
    """The ``n`` most frequent (true, called) pairs off the diagonal, most cells first:
    ``[{true, called, cells, of}]`` (``of``: test cells of the true class); pairs with no cell are left out."""
    c = np.asarray(confusion)
    pairs = [(int(c[t, p]), t, p) for t in range(c.shape[0]) for p in range(c.shape[1]) if t != p and c[t, p] > 0]
    pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
    return [{"true": class_names[t], "called": class_names[p], "cells": n_, "of": int(c[t].sum())}
            for n_, t, p in pairs[:n]]


def confusion_rows(cmp, n=10):
    """Rows of the top-confusion table: the run's top ``n`` pairs and the paper's named pairs, each with
    ours and the paper's (cells / test cells of the true compartment)."""
    names = cmp["class_names"]
    c = cmp["classifiers"]["network"]["confusion"]
    index = {nm: i for i, nm in enumerate(names)}
    paper = {(t, p): (k, total) for t, p, k, total in PAPER_CONFUSIONS}
    pairs = [(x["true"], x["called"]) for x in top_confusions(c, names, n)]
    pairs += [pair for pair in paper if pair not in pairs]
    rows = []
    for t, p in pairs:
        ours = ""
        if t in index and p in index:
            ti, pi = index[t], index[p]
            ours = _count_text(int(c[ti, pi]), int(c[ti].sum()))
        rank = next((r + 1 for r, x in enumerate(top_confusions(c, names, len(names) ** 2))
                     if (x["true"], x["called"]) == (t, p)), "")
        rows.append([t, p, ours, rank, _count_text(*paper[(t, p)]) if (t, p) in paper else ""])
    return rows


def misclassified_gallery(table, archive, out_base, pairs, per_pair=GALLERY_CELLS, title=None, pair_columns=1):
    """A figure of misclassified cells: one block per (true, called) pair of ``pairs`` (dicts of
    :func:`top_confusions`), up to ``per_pair`` cells each, those called most confidently first; the
    blocks fill ``pair_columns`` columns, row by row.

    ``table``: the predictions (:class:`~deepyeast.analysis.prediction_table.Predictions`); ``archive``:
    the folder its paths are relative to.  Crops are read as the archive stores them (PNG; red the
    marker, green the protein).  Returns the PNG path, or None when no pair has a cell.
    """
    from deepyeast.data.crop_png import read_crop
    from deepyeast.utils.plotting import crop_strip, plt, save_figure

    names = list(table.class_names)
    blocks = []
    for pr in pairs:
        t, p = names.index(pr["true"]), names.index(pr["called"])
        idx = np.flatnonzero((table.label == t) & (table.pred == p))
        if idx.size:
            idx = idx[np.argsort(-table.probs[idx, p], kind="stable")][:per_pair]
            blocks.append((pr, idx))
    if not blocks:
        return None
    width = max(len(idx) for _, idx in blocks)
    cols = max(1, min(pair_columns, len(blocks)))
    n_rows = -(-len(blocks) // cols)
    fig = plt.figure(figsize=(cols * (0.9 * width + 1.6), 1.0 * n_rows + 0.5))
    grid = fig.add_gridspec(n_rows, cols * (width + 2))
    for b, (pr, idx) in enumerate(blocks):
        r, c0 = b // cols, (b % cols) * (width + 2) + 2
        ax = fig.add_subplot(grid[r, c0:c0 + len(idx)])
        called = names.index(pr["called"])
        crop_strip(ax, [read_crop(os.path.join(archive, table.path[i])) for i in idx],
                   [f"{table.probs[i, called]:.2f}" for i in idx])
        ax.set_ylabel(f"{pr['true']}\n→ {pr['called']}\n({pr['cells']}/{pr['of']})", fontsize=7,
                      rotation=0, ha="right", va="center")
    fig.suptitle(title or "Misclassified test cells", fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.45 / (1.0 * n_rows + 0.5), bottom=0.01, wspace=0.1,
                        hspace=0.35)
    return save_figure(fig, out_base)[0]


# ------------------------------------------------------------------------ Figure S2: cells per protein


def read_protein_calls(path):
    """A proteins table (``protein,n_cells,label,pred,post_*``, :mod:`deepyeast.analysis.protein_level`) ->
    list of dicts {protein, n_cells, label, pred, post (list)}; a malformed row is an InputError naming it."""
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            posts = [c for c in (reader.fieldnames or []) if c.startswith("post_")]
            for i, r in enumerate(reader, start=2):
                try:
                    rows.append({"protein": r["protein"], "n_cells": int(r["n_cells"]), "label": int(r["label"]),
                                 "pred": int(r["pred"]), "post": [float(r[c]) for c in posts]})
                except (KeyError, TypeError, ValueError):
                    raise InputError(f"{path}:{i}: a proteins-table row needs protein, n_cells, label, pred and "
                                     "post_* numbers") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the proteins table: {e.strerror}") from None
    return rows


def accuracy_by_cells(calls, bins=CELL_BINS):
    """Protein-level accuracy per bin of cells per protein, and of the proteins with at least n cells.

    ``calls``: rows of :func:`read_protein_calls`.  Returns ``{"bins": [{cells: "2-4", lo, hi,
    right, proteins}], "at_least": [{n, right, proteins}]}`` (``hi`` None for the last bin).
    """
    n = np.array([c["n_cells"] for c in calls], dtype=np.int64)
    ok = np.array([c["label"] == c["pred"] for c in calls], dtype=bool)
    out = {"bins": [], "at_least": []}
    edges = list(bins) + [None]
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (n >= lo) & (True if hi is None else n < hi)
        label = f"{lo}+" if hi is None else (str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}")
        out["bins"].append({"cells": label, "lo": lo, "hi": hi, "right": int(ok[sel].sum()),
                            "proteins": int(sel.sum())})
    for t in sorted(set(n.tolist()) | set(bins)):
        sel = n >= t
        if sel.any():
            out["at_least"].append({"n": int(t), "right": int(ok[sel].sum()), "proteins": int(sel.sum())})
    return out


def plot_accuracy_by_cells(curves, out_base):
    """Figure S2: accuracy of the proteins with at least n cells against n, per classifier
    (``curves``: name -> :func:`accuracy_by_cells`), with the number of such proteins."""
    from deepyeast.utils.plotting import FOREST_COLOR, NETWORK_COLOR, plt, save_figure

    colors = {"network": NETWORK_COLOR, "random forest": FOREST_COLOR}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for name, cur in curves.items():
        xs = [p["n"] for p in cur["at_least"]]
        ax.step(xs, [p["right"] / p["proteins"] for p in cur["at_least"]], where="post", color=colors.get(name),
                label=name)
        b = [x for x in cur["bins"] if x["proteins"]]
        ax2.plot(range(len(b)), [x["right"] / x["proteins"] for x in b], "o-", color=colors.get(name), label=name)
        ax2.set_xticks(range(len(b)))
        ax2.set_xticklabels([f"{x['cells']}\n({x['proteins']})" for x in b], fontsize=7)
    ax.axvline(MIN_CELLS_PER_PROTEIN, color="#888", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("at least n cells per protein")
    ax.set_ylabel("proteins called right")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower right")
    ax2.set_xlabel("cells per protein (proteins)")
    ax2.set_ylim(0, 1.02)
    ax.set_title("Accuracy of proteins with >= n cells", fontsize=9)
    ax2.set_title("Accuracy per bin of cells per protein", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_base)[0]


# ------------------------------------------------------------------------ proteins with two compartments


def read_mixed_results(path):
    """``proteins_mixed.csv`` (:mod:`deepyeast.analysis.protein_level`) -> list of dicts
    {protein, pair (sorted tuple of the two names), top_two (bool), top_three (bool)}."""
    out = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for i, r in enumerate(csv.DictReader(f), start=2):
                try:
                    out.append({"protein": r["protein"], "pair": tuple(sorted((r["class_a"], r["class_b"]))),
                                "top_two": r["top_two"] == "True", "top_three": r["top_three"] == "True"})
                except KeyError:
                    raise InputError(f"{path}:{i}: needs protein, class_a, class_b, top_two, top_three") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the mixed-protein results: {e.strerror}") from None
    return out


def mixed_pair_summary(rows):
    """Per pair of compartments (sorted names): ``{pair: {"top_two": count, "top_three_rest": count}}``;
    top_three_rest counts, among the proteins whose pair is not the top two, those within the top three."""
    out = {}
    for pair in sorted({r["pair"] for r in rows}):
        sel = [r for r in rows if r["pair"] == pair]
        rest = [r for r in sel if not r["top_two"]]
        out[pair] = {"top_two": count(sum(r["top_two"] for r in sel), len(sel)),
                     "top_three_rest": count(sum(r["top_three"] for r in rest), len(rest))}
    return out


# ------------------------------------------------------------------------ Figure 3C: t-SNE neighbours


def tsne_neighbours(xy, labels, n_neighbours=6):
    """Chosen points of a t-SNE map and the cells nearest each.

    The paper picked points by eye; here one point per compartment is chosen reproducibly: the
    median position of the compartment's cells.  ``xy``: float N x 2; ``labels``: int N.
    Returns ``[{"class": k, "point": (x, y), "cells": indices of the n nearest cells (any class)}]``.
    """
    xy = np.asarray(xy, np.float64)
    labels = np.asarray(labels)
    out = []
    for k in sorted(set(labels.tolist())):
        point = np.median(xy[labels == k], axis=0)
        d = np.hypot(*(xy - point).T)
        out.append({"class": int(k), "point": point.tolist(),
                    "cells": np.argsort(d, kind="stable")[:n_neighbours].tolist()})
    return out


def read_tsne_table(path):
    """``tsne.csv`` of the interpretation (path, label, <blob>_x, <blob>_y per layer) ->
    (paths list, labels int N, {blob: float N x 2}) in the file's column order."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            rows = list(reader)
    except OSError as e:
        raise InputError(f"{path}: cannot read the t-SNE table: {e.strerror}") from None
    blobs = [c[:-2] for c in cols if c.endswith("_x") and c[:-2] + "_y" in cols]
    if "path" not in cols or "label" not in cols or not blobs:
        raise InputError(f"{path}: a t-SNE table needs path, label and <layer>_x, <layer>_y columns")
    try:
        paths = [r["path"] for r in rows]
        labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
        maps = {b: np.array([[float(r[b + "_x"]), float(r[b + "_y"])] for r in rows]) for b in blobs}
    except ValueError as e:
        raise InputError(f"{path}: a value is not a number ({e})") from None
    return paths, labels, maps


def plot_tsne_neighbours(xy, labels, paths, chosen, class_names, archive, blob, out_base):
    """Figure 3C: the t-SNE map of ``blob`` with the chosen points numbered, and per point its nearest cells."""
    from deepyeast.analysis.interpret.tsne import class_colors
    from deepyeast.data.crop_png import read_crop
    from deepyeast.utils.plotting import crop_strip, plt, save_figure

    n_rows = len(chosen)
    ncol = max(len(c["cells"]) for c in chosen)
    fig = plt.figure(figsize=(5.2 + 0.95 * ncol, max(4.2, 0.95 * n_rows + 0.6)))
    grid = fig.add_gridspec(n_rows, ncol + 5)
    ax = fig.add_subplot(grid[:, :4])
    colors = class_colors(len(class_names))
    for k, name in enumerate(class_names):
        sel = labels == k
        ax.scatter(xy[sel, 0], xy[sel, 1], s=3, color=colors[k], label=name, rasterized=True)
    for r, c in enumerate(chosen):
        ax.annotate(str(r + 1), c["point"], fontsize=9, weight="bold", ha="center", va="center",
                    bbox=dict(boxstyle="circle,pad=0.15", fc="white", ec="black", lw=0.6))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of {blob}", fontsize=9)
    for r, c in enumerate(chosen):
        if not c["cells"]:
            continue
        a = fig.add_subplot(grid[r, 5:5 + len(c["cells"])])
        crop_strip(a, [read_crop(os.path.join(archive, paths[i])) for i in c["cells"]],
                   [class_names[labels[i]] for i in c["cells"]], title_size=5)
        a.set_ylabel(f"{r + 1}: {class_names[c['class']]}", rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle("Figure 3C: the cells nearest chosen points of the t-SNE map (point = a compartment's median "
                 "position)", fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.99, top=0.93, bottom=0.02, wspace=0.15, hspace=0.35)
    return save_figure(fig, out_base)[0]


# ------------------------------------------------------------------------ the chosen snapshot


def chosen_iteration(solver_path, chosen_path):
    """The training iteration of the snapshot the run uses: the snapshot on disk whose weights are
    byte-identical to ``chosen_path`` (the pipeline keeps the chosen one), or None when none is."""
    from deepyeast.caffe import caffe_pb2
    from deepyeast.caffe.prototxt import read_prototxt
    from deepyeast.engine.run_config import snapshots_on_disk
    from deepyeast.utils.io import file_digest

    solver = read_prototxt(solver_path, caffe_pb2.SolverParameter)
    want = file_digest(chosen_path)
    for it, files in sorted(snapshots_on_disk(solver).items()):
        for f in files:
            if f.endswith(".caffemodel") and file_digest(f) == want:
                return it, int(solver.max_iter)
    return None, int(solver.max_iter)


# ------------------------------------------------------------------------ the step


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read the {what}: {e}") from None


def _row(item, ours, paper, note=""):
    return [item, "" if ours is None else ours, "" if paper is None else paper, note]


@dataclasses.dataclass(frozen=True)
class PaperInputs:
    """The files :func:`run_paper_results` reads (all but ``predictions`` and ``archive`` optional; what is
    not given is named as not done in the report).

    ``predictions``/``rf_predictions``: the test cells' tables; ``archive``: their crops' root;
    ``forest_summary``: the forest's ``rf_grid.json``; ``quality``: the non-cell filter's ``result.json``;
    ``proteins``/``rf_proteins``: the proteins tables; ``mixed``: ``proteins_mixed.csv``; ``tsne``: the
    interpretation's ``tsne.csv``; ``solver``, ``chosen``: the run's solver and chosen ``.caffemodel``;
    ``snapshot_rule``: how it was chosen (final, val_loss).
    """

    predictions: str
    archive: str
    rf_predictions: str = None
    forest_summary: str = None
    quality: str = None
    proteins: str = None
    rf_proteins: str = None
    mixed: str = None
    tsne: str = None
    solver: str = None
    chosen: str = None
    snapshot_rule: str = None


def run_paper_results(out_dir, inputs, command=None, make_figures=True):
    """Write the paper-by-item comparison of :class:`PaperInputs` ``inputs`` into ``out_dir``
    (``paper_results.json``, figures, ``result.json`` last).  Returns the manifest dict."""
    predictions, archive, rf_predictions = inputs.predictions, inputs.archive, inputs.rf_predictions
    forest_summary, quality, proteins, rf_proteins = (inputs.forest_summary, inputs.quality, inputs.proteins,
                                                      inputs.rf_proteins)
    mixed, tsne, solver, chosen, snapshot_rule = (inputs.mixed, inputs.tsne, inputs.solver, inputs.chosen,
                                                  inputs.snapshot_rule)
    from deepyeast.analysis.prediction_table import read_predictions
    from deepyeast.utils.manifest import read_result

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    clear_result(out_dir)
    net = read_predictions(predictions, split="auto", require_all_classes=False)
    rf = read_predictions(rf_predictions, split="auto", require_all_classes=False) if rf_predictions else None
    if rf is not None:
        order = {p: i for i, p in enumerate(rf.path.tolist())}
        missing_cells = [p for p in net.path.tolist() if p not in order]
        if missing_cells or rf.n_cells != net.n_cells:
            raise InputError(f"{rf_predictions}: not the same cells as {predictions} "
                             f"(e.g. {missing_cells[0] if missing_cells else 'extra rows'})")
        rf = rf.subset(np.array([order[p] for p in net.path.tolist()], dtype=np.int64))
    metrics, tables, figures, missing, details = {}, [], [], [], {}

    # 1. Figure 2A/2B, per class; the claims; kappa
    cmp = per_class_comparison(net, rf)
    claims = paper_claims(cmp)
    details["claims"] = claims
    metrics.update(per_class_metrics(cmp))
    tables.append(table(
        "Figure 2A, 2B: recall and precision per compartment, ours beside the paper's",
        ["compartment", "test cells", "paper: test cells", "network recall", "paper: network recall",
         "forest recall", "network precision", "forest precision"], per_class_rows(cmp),
        "Recall: of a compartment's test cells, the share called it (right/cells); precision: of the cells called a "
        "compartment, the share that belong to it (right/called). The paper's cells are empty where the paper gives "
        "no count for that compartment."))
    claim_rows = []
    for key, c in claims.items():
        if c["holds"] is None:
            verdict = "not evaluated (no forest)" if c["ours"] is None else \
                f"not evaluated: undefined for {', '.join(c['undefined'])}"
        else:
            verdict = "true" if c["holds"] else "false"
        where = "—" if c["ours"] is None else (", ".join(c["ours"]) or "none")
        claim_rows.append([c["claim"], ", ".join(c["paper"]) or "none", where, verdict])
    tables.append(table("The paper's claims in words, checked on this run",
                        ["claim (paper)", "paper: compartments where the forest is as good or better",
                         "this run: compartments where the forest is as good or better", "holds on this run"],
                        claim_rows, "A claim holds when the compartments in which the forest matches or beats the "
                                    "network are exactly the paper's exceptions."))
    rf_kappa = cmp["classifiers"].get("random_forest", {}).get("kappa")
    net_kappa = cmp["classifiers"]["network"]["kappa"]

    # 2. confusions and galleries
    tables.append(table("Top confusions of the network (Figure 2D), ours beside the paper's",
                        ["true compartment", "called", "this run (cells/test cells of the true compartment)",
                         "rank in this run", "paper"], confusion_rows(cmp),
                        "The run's ten most frequent confusions, then any the paper names that are not among them."))
    metrics["top_confusions"] = {f"{x['true']} -> {x['called']}": count(x["cells"], x["of"])
                                 for x in top_confusions(cmp["classifiers"]["network"]["confusion"],
                                                         cmp["class_names"], 10)}
    if make_figures:
        pairs = top_confusions(cmp["classifiers"]["network"]["confusion"], cmp["class_names"], 8)
        f = misclassified_gallery(net, archive, os.path.join(out_dir, "fig2c_misclassified"), pairs,
                                  title="Figure 2C: misclassified test cells of the network's most frequent confusions")
        if f:
            figures.append(figure(os.path.basename(f),
                                  "Figure 2C: test cells the network called wrong, one row per (true → called) "
                                  "pair of its eight most frequent confusions (cells of the pair / test cells of the "
                                  f"true compartment), up to {GALLERY_CELLS} each, the most confident call first (the "
                                  "number above a cell: its probability of the called compartment). Red: the "
                                  "cytosolic marker; green: the protein."))
        every = top_confusions(cmp["classifiers"]["network"]["confusion"], cmp["class_names"],
                               len(cmp["class_names"]) ** 2)
        f = misclassified_gallery(net, archive, os.path.join(out_dir, "files_s4_s5_all_pairs"), every, per_pair=4,
                                  title="Misclassified test cells of every (true, called) pair (as Files S4/S5)",
                                  pair_columns=3)
        if f:
            figures.append(figure(os.path.basename(f),
                                  f"As the paper's Files S4 and S5: misclassified test cells of every "
                                  f"(true → called) pair of the network ({len(every)} pairs), up to 4 each, most "
                                  "confident first."))

    # 3. forest, non-cell filter, snapshot
    rows = [_row("network: Cohen's kappa per cell", f"{net_kappa:.3f}", f"{PAPER_RESULTS['cell_kappa']:.2f}"),
            _row("forest: Cohen's kappa per cell", None if rf_kappa is None else f"{rf_kappa:.3f}",
                 f"{PAPER_FOREST['kappa']:.2f}")]
    if forest_summary:
        fs = _read_json(forest_summary, "forest's summary")
        best = fs.get("best") or {}
        n_feat = fs.get("n_features") or (fs.get("cellprofiler_features") or {}).get("n_features")
        for key in ("ntree", "mtry", "nodesize"):
            rows.append(_row(f"forest: chosen {key} (on the validation cells; grid {fs.get('grid_name', '?')})",
                             best.get(key), PAPER_FOREST[key]))
            if best.get(key) is not None:
                metrics[f"rf_chosen_{key}"] = best[key]
        rows.append(_row("forest: features per cell", n_feat, PAPER_FOREST["n_features"],
                         "ours: CellProfiler-style features per 64x64 crop (cp-measure); the paper: CellProfiler on "
                         "whole micrographs (Chong et al. 2015)"))
        if n_feat is not None:
            metrics["rf_n_features"] = n_feat
    else:
        missing.append(missing_part("the forest's chosen setting beside the paper's", "no forest summary was given",
                                    "--forest-summary RUN/rf/rf_grid.json"))
    q_note = None
    if quality:
        q = read_result(quality)
        qd = q.get("details", {})
        if "best" in qd:
            qb, qt = qd["best"], qd["test"]
            n_feat_q = qd.get("n_features")
            grid = sorted({min(int(g), int(n_feat_q)) if n_feat_q else int(g) for g in qd.get("mtry_grid", [])})
            rows.append(_row("non-cell filter: cross-validated accuracy", f"{qb['cv_accuracy']:.3f}",
                             f"{PAPER_NONCELL_FILTER['cv_accuracy']:.3f}"))
            rows.append(_row("non-cell filter: chosen mtry", qb["mtry"], PAPER_NONCELL_FILTER["mtry"],
                             f"grid {grid}; ours tops out at {max(grid) if grid else '?'} (the feature count), "
                             "the paper's at 435"))
            rows.append(_row("non-cell filter: test cells removed",
                             _count_text(qt["n_removed"], qt["n_cells"]),
                             _count_text(PAPER_NONCELL_FILTER["removed"], PAPER_NONCELL_FILTER["test_cells"])))
            metrics["noncell_filter_cv_accuracy"] = qb["cv_accuracy"]
            metrics["noncell_filter_mtry"] = qb["mtry"]
            metrics["noncell_filter_removed"] = count_metric(qt["n_removed"], qt["n_cells"])
        else:
            q_note = "the non-cell filter was not run (see its section)"
    if q_note or not quality:
        for item, paper in (("non-cell filter: cross-validated accuracy", f"{PAPER_NONCELL_FILTER['cv_accuracy']:.3f}"),
                            ("non-cell filter: chosen mtry", PAPER_NONCELL_FILTER["mtry"]),
                            ("non-cell filter: test cells removed",
                             _count_text(PAPER_NONCELL_FILTER["removed"], PAPER_NONCELL_FILTER["test_cells"]))):
            rows.append(_row(item, "not run", paper, q_note or "no filter result was given"))
    if solver and chosen:
        it, max_iter = chosen_iteration(solver, chosen)
        rows.append(_row(f"training: the chosen snapshot's iteration (rule {snapshot_rule or '?'}, of {max_iter:,})",
                         "not found among the snapshots" if it is None else f"{it:,}",
                         f"{PAPER_CHOSEN_ITERATION:,} (lowest validation loss, of 195,000)"))
        if it is not None:
            metrics["chosen_snapshot_iteration"] = it
    tables.append(table("The forest, the non-cell filter and the chosen snapshot, ours beside the paper's",
                        ["item", "this run", "paper", "note"], rows,
                        "Counts are test cells. The forest's and the filter's settings were chosen on this run's "
                        "validation cells (forest) and by cross-validation (filter), as in the paper."))

    # 4. Figure S2 and the wrong protein calls
    if proteins:
        calls = read_protein_calls(proteins)
        curves = {"network": accuracy_by_cells(calls)}
        if rf_proteins:
            curves["random forest"] = accuracy_by_cells(read_protein_calls(rf_proteins))
        details["accuracy_by_cells"] = curves
        metrics["protein_accuracy_by_cells"] = {b["cells"]: count(b["right"], b["proteins"])
                                                for b in curves["network"]["bins"] if b["proteins"]}
        if make_figures and calls:
            f = plot_accuracy_by_cells(curves, os.path.join(out_dir, "figS2_protein_accuracy_by_cells"))
            figures.append(figure(os.path.basename(f),
                                  "Figure S2: protein-level accuracy against the number of test cells per protein. "
                                  "Left: accuracy of the proteins with at least n cells (dotted: the paper's cut, "
                                  f"{MIN_CELLS_PER_PROTEIN}); right: accuracy per bin of cells per protein (the "
                                  "number of proteins in brackets)."))
        names = list(net.class_names)
        wrong = [c for c in calls if c["label"] != c["pred"]]
        tables.append(table(
            "Wrong protein calls of the network, beside the paper's",
            ["protein", "test cells", "true compartment", "called", "posterior of the call"],
            [[c["protein"], c["n_cells"], names[c["label"]], names[c["pred"]],
              f"{c['post'][c['pred']]:.2f}" if c["post"] else ""] for c in wrong[:20]],
            f"This run: {len(wrong)} of {len(calls)} test proteins called wrong"
            + (f" (first 20 shown)" if len(wrong) > 20 else "") + f". The paper: 3 of 282 — "
            + "; ".join(PAPER_PROTEIN_ERRORS) + "."))
        metrics["protein_errors_single_cell"] = sum(c["n_cells"] == 1 for c in wrong)
    else:
        missing.append(missing_part("Figure S2 and the wrong protein calls", "no proteins table was given",
                                    "--proteins RUN/proteins/proteins.csv"))

    # 5. proteins with two compartments
    pair_key = tuple(sorted(PAPER_MIXED_PAIR))
    if mixed:
        by_pair = mixed_pair_summary(read_mixed_results(mixed))
        paper_t2 = _count_text(*PAPER_MIXED_NUCLEUS_CYTOPLASM["top_two"])
        paper_t3 = _count_text(*PAPER_MIXED_NUCLEUS_CYTOPLASM["top_three_rest"])
        mrows = []
        for pair, s in sorted(by_pair.items(), key=lambda kv: kv[0] != pair_key):
            is_paper = pair == pair_key
            mrows.append([" + ".join(pair) + (" (the paper's metric)" if is_paper else ""),
                          _count_text(s["top_two"]), paper_t2 if is_paper else "",
                          _count_text(s["top_three_rest"]) if s["top_three_rest"]["total"] else "—",
                          paper_t3 if is_paper else ""])
        if pair_key not in by_pair:
            mrows.insert(0, [" + ".join(pair_key) + " (the paper's metric)", NOT_AVAILABLE, paper_t2,
                             NOT_AVAILABLE, paper_t3])
        nc = by_pair.get(pair_key)
        metrics["mixed_nucleus_cytoplasm_top_two"] = nc["top_two"] if nc else None
        metrics["mixed_nucleus_cytoplasm_top_three_rest"] = nc["top_three_rest"] if nc else None
        others = [r for p, s in by_pair.items() if p != pair_key for r in [s]]
        if others:
            metrics["mixed_other_pairs_top_two"] = count(sum(s["top_two"]["correct"] for s in others),
                                                         sum(s["top_two"]["total"] for s in others))
        tables.append(table("Proteins with two compartments, per pair: the paper's metric is nucleus + cytoplasm",
                            ["pair", "both the top two", "paper", "the rest: both within the top three", "paper"],
                            mrows, "The paper's figure counts the proteins annotated nucleus + cytoplasm only; the "
                                   "other pairs are shown apart and have no paper number."))
    else:
        metrics["mixed_nucleus_cytoplasm_top_two"] = None
        metrics["mixed_nucleus_cytoplasm_top_three_rest"] = None
        missing.append(missing_part("proteins with two compartments, nucleus + cytoplasm (paper: 21 of 24 top two)",
                                    "no results for proteins with two compartments (no mixed-protein table given)",
                                    "MIXED=FILE (make), --mixed RUN/proteins/proteins_mixed.csv"))

    # 6. Figure 3C
    if tsne and make_figures:
        paths, labels, maps = read_tsne_table(tsne)
        blob = list(maps)[-1]
        chosen_pts = tsne_neighbours(maps[blob], labels)
        f = plot_tsne_neighbours(maps[blob], labels, paths, chosen_pts, list(net.class_names), archive, blob,
                                 os.path.join(out_dir, "fig3c_tsne_neighbours"))
        figures.append(figure(os.path.basename(f),
                              f"Figure 3C: the t-SNE map of the last layer ({blob}, as in Figure 3B) with one "
                              "chosen point per compartment (numbered; the median position of its cells — the paper "
                              "chose its points by eye) and, per point, the six cells nearest it on the map (title: "
                              "each cell's true compartment)."))
        details["tsne_neighbours"] = {"layer": blob, "points": [
            {"compartment": net.class_names[c["class"]], "point": c["point"],
             "cells": [paths[i] for i in c["cells"]]} for c in chosen_pts]}
    elif not tsne:
        missing.append(missing_part("Figure 3C (the cells nearest chosen points of the t-SNE map)",
                                    "no t-SNE table was given", "--tsne RUN/interpret/tsne.csv"))
    details["not_reproduced"] = []
    details["our_reading"] = [OUR_READING]

    summary_text = (
        "The paper's Results in their order, each number beside ours: per-compartment recall and precision "
        "(Figure 2A, 2B) and the paper's two claims about them, checked; the top confusions and galleries of "
        "misclassified cells (Figure 2C, Files S4/S5); the forest's kappa, chosen setting and features, the non-cell "
        "filter's cross-validation and removals, and the chosen snapshot; protein-level accuracy against cells per "
        "protein (Figure S2) and the wrong protein calls; proteins with two compartments with nucleus + cytoplasm "
        "as the paper's metric; and the cells nearest chosen points of the t-SNE map (Figure 3C). "
        + OUR_READING[0].upper() + OUR_READING[1:] + ". Claims: "
        + "; ".join(f"{c['claim']}: " + ("not evaluated" if c["holds"] is None else "true" if c["holds"] else "false")
                    for c in claims.values()) + ".")
    details["claims_holding"] = {k: c["holds"] for k, c in claims.items()}
    atomic_write_json(os.path.join(out_dir, "paper_results.json"),
                      {"metrics": metrics, "details": details}, indent=1)
    return write_result(out_dir, Result(RESULT_NAME, "The paper's Results, item by item, ours beside theirs",
                        summary_text, metrics=metrics, figures=figures, tables=tables, missing=missing,
                        details=details, command=command, order=12))
