"""Transfer learning to unseen compartments with few examples (paper Figures 4B, 4C and S6).

The trained DeepYeast net is used as a fixed feature extractor on cells of the
4 transfer compartments (``constants.TRANSFER_CLASS_NAMES``).  For every
feature set (each layer's activations, and CellProfiler features of the same
cells) a scikit-learn random forest is trained on 1, 3, 5, ..., 500 examples
per class, its ``max_features`` chosen on the validation cells, and its
accuracy measured on all test cells with a bootstrap 95% interval.

As in the paper, the headline (Figure 4C) is the forest on the first fully
connected layer's features (``fc1``, :data:`HEADLINE_LAYER`) against CellProfiler
features, with intervals from 20,000 bootstrap resamples
(:data:`HEADLINE_RESAMPLES`).  Every other layer is the Figure S6 comparison,
where the layer best on the validation cells is named; it is not the headline.
Figure 4B is a t-SNE of the transfer cells' fc1 features coloured by
compartment (:mod:`deepyeast.analysis.interpret.tsne`).

Layer features
--------------
Fully connected blobs (fc1, fc2: 512 values, fc3: 12) are used as they are: each is the layer's output
after the BatchNorm, Scale and ReLU that work in place on it (:data:`FC1_NOTE`; the authors' Keras
code takes ``ip1``, the dense output before them).
Conv blobs are reduced to per-channel spatial mean and max (2 x channels
values: conv1 -> 128 instead of 64 x 64 x 64 = 262,144).  The paper used the
layer activations themselves; we pool because (a) a random forest given a
handful of cells in 262,144 dimensions mostly samples irrelevant border
pixels, (b) the crops are centred on the cell but its orientation and
position vary, so the channel-wise statistics carry the texture/shape signal
in a translation-invariant form, and (c) it keeps the whole curve to seconds
on 2 cores and the features to kilobytes per cell.  ``reduce="full"`` uses the
flattened blob instead.

Subsampling
-----------
Each class's training cells are put in one seeded random order and the first
n are taken, so the n = 3 set contains the n = 1 set and so on; n is capped
at the cells a class has (``n_train`` says how many were used), and the curve
stops at the first size that takes every training cell of every class.

Intervals
---------
Resampling the N test cells with replacement makes the number correct
Binomial(N, accuracy); the interval draws ``n_resamples`` such resamples exactly
that way and takes the 2.5 and 97.5 percentiles.
"""

import dataclasses
import os

import numpy as np

from deepyeast import constants
from deepyeast.analysis.features import (PATHS_FILE, blob_features, has_blob, labels_for_paths, match_paths,
                                         network_blobs, read_cellprofiler_csv, read_paths)
from deepyeast.utils.plotting import plt, save_figure
from deepyeast.utils.manifest import (Result, clear_result, count_metric, figure, headline, missing_part, table,
                                     write_result)
from deepyeast.utils.io import InputError, atomic_write_json, write_csv
from deepyeast.utils.parallel import process_pool, worker_count
from deepyeast.utils.progress import progress
from deepyeast.utils.run_context import RunContext

N_PER_CLASS = (1, 3, 5, 10, 25, 50, 100, 250, 500)
"""Training examples per class on the curve (paper Figure 4C)."""

MAX_FEATURES_GRID = ("sqrt", "log2", 0.1)
"""Random-forest ``max_features`` values tried; the best on validation is kept.

For 512 features that is 22, 9 and 51 features per split; larger fractions
(0.3) cost 3x the time for no gain seen on the demo screen."""

CELLPROFILER = "cellprofiler"
"""Feature-set name of the CellProfiler features."""

HEADLINE_LAYER = "fc1"
FC1_NOTE = ("The fc1 features are the blob fc1 as the net leaves it: the dense layer's output after its BatchNorm, "
            "Scale and ReLU, which work in place on that blob (before Dropout, inactive at test time); the authors' "
            "Keras code extracts ip1, the dense output before BatchNorm and ReLU.")
"""Which fc1 output the transfer features are (the report says it beside the headline)."""
"""The layer whose features give the transfer headline (Figure 4C), the paper's choice."""

HEADLINE_RESAMPLES = 20000
"""Bootstrap resamples of the headline curves' intervals (the paper's number)."""

RESULT_COLUMNS = ("feature_set", "n_per_class", "n_train", "accuracy", "lo", "hi", "correct", "total",
                  "max_features", "val_accuracy")


def bootstrap_accuracy_interval(correct, total, n_resamples=2000, level=0.95, seed=0):
    """Percentile bootstrap interval of an accuracy ``correct / total``.

    Resampling ``total`` cells with replacement gives Binomial(total, acc)
    correct cells, so the resamples are drawn from that directly.  Returns
    ``(lo, hi)`` as fractions.
    """
    if total <= 0:
        raise ValueError("no test cells")
    rng = np.random.default_rng(seed)
    draws = rng.binomial(total, correct / total, size=n_resamples) / total
    alpha = (1 - level) / 2
    lo, hi = np.quantile(draws, [alpha, 1 - alpha])
    return float(lo), float(hi)


def class_orders(labels, n_classes, seed=0):
    """One seeded random order of each class's row indices: list of int64 arrays."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.flatnonzero(labels == k)) for k in range(n_classes)]


def subsample_per_class(orders, n):
    """Rows of the first ``n`` cells of each class order (capped at its size), sorted."""
    return np.sort(np.concatenate([order[:n] for order in orders]))


def fit_forest_on_validation(x_train, y_train, x_val, y_val, grid=MAX_FEATURES_GRID, n_trees=100,
                             seed=0, jobs=None):
    """Fit one forest per ``max_features`` in ``grid``; keep the best on validation.

    Returns ``(model, max_features, val_accuracy)``; ties go to the earlier
    grid value.
    """
    from sklearn.ensemble import RandomForestClassifier
    best = None
    for max_features in grid:
        model = RandomForestClassifier(n_estimators=n_trees, max_features=max_features, random_state=seed,
                                       n_jobs=jobs)
        model.fit(x_train, y_train)
        val_accuracy = float(np.mean(model.predict(x_val) == y_val))
        if best is None or val_accuracy > best[2]:
            best = (model, max_features, val_accuracy)
    return best


@dataclasses.dataclass(frozen=True)
class TransferSettings:
    """The transfer curves: training sizes per class (``n_per_class``), the forests
    (``n_trees``, ``grid``: max_features values chosen on validation), bootstrap resamples of the
    intervals (``n_resamples``; ``headline_resamples`` for Figure 4C's two curves), the headline
    layer, and Figure 4B's t-SNE (``tsne`` mode, ``n_tsne`` cells).  Defaults: the paper's."""

    n_per_class: tuple = N_PER_CLASS
    grid: tuple = MAX_FEATURES_GRID
    n_trees: int = 100
    n_resamples: int = 2000
    headline_layer: str = HEADLINE_LAYER
    headline_resamples: int = HEADLINE_RESAMPLES
    tsne: str = "fast"
    n_tsne: int = 1000


@dataclasses.dataclass(frozen=True)
class TransferFeatures:
    """The feature sets of the transfer cells: network feature folders (``dirs``: one, or one
    per split), ``labels`` (dict path -> (split, label)), which ``blobs`` (None: every learned
    layer's blob present in the deploy net ``model``), conv-blob reduction (``reduce``: "pool" or
    "full"), CellProfiler features (``cp_csv``: one CSV or one per split) and what those are
    (``features_note``, :func:`deepyeast.analysis.cp_features.describe_features`)."""

    dirs: object
    labels: dict
    blobs: tuple = None
    cp_csv: object = None
    reduce: str = "pool"
    model: str = None
    features_note: dict = None


def transfer_curve(name, x, y, split, n_classes, settings=TransferSettings(), seed=0, jobs=None):
    """Accuracy vs training examples per class for one feature set.

    ``x``: float N x F features of all cells; ``y``: int N labels; ``split``:
    array of "train"/"val"/"test" per row; ``settings``: sizes, forests and resamples
    (:class:`TransferSettings`); ``jobs``: threads of each forest.  Returns a list of result
    dicts (``RESULT_COLUMNS``), one per size that the training data allow.
    """
    n_per_class, grid, n_trees, n_resamples = settings.n_per_class, settings.grid, settings.n_trees, settings.n_resamples
    train, val, test = (np.flatnonzero(split == s) for s in ("train", "val", "test"))
    orders = class_orders(y[train], n_classes, seed)
    largest = max(len(o) for o in orders)
    rows = []
    for n in n_per_class:
        rows_n = train[subsample_per_class(orders, n)]
        model, max_features, val_accuracy = fit_forest_on_validation(
            x[rows_n], y[rows_n], x[val], y[val], grid, n_trees, seed, jobs)
        correct = int(np.sum(model.predict(x[test]) == y[test]))
        lo, hi = bootstrap_accuracy_interval(correct, len(test), n_resamples, seed=seed)
        rows.append(dict(feature_set=name, n_per_class=n, n_train=len(rows_n), accuracy=correct / len(test),
                         lo=lo, hi=hi, correct=correct, total=len(test), max_features=max_features,
                         val_accuracy=val_accuracy))
        if n >= largest:
            break
    return rows


def _transfer_curve_args(args):
    return transfer_curve(*args)


def check_splits(y, split, n_classes, class_names, what):
    """Every split must hold cells of every class; raise InputError naming the gap."""
    for s in ("train", "val", "test"):
        counts = np.bincount(y[split == s], minlength=n_classes)
        if counts.sum() == 0:
            raise InputError(f"{what}: no {s} cells")
        empty = [class_names[k] for k in range(n_classes) if counts[k] == 0]
        if empty:
            raise InputError(f"{what}: no {s} cells of class(es) {', '.join(empty)}")


def load_feature_sets(feature_dirs, labels, blobs=None, cp_csv=None, reduce="pool", model=None):
    """Gather every feature set for the cells of ``feature_dirs``.

    ``labels``: dict path -> (split, label).  Returns ``(sets, y, split,
    paths)`` with ``sets`` an ordered dict name -> float32 N x F (blobs first,
    then ``"cellprofiler"``), rows in the order of the dirs' ``paths.txt``.
    """
    if isinstance(feature_dirs, (str, os.PathLike)):
        feature_dirs = [feature_dirs]
    paths = []
    for d in feature_dirs:
        paths += read_paths(os.path.join(d, PATHS_FILE))
    split, y = labels_for_paths(paths, labels, "paths.txt of " + ", ".join(map(str, feature_dirs)))
    if len(set(paths)) != len(paths):
        raise InputError(f"{', '.join(map(str, feature_dirs))}: a cell path occurs twice in paths.txt")
    if blobs is None:
        blobs = [b for b in network_blobs(model) if all(has_blob(d, b) for d in feature_dirs)]
    sets = {}
    for blob in blobs:
        sets[blob] = np.concatenate([blob_features(d, blob, reduce) for d in feature_dirs])
    if cp_csv is not None:
        csvs = [cp_csv] if isinstance(cp_csv, (str, os.PathLike)) else list(cp_csv)
        parts = [read_cellprofiler_csv(c) for c in csvs]
        names = parts[0][1]
        for c, (_p, other, _v) in zip(csvs, parts):
            if list(other) != list(names):
                raise InputError(f"{c}: its feature columns differ from those of {csvs[0]}")
        cp_paths = [q for part in parts for q in part[0]]
        values = np.concatenate([part[2] for part in parts])
        sets[CELLPROFILER] = values[match_paths(paths, cp_paths, f"{', '.join(map(str, csvs))} (for the feature dirs' cells)")]
    if not sets:
        raise InputError(f"{', '.join(map(str, feature_dirs))}: no feature files and no CellProfiler CSV")
    return sets, y, np.asarray(split, dtype=object), paths


def run_transfer(features, out_dir, class_names=constants.TRANSFER_CLASS_NAMES, settings=TransferSettings(),
                 context=RunContext()):
    """Run the transfer-learning curves of ``features`` (:class:`TransferFeatures`) with
    ``settings`` (:class:`TransferSettings`) and write the outputs to ``out_dir``.

    Writes ``transfer.csv`` (``RESULT_COLUMNS``, accuracies as fractions),
    ``transfer.json`` (settings, rows, ``transfer_accuracy[feature_set][n]``
    with counts and interval, the headline layer, the best network layer on validation),
    ``transfer_accuracy.{png,pdf}`` (Figure 4C: ``headline_layer`` vs CellProfiler, their
    intervals from ``headline_resamples`` bootstrap resamples), ``transfer_layers.{png,pdf}``
    (Figure S6: every feature set, intervals from ``n_resamples``), ``transfer_tsne.{png,pdf}`` and
    ``transfer_tsne.csv`` (Figure 4B: t-SNE of up to ``n_tsne`` transfer cells' headline-layer
    features, ``tsne`` settings of :func:`deepyeast.analysis.interpret.tsne.tsne_embedding`).
    ``context``: the seed of subsampling, forests and bootstrap, ``jobs`` worker processes (one
    feature set each), the command recorded.  ``features.features_note``: what the CellProfiler
    features are, shown next to their numbers.  Returns the JSON dict.
    """
    from deepyeast.analysis.interpret.tsne import plot_tsne_grid, tsne_embedding

    log, seed, jobs, command = context.say, context.seed, context.jobs, context.command
    feature_dirs, labels, blobs, cp_csv = features.dirs, features.labels, features.blobs, features.cp_csv
    reduce, model, features_note = features.reduce, features.model, features.features_note
    n_per_class, grid, n_trees, n_resamples = settings.n_per_class, settings.grid, settings.n_trees, settings.n_resamples
    headline_layer, headline_resamples = settings.headline_layer, settings.headline_resamples
    tsne, n_tsne = settings.tsne, settings.n_tsne
    n_classes = len(class_names)
    sets, y, split, paths = load_feature_sets(feature_dirs, labels, blobs, cp_csv, reduce, model)
    if y.max() >= n_classes:
        raise InputError(f"label {int(y.max())} outside the {n_classes}-class table")
    check_splits(y, split, n_classes, class_names, ", ".join(map(str, np.atleast_1d(feature_dirs))))
    if headline_layer not in sets:
        raise InputError(f"{', '.join(map(str, np.atleast_1d(feature_dirs)))}: no {headline_layer} features, the "
                         f"headline layer (feature sets: {', '.join(sets)}); extract them or choose another with "
                         "--headline-layer")
    rows = []
    # one process per feature set, each forest single-threaded: the forests are small (4 to
    # 2,000 cells), so per-tree overhead, not arithmetic, dominates and threads would mostly wait
    # on each other.  Results do not depend on the worker count (every forest has random_state).
    args = [(name, x, y, split, n_classes, settings, seed, 1) for name, x in sets.items()]
    clear_result(out_dir)
    with process_pool(worker_count(jobs, len(sets))) as pool:
        if pool is None:
            curves = [transfer_curve(*a) for a in progress(args, desc="transfer", unit="feature set")]
        else:
            curves = list(progress(pool.map(_transfer_curve_args, args), total=len(args), desc="transfer",
                                   unit="feature set"))
    for (name, x), curve in zip(sets.items(), curves):
        if name in (headline_layer, CELLPROFILER):  # Figure 4C: the paper's 20,000 resamples
            for r in curve:
                r["lo"], r["hi"] = bootstrap_accuracy_interval(r["correct"], r["total"], headline_resamples, seed=seed)
        rows += curve
        log(f"[transfer] {name} ({x.shape[1]} features): " +
            ", ".join(f"n={r['n_per_class']}: {r['accuracy']:.3f}" for r in curve))
    network = [n for n in sets if n != CELLPROFILER]
    best_layer = max(network, key=lambda n: np.mean([r["val_accuracy"] for r in rows if r["feature_set"] == n]),
                     default=None)
    counts = {s: int(np.sum(split == s)) for s in ("train", "val", "test")}
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    tsne_rows = np.sort(rng.choice(len(paths), size=min(n_tsne, len(paths)), replace=False))
    embedding = tsne_embedding(sets[headline_layer][tsne_rows], seed, mode=tsne)
    plot_tsne_grid({headline_layer: embedding}, y[tsne_rows], class_names, os.path.join(out_dir, "transfer_tsne"),
                   title=f"t-SNE of {len(tsne_rows):,} transfer cells' {headline_layer} features")
    write_csv(os.path.join(out_dir, "transfer_tsne.csv"),
              [dict(path=paths[i], split=split[i], label=int(y[i]), x=float(embedding[j, 0]), y=float(embedding[j, 1]))
               for j, i in enumerate(tsne_rows)])
    result = dict(
        classes=list(class_names), cells=counts, seed=seed, n_trees=n_trees, max_features_grid=list(grid),
        n_boot=n_resamples, headline_layer=headline_layer, headline_resamples=headline_resamples,
        conv_reduction=reduce, feature_dims={n: int(x.shape[1]) for n, x in sets.items()},
        n_per_class_requested=list(n_per_class), best_layer=best_layer, tsne=tsne, tsne_cells=int(len(tsne_rows)),
        cellprofiler_features=features_note, rows=rows,
        transfer_accuracy={name: {str(r["n_per_class"]): dict(accuracy=r["accuracy"], correct=r["correct"],
                                                              total=r["total"], lo=r["lo"], hi=r["hi"])
                                  for r in rows if r["feature_set"] == name} for name in sets})
    plot_transfer(rows, list(sets), os.path.join(out_dir, "transfer_layers"),
                  f"Figure S6: every feature set (best on validation: {best_layer})", highlight=best_layer)
    main_sets = [s for s in (headline_layer, CELLPROFILER) if s in sets]
    plot_transfer(rows, main_sets, os.path.join(out_dir, "transfer_accuracy"),
                  f"Figure 4C: transfer to new compartments, {headline_layer} vs CellProfiler features")
    write_results_csv(os.path.join(out_dir, "transfer.csv"), rows)
    atomic_write_json(os.path.join(out_dir, "transfer.json"), result, indent=2)
    write_transfer_result(out_dir, result, command=command)  # last: marks a finished step
    return result


def transfer_metrics(result):
    """The ``transfer_accuracy`` metric of ``metrics.json``: {headline_layer, network (its curve),
    cellprofiler, best_layer (best on validation, Figure S6), by_feature_set}, each curve
    n -> count {value, correct, total, lo, hi}."""
    by_set = {fs: {n: count_metric(c["correct"], c["total"], c["lo"], c["hi"]) for n, c in curve.items()}
              for fs, curve in result["transfer_accuracy"].items()}
    head = result.get("headline_layer", HEADLINE_LAYER)
    return {"headline_layer": head, "network": by_set.get(head), "cellprofiler": by_set.get(CELLPROFILER),
            "best_layer": result["best_layer"], "by_feature_set": by_set}


def write_transfer_result(out_dir, result, command=None):
    """The result manifest of transfer learning (see :mod:`deepyeast.utils.manifest`)."""
    ta = transfer_metrics(result)
    head, best = ta["headline_layer"], ta["best_layer"]
    metrics = {"transfer_accuracy": ta}
    headlines = []
    cp_note = result.get("cellprofiler_features") or {}
    for fs, key, label in ((head, "transfer_network_accuracy", f"Transfer, network features ({head})"),
                           (CELLPROFILER, "transfer_cellprofiler_accuracy", "Transfer, CellProfiler features")):
        curve = ta["by_feature_set"].get(fs)
        if curve:
            largest = max(curve, key=int)
            metrics[key] = curve[largest]
            headlines.append(headline(key, f"{label}, {largest} cells per class", "cells"))
    sizes = sorted({int(n) for curve in ta["by_feature_set"].values() for n in curve})

    def cell(fs, n):
        c = (ta["by_feature_set"].get(fs) or {}).get(str(n))
        return "—" if c is None else f"{c['value']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]"

    rows = [[n, cell(head, n), cell(CELLPROFILER, n)] for n in sizes]
    cells = result["cells"]
    text = (f"The trained network is a fixed feature extractor for cells of {len(result['classes'])} compartments it "
            f"never saw ({', '.join(result['classes'])}). For each feature set a random forest learns from 1 to "
            f"{sizes[-1] if sizes else 0} cells per class ({cells['train']:,} training cells in all), is chosen on "
            f"{cells['val']:,} validation cells and scored on {cells['test']:,} test cells. As in the paper the "
            f"headline is the forest on {head} features (Figure 4C, intervals from "
            f"{result.get('headline_resamples', HEADLINE_RESAMPLES):,} bootstrap resamples); every layer is compared "
            f"in Figure S6, where {best} is best on the validation cells.")
    if head == HEADLINE_LAYER:
        text += " " + FC1_NOTE
    if cp_note.get("text"):
        text += f" CellProfiler features: {cp_note['text']}"
    tables = [table("Figure 4C: test accuracy by training cells per class",
                    ["cells per class", f"{head} [95% interval]", "CellProfiler [95% interval]"], rows,
                    f"Accuracy: share of the test cells called right; intervals from "
                    f"{result.get('headline_resamples', HEADLINE_RESAMPLES):,} bootstrap resamples of the test cells.",
                    file="transfer.csv")]
    layers = [fs for fs in ta["by_feature_set"] if fs != CELLPROFILER]
    largest = sizes[-1] if sizes else None
    if largest is not None:
        val = {fs: np.mean([r["val_accuracy"] for r in result["rows"] if r["feature_set"] == fs])
               for fs in layers} if result.get("rows") else {}
        tables.append(table(
            "Figure S6: every layer", ["layer", "mean validation accuracy over the curve",
                                       f"test accuracy, {largest} cells per class [95% interval]"],
            [[fs + (" (best on validation)" if fs == best else "") + (" (headline)" if fs == head else ""),
              f"{val[fs]:.3f}" if fs in val else "—", cell(fs, largest)] for fs in layers],
            f"The layer best on validation is chosen by the mean validation accuracy over the curve; intervals "
            f"from {result.get('n_boot', 0):,} resamples (the headline's from "
            f"{result.get('headline_resamples', HEADLINE_RESAMPLES):,})."))
    figures = [f for f in [
        figure("transfer_accuracy.png", f"Figure 4C: transfer accuracy against training cells per class, {head} "
                                        "features vs CellProfiler features; bands: 95% bootstrap intervals."),
        figure("transfer_tsne.png", f"Figure 4B: t-SNE of {result.get('tsne_cells', 0):,} transfer cells' {head} "
                                    f"features, coloured by compartment ({result.get('tsne', 'fast')} t-SNE settings)."),
        figure("transfer_layers.png", f"Figure S6: transfer accuracy against training cells per class for every "
                                      f"layer's features ({best}: best on validation).")]
        if os.path.exists(os.path.join(out_dir, f["file"]))]
    missing = [] if CELLPROFILER in ta["by_feature_set"] else [missing_part(
        "the CellProfiler curve of Figure 4C", "no CellProfiler features of the transfer cells were given",
        "--cellprofiler CSV; CP_FEATURES=DIR with transfer_{train,val,test}.csv or transfer.csv")]
    return write_result(out_dir, Result(
        "transfer", "Transfer learning to new compartments (paper Figures 4B, 4C, S6)", text,
        metrics=metrics, headline=headlines, figures=figures, tables=tables, missing=missing,
        details={k: v for k, v in result.items() if k not in ("rows", "transfer_accuracy")},
        seeds={"seed": result["seed"]}, command=command, order=40))


def write_results_csv(path, rows):
    """Write result rows with ``RESULT_COLUMNS`` atomically."""
    write_csv(path, rows, RESULT_COLUMNS)


def plot_transfer(rows, feature_sets, stem, title, highlight=None):
    """Accuracy (with 95% interval band) vs examples per class, one line per feature set, log x;
    ``highlight``: a feature set drawn thicker (the best layer on validation)."""
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    cmap = plt.get_cmap("tab20")
    for i, name in enumerate(feature_sets):
        curve = [r for r in rows if r["feature_set"] == name]
        n = [r["n_per_class"] for r in curve]
        style = dict(color="black", ls="--", lw=2) if name == CELLPROFILER else \
            dict(color=cmap(i % 20), lw=3 if name == highlight else 1.5)
        ax.plot(n, [r["accuracy"] for r in curve], marker="o", ms=3, label=name, **style)
        ax.fill_between(n, [r["lo"] for r in curve], [r["hi"] for r in curve], color=style["color"], alpha=0.12)
    ax.set_xscale("log")
    sizes = sorted({r["n_per_class"] for r in rows if r["feature_set"] in feature_sets})
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training examples per class")
    ax.set_ylabel("test accuracy (95% bootstrap interval)")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    save_figure(fig, stem)
