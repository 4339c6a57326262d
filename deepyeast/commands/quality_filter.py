"""Non-cell filter as in the paper: a random forest separating cells from non-cells.

Training set (validation split): for each class, --per-class (100) cells picked at
random (seeded, without replacement) among those both the network (--net-val) and
the random forest (--rf-val) classify correctly, labelled as cells, plus every cell of
the non-cell list (--noncells: one archive-relative path per line, all validation
cells; the paper picked 118 by eye).  10-fold cross-validation over mtry
{2,110,218,326,435} (capped at the feature count) x down-sampling of cells
{none, balanced} with 100 trees, chosen by CV accuracy (balanced accuracy reported
beside it); the forests run as tasks on Dask (--scheduler).  The refitted forest
classifies the test cells; each classifier's per-cell accuracy is reported before
and after removing the cells it calls non-cells.

The published archive has no non-cell list: supply one (--noncells FILE; NONCELLS=FILE
in make).  The synthetic screen writes main/noncells.txt.  Without a list, or with
fewer than --folds cells or non-cells in the training set, nothing is fitted and
result.json says so (a `missing` entry, metrics null); the step still succeeds.

Outputs (in --out DIR)
  quality_filter.json   training set per class, CV table, choice, removed counts, and per
                        classifier {"before": {"value", "correct", "total"}, "after": {...}, "removed": n}
  training_set.csv      path,label,is_cell of the filter's training set (or --training PATH)
  cells.csv             path,p_cell,is_cell_pred per test cell (or --cells PATH)
  quality_filter.png/pdf  accuracy before/after per classifier (or --figure PATH; needs predictions)
  result.json           the result manifest the report reads (written last)

Example:
  python analysis/quality_filter.py --noncells ROOT/noncells.txt --val cp/val.csv --net-val cells_val.csv \\
      --rf-val rf/cells_val.csv --test cp/test.csv --predictions cells_test.csv \\
      --rf-predictions rf/cells_test.csv --out RUN/quality
"""

import argparse
import os

from deepyeast import launcher

NEEDED_WITH_LIST = ("val", "net_val", "rf_val", "test")


def options(p):
    from deepyeast.analysis.quality_filter import (
        PAPER_CELLS_PER_CLASS,
        PAPER_FOLDS,
        PAPER_MTRY,
        PAPER_NTREE,
        PAPER_SAMPLING,
    )

    p.add_argument("--noncells", type=launcher.existing_file, metavar="FILE",
                   help="non-cell list: one archive-relative path per line, all in the validation split "
                        "(without it the filter is reported as not run)")
    p.add_argument("--val", type=launcher.existing_file, metavar="CSV",
                   help="features CSV of the validation cells (the training pool; needed with --noncells)")
    p.add_argument("--net-val", type=launcher.existing_file, metavar="CSV",
                   help="the network's predictions table of the validation cells (needed with --noncells)")
    p.add_argument("--rf-val", type=launcher.existing_file, metavar="CSV",
                   help="the random forest's predictions table of the validation cells (needed with --noncells)")
    p.add_argument("--test", type=launcher.existing_file, metavar="CSV",
                   help="features CSV of the test cells to filter (needed with --noncells)")
    p.add_argument("--predictions", type=launcher.existing_file, help="the network's predictions table (test cells)")
    p.add_argument("--rf-predictions", type=launcher.existing_file,
                   help="the random forest's predictions table (test cells)")
    p.add_argument("--truth", type=launcher.existing_file, metavar="CSV",
                   help="optional path,is_cell table of known non-cells (a synthetic screen's cell_quality.csv) "
                        "to score the filter on the test cells")
    launcher.add(p, "out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--cells", default=None, help="per-test-cell CSV path,p_cell,is_cell_pred (default: OUT/cells.csv)")
    p.add_argument("--training", default=None,
                   help="the training set, CSV path,label,is_cell (default: OUT/training_set.csv)")
    p.add_argument("--figure", default=None,
                   help="bar chart of accuracy before/after, PNG and a PDF beside it (default: OUT/quality_filter.png)")
    p.add_argument("--per-class", type=launcher.positive_int, default=PAPER_CELLS_PER_CLASS,
                   help="cells per class in the training set (default %(default)s)")
    p.add_argument("--mtry", type=launcher.positive_int, nargs="+", default=list(PAPER_MTRY),
                   help="mtry values, capped at the feature count (default %(default)s)")
    p.add_argument("--sampling", nargs="+", default=list(PAPER_SAMPLING), choices=list(PAPER_SAMPLING),
                   help="down-sampling options compared (default both)")
    p.add_argument("--folds", type=_folds, default=PAPER_FOLDS, help="cross-validation folds (default %(default)s)")
    launcher.add(p, "ntree", default=PAPER_NTREE)
    launcher.add_cluster(p, "cross-validation forests (one task per grid point and fold)")
    launcher.add(p, "seed")


def _folds(text):
    value = launcher.positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"{value}: cross-validation needs at least 2 folds")
    return value


def run(args):
    from deepyeast.analysis.quality_filter import (QualityCV, QualityInputs, QualityOutputs, plot_filter_accuracy,
                                                   run_quality_filter, write_quality_result)
    from deepyeast.utils.manifest import clear_result
    from deepyeast.utils.io import InputError

    if args.noncells:
        absent = [name for name in NEEDED_WITH_LIST if getattr(args, name) is None]
        if absent:
            raise InputError(f"with --noncells give also {', '.join('--' + a.replace('_', '-') for a in absent)}")
    clear_result(args.out)
    preds = {}
    if args.predictions:
        preds["network"] = args.predictions
    if args.rf_predictions:
        preds["random_forest"] = args.rf_predictions
    summary = run_quality_filter(
        QualityInputs(args.val, args.net_val, args.rf_val, args.noncells, args.test, preds, truth=args.truth),
        QualityOutputs(json=os.path.join(args.out, "quality_filter.json"),
                       cells=args.cells or os.path.join(args.out, "cells.csv"),
                       training=args.training or os.path.join(args.out, "training_set.csv")),
        per_class=args.per_class, cv=QualityCV(args.mtry, args.sampling, args.folds, args.ntree),
        context=args.context)
    figure = None
    if summary.get("classifiers"):
        figure = args.figure or os.path.join(args.out, "quality_filter.png")
        plot_filter_accuracy(summary, figure)
    in_out = figure is not None and os.path.dirname(os.path.abspath(figure)) == os.path.abspath(args.out)
    write_quality_result(args.out, summary, os.path.basename(figure) if in_out else None, command=args.command)


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
