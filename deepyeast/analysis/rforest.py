"""The paper's random-forest baseline: R's ``randomForest`` through rpy2.

The forest code lives in ``random_forest.R`` (package data beside this module) (usable from R directly); this
module moves numpy arrays into R and back, and builds the predictions table.

Arrays: features are float64 ``N x F`` (NaN allowed on input, imputed by
:func:`impute_features` with the training medians, since R's randomForest
refuses missing values); labels are int class indices; probabilities come back
as float64 ``N x K`` with columns in class-index order (a class absent from the
training set gets probability 0).

Requires R with the ``randomForest`` package (Debian: ``r-base-core``,
``r-cran-randomforest``) and ``rpy2<3.6``.
"""

import json
import logging
import os

import numpy as np

from deepyeast.utils.io import InputError, atomic_write_text

_log = logging.getLogger(__name__)

R_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "random_forest.R")
"""The R source defining rf_grid_search, rf_fit, rf_predict_proba, rf_quality_cv, ..."""

GRIDS = {"small": "RF_SMALL_GRID", "paper": "RF_PAPER_GRID"}
"""Named grids (R variables in ``random_forest.R`` (package data beside this module))."""

_R = None


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
    _r()
    return True


def _r():
    """The embedded R session with ``random_forest.R`` (package data beside this module) sourced (once)."""
    global _R
    if _R is None:
        try:
            import rpy2.robjects as ro
        except Exception as exc:  # ImportError, or R missing at rpy2 init
            raise RuntimeError(
                f"the random forest needs rpy2<3.6 and R ({exc}); install r-base-core, r-cran-randomforest "
                "and `pip install 'rpy2<3.6'`"
            ) from exc
        ro.r["source"](os.path.normpath(R_SCRIPT))
        _R = ro
    return _R


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
    return _r().IntVector([int(v) for v in np.asarray(y).ravel()])


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
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
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
        p = _r().r["rf_predict_proba"](self.r_model, _matrix(x))
        return _prob_columns(p, len(x), self.classes, n_classes)


def resolve_grid(grid):
    """``"small"``/``"paper"`` or a dict ntree/mtry/nodesize -> dict of int lists."""
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r} (known: {sorted(GRIDS)})")
        g = _r().r[GRIDS[grid]]
        return {k: [int(v) for v in g.rx2(k)] for k in ("ntree", "mtry", "nodesize")}
    missing = {"ntree", "mtry", "nodesize"} - set(grid)
    if missing:
        raise ValueError(f"grid lacks {sorted(missing)}")
    return {k: [int(v) for v in grid[k]] for k in ("ntree", "mtry", "nodesize")}


def grid_search(x_train, y_train, x_val, y_val, grid="small", n_jobs=2, seed=1, x_test=None, n_classes=None):
    """Score every grid point on the validation set (R ``rf_grid_search``).

    Returns ``(table, best, test_prob)``: ``table`` a list of dicts (ntree, mtry,
    nodesize, seed, val_correct, val_total, val_accuracy), ``best`` the chosen row,
    ``test_prob`` (only when ``x_test`` is given, else None) the chosen forest's
    probabilities of ``x_test``, float64 ``N x n_classes`` -- identical to
    ``fit(x_train, y_train, best).predict_proba(x_test, n_classes)``.
    """
    ro = _r()
    g = resolve_grid(grid)
    r_grid = ro.ListVector({k: ro.IntVector(v) for k, v in g.items()})
    kwargs = {} if x_test is None else {"x_test": _matrix(x_test)}
    res = ro.r["rf_grid_search"](
        _matrix(x_train), _ints(y_train), _matrix(x_val), _ints(y_val), grid=r_grid, cores=int(n_jobs),
        seed=int(seed), **kwargs,
    )
    table = _data_frame_rows(res.rx2("table"))
    best = _data_frame_rows(res.rx2("best"))[0]
    test_prob = None
    if x_test is not None:
        if n_classes is None:
            raise ValueError("grid_search: n_classes is needed with x_test")
        r_prob = res.rx2("test_prob")
        test_prob = _prob_columns(r_prob, len(x_test), [int(c) for c in ro.r["colnames"](r_prob)], n_classes)
    return table, best, test_prob


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
    ro = _r()
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


def run_baseline(train_csv, val_csv, test_csv, list_paths, out_csv, grid="small", n_jobs=2, seed=1,
                 summary_json=None, split_name="test", log=None):
    """The random-forest baseline from feature CSVs to a predictions table.

    Chooses (ntree, mtry, nodesize) on the validation set and writes, from the
    chosen forest, the test cells' predictions table (``path,protein,split,label,pred,
    prob_0..``) to ``out_csv``; ``summary_json`` gets the grid table and choice.
    Returns the summary dict.
    """
    log = log or _log.info
    from deepyeast.data.lists import protein_of
    from deepyeast.constants import class_names_for
    from deepyeast.analysis.predictions import Predictions, write_predictions

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
    table, best, probs = grid_search(x_tr, y_tr, x_va, y_va, grid=grid, n_jobs=n_jobs, seed=seed, x_test=x_te,
                                     n_classes=n_classes)
    log(f"random forest: best {best}")
    # a class may be absent from a small test set, so no "every class present" check here
    table_te = Predictions(
        path=np.asarray(te_p, dtype=object), protein=np.asarray([protein_of(p) for p in te_p], dtype=object),
        split=np.asarray([split_name] * len(te_p), dtype=object), label=y_te, pred=probs.argmax(axis=1),
        probs=probs, class_names=class_names_for(n_classes), source=os.fspath(out_csv),
    )
    write_predictions(out_csv, table_te)
    correct = int((table_te.pred == y_te).sum())
    summary = {
        "grid": resolve_grid(grid) if isinstance(grid, str) else grid,
        "grid_name": grid if isinstance(grid, str) else "custom",
        "seed": int(seed),
        "n_features": len(tr_names),
        "n_train": len(tr_p), "n_val": len(va_p), "n_test": len(te_p),
        "best": best,
        "table": table,
        "test_accuracy": {"value": correct / max(len(te_p), 1), "correct": correct, "total": len(te_p)},
    }
    if summary_json:
        atomic_write_text(summary_json, json.dumps(summary, indent=1) + "\n")
    return summary


# --------------------------------------------------------------------------- quality filter forest


def quality_cv(x, is_cell, mtry=(10, 25, 50, 100), sampling=("none", "balanced"), folds=10, ntree=200,
               n_jobs=2, seed=1):
    """10-fold CV over mtry x down-sampling of a cell / non-cell forest (R ``rf_quality_cv``).

    x: float N x F (finite); is_cell: 0/1 per row.  Returns ``(table, best, model)``;
    ``model`` is an R randomForest refitted on all rows with the best setting, for
    :func:`quality_predict`.
    """
    ro = _r()
    res = ro.r["rf_quality_cv"](
        _matrix(x), _ints(is_cell), mtry=ro.IntVector([int(m) for m in mtry]), sampling=ro.StrVector(list(sampling)),
        folds=int(folds), ntree=int(ntree), cores=int(n_jobs), seed=int(seed),
    )
    return _data_frame_rows(res.rx2("table")), _data_frame_rows(res.rx2("best"))[0], res.rx2("model")


def quality_predict(model, x):
    """Probability of being a real cell, float64 N."""
    return np.asarray(_r().r["rf_quality_predict"](model, _matrix(x)), dtype=np.float64)


# --------------------------------------------------------------------------- the baseline's result manifest


def write_forest_result(out_dir, summary, features, command=None):
    """The result manifest of the random-forest baseline (see :mod:`deepyeast.report.manifest`):
    the features it learned from (``features``: :func:`deepyeast.analysis.cp_features.describe_features`,
    named next to every forest number of the report), the grid, the choice on validation."""
    from deepyeast.report.manifest import table, write_result

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
