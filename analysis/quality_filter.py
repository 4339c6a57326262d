#!/usr/bin/env python3
"""Cell-quality filter: a random forest separating cells from non-cells.

Trains on labelled crops (``--quality``: CSV ``path,is_cell``, 1 = real cell)
found in the training feature CSVs, with 10-fold cross-validation over mtry and
over down-sampling (none / balanced classes), chosen by balanced accuracy; applies
it to the test cells and reports each classifier's per-cell accuracy before and
after removing the predicted non-cells.

Without labels (neither --noncells nor --quality: the published archive has none) the step
writes only result.json, naming the filter as not done and how to supply the list
(NONCELLS=FILE in make), with its metrics null.

Outputs (in --out DIR)
  quality_filter.json   CV table, choice, removed counts, and per classifier
                        {"before": {"value", "correct", "total"}, "after": {...}, "removed": n}
  cells.csv             path,p_cell,is_cell_pred per test cell (or --cells PATH)
  quality_filter.png/pdf  accuracy before/after per classifier (or --figure PATH; needs predictions)
  result.json           the result manifest the report reads (written last)

Example:
  python analysis/quality_filter.py --train feats_train.csv feats_val.csv --quality ROOT/cell_quality.csv \\
      --test feats_test.csv --predictions cnn_predictions.csv --rf-predictions rf_predictions.csv --out RUN/quality
"""

import os

from deepyeast import launcher


def options(p):
    p.add_argument("--train", nargs="+", type=launcher.existing_file,
                   help="features CSV(s) holding the labelled cells")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--noncells", metavar="FILE", type=launcher.existing_file,
                        help="non-cell list: one archive-relative crop path per line; every other cell of --train "
                             "counts as a cell")
    labels.add_argument("--quality", type=launcher.existing_file,
                        help="CSV path,is_cell (1 = real cell, 0 = non-cell)")
    p.add_argument("--test", type=launcher.existing_file, help="features CSV of the test cells to filter")
    p.add_argument("--predictions", type=launcher.existing_file, help="the network's predictions table (test cells)")
    p.add_argument("--rf-predictions", type=launcher.existing_file,
                   help="the random forest's predictions table (test cells)")
    launcher.add(p, "out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--cells", default=None, help="per-test-cell CSV path,p_cell,is_cell_pred (default: OUT/cells.csv)")
    p.add_argument("--figure", default=None,
                   help="bar chart of accuracy before/after, PNG and a PDF beside it (default: OUT/quality_filter.png)")
    p.add_argument("--mtry", type=int, nargs="+", default=[10, 25, 50], help="mtry values (default 10 25 50)")
    p.add_argument("--sampling", nargs="+", default=["none", "balanced"], choices=["none", "balanced"],
                   help="down-sampling options compared (default both)")
    p.add_argument("--folds", type=int, default=10, help="cross-validation folds (default 10)")
    launcher.add(p, "ntree")
    p.add_argument("--max-labelled", type=int, default=1500,
                   help="train on at most this many labelled crops, a stratified subset (default 1500; 0 = all)")
    p.add_argument("--threshold", type=float, default=0.5, help="remove cells with P(cell) below this (default 0.5)")
    launcher.add(p, "jobs", help="forests fitted in parallel (default: every CPU)")
    launcher.add(p, "seed")


def run(args):
    from deepyeast.analysis.quality_filter import (plot_filter_accuracy, read_noncell_list, run_quality_filter,
                                                   write_quality_not_run, write_quality_result)
    from deepyeast.report.manifest import clear_result
    from deepyeast.utils.io import InputError, atomic_write_text

    clear_result(args.out)
    if not (args.noncells or args.quality):
        write_quality_not_run(args.out, command=args.command)
        return
    if not (args.train and args.test):
        raise InputError("the filter needs --train and --test feature CSVs")
    quality = args.quality
    if args.noncells:  # every cell of the training features is a cell unless listed
        from deepyeast.analysis.cp_features import read_feature_csv

        noncells = set(read_noncell_list(args.noncells))
        cells = [q for t in args.train for q in read_feature_csv(t)[0]]
        unknown = sorted(noncells - set(cells))
        if unknown:
            raise InputError(f"{args.noncells}: {unknown[0]} has no features in {', '.join(args.train)} "
                             f"({len(unknown)} such)")
        quality = os.path.join(args.out, "labels.csv")
        atomic_write_text(quality, "path,is_cell\n" + "".join(f"{q},{int(q not in noncells)}\n" for q in cells))
    preds = {}
    if args.predictions:
        preds["network"] = args.predictions
    if args.rf_predictions:
        preds["random_forest"] = args.rf_predictions
    summary = run_quality_filter(args.train, quality, args.test, preds,
                                 out_json=os.path.join(args.out, "quality_filter.json"),
                                 out_cells=args.cells or os.path.join(args.out, "cells.csv"),
                                 mtry=args.mtry, sampling=args.sampling, folds=args.folds, ntree=args.ntree,
                                 threshold=args.threshold, max_labelled=args.max_labelled, n_jobs=args.jobs,
                                 seed=args.seed)
    figure = None
    if summary["classifiers"]:
        figure = args.figure or os.path.join(args.out, "quality_filter.png")
        plot_filter_accuracy(summary, figure)
    in_out = figure is not None and os.path.dirname(os.path.abspath(figure)) == os.path.abspath(args.out)
    write_quality_result(args.out, summary, os.path.basename(figure) if in_out else None, command=args.command)


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
