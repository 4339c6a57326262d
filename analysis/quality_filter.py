#!/usr/bin/env python3
"""Cell-quality filter as in the paper: a random forest separating cells from non-cells.

Training set (validation split): for each class, --per-class (100) cells picked at
random (seeded, without replacement) among those both the network (--net-val) and
the random forest (--rf-val) classify correctly, labelled as cells, plus every cell of
the non-cell list (--noncells: one archive-relative path per line, all validation
cells; the paper picked 118 by eye).  10-fold cross-validation over mtry
{2,110,218,326,435} (capped at the feature count) x down-sampling of cells
{none, balanced} with 100 trees, chosen by CV accuracy (balanced accuracy reported
beside it); the folds run as tasks on Dask (--scheduler).  The refitted forest
classifies the test cells; each classifier's per-cell accuracy is reported before
and after removing the cells it calls non-cells.

The published archive has no non-cell list: supply one (NONCELLS=FILE in make).
The synthetic screen writes main/noncells.txt.

Writes --out (JSON: training set per class, CV table, choice, removed counts, and
per classifier {"before": {"value","correct","total"}, "after": {...}, "removed": n};
also the flat keys cell_accuracy, cell_accuracy_filtered, rf_cell_accuracy and
rf_cell_accuracy_filtered that the report reads), with --cells path,p_cell,is_cell_pred
per test cell, --training path,label,is_cell of the training set, --figure a bar chart.

Example:
  python analysis/quality_filter.py --val cp/val.csv --net-val cells_val.csv --rf-val rf/cells_val.csv \\
      --noncells ROOT/noncells.txt --test cp/test.csv --predictions cells_test.csv \\
      --rf-predictions rf/cells_test.csv --out RUN/quality/quality_filter.json --cells RUN/quality/cells.csv \\
      --figure RUN/quality/quality_filter.png
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from deepyeast.analysis.cluster import add_cluster_arguments, resolve_scheduler  # noqa: E402
from deepyeast.io_utils import InputError  # noqa: E402
from deepyeast.quality_filter import (  # noqa: E402
    PAPER_CELLS_PER_CLASS,
    PAPER_FOLDS,
    PAPER_MTRY,
    PAPER_NTREE,
    PAPER_SAMPLING,
)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--val", required=True, help="features CSV of the validation cells (the training pool)")
    ap.add_argument("--net-val", required=True, help="the network's predictions table of the validation cells")
    ap.add_argument("--rf-val", required=True, help="the random forest's predictions table of the validation cells")
    ap.add_argument("--noncells", required=True, metavar="FILE",
                    help="non-cell list: one archive-relative path per line, all in the validation split")
    ap.add_argument("--test", required=True, help="features CSV of the test cells to filter")
    ap.add_argument("--predictions", default=None, help="the network's predictions table (test cells)")
    ap.add_argument("--rf-predictions", default=None, help="the random forest's predictions table (test cells)")
    ap.add_argument("--truth", default=None,
                    help="optional path,is_cell table of known non-cells (a synthetic screen's cell_quality.csv) "
                         "to score the filter on the test cells")
    ap.add_argument("--out", required=True, help="summary JSON")
    ap.add_argument("--cells", default=None, help="per-test-cell CSV path,p_cell,is_cell_pred")
    ap.add_argument("--training", default=None, help="the training set, CSV path,label,is_cell")
    ap.add_argument("--figure", default=None,
                    help="bar chart of accuracy before/after (PNG, and a PDF beside it); needs predictions")
    ap.add_argument("--per-class", type=int, default=PAPER_CELLS_PER_CLASS,
                    help=f"cells per class in the training set (default {PAPER_CELLS_PER_CLASS})")
    ap.add_argument("--mtry", type=int, nargs="+", default=list(PAPER_MTRY),
                    help="mtry values, capped at the feature count (default %(default)s)")
    ap.add_argument("--sampling", nargs="+", default=list(PAPER_SAMPLING), choices=list(PAPER_SAMPLING),
                    help="down-sampling options compared (default both)")
    ap.add_argument("--folds", type=int, default=PAPER_FOLDS, help=f"cross-validation folds (default {PAPER_FOLDS})")
    ap.add_argument("--ntree", type=int, default=PAPER_NTREE, help=f"trees per forest (default {PAPER_NTREE})")
    ap.add_argument("--seed", type=int, default=1)
    add_cluster_arguments(ap, "cross-validation forests")
    args = ap.parse_args(argv)
    from deepyeast.quality_filter import plot_filter_accuracy, run_quality_filter

    preds = {}
    if args.predictions:
        preds["network"] = args.predictions
    if args.rf_predictions:
        preds["random_forest"] = args.rf_predictions
    try:
        if args.per_class < 1 or args.folds < 2 or args.ntree < 1:
            raise InputError("--per-class and --ntree must be at least 1, --folds at least 2")
        summary = run_quality_filter(
            args.val, args.net_val, args.rf_val, args.noncells, args.test, preds, truth=args.truth, out_json=args.out,
            out_cells=args.cells, out_training=args.training, per_class=args.per_class, mtry=args.mtry,
            sampling=args.sampling, folds=args.folds, ntree=args.ntree, seed=args.seed,
            scheduler=resolve_scheduler(args.scheduler), jobs=args.jobs, log=lambda m: print(m, file=sys.stderr))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.figure and summary.get("classifiers"):
        plot_filter_accuracy(summary, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
