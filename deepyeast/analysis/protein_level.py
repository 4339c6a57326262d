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
import re

import numpy as np

from deepyeast.constants import MIN_CELLS_PER_PROTEIN, PAPER_RESULTS
from deepyeast.report.manifest import clear_result, headline, missing_part, table, write_result
from deepyeast.utils.io import InputError, atomic_path, atomic_write_json, open_input
from deepyeast.analysis.cell_metrics import count


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
    n_cells = np.bincount(inverse, minlength=ids.size).astype(np.int64)
    alpha = prior + soft
    theta = (alpha - 1.0) / (alpha.sum(axis=1, keepdims=True) - k)
    return ids, n_cells, alpha, theta


def protein_calls(table, prior=1.0, allow_mixed_labels=False):
    """Protein calls for a :class:`~deepyeast.analysis.predictions.Predictions`.

    A protein's true label is its cells' label; cells of one protein with different labels
    are an :class:`InputError` naming the rows, unless ``allow_mixed_labels`` (then the most
    common label, lowest index on ties).
    """
    ids, n_cells, alpha, theta = dirichlet_map(table.probs, table.protein, prior)
    _, inverse = np.unique(table.protein, return_inverse=True)
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
    return ProteinCalls(
        protein=ids, n_cells=n_cells, label=label_counts.argmax(axis=1), pred=theta.argmax(axis=1),
        alpha=alpha, posterior=theta, class_names=tuple(table.class_names),
    )


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


MIXTURE_COLUMNS = ("mixture_classes", "mixture", "classes")
"""Accepted names (first found wins) of the proteins.csv column naming a mixed protein's classes."""
FRACTION_COLUMNS = ("mixture_fraction", "fraction")
_SEP = re.compile(r"[;|+/]")


def read_mixtures(path, class_names):
    """Read the mixed proteins of a proteins table (e.g. the synthetic ``proteins.csv``).

    Required column ``protein`` and one of :data:`MIXTURE_COLUMNS`; optional ``split``,
    ``label`` and one of :data:`FRACTION_COLUMNS`.  The mixture cell holds two classes
    separated by ``;``, ``|``, ``+`` or ``/``, each a class index or a class name (any
    case); one class plus the ``label`` column also names two; empty = not mixed.
    Returns ``(rows, all_proteins)``: the mixed proteins as dicts ``{protein, row, classes
    (tuple of 2 int), fraction (float or None), split (str or None)}`` and every listed
    protein (except those with an ``n_cells`` column of 0) as ``{protein: (row, split)}``.
    """
    path = os.fspath(path)
    lookup = {n.lower(): i for i, n in enumerate(class_names)}

    def as_class(v, row, col):
        v = v.strip()
        if v.lower() in lookup:
            return lookup[v.lower()]
        try:
            c = int(v)
        except ValueError:
            raise InputError(f"{path}: row {row}, column '{col}': {v!r} is not a class name or index") from None
        if not 0 <= c < len(class_names):
            raise InputError(f"{path}: row {row}, column '{col}': class {c} is outside 0..{len(class_names) - 1}")
        return c

    with open_input(path, "proteins table", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if "protein" not in header:
            raise InputError(f"{path}: missing column 'protein' (header: {','.join(header)})")
        mix_col = next((c for c in MIXTURE_COLUMNS if c in header), None)
        if mix_col is None:
            raise InputError(f"{path}: missing a mixture column (one of {', '.join(MIXTURE_COLUMNS)})")
        frac_col = next((c for c in FRACTION_COLUMNS if c in header), None)
        rows, everything = [], {}
        for row_no, rec in enumerate(reader, start=1):
            protein = (rec.get("protein") or "").strip()
            if not protein:
                raise InputError(f"{path}: row {row_no}, column 'protein': empty value")
            split = (rec.get("split") or "").strip() or None
            if (rec.get("n_cells") or "").strip() != "0":  # a protein listed with 0 cells need not appear
                everything[protein] = (row_no, split)
            raw = (rec.get(mix_col) or "").strip()
            if not raw:
                continue
            parts = [p for p in _SEP.split(raw) if p.strip()]
            classes = [as_class(p, row_no, mix_col) for p in parts]
            if len(classes) == 1 and (rec.get("label") or "").strip():
                classes = [as_class(rec["label"], row_no, "label")] + classes
            classes = list(dict.fromkeys(classes))
            if len(classes) == 1:
                continue  # a "mixture" of one class is not mixed
            if len(classes) != 2:
                raise InputError(f"{path}: row {row_no}, column '{mix_col}': {raw!r} must name two classes")
            fraction = None
            if frac_col and (rec.get(frac_col) or "").strip():
                try:
                    fraction = float(rec[frac_col])
                except ValueError:
                    raise InputError(f"{path}: row {row_no}, column '{frac_col}': {rec[frac_col]!r} is not a number"
                                     ) from None
            rows.append({"protein": protein, "row": row_no, "classes": tuple(classes), "fraction": fraction,
                         "split": split})
    return rows, everything


def check_mixtures(calls, mixtures, proteins_source="proteins table", splits=None, all_proteins=None):
    """For each mixed protein: are its two true classes the posterior's top two?

    ``mixtures`` comes from :func:`read_mixtures`.  Proteins of the evaluated ``splits``
    (when the table has a split column) must have cells in the predictions; one with none
    is an :class:`InputError` naming its row.  Returns a list of dicts (protein, n_cells,
    classes, fraction, top1, top2, post_top1, post_top2, top_two_match) and a count dict.
    """
    index = {p: i for i, p in enumerate(calls.protein.tolist())}
    if all_proteins is not None and splits is not None:
        for protein, (row, split) in all_proteins.items():
            if split is not None and split in splits and protein not in index:
                raise InputError(f"{proteins_source}: row {row}: protein {protein!r} of split {split!r} "
                                 f"has no cells in the predictions table")
    out = []
    for m in mixtures:
        if splits is not None and m["split"] is not None and m["split"] not in splits:
            continue
        i = index.get(m["protein"])
        if i is None:
            if splits is None or m["split"] is None:
                continue  # cannot tell whether it belongs to the evaluated cells
            raise InputError(f"{proteins_source}: row {m['row']}: mixed protein {m['protein']!r} has no cells")
        order = np.argsort(-calls.posterior[i], kind="stable")
        top = [int(order[0]), int(order[1])]
        out.append({
            "protein": m["protein"], "n_cells": int(calls.n_cells[i]),
            "class_a": calls.class_names[m["classes"][0]], "class_b": calls.class_names[m["classes"][1]],
            "fraction": m["fraction"],
            "top1": calls.class_names[top[0]], "top2": calls.class_names[top[1]],
            "post_top1": float(calls.posterior[i, top[0]]), "post_top2": float(calls.posterior[i, top[1]]),
            "top_two_match": set(top) == set(m["classes"]),
        })
    return out, count(sum(r["top_two_match"] for r in out), len(out))


MIXTURE_TABLE_COLUMNS = ("protein", "n_cells", "class_a", "class_b", "fraction", "top1", "top2", "post_top1",
                         "post_top2", "top_two_match")


def run_protein_level(predictions_path, out_path, mixtures_path=None, split="auto", prior=1.0,
                      min_cells=MIN_CELLS_PER_PROTEIN, allow_mixed_labels=False, summary_path=None, command=None,
                      classifier="network"):
    """Write the proteins table, a summary JSON, (with mixtures) a mixed-protein table and the result manifest.

    Outputs: ``out_path`` (proteins CSV); ``summary_path`` (default: ``out_path`` with
    ``.json``) holding ``protein_accuracy``, ``protein_accuracy_min10`` (count dicts),
    ``min_cells``, ``n_proteins``, ``mixtures`` (count dict or null), inputs, command;
    with mixtures, ``<out stem>_mixtures.csv``; last, ``result.json`` in the proteins table's
    folder (:func:`write_protein_result`; ``classifier`` "network" or "random_forest" names it).
    Returns the summary dict.
    """
    from deepyeast.analysis.predictions import read_predictions

    table = read_predictions(predictions_path, split=split, require_all_classes=False)
    calls = protein_calls(table, prior=prior, allow_mixed_labels=allow_mixed_labels)
    stem = os.path.splitext(os.fspath(out_path))[0]
    summary_path = summary_path or stem + ".json"
    mix_rows, mix_count = None, None
    if mixtures_path:
        mixtures, everything = read_mixtures(mixtures_path, table.class_names)
        mix_rows, mix_count = check_mixtures(calls, mixtures, os.fspath(mixtures_path),
                                             splits=set(table.split.tolist()), all_proteins=everything)
    if os.path.exists(out_path):  # written last below: its presence marks a finished step
        os.remove(out_path)
    result_dir = os.path.dirname(os.path.abspath(out_path))
    clear_result(result_dir)
    mix_path = None
    if mix_rows is not None:
        mix_path = stem + "_mixtures.csv"
        with atomic_path(mix_path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, MIXTURE_TABLE_COLUMNS, lineterminator="\n")
                w.writeheader()
                for r in mix_rows:
                    w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    summary = {
        "protein_accuracy": protein_accuracy(calls, 1),
        "protein_accuracy_min10": protein_accuracy(calls, min_cells),
        "min_cells": int(min_cells),
        "n_proteins": int(calls.protein.size),
        "n_cells": int(calls.n_cells.sum()),
        "prior": prior,
        "mixtures": mix_count,
        "mixtures_table": os.path.basename(mix_path) if mix_path else None,
        "inputs": {"predictions": os.fspath(predictions_path),
                   "mixtures": os.fspath(mixtures_path) if mixtures_path else None,
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
    """The result manifest of protein-level calls (see :mod:`deepyeast.report.manifest`)."""
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
    paper_key = {"": ("protein_accuracy", "protein_accuracy_min10"), "rf_": ("rf_protein_accuracy", None)}[prefix]
    rows = [headline(prefix + "protein_accuracy", f"{who} accuracy per protein", "proteins",
                     PAPER_RESULTS.get(paper_key[0])),
            headline(prefix + "protein_accuracy_min10", f"{who} accuracy per protein (>= {n_min} cells)", "proteins",
                     PAPER_RESULTS.get(paper_key[1]) if paper_key[1] else None)]
    table_rows = [["all test proteins", a["correct"], a["total"]],
                  [f"proteins with >= {n_min} cells", b["correct"], b["total"]]]
    tables = []
    missing = []
    if summary.get("mixtures") is not None:
        m = summary["mixtures"]
        metrics["mixed_proteins_top_two" if not prefix else prefix + "mixed_proteins_top_two"] = m
        table_rows.append(["mixed proteins: both true compartments are the top two", m["correct"], m["total"]])
        if mix_rows:
            tables.append(table(
                "Mixed proteins", ["protein", "cells", "true compartments (share)", "top two called", "match"],
                [[r["protein"], r["n_cells"], f"{r['class_a']} + {r['class_b']} ({r['fraction']:.2f})",
                  f"{r['top1']}, {r['top2']}", "yes" if r["top_two_match"] else "no"] for r in mix_rows[:15]],
                "Proteins the screen marks as localized to two compartments; 'match': the two most probable "
                "compartments are the true two." + (f" First 15 of {len(mix_rows)}." if len(mix_rows) > 15 else ""),
                file=summary.get("mixtures_table")))
    elif classifier == "network":  # the paper checks mixed proteins on the network's calls
        missing.append(missing_part("mixed proteins (both true compartments among the top two calls)",
                                    "no table of mixed proteins was given", "--mixtures proteins.csv"))
    tables.insert(0, table(f"{who}: protein-level accuracy", ["proteins", "called right", "of"], table_rows,
                           "Counts are proteins; a protein is called right when its most probable compartment "
                           "is its label.", file=table_file))
    paper = PAPER_RESULTS.get(paper_key[0])
    title = f"Protein-level calls: {who.lower()}" + (f" (paper: {100 * paper:.0f}% per protein)" if paper else "")
    return write_result(out_dir, name, title, text,
                        metrics=metrics, headline=rows, tables=tables, missing=missing,
                        details={k: v for k, v in summary.items() if k not in ("protein_accuracy",
                                                                                 "protein_accuracy_min10", "command")},
                        command=summary.get("command"), order=30 if classifier == "network" else 31)
