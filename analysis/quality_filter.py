#!/usr/bin/env python3
"""Cell-quality filter: a random forest separating cells from non-cells.

Trains on labelled crops (``--quality``: CSV ``path,is_cell``, 1 = real cell)
found in the training feature CSVs, with 10-fold cross-validation over mtry and
over down-sampling (none / balanced classes), chosen by balanced accuracy; applies
it to the test cells and reports each classifier's per-cell accuracy before and
after removing the predicted non-cells.

Writes ``--out`` (JSON: CV table, choice, removed counts, and per classifier
``{"before": {"value", "correct", "total"}, "after": {...}, "removed": n}``; also the
flat keys cell_accuracy, cell_accuracy_filtered, rf_cell_accuracy and
rf_cell_accuracy_filtered that the report reads), with ``--cells``
``path,p_cell,is_cell_pred`` per test cell, and with ``--figure`` a bar chart.

Example:
  python analysis/quality_filter.py --train feats_train.csv feats_val.csv --quality ROOT/cell_quality.csv \\
      --test feats_test.csv --predictions cnn_predictions.csv --rf-predictions rf_predictions.csv \\
      --out RUN/quality/quality_filter.json --cells RUN/quality/cells.csv --figure RUN/quality/quality_filter.png
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from deepyeast.utils.io import InputError  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", nargs="+", required=True, help="features CSV(s) holding the labelled cells")
    ap.add_argument("--quality", required=True, help="CSV path,is_cell (1 = real cell, 0 = non-cell)")
    ap.add_argument("--test", required=True, help="features CSV of the test cells to filter")
    ap.add_argument("--predictions", default=None, help="the network's predictions table (test cells)")
    ap.add_argument("--rf-predictions", default=None, help="the random forest's predictions table (test cells)")
    ap.add_argument("--out", required=True, help="summary JSON")
    ap.add_argument("--cells", default=None, help="per-test-cell CSV path,p_cell,is_cell_pred")
    ap.add_argument("--figure", default=None,
                    help="bar chart of accuracy before/after (PNG, and a PDF beside it); needs predictions")
    ap.add_argument("--mtry", type=int, nargs="+", default=[10, 25, 50], help="mtry values (default 10 25 50)")
    ap.add_argument("--sampling", nargs="+", default=["none", "balanced"], choices=["none", "balanced"],
                    help="down-sampling options compared (default both)")
    ap.add_argument("--folds", type=int, default=10, help="cross-validation folds (default 10)")
    ap.add_argument("--ntree", type=int, default=100, help="trees per forest (default 100)")
    ap.add_argument("--max-labelled", type=int, default=1500,
                    help="train on at most this many labelled crops, a stratified subset (default 1500; 0 = all)")
    ap.add_argument("--threshold", type=float, default=0.5, help="remove cells with P(cell) below this (default 0.5)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="forests fitted in parallel")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    from deepyeast.analysis.quality_filter import run_quality_filter

    preds = {}
    if args.predictions:
        preds["network"] = args.predictions
    if args.rf_predictions:
        preds["random_forest"] = args.rf_predictions
    try:
        summary = run_quality_filter(args.train, args.quality, args.test, preds, out_json=args.out, out_cells=args.cells,
                           mtry=args.mtry, sampling=args.sampling, folds=args.folds, ntree=args.ntree,
                           threshold=args.threshold, max_labelled=args.max_labelled, n_jobs=args.jobs, seed=args.seed)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.figure and summary["classifiers"]:
        from deepyeast.analysis.quality_filter import plot_filter_accuracy

        plot_filter_accuracy(summary, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
