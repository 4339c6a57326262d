"""``metrics.json``: every result manifest of a run folder merged into one machine-readable file.

Top level: every metric of every manifest by its name (counts ``{value, correct, total[, lo, hi]}``
or numbers), the paper's metrics (:data:`EXPECTED_RESULTS`) as ``null`` when their result is
missing, and::

    results       name -> {title, folder, details, missing, figures, command}: everything else an
                  analysis reported (e.g. the quality filter's cross-validation table)
    checks        the paper's comparisons on this run (:func:`paper_checks`), true/false/null
    complete      every expected result was found
    missing       expected results not found: {input, path, producer}
    not_provided  parts that could not be done: {input (result name), what, reason, option}
    paper          the paper's numbers (:data:`~deepyeast.constants.PAPER_RESULTS`); paper_counts those
                   that are counts, as {value, correct, total}
    seeds, versions, figures
"""

import importlib.metadata
import os
import platform
import shutil
import subprocess

from deepyeast import __version__
from deepyeast.constants import PAPER_COUNTS, PAPER_RESULTS, paper_result
from deepyeast.utils.manifest import MANIFEST_NAME, find_results
from deepyeast.utils.io import InputError

__all__ = ["EXPECTED_RESULTS", "REQUIRED_RESULTS", "collect_results", "assemble_metrics", "paper_checks",
           "CHECK_LABELS", "versions"]

EXPECTED_RESULTS = {
    # result name: (its folder in a run, the step that writes it, the paper's metrics it provides)
    "cells": ("cells", "analysis/evaluate_cells.py --out RUN/cells", ("cell_accuracy", "cell_kappa", "rf_cell_accuracy")),
    "quality": ("quality", "analysis/quality_filter.py --out RUN/quality",
                ("cell_accuracy_filtered", "rf_cell_accuracy_filtered")),
    "forest": ("rf", "analysis/random_forest.py --out RUN/rf/cells_test.csv", ()),
    "proteins": ("proteins", "analysis/protein_level.py --out RUN/proteins",
                 ("protein_accuracy", "protein_accuracy_min10", "mixed_proteins_top_two",
                  "mixed_proteins_top_three_rest")),
    "rf_proteins": ("rf_proteins", "analysis/protein_level.py --classifier random_forest --out RUN/rf_proteins",
                    ("rf_protein_accuracy", "rf_protein_accuracy_min10")),
    "transfer": ("transfer", "analysis/transfer.py --out RUN/transfer", ("transfer_accuracy",)),
    "interpret": ("interpret", "analysis/interpret.py --out RUN/interpret", ()),
}
"""The paper's results a complete replication report has.  Only the completeness check (the
report's banner, ``complete``) reads this: any other analysis's manifest is found and shown
without being listed here."""

REQUIRED_RESULTS = ("cells",)
"""Results without which no report is written (an :class:`InputError`)."""

VERSION_PACKAGES = ("numpy", "torch", "scipy", "scikit-learn", "scikit-image", "matplotlib", "protobuf", "lmdb",
                    "opencv-python-headless", "pillow", "tifffile", "rpy2", "cp-measure")

CHECK_LABELS = {
    "network_beats_forest_per_cell": "the network beats the random forest per cell",
    "protein_above_cell_accuracy": "protein-level accuracy exceeds per-cell accuracy",
    "filtering_raises_network_accuracy": "removing non-cells raises the network's accuracy",
    "filtering_raises_forest_accuracy": "removing non-cells raises the forest's accuracy",
    "no_classifier_reaches_0_99_per_cell": "neither classifier reaches 0.99 per cell",
}


def collect_results(run_dir, expect=None, required=REQUIRED_RESULTS):
    """The run's manifests and the expected ones it lacks: ``(results, missing)``.

    ``results``: list of ``(folder, manifest)`` (:func:`deepyeast.utils.manifest.find_results`);
    ``missing``: ``[{input, path, producer}]`` for each name of ``expect`` (default
    :data:`EXPECTED_RESULTS`) no manifest has.  A missing ``required`` result is an InputError.
    """
    if not os.path.isdir(run_dir):
        raise InputError(f"{run_dir}: run folder does not exist")
    expect = EXPECTED_RESULTS if expect is None else expect
    results = find_results(run_dir)
    names = {r["name"] for _, r in results}
    missing = []
    for name, (folder, producer, _metrics) in expect.items():
        if name in names:
            continue
        path = os.path.join(run_dir, folder, MANIFEST_NAME)
        if name in required:
            raise InputError(f"{path}: required report input '{name}' is missing (produced by: {producer})")
        missing.append({"input": name, "path": path, "producer": producer})
    return results, missing


def _value(entry):
    return entry.get("value") if isinstance(entry, dict) else entry


def paper_checks(m):
    """The paper's comparisons on this run, each True/False, or None when an input is missing."""
    net, rf = _value(m.get("cell_accuracy")), _value(m.get("rf_cell_accuracy"))
    prot, filt = _value(m.get("protein_accuracy")), _value(m.get("cell_accuracy_filtered"))
    rf_filt = _value(m.get("rf_cell_accuracy_filtered"))

    def both(a, b, f):
        return None if a is None or b is None else bool(f(a, b))

    below = None if net is None else bool(net < 0.99 and (rf is None or rf < 0.99))
    return {
        "network_beats_forest_per_cell": both(net, rf, lambda a, b: a > b),
        "protein_above_cell_accuracy": both(prot, net, lambda a, b: a > b),
        "filtering_raises_network_accuracy": both(filt, net, lambda a, b: a > b),
        "filtering_raises_forest_accuracy": both(rf_filt, rf, lambda a, b: a > b),
        "no_classifier_reaches_0_99_per_cell": below,
    }


def _find_seeds(obj, prefix=""):
    found = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            name = f"{prefix}.{k}" if prefix else k
            if "seed" in k.lower() and isinstance(v, (int, str, list)) and not isinstance(v, bool):
                found[name] = v
            elif isinstance(v, dict):
                found.update(_find_seeds(v, name))
    return found


def versions():
    """Versions of Python, DeepYeast, the packages it uses, R, and the checkout's git commit."""
    out = {"python": platform.python_version(), "deepyeast": __version__, "platform": platform.platform()}
    for pkg in VERSION_PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    r = shutil.which("R")
    if r:
        try:
            line = subprocess.run([r, "--version"], capture_output=True, text=True, timeout=20).stdout.splitlines()
            out["R"] = line[0] if line else "unknown"
        except (OSError, subprocess.SubprocessError):
            out["R"] = "unknown"
    else:
        out["R"] = "not found"
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        res = subprocess.run(["git", "-C", package, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        out["git commit"] = res.stdout.strip() if res.returncode == 0 else "no commit"
    except (OSError, subprocess.SubprocessError):
        out["git commit"] = "unknown"
    return out


def assemble_metrics(run_dir, results, missing, expect=None, extra_not_provided=()):
    """The ``metrics.json`` dict (see the module docstring) of collected results."""
    expect = EXPECTED_RESULTS if expect is None else expect
    m = {}
    for _name, (_folder, _producer, keys) in expect.items():
        for key in keys:
            m[key] = None
    owner = {}
    seeds = {}
    summary = {}
    not_provided = []
    for folder, r in results:
        for key, value in r["metrics"].items():
            if key in owner:
                raise InputError(f"{os.path.join(run_dir, folder, MANIFEST_NAME)}: metric '{key}' is also reported "
                                 f"by result '{owner[key]}'")
            owner[key] = r["name"]
            m[key] = value
        summary[r["name"]] = {"title": r["title"], "folder": folder, "details": r.get("details", {}),
                              "missing": r.get("missing", []), "command": r.get("command"),
                              "figures": [os.path.normpath(os.path.join(folder, f["file"])) for f in r["figures"]]}
        seeds.update({f"{r['name']}: {k}": v for k, v in _find_seeds(r.get("seeds", {})).items()})
        seeds.update({f"{r['name']}: {k}": v for k, v in _find_seeds(r.get("details", {})).items()
                      if f"{r['name']}: {k}" not in seeds})
        not_provided += [dict(input=r["name"], **x) for x in r.get("missing", [])]
    m["results"] = summary
    m["checks"] = paper_checks(m)
    m["missing"] = list(missing)
    m["not_provided"] = not_provided + list(extra_not_provided)
    m["complete"] = not m["missing"]
    m["paper"] = dict(PAPER_RESULTS)
    m["paper_counts"] = {k: paper_result(k) for k in PAPER_COUNTS}
    m["seeds"] = seeds
    return m
