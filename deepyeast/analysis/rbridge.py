"""The rpy2 bridge to R's ``randomForest``: the embedded R session, numpy arrays into R and back.

The forest code lives in ``random_forest.R``, package data beside this module (usable from R
directly).  R runs in this process, one call at a time (:data:`_R_LOCK`; a Dask worker may run
tasks in several threads); :func:`init_r` sources the R file once per process.  The grid search
(:mod:`deepyeast.analysis.random_forest`) and the quality filter's cross-validation
(:mod:`deepyeast.analysis.quality_filter`) run their forests through this module.

Arrays: features are float64 ``N x F`` (NaN allowed on input, imputed by
:func:`impute_features` with the training medians, since R's randomForest refuses missing
values); labels are int class indices; probabilities come back as float64 ``N x K`` with columns
in class-index order (a class absent from the training set gets probability 0).

Requires R with the ``randomForest`` package (Debian: ``r-base-core``,
``r-cran-randomforest``) and ``rpy2<3.6``.
"""

import contextlib
import os
import threading
import warnings

import numpy as np

R_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "random_forest.R")
"""The R source (package data beside this module) defining rf_grid_point, rf_grid_search, rf_fit,
rf_quality_fold, rf_quality_cv, ..."""

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
def session():
    """The R session for this thread: holds the R lock, with rpy2's default conversion rules."""
    ro = init_r()
    from rpy2.robjects.conversion import localconverter

    with _R_LOCK, localconverter(ro.default_converter):
        yield ro


def r_matrix(x):
    """float64 numpy N x F -> R numeric matrix (copied)."""
    from rpy2.robjects import default_converter, numpy2ri
    from rpy2.robjects.conversion import localconverter

    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be N x F, got shape {x.shape}")
    with localconverter(default_converter + numpy2ri.converter) as cv:
        return cv.py2rpy(x)


def r_ints(y):
    """Ints (numpy or list) -> R integer vector."""
    return init_r().IntVector([int(v) for v in np.asarray(y).ravel()])


def r_array(r_obj, dtype):
    """An R vector/matrix/array -> numpy array of its dims (R's column-major order kept)."""
    a = np.asarray(r_obj, dtype=dtype)
    try:
        dims = tuple(int(d) for d in r_obj.do_slot("dim"))
    except LookupError:
        return a
    return a.reshape(dims, order="F")


def data_frame_rows(df):
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
        with session() as ro:
            p = ro.r["rf_predict_proba"](self.r_model, r_matrix(x))
            return _prob_columns(p, len(x), self.classes, n_classes)

    def predict(self, x, seed):
        """Classes (int64 N) as randomForest's ``predict`` gives them after ``set.seed(seed)``."""
        with session() as ro:
            ro.r["set.seed"](int(seed))
            pred = ro.r["predict"](self.r_model, r_matrix(x))
            return np.array([int(v) for v in ro.r["as.character"](pred)], dtype=np.int64)


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
    with session() as ro:
        p = ro.ListVector({k: int(params[k]) for k in ("ntree", "mtry", "nodesize", "seed")})
        model = ro.r["rf_fit"](r_matrix(x), r_ints(y), p)
        classes = [int(c) for c in ro.r["levels"](model.rx2("y"))]
        return RandomForest(model, params, classes)


# --------------------------------------------------------------------------- task inputs

_WORKER_INPUTS = {"token": None, "r": None}
"""Per process: the R copies of the last shared inputs (converted once, not per task)."""


def r_inputs(shared):
    """R objects of the shared task inputs, converted on the first task of this process."""
    if _WORKER_INPUTS["token"] != shared["token"]:
        _WORKER_INPUTS["token"], _WORKER_INPUTS["r"] = None, None
        conv = {}
        for k, v in shared.items():
            if k == "token" or v is None:
                conv[k] = None if k != "token" else v
            elif isinstance(v, np.ndarray) and v.ndim == 2:
                conv[k] = r_matrix(v)
            else:
                conv[k] = r_ints(v)
        _WORKER_INPUTS["token"], _WORKER_INPUTS["r"] = shared["token"], conv
    return _WORKER_INPUTS["r"]
