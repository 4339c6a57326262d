"""The paper's random-forest baseline: the grid search and the baseline step (R's ``randomForest``).

The grid search runs each (mtry, nodesize) forest as one task (:func:`grid_point_task`:
grown to the largest ntree, every smaller ntree scored as its first trees), on a Dask cluster or
in this process (:mod:`deepyeast.analysis.cluster`).  Every task seeds R's generator itself, so
the numbers do not depend on where it runs.  A cell's class is randomForest's ``predict()``
class: ties between classes are broken at random (R's generator, seeded with the grid point's
seed), exactly as randomForest's C code does it (``rf_vote_class`` in ``random_forest.R``; of two
tied classes the later wins with probability 1/3).  R itself is reached through
:mod:`deepyeast.analysis.rbridge`; the quality filter's forests are in
:mod:`deepyeast.analysis.quality_filter`.
"""

import dataclasses
import json
import os
import uuid

import numpy as np

from deepyeast.analysis.rbridge import (data_frame_rows, impute_features, init_r, r_array, r_inputs,
                                        session)
from deepyeast.utils.io import InputError, atomic_write_text
from deepyeast.utils.run_context import RunContext


GRIDS = {"small": "RF_SMALL_GRID", "paper": "RF_PAPER_GRID"}
"""Named grids (R variables in ``random_forest.R``)."""

def resolve_grid(grid):
    """``"small"``/``"paper"`` or a dict ntree/mtry/nodesize -> dict of int lists."""
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r} (known: {sorted(GRIDS)})")
        with session() as ro:
            g = ro.r[GRIDS[grid]]
            return {k: [int(v) for v in g.rx2(k)] for k in ("ntree", "mtry", "nodesize")}
    missing = {"ntree", "mtry", "nodesize"} - set(grid)
    if missing:
        raise ValueError(f"grid lacks {sorted(missing)}")
    return {k: [int(v) for v in grid[k]] for k in ("ntree", "mtry", "nodesize")}


def grid_pairs(grid, n_features, seed=0):
    """The (mtry, nodesize) forests of a grid, each with its seed (R ``rf_grid_pairs``).

    Returns a list of dicts ``mtry, nodesize, seed``: mtry capped at ``n_features``
    (duplicates dropped), mtry varying fastest, seeds ``seed, seed + 1, ...``.
    """
    g = resolve_grid(grid)
    with session() as ro:
        r_grid = ro.ListVector({k: ro.IntVector(v) for k, v in g.items()})
        return data_frame_rows(ro.r["rf_grid_pairs"](r_grid, int(n_features), int(seed)))


# --------------------------------------------------------------------------- grid points as tasks

def grid_point_task(pair, shared):
    """One grid task: fit the (mtry, nodesize) forest with ``max(ks)`` trees, score every prefix.

    pair: dict mtry, nodesize, seed; shared: dict token, x_train, y_train, x_val, y_val,
    x_test (or None), ks (int list).  Runs R ``rf_grid_point`` in this process and returns
    plain numpy data: ``table`` (list of dicts, one per ntree), ``classes`` (int class of
    each R level), ``val_counts`` / ``test_counts`` (int32 N x K x len(ks) votes),
    ``val_class`` / ``test_class`` (int64 N x len(ks), class indices).
    """
    with session() as ro:
        r = r_inputs(shared)
        res = ro.r["rf_grid_point"](r["x_train"], r["y_train"], r["x_val"], r["y_val"], ro.IntVector(shared["ks"]),
                                    int(pair["mtry"]), int(pair["nodesize"]), int(pair["seed"]),
                                    **({} if r["x_test"] is None else {"x_test": r["x_test"]}))
        classes = np.array([int(c) for c in res.rx2("levels")], dtype=np.int64)
        out = {"table": data_frame_rows(res.rx2("table")), "classes": classes}
        for part in ("val", "test"):
            if part == "test" and r["x_test"] is None:
                continue
            out[f"{part}_counts"] = r_array(res.rx2(f"{part}_counts"), np.int32)
            out[f"{part}_class"] = classes[r_array(res.rx2(f"{part}_class"), np.int64) - 1]
        return out


def best_key(row):
    """Sort key of the grid choice (R ``rf_best_row``): most validation cells right; ties: fewer
    trees, then smaller mtry, then larger nodesize."""
    return (-row["val_correct"], row["ntree"], row["mtry"], -row["nodesize"])


def _fractions(counts, ntree, classes, n_classes):
    """Vote counts N x K (columns = ``classes``) -> float64 N x n_classes vote fractions."""
    out = np.zeros((counts.shape[0], n_classes))
    for j, c in enumerate(classes):
        if not 0 <= c < n_classes:
            raise ValueError(f"class {c} outside 0..{n_classes - 1}")
        out[:, c] = counts[:, j] / float(ntree)
    return out


def grid_search(x_train, y_train, x_val, y_val, grid="small", x_test=None, n_classes=None, context=RunContext()):
    """Score every grid point on the validation set; each (mtry, nodesize) forest is one task.

    x_*: float64 N x F (finite); y_*: int class indices.  ``context``: the seed of the grid's
    forests, and where they run (``scheduler``, ``jobs``: see
    :class:`deepyeast.analysis.cluster.TaskRunner`; "none": in this process).
    Returns a dict:

    * ``table``: one dict per grid point (ntree, mtry, nodesize, seed, val_correct,
      val_total, val_accuracy), pairs in :func:`grid_pairs` order, ntree ascending;
    * ``best``: the chosen row (:func:`best_key`);
    * ``val_prob``, ``val_pred``: the chosen forest's vote fractions (float64 N x
      n_classes) and classes (int64; randomForest's tie rule, seeded with the point's
      seed) of the validation cells; ``test_prob``, ``test_pred`` the same of ``x_test``
      (None without it).  These are what ``fit(x_train, y_train, best)`` gives --
      ``predict_proba`` and ``predict(x, best["seed"])`` -- without growing it again.

    The result does not depend on the scheduler or the number of workers.
    """
    from deepyeast.analysis.cluster import TaskRunner

    log, seed = context.say, context.seed
    x_train, x_val = np.asarray(x_train, np.float64), np.asarray(x_val, np.float64)
    if n_classes is None:
        n_classes = int(max(np.max(y_train), np.max(y_val))) + 1
    g = resolve_grid(grid)
    ks = sorted(set(g["ntree"]))
    pairs = grid_pairs(g, x_train.shape[1], seed)
    shared = {"token": uuid.uuid4().hex, "x_train": x_train, "y_train": np.asarray(y_train, np.int64),
              "x_val": x_val, "y_val": np.asarray(y_val, np.int64),
              "x_test": None if x_test is None else np.asarray(x_test, np.float64), "ks": ks}
    tables = [None] * len(pairs)
    best, best_arrays = None, None
    with TaskRunner(context.scheduler, context.jobs, worker_setup=init_r, log=log) as runner:
        log(f"random forest: {len(pairs)} forests of {max(ks)} trees (ntree {ks} scored as prefixes) "
            f"on {runner.n_workers} worker(s)")
        data = runner.share(shared)
        for n_done, (i, res) in enumerate(runner.as_completed(grid_point_task, pairs, data), 1):
            tables[i] = res["table"]
            row = min(res["table"], key=best_key)
            if best is None or best_key(row) < best_key(best):
                j = ks.index(row["ntree"])
                best = row
                best_arrays = {k: (v[:, :, j] if k.endswith("_counts") else v[:, j])
                               for k, v in res.items() if k.endswith(("_counts", "_class"))}
                best_arrays["classes"] = res["classes"]
            log(f"random forest: forest {n_done}/{len(pairs)} (mtry {pairs[i]['mtry']}, nodesize "
                f"{pairs[i]['nodesize']}) best val accuracy {max(r['val_accuracy'] for r in res['table']):.4f}")
    out = {"table": [r for t in tables for r in t], "best": best}
    for part in ("val", "test"):
        if f"{part}_counts" in best_arrays:
            out[f"{part}_prob"] = _fractions(best_arrays[f"{part}_counts"], best["ntree"], best_arrays["classes"],
                                             n_classes)
            out[f"{part}_pred"] = best_arrays[f"{part}_class"].astype(np.int64)
        else:
            out[f"{part}_prob"] = out[f"{part}_pred"] = None
    return out


# --------------------------------------------------------------------------- the baseline step


def labels_from_lists(list_paths):
    """Map cell path -> (label, class-table size) from split list files."""
    from deepyeast.data.lists import class_names_for_list, read_split_list

    labels, sizes = {}, set()
    for lp in list_paths:
        names = class_names_for_list(lp)
        sizes.add(len(names))
        entries, _ = read_split_list(lp, names)
        for rel, lab in entries:
            if rel in labels and labels[rel] != lab:
                raise InputError(f"{lp}: {rel} has label {lab}, another list says {labels[rel]}")
            labels[rel] = lab
    if len(sizes) > 1:
        raise InputError(f"lists {list_paths} mix class tables of sizes {sorted(sizes)}")
    return labels, (sizes.pop() if sizes else None)


def _labelled(csv_path, labels):
    from deepyeast.analysis.cp_features import read_feature_csv

    paths, names, values = read_feature_csv(csv_path)
    missing = [p for p in paths if p not in labels]
    if missing:
        raise InputError(f"{csv_path}: cell {missing[0]!r} is in no label list ({len(missing)} cells unlabelled)")
    return paths, names, values, np.array([labels[p] for p in paths], dtype=np.int64)


def _table(paths, labels, probs, pred, n_classes, split_name, source):
    from deepyeast.data.lists import protein_of
    from deepyeast.constants import class_names_for
    from deepyeast.analysis.prediction_table import Predictions

    return Predictions(
        path=np.asarray(paths, dtype=object), protein=np.asarray([protein_of(p) for p in paths], dtype=object),
        split=np.asarray([split_name] * len(paths), dtype=object), label=np.asarray(labels, np.int64), pred=pred,
        probs=probs, class_names=class_names_for(n_classes), source=os.fspath(source),
    )


@dataclasses.dataclass(frozen=True)
class ForestFiles:
    """The files of the random-forest baseline: feature CSVs in (``train``, ``val``, ``test``:
    ``path,<feature>...``), the split lists giving the labels (``labels_from``), and out: the test
    cells' predictions table (``out``), optionally the validation cells' (``val_out``) and the
    summary JSON (``summary``)."""

    train: str
    val: str
    test: str
    labels_from: tuple
    out: str
    val_out: str = None
    summary: str = None


def run_baseline(files, grid="small", split_name="test", context=RunContext()):
    """The random-forest baseline from feature CSVs to a predictions table.

    ``files``: :class:`ForestFiles`.  Chooses (ntree, mtry, nodesize) on the validation set
    (:func:`grid_search`, one task per forest on ``context.scheduler``, seeded with
    ``context.seed``) and writes, from the chosen forest, the test cells' predictions table
    (``path,protein,split,label,pred,prob_0..``; ``pred`` is randomForest's class, ties broken
    as its ``predict`` does) to ``files.out``, and with ``files.val_out`` the validation cells'
    table (split ``val``; the quality filter picks its training cells from it).
    ``files.summary`` gets the grid table and choice.  Returns the summary dict; it does not
    depend on the scheduler.
    """
    from deepyeast.analysis.prediction_table import write_predictions

    log, seed = context.say, context.seed
    train_csv, val_csv, test_csv, out_csv = files.train, files.val, files.test, files.out
    list_paths, val_out, summary_json = files.labels_from, files.val_out, files.summary

    labels, n_classes = labels_from_lists(list_paths)
    tr_p, tr_names, x_tr, y_tr = _labelled(train_csv, labels)
    va_p, va_names, x_va, y_va = _labelled(val_csv, labels)
    te_p, te_names, x_te, y_te = _labelled(test_csv, labels)
    for path, names in ((val_csv, va_names), (test_csv, te_names)):
        if names != tr_names:
            raise InputError(f"{path}: feature columns differ from {train_csv}")
    x_tr, x_va, x_te, _ = impute_features(x_tr, x_va, x_te)
    log(f"random forest: {len(tr_p)} train, {len(va_p)} val, {len(te_p)} test cells, {len(tr_names)} features, "
        f"grid {grid}")
    res = grid_search(x_tr, y_tr, x_va, y_va, grid=grid, x_test=x_te, n_classes=n_classes, context=context)
    best = res["best"]
    log(f"random forest: best {best}")
    # a class may be absent from a small test set, so no "every class present" check here
    table_te = _table(te_p, y_te, res["test_prob"], res["test_pred"], n_classes, split_name, out_csv)
    if val_out:
        write_predictions(val_out, _table(va_p, y_va, res["val_prob"], res["val_pred"], n_classes, "val", val_out))
    write_predictions(out_csv, table_te)
    correct = int((table_te.pred == y_te).sum())
    summary = {
        "grid": resolve_grid(grid) if isinstance(grid, str) else grid,
        "grid_name": grid if isinstance(grid, str) else "custom",
        "seed": int(seed),
        "tie_rule": "randomForest's predict(): ties between classes broken at random, R's generator seeded "
                    "with the grid point's seed",
        "n_features": len(tr_names),
        "n_train": len(tr_p), "n_val": len(va_p), "n_test": len(te_p),
        "best": best,
        "table": res["table"],
        "test_accuracy": {"value": correct / max(len(te_p), 1), "correct": correct, "total": len(te_p)},
    }
    if summary_json:
        atomic_write_text(summary_json, json.dumps(summary, indent=1) + "\n")
    return summary


# --------------------------------------------------------------------------- the baseline's result manifest


def write_forest_result(out_dir, summary, features, command=None):
    """The result manifest of the random-forest baseline (see :mod:`deepyeast.utils.manifest`):
    the features it learned from (``features``: :func:`deepyeast.analysis.cp_features.describe_features`,
    named next to every forest number of the report), the grid, the choice on validation."""
    from deepyeast.utils.manifest import Result, table, write_result

    best = summary["best"]
    grid = summary["grid"]
    acc = summary["test_accuracy"]
    text = (f"R randomForest on {features['text']} Trained on {summary['n_train']:,} cells; ntree, mtry and nodesize "
            f"were chosen on {summary['n_val']:,} validation cells over the {summary['grid_name']} grid "
            f"(ntree {grid['ntree']}, mtry {grid['mtry']}, nodesize {grid['nodesize']}): ntree {best.get('ntree')}, "
            f"mtry {best.get('mtry')}, nodesize {best.get('nodesize')}. It called {acc['correct']:,} of "
            f"{acc['total']:,} test cells right; its per-cell and per-protein results are in the sections below.")
    rows = sorted(summary["table"], key=lambda r: -float(r.get("val_accuracy") or 0))[:10]
    return write_result(
        out_dir, Result("forest", "The random-forest baseline and its features", text,
        tables=[table("Grid points, best on validation first",
                      ["ntree", "mtry", "nodesize", "validation accuracy"],
                      [[r.get("ntree"), r.get("mtry"), r.get("nodesize"), f"{float(r.get('val_accuracy')):.3f}"]
                       for r in rows],
                      "Validation accuracy: share of the validation cells called right." +
                      (f" First 10 of {len(summary['table'])}." if len(summary["table"]) > 10 else ""))],
        details={"cellprofiler_features": features, **{k: v for k, v in summary.items() if k != "table"}},
        seeds={"seed": summary.get("seed")}, command=command, order=15))
