"""Protein-level localisation from cell populations (paper: "protein level" results).

Model
-----
A protein's localisation is a vector ``theta`` on the K-class simplex with a Dirichlet
prior of concentration ``prior`` = 1 for every class (uniform, "uninformative").  Each of
its ``n`` cells contributes its predicted class probabilities ``p_i`` as soft counts, so
the posterior is ``Dirichlet(alpha)`` with ``alpha_k = prior + sum_i p_ik``.  The maximum
a posteriori estimate is ``theta_k = (alpha_k - 1) / (sum_j alpha_j - K)``; with prior 1
this is the mean predicted probability ``sum_i p_ik / n``.  The protein's call is
``argmax_k theta_k`` (ties go to the lower class index).  The ``post_k`` columns of the
protein table hold ``theta_k`` (they sum to 1); ``alpha_k = prior + n * theta_k``.

Proteins table (CSV): ``protein,n_cells,label,pred,post_0,...,post_{K-1}``.
"""

import csv
import dataclasses
import os

import numpy as np

from deepyeast.constants import MIN_CELLS_PER_PROTEIN, PAPER_RESULTS, paper_result
from deepyeast.utils.manifest import Result, clear_result, headline, missing_part, table, write_result
from deepyeast.utils.io import InputError, atomic_path, atomic_write_json
from deepyeast.utils.run_context import RunContext
from deepyeast.analysis.evaluate_cells import count


@dataclasses.dataclass(frozen=True)
class ProteinCalls:
    """Per-protein Dirichlet posteriors (P proteins, K classes), sorted by protein id.

    protein : object array of str (P,); n_cells : int64 (P,); label : int64 (P,) true class;
    pred : int64 (P,) MAP call; alpha : float64 (P, K) posterior concentrations;
    posterior : float64 (P, K) MAP proportions (rows sum to 1); class_names : tuple of K str.
    """

    protein: np.ndarray
    n_cells: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    alpha: np.ndarray
    posterior: np.ndarray
    class_names: tuple


def dirichlet_map(probs, proteins, prior=1.0):
    """Dirichlet posterior and its MAP per protein from cells' class probabilities.

    Parameters
    ----------
    probs : float array (N, K), each row a cell's predicted class probabilities
    proteins : sequence of N protein ids (str)
    prior : float >= 1, Dirichlet concentration of the prior for every class

    Returns
    -------
    (protein_ids, n_cells, alpha, theta): sorted unique ids (object array, P),
    cells per protein (int64 P), posterior concentrations (float64 P x K) and the MAP
    proportions (float64 P x K).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be N x K, got shape {probs.shape}")
    if prior < 1:
        raise ValueError(f"prior {prior} < 1: the Dirichlet mode is then not given by the closed form")
    proteins = np.asarray(list(proteins), dtype=object)
    if proteins.shape[0] != probs.shape[0]:
        raise ValueError(f"{proteins.shape[0]} protein ids for {probs.shape[0]} cells")
    ids, inverse = np.unique(proteins, return_inverse=True)
    k = probs.shape[1]
    soft = np.zeros((ids.size, k))
    np.add.at(soft, inverse, probs)
    n_cells = np.bincount(inverse)  # int64; the inverse holds every id's index
    alpha = prior + soft
    theta = (alpha - 1.0) / (alpha.sum(axis=1, keepdims=True) - k)
    return ids, n_cells, alpha, theta


def call_cells(probs, proteins, class_names, order=None, labels=None, prior=1.0):
    """:class:`ProteinCalls` of cells: every protein's Dirichlet posterior (:func:`dirichlet_map`) and call.

    ``probs`` float (N, K) the cells' class probabilities; ``proteins`` N protein ids;
    ``order`` the proteins to list, in that order (default: the cells' ids sorted); a protein of
    ``order`` without cells gets ``n_cells`` 0, NaN ``alpha``/``posterior`` and ``pred`` -1;
    ``labels`` int (P,) true class per listed protein, -1 unknown (default: all unknown).
    The one calling of proteins: :func:`protein_calls` (the labelled pipeline) and
    :func:`deepyeast.analysis.classify_screen.call_proteins` (a new screen) both use it.
    """
    probs = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if probs.ndim != 2 or probs.shape[1] != k:
        raise ValueError(f"probs must be N x {k} (one column per class), got shape {probs.shape}")
    ids, n, a, theta = dirichlet_map(probs, proteins, prior)
    order = ids if order is None else np.asarray(list(order), dtype=object)
    index = {p: i for i, p in enumerate(order.tolist())}
    unknown = [p for p in ids.tolist() if p not in index]
    if unknown:
        raise ValueError(f"cells of protein {unknown[0]!r}, which the order does not list")
    at = np.asarray([index[p] for p in ids.tolist()], np.int64)
    n_cells = np.zeros(len(order), np.int64)
    alpha = np.full((len(order), k), np.nan)
    posterior = np.full((len(order), k), np.nan)
    pred = np.full(len(order), -1, np.int64)
    n_cells[at], alpha[at], posterior[at] = n, a, theta
    pred[at] = theta.argmax(axis=1)
    label = np.full(len(order), -1, np.int64) if labels is None else np.asarray(labels, np.int64)
    if label.shape != (len(order),):
        raise ValueError(f"{label.shape[0]} labels for {len(order)} proteins")
    return ProteinCalls(protein=order, n_cells=n_cells, label=label, pred=pred, alpha=alpha, posterior=posterior,
                        class_names=tuple(class_names))


def protein_calls(table, prior=1.0, allow_mixed_labels=False):
    """Protein calls for a :class:`~deepyeast.analysis.prediction_table.Predictions` (:func:`call_cells`).

    A protein's true label is its cells' label; cells of one protein with different labels
    are an :class:`InputError` naming the rows, unless ``allow_mixed_labels`` (then the most
    common label, lowest index on ties).
    """
    ids, inverse = np.unique(np.asarray(list(table.protein), dtype=object), return_inverse=True)
    k = table.n_classes
    label_counts = np.zeros((ids.size, k), dtype=np.int64)
    np.add.at(label_counts, (inverse, table.label), 1)
    n_labels = (label_counts > 0).sum(axis=1)
    if not allow_mixed_labels and np.any(n_labels > 1):
        p = int(np.flatnonzero(n_labels > 1)[0])
        rows = np.flatnonzero(inverse == p)
        first = rows[0]
        other = rows[table.label[rows] != table.label[first]][0]
        raise InputError(
            f"{table.source}: column 'label': protein {ids[p]!r} has cells of different classes "
            f"(row {first + 1}: {table.label[first]}, row {other + 1}: {table.label[other]})"
        )
    return call_cells(table.probs, table.protein, table.class_names, order=ids,
                      labels=label_counts.argmax(axis=1), prior=prior)


def protein_accuracy(calls, min_cells=1):
    """Count dict of correct protein calls among proteins with at least ``min_cells`` cells."""
    keep = calls.n_cells >= min_cells
    return count(np.sum(calls.pred[keep] == calls.label[keep]), np.sum(keep))


def write_protein_table(path, calls):
    """Write ``protein,n_cells,label,pred,post_0..post_{K-1}`` atomically."""
    k = len(calls.class_names)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["protein", "n_cells", "label", "pred"] + [f"post_{c}" for c in range(k)])
            for i in range(calls.protein.size):
                w.writerow([calls.protein[i], int(calls.n_cells[i]), int(calls.label[i]), int(calls.pred[i])]
                           + [f"{v:.9g}" for v in calls.posterior[i]])
    return os.fspath(path)


def check_mixed(calls, mixed, source="mixed-protein table"):
    """For each protein with two compartments: are they the posterior's top two, else within its top three?

    ``calls``: :class:`ProteinCalls` of the mixed proteins' cells (their own predictions table);
    ``mixed``: rows of :func:`deepyeast.data.lists.read_mixed_table`.  A listed protein without
    cells, or a protein with cells that the table does not list, is an :class:`InputError`.
    Returns ``(rows, summary)``: one dict per protein (protein, n_cells, class_a, class_b,
    fraction, top1, top2, top3, post_top1..3, top_two, top_three) in table order, and
    ``{"top_two": count over all, "top_three_rest": count over the proteins whose two
    compartments are not the top two, "top_three": count over all}``.
    """
    index = {p: i for i, p in enumerate(calls.protein.tolist())}
    listed = {m["protein"] for m in mixed}
    extra = sorted(set(index) - listed)
    if extra:
        raise InputError(f"{source}: protein {extra[0]} has cells in the mixed predictions but is not listed "
                         f"({len(extra)} such)")
    k = len(calls.class_names)
    if k < 3:
        raise InputError(f"{source}: the top-three check needs at least 3 classes, the table has {k}")
    out = []
    for m in mixed:
        i = index.get(m["protein"])
        if i is None:
            raise InputError(f"{source}: row {m['row']}: protein {m['protein']} has no cells in the mixed predictions")
        order = sorted(range(k), key=lambda c: -calls.posterior[i, c])[:3]  # stable: ties to the lower class
        true = set(m["classes"])
        row = {"protein": m["protein"], "n_cells": int(calls.n_cells[i]),
               "class_a": calls.class_names[m["classes"][0]], "class_b": calls.class_names[m["classes"][1]],
               "fraction": m["fraction"]}
        for r, c in enumerate(order, start=1):
            row[f"top{r}"] = calls.class_names[c]
        for r, c in enumerate(order, start=1):
            row[f"post_top{r}"] = float(calls.posterior[i, c])
        row["top_two"] = set(order[:2]) == true
        row["top_three"] = all(c in order for c in true)
        out.append(row)
    rest = [r for r in out if not r["top_two"]]
    summary = {"top_two": count(sum(r["top_two"] for r in out), len(out)),
               "top_three_rest": count(sum(r["top_three"] for r in rest), len(rest)),
               "top_three": count(sum(r["top_three"] for r in out), len(out))}
    return out, summary


MIXED_TABLE_COLUMNS = ("protein", "n_cells", "class_a", "class_b", "fraction", "top1", "top2", "top3", "post_top1",
                       "post_top2", "post_top3", "top_two", "top_three")
"""Columns of ``proteins_mixed.csv``: one row per protein with two compartments."""

PRIOR = 1.0
"""Dirichlet concentration of the protein-level prior for every class: uniform (the paper's)."""

MIXED_OPTION = "MIXED=FILE (make), --mixed FILE --mixed-predictions CSV (analysis/protein_level.py)"
"""How to supply the proteins with two compartments (for a result's ``missing`` entry)."""


def run_protein_level(predictions_path, out_path, mixed=None, split="auto", min_cells=MIN_CELLS_PER_PROTEIN,
                      allow_mixed_labels=False, classifier="network", context=RunContext()):
    """Write the proteins table, a summary JSON, (with mixed proteins) their table and the result manifest.

    ``mixed``: None, or the pair ``(table, predictions)``: a mixed-protein table
    (:func:`deepyeast.data.lists.read_mixed_table`) and the predictions table of its proteins'
    cells (``analysis/predict.py --mixed``): each protein's Dirichlet posterior is checked for its
    two compartments among the top two (else the top three), as the paper does for proteins with
    two compartments, which it keeps out of train, val and test.  The prior is uniform
    (:data:`PRIOR`); ``context.command`` is recorded.
    Outputs: ``out_path`` (proteins CSV); ``out_path`` with ``.json`` holding ``protein_accuracy``, ``protein_accuracy_min10`` (count dicts),
    ``min_cells``, ``n_proteins``, ``mixed`` (``{top_two, top_three_rest, top_three}`` counts or
    null), inputs, command; with mixed proteins, ``<out stem>_mixed.csv``; last, ``result.json``
    in the proteins table's folder (:func:`write_protein_result`; ``classifier`` "network" or
    "random_forest" names it).  Returns the summary dict.
    """
    from deepyeast.analysis.prediction_table import read_predictions
    from deepyeast.data.lists import read_mixed_table

    prior, command = PRIOR, context.command
    mixed_path, mixed_predictions_path = mixed if mixed is not None else (None, None)
    table = read_predictions(predictions_path, split=split, require_all_classes=False)
    calls = protein_calls(table, prior=prior, allow_mixed_labels=allow_mixed_labels)
    stem = os.path.splitext(os.fspath(out_path))[0]
    summary_path = stem + ".json"
    mix_rows, mix_summary = None, None
    if bool(mixed_path) != bool(mixed_predictions_path):
        raise InputError("give the mixed-protein table and the predictions of its cells together "
                         "(--mixed FILE --mixed-predictions CSV)")
    if mixed_path:
        mixed = read_mixed_table(mixed_path, table.class_names)
        mixed_table = read_predictions(mixed_predictions_path, require_all_classes=False)
        if mixed_table.n_classes != table.n_classes:
            raise InputError(f"{mixed_predictions_path}: {mixed_table.n_classes} classes, but {predictions_path} "
                             f"has {table.n_classes}")
        mixed_calls = protein_calls(mixed_table, prior=prior, allow_mixed_labels=True)
        mix_rows, mix_summary = check_mixed(mixed_calls, mixed, os.fspath(mixed_path))
    if os.path.exists(out_path):  # written last below: its presence marks a finished step
        os.remove(out_path)
    result_dir = os.path.dirname(os.path.abspath(out_path))
    clear_result(result_dir)
    mix_path = None
    if mix_rows is not None:
        mix_path = stem + "_mixed.csv"
        with atomic_path(mix_path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, MIXED_TABLE_COLUMNS, lineterminator="\n")
                w.writeheader()
                for r in mix_rows:
                    w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else "" if v is None else v)
                                for k, v in r.items()})
    summary = {
        "protein_accuracy": protein_accuracy(calls, 1),
        "protein_accuracy_min10": protein_accuracy(calls, min_cells),
        "min_cells": int(min_cells),
        "n_proteins": int(calls.protein.size),
        "n_cells": int(calls.n_cells.sum()),
        "prior": prior,
        "mixed": mix_summary,
        "mixed_table": os.path.basename(mix_path) if mix_path else None,
        "inputs": {"predictions": os.fspath(predictions_path),
                   "mixed": os.fspath(mixed_path) if mixed_path else None,
                   "mixed_predictions": os.fspath(mixed_predictions_path) if mixed_predictions_path else None,
                   "split": sorted(set(table.split.tolist()))},
        "command": command,
    }
    atomic_write_json(summary_path, summary, indent=2)
    write_protein_table(out_path, calls)
    write_protein_result(result_dir, summary, mix_rows, classifier, os.path.basename(out_path))
    return summary


CLASSIFIERS = {"network": ("", "proteins", "Network"), "random_forest": ("rf_", "rf_proteins", "Random forest")}
"""classifier -> (metric prefix, result name, label)."""


def write_protein_result(out_dir, summary, mix_rows=None, classifier="network", table_file="proteins.csv"):
    """The result manifest of protein-level calls (see :mod:`deepyeast.utils.manifest`).

    For the network, the mixed-protein check (paper: proteins with two compartments) is reported,
    or, without a mixed-protein table, named as not done (``missing``) with its metrics null."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)}, not {classifier!r}")
    prefix, name, who = CLASSIFIERS[classifier]
    a, b = summary["protein_accuracy"], summary["protein_accuracy_min10"]
    n_min = summary["min_cells"]
    text = (f"Each protein's compartment is the most probable one under a Dirichlet posterior (uniform prior) "
            f"that takes its cells' predicted probabilities as soft counts. {who}: {a['correct']} of "
            f"{a['total']} test proteins called right ({summary['n_cells']:,} cells)")
    text += (f"; {b['correct']} of {b['total']} among proteins with at least {n_min} cells." if b["total"]
             else f"; no protein has {n_min} or more cells.")
    metrics = {prefix + "protein_accuracy": a, prefix + "protein_accuracy_min10": b}
    rows = [headline(prefix + "protein_accuracy", f"{who} accuracy per protein", "proteins",
                     paper_result(prefix + "protein_accuracy")),
            headline(prefix + "protein_accuracy_min10", f"{who} accuracy per protein (>= {n_min} cells)", "proteins",
                     paper_result(prefix + "protein_accuracy_min10"))]
    table_rows = [["all test proteins", a["correct"], a["total"]],
                  [f"proteins with >= {n_min} cells", b["correct"], b["total"]]]
    tables = []
    missing = []
    mixed = summary.get("mixed")
    if classifier == "network":  # the paper checks proteins with two compartments on the network's calls
        metrics["mixed_proteins_top_two"] = mixed["top_two"] if mixed else None
        metrics["mixed_proteins_top_three_rest"] = mixed["top_three_rest"] if mixed else None
        rows += [headline("mixed_proteins_top_two", "Proteins with two compartments: both are the top two calls",
                          "proteins"),
                 headline("mixed_proteins_top_three_rest", "... the others: both within the top three calls",
                          "proteins")]
    if mixed:
        t2, t3 = mixed["top_two"], mixed["top_three_rest"]
        text += (f" Of {t2['total']} proteins with two compartments (kept out of train, val and test), "
                 f"{t2['correct']} have both as the two most probable compartments; of the other {t3['total']}, "
                 f"{t3['correct']} have both within the top three.")
        if mix_rows:
            tables.append(table(
                "Proteins with two compartments",
                ["protein", "cells", "true compartments", "top three called (posterior)", "top two", "top three"],
                [[r["protein"], r["n_cells"], f"{r['class_a']} + {r['class_b']}"
                  + (f" ({r['fraction']:.2f} : {1 - r['fraction']:.2f})" if r["fraction"] is not None else ""),
                  ", ".join(f"{r[f'top{j}']} ({r[f'post_top{j}']:.2f})" for j in (1, 2, 3)),
                  "yes" if r["top_two"] else "no", "yes" if r["top_three"] else "no"] for r in mix_rows[:20]],
                "One row per protein localised to two compartments; 'top two': the two most probable "
                "compartments of its posterior are the true two; 'top three': both are among the three most "
                "probable." + (f" First 20 of {len(mix_rows)}." if len(mix_rows) > 20 else ""),
                file=summary.get("mixed_table")))
    elif classifier == "network":
        missing.append(missing_part(
            "proteins with two compartments (are both among the top two, else the top three, of the posterior?)",
            "no table of proteins with two compartments was given; the published archive has none",
            MIXED_OPTION))
    tables.insert(0, table(f"{who}: protein-level accuracy", ["proteins", "called right", "of"], table_rows,
                           "Counts are proteins; a protein is called right when its most probable compartment "
                           "is its label.", file=table_file))
    paper = PAPER_RESULTS.get(prefix + "protein_accuracy")
    title = f"Protein-level calls: {who.lower()}" + (f" (paper: {100 * paper:.0f}% per protein)" if paper else "")
    return write_result(out_dir, Result(name, title, text,
                        metrics=metrics, headline=rows, tables=tables, missing=missing,
                        details={k: v for k, v in summary.items() if k not in ("protein_accuracy",
                                                                                 "protein_accuracy_min10", "command")},
                        command=summary.get("command"), order=30 if classifier == "network" else 31))
