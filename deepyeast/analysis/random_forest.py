"""The paper's random-forest baseline: R's ``randomForest`` through rpy2.

The forest code lives in ``random_forest.R``, package data beside this module (usable from R
directly); this module moves numpy arrays into R and back, and builds the predictions table.

The grid search runs each (mtry, nodesize) forest as one task (:func:`grid_point_task`:
grown to the largest ntree, every smaller ntree scored as its first trees), and the
quality filter's cross-validation each (point, fold) forest (:func:`quality_fold_task`),
on a Dask cluster or in this process (:mod:`deepyeast.analysis.cluster`).  Every task
seeds R's generator itself, so the numbers do not depend on where it runs.  A cell's
class is randomForest's ``predict()`` class: ties between classes are broken at random
(R's generator, seeded with the grid point's seed), exactly as randomForest's C code
does it (``rf_vote_class`` in the R file; of two tied classes the later wins with
probability 1/3).

Arrays: features are float64 ``N x F`` (NaN allowed on input, imputed by
:func:`impute_features` with the training medians, since R's randomForest
refuses missing values); labels are int class indices; probabilities come back
as float64 ``N x K`` with columns in class-index order (a class absent from the
training set gets probability 0).

Requires R with the ``randomForest`` package (Debian: ``r-base-core``,
``r-cran-randomforest``) and ``rpy2<3.6``.
"""

import contextlib
import json
import logging
import os
import threading
import uuid
import warnings

import numpy as np

from deepyeast.utils.io import InputError, atomic_write_text

_log = logging.getLogger(__name__)

R_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "random_forest.R")
"""The R source (package data beside this module) defining rf_grid_point, rf_grid_search, rf_fit,
rf_quality_fold, rf_quality_cv, ..."""

GRIDS = {"small": "RF_SMALL_GRID", "paper": "RF_PAPER_GRID"}
"""Named grids (R variables in ``random_forest.R``)."""

_R = None
_R_LOCK = threading.RLock()
"""R is single-threaded: every call into it holds this lock (a Dask worker may run tasks in several threads)."""


def have_r():
    """True when R and rpy2 are installed (and then ``random_forest.R`` loads); False only when
    one of them is truly absent: no ``R`` program on the PATH, or rpy2 not importable.

    Anything else -- an error in ``random_forest.R``, the randomForest package missing, rpy2
    failing to start R -- is raised, so that a broken installation or script fails the tests that
    need R instead of turning them into skips.
    """
    import importlib.util
    import shutil

    if shutil.which("R") is None or importlib.util.find_spec("rpy2") is None:
        return False
    init_r()
    return True


def init_r():
    """Start the embedded R session with ``random_forest.R`` (:data:`R_SCRIPT`) sourced (once per process).

    A Dask worker runs this in its main thread before its first task (``worker_setup``).
    """
    global _R
    with _R_LOCK:
        if _R is None:
            # rpy2 prepends R's library folders (and the system's) to LD_LIBRARY_PATH in
            # os.environ; that only affects child processes, where it makes a non-system
            # Python (a Dask worker spawned later) load the system's libpython: restore it.
            saved = os.environ.get("LD_LIBRARY_PATH")
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="R is not initialized by the main thread")
                    import rpy2.robjects as ro
                    from rpy2.robjects.conversion import localconverter

                    with localconverter(ro.default_converter):
                        ro.r["source"](os.path.normpath(R_SCRIPT))
            except Exception as exc:  # ImportError, or R missing at rpy2 init
                raise RuntimeError(
                    f"the random forest needs rpy2<3.6 and R with randomForest ({exc}); install r-base-core, "
                    "r-cran-randomforest and `pip install 'rpy2<3.6'`"
                ) from exc
            finally:
                if saved is None:
                    os.environ.pop("LD_LIBRARY_PATH", None)
                else:
                    os.environ["LD_LIBRARY_PATH"] = saved
            _R = ro
    return _R


@contextlib.contextmanager
def _session():
    """The R session for this thread: holds the R lock, with rpy2's default conversion rules."""
    ro = init_r()
    from rpy2.robjects.conversion import localconverter

    with _R_LOCK, localconverter(ro.default_converter):
        yield ro


def _matrix(x):
    """float64 numpy N x F -> R numeric matrix (copied)."""
    from rpy2.robjects import default_converter, numpy2ri
    from rpy2.robjects.conversion import localconverter

    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be N x F, got shape {x.shape}")
    with localconverter(default_converter + numpy2ri.converter) as cv:
        return cv.py2rpy(x)


def _ints(y):
    return init_r().IntVector([int(v) for v in np.asarray(y).ravel()])


def _array(r_obj, dtype):
    """An R vector/matrix/array -> numpy array of its dims (R's column-major order kept)."""
    a = np.asarray(r_obj, dtype=dtype)
    try:
        dims = tuple(int(d) for d in r_obj.do_slot("dim"))
    except LookupError:
        return a
    return a.reshape(dims, order="F")


def _data_frame_rows(df):
    """An R data.frame -> list of dicts (numbers as int/float, strings as str)."""
    names = list(df.names)
    cols = [list(df.rx2(n)) for n in names]
    rows = []
    for values in zip(*cols):
        row = {}
        for n, v in zip(names, values):
            if isinstance(v, str):
                row[n] = v
            elif float(v).is_integer() and n not in ("val_accuracy",) and not n.startswith("cv_"):
                row[n] = int(v)
            else:
                row[n] = float(v)
        rows.append(row)
    return rows


def impute_features(train, *others):
    """Replace non-finite values by the training column medians (0 for an all-missing column).

    train: float N x F; others: float M_i x F.  Returns ``(train, *others, medians)``
    as new float64 arrays.
    """
    train = np.array(train, dtype=np.float64)
    finite = np.isfinite(train)
    masked = np.where(finite, train, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(masked, axis=0) if train.shape[0] else np.zeros(train.shape[1])
    med = np.where(np.isfinite(med), med, 0.0)
    out = []
    for a in (train,) + others:
        a = np.array(a, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != train.shape[1]:
            raise ValueError(f"feature matrix of shape {a.shape} does not match training width {train.shape[1]}")
        bad = ~np.isfinite(a)
        a[bad] = np.broadcast_to(med, a.shape)[bad]
        out.append(a)
    return (*out, med)


class RandomForest:
    """A fitted R randomForest classifier (held in the embedded R session).

    ``params``: dict ntree, mtry, nodesize, seed.  ``classes``: int class indices
    the forest knows, in R's level order.
    """

    def __init__(self, r_model, params, classes):
        self.r_model = r_model
        self.params = dict(params)
        self.classes = list(classes)

    def predict_proba(self, x, n_classes):
        """Vote fractions, float64 ``N x n_classes`` (columns = class indices)."""
        with _session() as ro:
            p = ro.r["rf_predict_proba"](self.r_model, _matrix(x))
            return _prob_columns(p, len(x), self.classes, n_classes)

    def predict(self, x, seed):
        """Classes (int64 N) as randomForest's ``predict`` gives them after ``set.seed(seed)``."""
        with _session() as ro:
            ro.r["set.seed"](int(seed))
            pred = ro.r["predict"](self.r_model, _matrix(x))
            return np.array([int(v) for v in ro.r["as.character"](pred)], dtype=np.int64)


def resolve_grid(grid):
    """``"small"``/``"paper"`` or a dict ntree/mtry/nodesize -> dict of int lists."""
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r} (known: {sorted(GRIDS)})")
        with _session() as ro:
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
    with _session() as ro:
        r_grid = ro.ListVector({k: ro.IntVector(v) for k, v in g.items()})
        return _data_frame_rows(ro.r["rf_grid_pairs"](r_grid, int(n_features), int(seed)))


# --------------------------------------------------------------------------- grid points as tasks

_WORKER_INPUTS = {"token": None, "r": None}
"""Per process: the R copies of the last shared inputs (converted once, not per task)."""


def _r_inputs(shared):
    """R objects of the shared task inputs, converted on the first task of this process."""
    if _WORKER_INPUTS["token"] != shared["token"]:
        _WORKER_INPUTS["token"], _WORKER_INPUTS["r"] = None, None
        conv = {}
        for k, v in shared.items():
            if k == "token" or v is None:
                conv[k] = None if k != "token" else v
            elif isinstance(v, np.ndarray) and v.ndim == 2:
                conv[k] = _matrix(v)
            else:
                conv[k] = _ints(v)
        _WORKER_INPUTS["token"], _WORKER_INPUTS["r"] = shared["token"], conv
    return _WORKER_INPUTS["r"]


def grid_point_task(pair, shared):
    """One grid task: fit the (mtry, nodesize) forest with ``max(ks)`` trees, score every prefix.

    pair: dict mtry, nodesize, seed; shared: dict token, x_train, y_train, x_val, y_val,
    x_test (or None), ks (int list).  Runs R ``rf_grid_point`` in this process and returns
    plain numpy data: ``table`` (list of dicts, one per ntree), ``classes`` (int class of
    each R level), ``val_counts`` / ``test_counts`` (int32 N x K x len(ks) votes),
    ``val_class`` / ``test_class`` (int64 N x len(ks), class indices).
    """
    with _session() as ro:
        r = _r_inputs(shared)
        res = ro.r["rf_grid_point"](r["x_train"], r["y_train"], r["x_val"], r["y_val"], ro.IntVector(shared["ks"]),
                                    int(pair["mtry"]), int(pair["nodesize"]), int(pair["seed"]),
                                    **({} if r["x_test"] is None else {"x_test": r["x_test"]}))
        classes = np.array([int(c) for c in res.rx2("levels")], dtype=np.int64)
        out = {"table": _data_frame_rows(res.rx2("table")), "classes": classes}
        for part in ("val", "test"):
            if part == "test" and r["x_test"] is None:
                continue
            out[f"{part}_counts"] = _array(res.rx2(f"{part}_counts"), np.int32)
            out[f"{part}_class"] = classes[_array(res.rx2(f"{part}_class"), np.int64) - 1]
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


def grid_search(x_train, y_train, x_val, y_val, grid="small", seed=0, x_test=None, n_classes=None,
                scheduler="none", jobs=1, log=None):
    """Score every grid point on the validation set; each (mtry, nodesize) forest is one task.

    x_*: float64 N x F (finite); y_*: int class indices.  scheduler / jobs: see
    :class:`deepyeast.analysis.cluster.TaskRunner` ("none": in this process).
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

    log = log or (lambda *_: None)
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
    with TaskRunner(scheduler, jobs, worker_setup=init_r, log=log) as runner:
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


def _prob_columns(r_prob, n_rows, classes, n_classes):
    """R N x K' probability matrix with class-index column names -> float64 N x n_classes."""
    p = np.asarray(r_prob, dtype=np.float64).reshape(n_rows, len(classes), order="F")
    out = np.zeros((n_rows, n_classes))
    for j, c in enumerate(classes):
        if not 0 <= c < n_classes:
            raise ValueError(f"class {c} outside 0..{n_classes - 1}")
        out[:, c] = p[:, j]
    return out


def fit(x, y, params):
    """Fit one forest with ``params`` (ntree, mtry, nodesize, seed) -> :class:`RandomForest`."""
    with _session() as ro:
        p = ro.ListVector({k: int(params[k]) for k in ("ntree", "mtry", "nodesize", "seed")})
        model = ro.r["rf_fit"](_matrix(x), _ints(y), p)
        classes = [int(c) for c in ro.r["levels"](model.rx2("y"))]
        return RandomForest(model, params, classes)


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
    from deepyeast.analysis.predictions import Predictions

    return Predictions(
        path=np.asarray(paths, dtype=object), protein=np.asarray([protein_of(p) for p in paths], dtype=object),
        split=np.asarray([split_name] * len(paths), dtype=object), label=np.asarray(labels, np.int64), pred=pred,
        probs=probs, class_names=class_names_for(n_classes), source=os.fspath(source),
    )


def run_baseline(train_csv, val_csv, test_csv, list_paths, out_csv, grid="small", seed=0, summary_json=None,
                 split_name="test", val_out=None, scheduler="none", jobs=1, log=None):
    """The random-forest baseline from feature CSVs to a predictions table.

    Chooses (ntree, mtry, nodesize) on the validation set (:func:`grid_search`, one task
    per forest on ``scheduler``) and writes, from the chosen forest, the test cells'
    predictions table (``path,protein,split,label,pred,prob_0..``; ``pred`` is
    randomForest's class, ties broken as its ``predict`` does) to ``out_csv``, and with
    ``val_out`` the validation cells' table (split ``val``; the quality filter picks its
    training cells from it).  ``summary_json`` gets the grid table and choice.  Returns
    the summary dict; it does not depend on the scheduler.
    """
    from deepyeast.analysis.predictions import write_predictions

    log = log or _log.info

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
    res = grid_search(x_tr, y_tr, x_va, y_va, grid=grid, seed=seed, x_test=x_te, n_classes=n_classes,
                      scheduler=scheduler, jobs=jobs, log=log)
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


# --------------------------------------------------------------------------- quality filter forest

QUALITY_SAMPLING = ("none", "balanced")
"""Down-sampling options of the quality filter: none, or the larger class (the cells)
down-sampled to the size of the smaller in every tree (R ``strata``/``sampsize``)."""


def quality_points(mtry, sampling, n_features):
    """The CV grid (R ``rf_quality_points``): dicts mtry, sampling; mtry capped at
    ``n_features`` (duplicates dropped), mtry varying fastest."""
    with _session() as ro:
        pts = ro.r["rf_quality_points"](ro.IntVector([int(m) for m in mtry]), ro.StrVector(list(sampling)),
                                        int(n_features))
        return _data_frame_rows(pts)


def quality_fold_task(job, shared):
    """One CV task: the forest of one grid point on all folds but ``job["fold"]``, scored on that fold.

    job: dict point, mtry, sampling, fold, seed; shared: dict token, x, is_cell, fold_ids,
    ntree.  Returns dict point, tp, tn, n1, n0 (R ``rf_quality_fold``).
    """
    with _session() as ro:
        r = _r_inputs(shared)
        c = ro.r["rf_quality_fold"](r["x"], r["is_cell"], r["fold_ids"], int(job["fold"]), int(job["mtry"]),
                                    job["sampling"], int(shared["ntree"]), 1, int(job["seed"]))
        counts = dict(zip(c.names, (int(v) for v in c)))
    return {"point": job["point"], **counts}


def quality_best(table, sampling=QUALITY_SAMPLING):
    """The quality filter's choice among CV rows (R ``rf_quality_best``): highest CV accuracy;
    ties: higher balanced accuracy, then smaller mtry, then the earlier sampling option."""
    order = list(sampling)
    return min(table, key=lambda r: (-r["cv_accuracy"], -r["cv_balanced_accuracy"], r["mtry"],
                                     order.index(r["sampling"])))


def quality_cv(x, is_cell, mtry=(2, 110, 218, 326, 435), sampling=QUALITY_SAMPLING, folds=10, ntree=100, seed=0,
               scheduler="none", jobs=1, log=None):
    """k-fold CV over mtry x down-sampling of a cell / non-cell forest, one task per point and fold.

    x: float N x F (finite); is_cell: 0/1 per row.  The folds are stratified
    (R ``rf_stratified_folds``, seeded); fold f of point p (job i = p + P * (f - 1),
    1-based, of P points) grows its forest with seed + i -- the numbers R's
    ``rf_quality_cv`` gives.  Chosen by CV accuracy (:func:`quality_best`).
    Returns ``(table, best, model)``; ``model`` is the best setting refitted on all
    rows (seed ``seed``), for :func:`quality_predict`.
    """
    from deepyeast.analysis.cluster import TaskRunner

    x = np.asarray(x, np.float64)
    is_cell = np.asarray(is_cell, np.int64)
    points = quality_points(mtry, sampling, x.shape[1])
    with _session() as ro:
        y = ro.r["factor"](_ints(is_cell), levels=ro.IntVector([0, 1]))
        fold_ids = np.array(ro.r["rf_stratified_folds"](y, int(folds), int(seed)), dtype=np.int64)
    jobs_ = [{"point": p + 1, "mtry": points[p]["mtry"], "sampling": points[p]["sampling"], "fold": f + 1,
              "seed": int(seed) + 1 + p + len(points) * f}
             for f in range(int(folds)) for p in range(len(points))]
    shared = {"token": uuid.uuid4().hex, "x": x, "is_cell": is_cell, "fold_ids": fold_ids, "ntree": int(ntree)}
    results = [None] * len(jobs_)
    with TaskRunner(scheduler, jobs, worker_setup=init_r, log=log) as runner:
        data = runner.share(shared)
        for i, res in runner.as_completed(quality_fold_task, jobs_, data):
            results[i] = res
    with _session() as ro:
        cols = ("point", "tp", "tn", "n1", "n0")
        flat = ro.IntVector([int(r[c]) for r in results for c in cols])
        res_m = ro.r["matrix"](flat, ncol=len(cols), byrow=True, dimnames=ro.r["list"](ro.NULL, ro.StrVector(cols)))
        r_points = ro.r["rf_quality_points"](ro.IntVector([int(m) for m in mtry]), ro.StrVector(list(sampling)),
                                             x.shape[1])
        table = _data_frame_rows(ro.r["rf_quality_table"](r_points, res_m))
    best = quality_best(table, sampling)
    with _session() as ro:
        model = ro.r["rf_quality_fit"](_matrix(x), _ints(is_cell), int(best["mtry"]), best["sampling"], int(ntree), 1,
                                       int(seed))
    return table, best, model


def quality_predict(model, x, seed=0):
    """``(p_cell float64 N, is_cell int64 N)``: vote fraction for "cell" and the forest's class
    (randomForest's tie rule with ``set.seed(seed)``)."""
    with _session() as ro:
        res = ro.r["rf_quality_predict"](model, _matrix(x), int(seed))
        return (np.asarray(res.rx2("p_cell"), dtype=np.float64), np.asarray(res.rx2("is_cell"), dtype=np.int64))


# --------------------------------------------------------------------------- the baseline's result manifest


def write_forest_result(out_dir, summary, features, command=None):
    """The result manifest of the random-forest baseline (see :mod:`deepyeast.utils.manifest`):
    the features it learned from (``features``: :func:`deepyeast.analysis.cp_features.describe_features`,
    named next to every forest number of the report), the grid, the choice on validation."""
    from deepyeast.utils.manifest import table, write_result

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
        out_dir, "forest", "The random-forest baseline and its features", text,
        tables=[table("Grid points, best on validation first",
                      ["ntree", "mtry", "nodesize", "validation accuracy"],
                      [[r.get("ntree"), r.get("mtry"), r.get("nodesize"), f"{float(r.get('val_accuracy')):.3f}"]
                       for r in rows],
                      "Validation accuracy: share of the validation cells called right." +
                      (f" First 10 of {len(summary['table'])}." if len(summary["table"]) > 10 else ""))],
        details={"cellprofiler_features": features, **{k: v for k, v in summary.items() if k != "table"}},
        seeds={"seed": summary.get("seed")}, command=command, order=15)
