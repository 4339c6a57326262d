"""Split lists of an archive root: reading, writing and checking them; protein identity.

Crops are read by :mod:`deepyeast.data.crop_png`; the published archive is fetched by
:mod:`deepyeast.data.download`.

Layout of an archive root (the published archive, the synthetic screen and a
user's own screen after ``data_prep/crop_cells.py`` all look alike)::

    ROOT/plateNN/<f1>-<f2>-<f3>-<f4>.png   one 64x64 RGB PNG per cell
                                          (R = marker, G = protein, B unused)
    ROOT/HOwt_{train,val,test}.txt         "relpath label" per line
    ROOT/HOwt_doc.txt                      "label;label_idx" class table

A transfer-set root has ``HOwt_transfer_{train,val,test}.txt`` and
``HOwt_transfer_doc.txt`` instead.

Protein identity: the protein of a cell is its plate folder plus the first
dash-separated field of its file name (``plate01/007013000-2-626-38.png`` ->
``plate01/007013000``).  No protein may appear in two splits.
"""

import collections
import os

from deepyeast.constants import CLASS_NAMES, CLASS_SETS, MIN_CELLS_PER_PROTEIN, class_set_of
from deepyeast.utils.io import InputError, atomic_write_text, open_input


# --------------------------------------------------------------------------- protein identity

def protein_of(relpath):
    """Protein id of a cell crop: ``plateNN/<first dash-separated field>``.

    ``relpath`` is the path as written in a split list (forward slashes).
    Raises ``InputError`` when the path has no plate folder.
    """
    parts = relpath.replace("\\", "/").split("/")
    if len(parts) < 2 or not parts[-2] or not parts[-1]:
        raise InputError(f"{relpath!r}: expected 'plateNN/<f1>-<f2>-<f3>-<f4>.png' (plate folder missing)")
    stem = parts[-1].rsplit(".", 1)[0]
    return f"{parts[-2]}/{stem.split('-', 1)[0]}"


def class_names_for_list(path):
    """The class table a split list uses, by its name (``HOwt_transfer_*``: transfer; see
    :func:`deepyeast.constants.class_set_of`)."""
    return CLASS_SETS[class_set_of(path)]


# --------------------------------------------------------------------------- split lists

def parse_split_list(path, class_names=CLASS_NAMES):
    """Parse a split list without raising on bad lines.

    Returns ``(entries, problems)``: ``entries`` is a list of ``(relpath, label)``
    for every good line (label an int index into ``class_names``); ``problems``
    a list of ``(lineno, relpath_or_None, reason)``.  Bad lines are: not two
    fields, a non-integer label, a label outside the class table, a duplicate
    path, a path without its plate folder.  Blank lines are ignored.
    """
    entries, problems, seen = [], [], {}
    n = len(class_names)
    with open_input(path, "split list") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                problems.append((lineno, None, f"expected 'relpath label', got {line.strip()!r}"))
                continue
            rel, lab = fields
            try:
                label = int(lab)
            except ValueError:
                problems.append((lineno, rel, f"label {lab!r} is not an integer"))
                continue
            if not 0 <= label < n:
                problems.append((lineno, rel, f"label {label} outside the class table (0..{n - 1})"))
                continue
            if rel in seen:
                problems.append((lineno, rel, f"duplicate entry (first on line {seen[rel]})"))
                continue
            try:
                protein_of(rel)
            except InputError as err:
                problems.append((lineno, rel, str(err)))
                continue
            seen[rel] = lineno
            entries.append((rel, label))
    return entries, problems


def read_split_list(path, class_names=CLASS_NAMES, skip_bad=False):
    """Read ``relpath label`` lines; returns ``(entries, rejects)``.

    ``entries``: list of ``(relpath:str, label:int)``.  ``rejects``: list of
    ``(relpath_or_line, reason)`` strings for bad lines, only when ``skip_bad``;
    otherwise the first bad line raises ``InputError("path:line: reason")``.
    """
    entries, problems = parse_split_list(path, class_names)
    if problems and not skip_bad:
        lineno, _, reason = problems[0]
        raise InputError(f"{path}:{lineno}: {reason}")
    rejects = [(rel if rel else f"{path}:{lineno}", f"{path}:{lineno}: {reason}") for lineno, rel, reason in problems]
    return entries, rejects


def sample_rows(n_rows, n, seed=0):
    """A seeded random sample of ``n`` of ``n_rows`` rows, in row order: int64 indices (all rows if ``n`` is
    None or at least ``n_rows``).  The sample of every ``--sample N --seed S`` option (CellProfiler
    features of training cells, whole maps of the t-SNE cells)."""
    import numpy as np

    if n is None or n >= n_rows:
        return np.arange(n_rows)
    if n < 1:
        raise InputError(f"--sample must be at least 1, got {n}")
    return np.sort(np.random.default_rng(seed).choice(n_rows, n, replace=False))


def write_split_list(path, entries):
    """Write ``(relpath, label)`` pairs as a split list, atomically."""
    atomic_write_text(path, "".join(f"{rel} {int(lab)}\n" for rel, lab in entries))


def write_class_doc(path, class_names, lower=True):
    """Write a ``label;label_idx`` class table like ``HOwt_doc.txt``, atomically.

    ``lower``: lower-case names, as the published doc files have them (a model bundle's
    ``classes.txt`` keeps DeepYeast's spelling: ER, Golgi).  A blank name, or one with
    surrounding spaces or a newline, raises InputError.
    """
    names = []
    for i, name in enumerate(class_names):
        if not name or name != name.strip() or "\n" in name:
            raise InputError(f"{path}: class {i} has an unusable name {name!r}")
        names.append(name.lower() if lower else name)
    atomic_write_text(path, "label;label_idx\n" + "".join(f"{n};{i}\n" for i, n in enumerate(names)))


def read_class_doc(path):
    """Read a ``label;label_idx`` table; returns the class names in index order."""
    names = {}
    with open_input(path, "class table") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or lineno == 1 and line.lower().startswith("label;"):
                continue
            try:
                name, idx = line.rsplit(";", 1)
                names[int(idx)] = name
            except ValueError:
                raise InputError(f"{path}:{lineno}: expected 'name;index', got {line!r}") from None
    if sorted(names) != list(range(len(names))):
        raise InputError(f"{path}: class indices are not 0..{len(names) - 1}")
    return [names[i] for i in range(len(names))]


# --------------------------------------------------------------------------- split checks

def split_summary(entries, class_names=CLASS_NAMES):
    """Per-split statistics of ``(relpath, label)`` entries (a JSON-able dict)."""
    per_protein = collections.Counter(protein_of(rel) for rel, _ in entries)
    per_class = collections.Counter(lab for _, lab in entries)
    return {
        "n_cells": len(entries),
        "n_proteins": len(per_protein),
        "n_proteins_min10": sum(1 for c in per_protein.values() if c >= MIN_CELLS_PER_PROTEIN),
        "cells_per_class": {name: per_class.get(i, 0) for i, name in enumerate(class_names)},
    }


def check_splits(list_paths, class_names=None):
    """Check split lists for protein leakage and bad labels.

    ``list_paths``: dict split name -> list file.  ``class_names``: the class
    table, or None to guess it from the file names.  Returns ``(report, ok)``;
    ``report`` holds per split the summary of :func:`split_summary` plus its
    problems, and ``shared_proteins`` (``"a&b" -> sorted protein ids``).
    ``ok`` is False when a protein spans two splits, any line is bad or a list is empty.
    """
    report = {"splits": {}, "shared_proteins": {}, "errors": []}
    proteins = {}
    for split, path in list_paths.items():
        names = class_names or class_names_for_list(path)
        entries, problems = parse_split_list(path, names)
        summary = split_summary(entries, names)
        summary["file"] = os.fspath(path)
        summary["problems"] = [f"{path}:{ln}: {reason}" for ln, _, reason in problems]
        if not entries and not problems:
            summary["problems"].append(f"{path}: the {split} list is empty (no 'relpath label' line)")
        report["errors"].extend(summary["problems"])
        report["splits"][split] = summary
        proteins[split] = {protein_of(rel) for rel, _ in entries}
    splits = list(list_paths)
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            shared = sorted(proteins[a] & proteins[b])
            report["shared_proteins"][f"{a}&{b}"] = shared
            if shared:
                report["errors"].append(f"{len(shared)} protein(s) in both {a} and {b}, e.g. {shared[0]}")
    report["ok"] = not report["errors"]
    return report, report["ok"]


# --------------------------------------------------------------------------- proteins with two compartments

MIXED_COLUMNS = ("protein", "compartment_a", "compartment_b")
"""Required columns of a mixed-protein table (the paper's proteins with two compartments)."""

MIXED_TABLE = "mixed_proteins.csv"
"""Name of the mixed-protein table the synthetic screen writes into its main root."""

MIXED_SPLIT = "mixed"
"""Split name of the mixed proteins' cells in a predictions table (they are in no split list)."""


def read_mixed_table(path, class_names=CLASS_NAMES):
    """Read a table of proteins localised to two compartments.

    CSV with a header holding :data:`MIXED_COLUMNS` (other columns are kept: ``fraction``, the
    synthetic screen's share of ``compartment_a``, is read when present), one protein a row::

        protein,compartment_a,compartment_b
        plate03/005012000,nucleus,cytoplasm

    ``protein`` is a protein id as :func:`protein_of` gives it (``plateNN/<f1>``); a compartment
    is a class name (any case) or index of ``class_names``.  Returns a list of dicts ``{protein,
    row (1-based data row), classes (a, b) as ints, fraction (float or None)}`` in file order.
    Errors (an :class:`InputError` naming the row and column): a missing column, an empty or
    malformed protein, an unknown compartment, the same compartment twice, a protein twice.
    """
    import csv

    path = os.fspath(path)
    lookup = {n.lower(): i for i, n in enumerate(class_names)}
    out, seen = [], {}
    with open_input(path, "mixed-protein table", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        absent = [c for c in MIXED_COLUMNS if c not in header]
        if absent:
            raise InputError(f"{path}: missing column(s) {', '.join(absent)} (header: {','.join(header)}; "
                             f"expected {','.join(MIXED_COLUMNS)})")
        for row, rec in enumerate(reader, start=1):
            protein = (rec.get("protein") or "").strip()
            if not protein or protein.count("/") != 1 or not all(protein.split("/")):
                raise InputError(f"{path}: row {row}, column 'protein': {protein!r} is not a protein id "
                                 "'plateNN/<f1>'")
            if protein in seen:
                raise InputError(f"{path}: row {row}, column 'protein': {protein} is also on row {seen[protein]}")
            classes = []
            for col in MIXED_COLUMNS[1:]:
                v = (rec.get(col) or "").strip()
                if v.lower() in lookup:
                    classes.append(lookup[v.lower()])
                    continue
                try:
                    c = int(v)
                except ValueError:
                    c = -1
                if not 0 <= c < len(class_names):
                    raise InputError(f"{path}: row {row}, column '{col}': {v!r} is not a compartment "
                                     f"(a name of {', '.join(class_names)} or an index 0..{len(class_names) - 1})")
                classes.append(c)
            if classes[0] == classes[1]:
                raise InputError(f"{path}: row {row}: compartment_a and compartment_b are both "
                                 f"{class_names[classes[0]]!r}; a mixed protein has two different ones")
            fraction = None
            if (rec.get("fraction") or "").strip():
                try:
                    fraction = float(rec["fraction"])
                except ValueError:
                    raise InputError(f"{path}: row {row}, column 'fraction': {rec['fraction']!r} is not a number"
                                     ) from None
            seen[protein] = row
            out.append({"protein": protein, "row": row, "classes": tuple(classes), "fraction": fraction})
    if not out:
        raise InputError(f"{path}: no proteins (a header and one row per protein)")
    return out


def write_mixed_table(path, rows, class_names=CLASS_NAMES):
    """Write ``rows`` (dicts ``protein, classes (a, b)[, fraction, n_cells]``) as a mixed-protein
    table (:func:`read_mixed_table`), compartments by name, atomically."""
    lines = [",".join(MIXED_COLUMNS + ("fraction", "n_cells"))]
    for r in rows:
        a, b = r["classes"]
        fraction = "" if r.get("fraction") is None else f"{r['fraction']:.3f}"
        lines.append(f"{r['protein']},{class_names[a].lower()},{class_names[b].lower()},{fraction},"
                     f"{r.get('n_cells', '')}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def mixed_protein_cells(table_path, class_names=CLASS_NAMES, not_in=()):
    """The crops of the proteins of a mixed-protein table: ``[(relpath, compartment_a)]``, sorted.

    Crops are found next to the table: ``<table folder>/plateNN/<f1>-*.png`` for each protein
    ``plateNN/<f1>`` (the synthetic screen writes its table into the main root, among all crops; a
    user puts the table into the folder holding those proteins' crops, which may be the archive).
    ``not_in``: split lists the mixed proteins must be absent from (the paper keeps them out of
    train, val and test).  A protein with no crop, or listed in one of ``not_in``, is an
    :class:`InputError` naming its row.
    """
    rows = read_mixed_table(table_path, class_names)
    wanted = {r["protein"]: r for r in rows}
    for list_path in not_in:
        entries, _ = read_split_list(list_path, class_names_for_list(list_path))
        for rel, _label in entries:
            p = protein_of(rel)
            if p in wanted:
                raise InputError(f"{table_path}: row {wanted[p]['row']}: protein {p} has cells in {list_path} "
                                 f"({rel}); proteins with two compartments are kept out of train/val/test")
    root = os.path.dirname(os.path.abspath(table_path))
    cells = []
    by_plate = collections.defaultdict(set)
    for p in wanted:
        plate, well = p.split("/")
        by_plate[plate].add(well)
    found = collections.Counter()
    for plate, wells in sorted(by_plate.items()):
        folder = os.path.join(root, plate)
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        for name in names:
            if name.lower().endswith(".png") and name.split("-", 1)[0] in wells:
                rel = f"{plate}/{name}"
                p = protein_of(rel)
                cells.append((rel, wanted[p]["classes"][0]))
                found[p] += 1
    for r in rows:
        if not found[r["protein"]]:
            raise InputError(f"{table_path}: row {r['row']}: no crops of protein {r['protein']} under "
                             f"{os.path.join(root, r['protein'].split('/')[0])}/ (expected "
                             f"{r['protein']}-*.png next to the table)")
    return cells


# --------------------------------------------------------------------------- the archive, for the report

ARCHIVE_LACKS = (
    ("non-cell labels", "the non-cell filter learns from crops picked by eye as non-cells", "NONCELLS=FILE"),
    ("proteins with two compartments", "the paper holds them out of the splits and checks their top two calls",
     "MIXED=FILE"),
    ("CellProfiler features of Chong et al. (2015)", "the paper's forest learned from 435 whole-image features; "
     "ours are 430 computed per crop with cp-measure", "CP_FEATURES=DIR"),
)
"""What the published archive (split lists, two class tables, PNG crops) does not hold, why the paper
needs it, and the make option that supplies it."""


def write_archive_result(out_dir, report, command=None):
    """The report's first section for a run on an archive: cells and proteins per split (``report``:
    :func:`check_splits`'s) and what the archive does not hold (:data:`ARCHIVE_LACKS`)."""
    from deepyeast.utils.manifest import Result, table, write_result

    rows = [[split, s["n_cells"], s["n_proteins"], s["n_proteins_min10"]] for split, s in report["splits"].items()]
    total = sum(s["n_cells"] for s in report["splits"].values())
    text = (f"The image archive: {total:,} crops in {len(rows)} split lists, split by protein (no protein is in two "
            "splits). Like the published DeepYeast archive it holds split lists, two class tables and 64x64 PNG "
            "crops only; what the paper used beyond them is listed below with the option that supplies it.")
    return write_result(
        out_dir, Result("screen", "The cells: the image archive", text,
        tables=[table("Cells per split", ["split", "cells", "proteins", f"proteins with >= {MIN_CELLS_PER_PROTEIN} "
                                                                        "cells"], rows,
                      "Counts of the split lists (data_prep/check_splits.py)."),
                table("Not in the archive", ["what", "what the paper does with it", "supply it with"],
                      [list(x) for x in ARCHIVE_LACKS],
                      "Without them the analyses that need them are reported as not run.")],
        details=report, command=command, order=5))
