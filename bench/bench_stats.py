#!/usr/bin/env python3
"""Time the per-cell statistics, protein level and report at the paper's test-set size.

Simulates a predictions table of --cells cells (12 classes, ~87% accuracy, ~44 cells per
protein), then times: reading + validating the CSV, the stratified bootstrap of per-class
precision/recall (--resamples, both methods), the whole evaluate step (tables + figures),
protein-level calls and the report.  Writes the "Statistics and report" section of
bench/RESULTS.md.

    python bench/bench_stats.py --work /tmp/bench_stats [--cells 12500 --resamples 20000]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench._results import update_section  # noqa: E402
from deepyeast.constants import N_CLASSES  # noqa: E402
from deepyeast.analysis.evaluate_cells import bootstrap_precision_recall, run_cell_evaluation  # noqa: E402
from deepyeast.analysis.prediction_table import make_predictions, read_predictions, write_predictions  # noqa: E402
from deepyeast.analysis.protein_level import run_protein_level  # noqa: E402
from deepyeast.report.make_report import build_report  # noqa: E402


def simulate(n_cells, accuracy, seed):
    rng = np.random.default_rng(seed)
    n_proteins = max(n_cells // 44, N_CLASSES)
    protein = rng.integers(0, n_proteins, n_cells)
    label = protein % N_CLASSES
    target = np.where(rng.random(n_cells) < accuracy, label, rng.integers(0, N_CLASSES, n_cells))
    alpha = np.ones((n_cells, N_CLASSES))
    alpha[np.arange(n_cells), target] += 8
    probs = rng.gamma(alpha)
    probs /= probs.sum(axis=1, keepdims=True)
    return make_predictions([f"plate{p % 9 + 1:02d}/{p}-{i}-1-1.png" for i, p in enumerate(protein)],
                            [f"plate{p % 9 + 1:02d}/{p}" for p in protein], ["test"] * n_cells, label, probs)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="scratch folder")
    ap.add_argument("--cells", type=int, default=12500)
    ap.add_argument("--resamples", type=int, default=20000)
    ap.add_argument("--no-results", action="store_true", help="do not update bench/RESULTS.md")
    args = ap.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    net, rf = simulate(args.cells, 0.87, 0), simulate(args.cells, 0.75, 1)
    net_csv, rf_csv = os.path.join(args.work, "net.csv"), os.path.join(args.work, "rf.csv")
    write_predictions(net_csv, net)
    write_predictions(rf_csv, rf)
    run = os.path.join(args.work, "run")
    rows = []
    table, t = timed(lambda: read_predictions(net_csv))
    rows.append(("read + validate predictions CSV", t))
    for method in ("multinomial", "indices"):
        _, t = timed(lambda: bootstrap_precision_recall(table.label, table.pred, N_CLASSES, args.resamples,
                                                        method=method))
        rows.append((f"stratified bootstrap, {args.resamples} resamples, method={method}", t))
    _, t = timed(lambda: run_cell_evaluation(net_csv, os.path.join(run, "cells"), rf_csv, n_resamples=args.resamples))
    rows.append(("evaluate_cells: network + forest, tables + 4 figures (PNG+PDF)", t))
    _, t = timed(lambda: run_protein_level(net_csv, os.path.join(run, "proteins.csv")))
    rows.append(("protein level (network)", t))
    run_protein_level(rf_csv, os.path.join(run, "rf_proteins.csv"))
    _, t = timed(lambda: build_report(run, os.path.join(args.work, "report.html"), os.path.join(args.work, "m.json")))
    rows.append(("report (HTML + metrics.json)", t))
    md = [f"{args.cells:,} simulated test cells, 12 classes, single process.", "",
          "| step | seconds |", "|---|---:|"] + [f"| {name} | {sec:.2f} |" for name, sec in rows]
    text = "\n".join(md)
    print(text)
    if not args.no_results:
        update_section("Statistics and report (bench/bench_stats.py)", text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
