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
    path.  Blank lines are ignored.
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
    with open(path, encoding="utf-8") as f:
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
    ``ok`` is False when a protein spans two splits or any line is bad.
    """
    report = {"splits": {}, "shared_proteins": {}, "errors": []}
    proteins = {}
    for split, path in list_paths.items():
        names = class_names or class_names_for_list(path)
        entries, problems = parse_split_list(path, names)
        summary = split_summary(entries, names)
        summary["file"] = os.fspath(path)
        summary["problems"] = [f"{path}:{ln}: {reason}" for ln, _, reason in problems]
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
