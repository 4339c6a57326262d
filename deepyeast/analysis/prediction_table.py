"""The per-cell predictions table: the one interface every analysis reads.

Schema (CSV, header required, one row per cell)::

    path,protein,split,label,pred,prob_0,...,prob_{K-1}

* ``path``    -- the cell crop, relative to its archive root (e.g. ``plate01/12-3-4-5.png``);
                 unique within a table.
* ``protein`` -- protein identity (``plateNN/<f1>``); never empty.
* ``split``   -- ``train``/``val``/``test`` (or ``transfer_*``); never empty.
* ``label``   -- true class, an index into :data:`deepyeast.constants.CLASS_NAMES`
                 (K = 12) or :data:`~deepyeast.constants.TRANSFER_CLASS_NAMES` (K = 4).
* ``pred``    -- predicted class index, same table: a class of the largest probability
                 (ties within :data:`PRED_TIE_TOL` may pick any of them), so that cell-level
                 results (which read ``pred``) and protein-level ones (which read the
                 probabilities) describe the same predictions.
* ``prob_k``  -- predicted probability of class ``k``; finite, in [0, 1], each row sums to 1
                 within :data:`PROB_SUM_TOL`.

K is taken from the number of ``prob_`` columns, which must be ``prob_0`` .. ``prob_{K-1}``
with K a known class-table size.  Anything else is an :class:`~deepyeast.utils.io.InputError`
naming the file and the row (1-based data row, with the file line) or column at fault.
"""

import csv
import dataclasses
import os
import re

import numpy as np

from deepyeast.constants import class_names_for
from deepyeast.utils.io import InputError, atomic_path, csv_header, open_input

BASE_COLUMNS = ("path", "protein", "split", "label", "pred")
"""The columns before the probabilities, in order."""

PROB_SUM_TOL = 1e-3
"""Largest accepted |sum_k prob_k - 1| of one row."""

PRED_TIE_TOL = 1e-6
"""``pred``'s probability may fall this far below the row's largest (ties written at 9 digits)."""

_PROB_RE = re.compile(r"^prob_(\d+)$")


def prob_columns(n_classes):
    """Return ``["prob_0", ..., "prob_{n_classes-1}"]``."""
    return [f"prob_{k}" for k in range(n_classes)]


@dataclasses.dataclass(frozen=True)
class Predictions:
    """A validated predictions table held as numpy arrays (N cells, K classes).

    Attributes
    ----------
    path, protein, split : numpy object arrays of str, shape (N,)
    label, pred : int64 arrays, shape (N,), class indices in [0, K)
    probs : float64 array, shape (N, K), rows sum to 1 (within tolerance)
    class_names : tuple of K str
    source : str, where the table came from (file name, for messages)
    """

    path: np.ndarray
    protein: np.ndarray
    split: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    probs: np.ndarray
    class_names: tuple
    source: str = "<memory>"

    @property
    def n_cells(self):
        return int(self.label.shape[0])

    @property
    def n_classes(self):
        return len(self.class_names)

    def subset(self, mask):
        """Return the rows selected by a boolean mask or index array (no re-validation)."""
        return dataclasses.replace(
            self,
            path=self.path[mask],
            protein=self.protein[mask],
            split=self.split[mask],
            label=self.label[mask],
            pred=self.pred[mask],
            probs=self.probs[mask],
        )

    def splits_present(self):
        """Sorted list of distinct split names in the table."""
        return sorted(set(self.split.tolist()))


def make_predictions(paths, proteins, splits, labels, probs, pred=None, source="<memory>", require_all_classes=True):
    """Build and validate a :class:`Predictions` from arrays.

    ``probs`` is float N x K; ``pred`` defaults to ``argmax(probs, axis=1)``.
    Raises :class:`InputError` on the same faults :func:`read_predictions` checks.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise InputError(f"{source}: probabilities must be N x K, got shape {probs.shape}")
    if pred is None:
        pred = probs.argmax(axis=1)
    try:
        class_names = class_names_for(probs.shape[1])
    except ValueError as e:
        raise InputError(f"{source}: {e}") from None
    table = Predictions(
        path=np.asarray(list(paths), dtype=object),
        protein=np.asarray(list(proteins), dtype=object),
        split=np.asarray(list(splits), dtype=object),
        label=np.asarray(labels, dtype=np.int64),
        pred=np.asarray(pred, dtype=np.int64),
        probs=probs,
        class_names=class_names,
        source=source,
    )
    validate_predictions(table, require_all_classes=require_all_classes)
    return table


def validate_predictions(table, prob_tol=PROB_SUM_TOL, require_all_classes=True):
    """Check a :class:`Predictions`; raise :class:`InputError` naming the first bad row/column.

    Checks: equal lengths, non-empty ``path``/``protein``/``split``, unique paths,
    label/pred in [0, K), probabilities finite in [0, 1] summing to 1 within ``prob_tol``,
    ``pred`` a most probable class (within :data:`PRED_TIE_TOL`),
    and (if ``require_all_classes``) every class of the table has at least one cell by label.
    Rows are reported 1-based, counting data rows (file line = row + 1).
    """
    src = table.source
    n = table.label.shape[0]
    k = table.n_classes
    for name in ("path", "protein", "split", "pred"):
        if getattr(table, name).shape[0] != n:
            raise InputError(f"{src}: column '{name}' has {getattr(table, name).shape[0]} rows, 'label' has {n}")
    if table.probs.shape != (n, k):
        raise InputError(f"{src}: probabilities have shape {table.probs.shape}, expected ({n}, {k})")
    if n == 0:
        raise InputError(f"{src}: the table has no rows")
    for name in ("path", "protein", "split"):
        col = getattr(table, name)
        for i, v in enumerate(col):
            if not isinstance(v, str) or not v.strip():
                what = "a protein with no cells: cell has no protein" if name == "protein" else "empty value"
                raise InputError(f"{src}: row {i + 1} (line {i + 2}), column '{name}': {what}")
    seen = {}
    for i, p in enumerate(table.path):
        if p in seen:
            raise InputError(
                f"{src}: row {i + 1} (line {i + 2}), column 'path': {p!r} repeats row {seen[p] + 1}"
            )
        seen[p] = i
    for name in ("label", "pred"):
        col = getattr(table, name)
        bad = np.flatnonzero((col < 0) | (col >= k))
        if bad.size:
            i = int(bad[0])
            raise InputError(
                f"{src}: row {i + 1} (line {i + 2}), column '{name}': class {int(col[i])} is outside "
                f"the class table 0..{k - 1} ({k} classes)"
            )
    probs = table.probs
    finite = np.isfinite(probs)
    bad_rows, bad_cols = np.nonzero(~finite | (probs < 0) | (probs > 1))
    if bad_rows.size:
        i, j = int(bad_rows[0]), int(bad_cols[0])
        raise InputError(
            f"{src}: row {i + 1} (line {i + 2}), column 'prob_{j}': {probs[i, j]!r} is not a probability in [0, 1]"
        )
    sums = probs.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > prob_tol)
    if bad.size:
        i = int(bad[0])
        raise InputError(
            f"{src}: row {i + 1} (line {i + 2}), columns prob_0..prob_{k - 1}: probabilities sum to "
            f"{sums[i]:.6g}, not 1 (tolerance {prob_tol:g}); {bad.size} row(s) affected"
        )
    picked = probs[np.arange(n), table.pred]
    top = probs.argmax(axis=1)
    bad = np.flatnonzero(picked < probs[np.arange(n), top] - PRED_TIE_TOL)
    if bad.size:
        i = int(bad[0])
        p, t = int(table.pred[i]), int(top[i])
        raise InputError(
            f"{src}: row {i + 1} (line {i + 2}), column 'pred': class {p} is not the most probable class "
            f"(prob_{t} = {probs[i, t]:.6g} > prob_{p} = {probs[i, p]:.6g}); cell-level results (from pred) "
            f"and protein-level ones (from the probabilities) would disagree; {bad.size} row(s) affected"
        )
    if require_all_classes:
        counts = np.bincount(table.label, minlength=k)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            names = ", ".join(f"{int(c)} '{table.class_names[c]}'" for c in empty)
            raise InputError(f"{src}: column 'label': empty class(es) with no cells: {names}")
    return table


def read_predictions(path, split=None, prob_tol=PROB_SUM_TOL, require_all_classes=True):
    """Read and validate a predictions CSV (schema in the module docstring).

    Parameters
    ----------
    path : str or PathLike
    split : str or None
        Keep only rows of this split (``None`` keeps all; ``"auto"``: the only split present,
        else ``"test"`` if present, else an error).  Selecting a split with no rows is an error.
    prob_tol : float, accepted |row sum - 1|
    require_all_classes : bool, every class must have a cell (after split selection)

    Returns
    -------
    Predictions
    """
    path = os.fspath(path)
    with open_input(path, "predictions table", newline="") as f:
        reader = csv.reader(f)
        header = csv_header(reader, path, "a header line")
        header = [h.strip() for h in header]
        for col in BASE_COLUMNS:
            if col not in header:
                raise InputError(f"{path}: missing column '{col}' (header: {','.join(header)})")
        prob_idx = {}
        for j, h in enumerate(header):
            m = _PROB_RE.match(h)
            if m:
                prob_idx[int(m.group(1))] = j
        if not prob_idx:
            raise InputError(f"{path}: missing columns prob_0..prob_K-1 (header: {','.join(header)})")
        k = max(prob_idx) + 1
        for c in range(k):
            if c not in prob_idx:
                raise InputError(f"{path}: missing column 'prob_{c}' (found prob_ columns up to prob_{k - 1})")
        try:
            class_names = class_names_for(k)
        except ValueError as e:
            raise InputError(f"{path}: {k} prob_ columns: {e}") from None
        dup = {h for h in header if header.count(h) > 1}
        if dup:
            raise InputError(f"{path}: duplicate column(s) {sorted(dup)}")
        ci = {name: header.index(name) for name in BASE_COLUMNS}
        pj = [prob_idx[c] for c in range(k)]
        paths, proteins, splits, labels, preds, probs = [], [], [], [], [], []
        for row_no, row in enumerate(reader, start=1):
            line = row_no + 1
            if not row or (len(row) == 1 and not row[0].strip()):
                raise InputError(f"{path}: row {row_no} (line {line}) is empty")
            if len(row) != len(header):
                raise InputError(
                    f"{path}: row {row_no} (line {line}) has {len(row)} fields, the header has {len(header)}"
                )
            paths.append(row[ci["path"]].strip())
            proteins.append(row[ci["protein"]].strip())
            splits.append(row[ci["split"]].strip())
            for name, out in (("label", labels), ("pred", preds)):
                v = row[ci[name]].strip()
                try:
                    out.append(int(v))
                except ValueError:
                    raise InputError(
                        f"{path}: row {row_no} (line {line}), column '{name}': {v!r} is not a class index"
                    ) from None
            try:
                probs.append([float(row[j]) for j in pj])
            except ValueError:
                for c, j in enumerate(pj):
                    try:
                        float(row[j])
                    except ValueError:
                        raise InputError(
                            f"{path}: row {row_no} (line {line}), column 'prob_{c}': {row[j]!r} is not a number"
                        ) from None
    if not labels:
        raise InputError(f"{path}: the table has a header but no rows")
    table = Predictions(
        path=np.asarray(paths, dtype=object),
        protein=np.asarray(proteins, dtype=object),
        split=np.asarray(splits, dtype=object),
        label=np.asarray(labels, dtype=np.int64),
        pred=np.asarray(preds, dtype=np.int64),
        probs=np.asarray(probs, dtype=np.float64).reshape(len(labels), k),
        class_names=class_names,
        source=path,
    )
    # Row-level checks on the whole file so reported rows are the file's rows.
    validate_predictions(table, prob_tol=prob_tol, require_all_classes=False)
    if split is not None:
        table = select_split(table, split)
    if require_all_classes:
        validate_predictions(table, prob_tol=prob_tol, require_all_classes=True)
    return table


def select_split(table, split):
    """Keep the rows of ``split``; ``"auto"`` = the only split present, else ``"test"``.

    Raises :class:`InputError` when the split has no rows or ``auto`` is ambiguous.
    """
    present = table.splits_present()
    if split == "auto":
        if len(present) == 1:
            return table
        if "test" in present:
            split = "test"
        else:
            raise InputError(
                f"{table.source}: column 'split' holds several splits {present}; choose one (e.g. --split {present[0]})"
            )
    mask = table.split == split
    if not mask.any():
        raise InputError(f"{table.source}: column 'split' has no rows of split {split!r} (present: {present})")
    return table.subset(mask)


def write_predictions(path, table):
    """Write a :class:`Predictions` as CSV atomically (validated first; probabilities as %.9g)."""
    validate_predictions(table, require_all_classes=False)
    header = list(BASE_COLUMNS) + prob_columns(table.n_classes)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            for i in range(table.n_cells):
                w.writerow(
                    [table.path[i], table.protein[i], table.split[i], int(table.label[i]), int(table.pred[i])]
                    + [f"{p:.9g}" for p in table.probs[i]]
                )
    return os.fspath(path)
