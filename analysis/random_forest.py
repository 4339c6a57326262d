#!/usr/bin/env python3
"""Random-forest baseline on CellProfiler features (R randomForest through rpy2).

Chooses ntree/mtry/nodesize on the validation cells, then writes the test cells'
predictions table ``path,protein,split,label,pred,prob_0,...`` from the chosen
forest (``pred``: randomForest's class, ties broken at random as its predict()
does, seeded).  Labels come from the split lists (``relpath label``).  Missing
feature values are replaced by the training medians.

Each (mtry, nodesize) pair is one task: a forest grown to the largest ntree with
R randomForest inside a worker, every ntree prefix scored on the validation cells.
Tasks run on Dask (--scheduler local: a LocalCluster of --jobs processes;
tcp://HOST:PORT or $DASK_SCHEDULER: a running cluster) or in this process
(--scheduler none).  The features reach each worker once.  With the same --seed
the chosen grid point and every output are identical whatever the scheduler.

Grids: ``small`` (demo: ntree 50,150 x mtry 20,50 x nodesize 1) or ``paper``
(ntree 50..1000 x mtry 10..300 x nodesize 1..50: 55 forests of 1,000 trees; see
bench/RESULTS.md for the time at the paper's size).

Example:
  python analysis/random_forest.py --train feats_train.csv --val feats_val.csv --test feats_test.csv \\
      --labels-from ROOT/HOwt_train.txt ROOT/HOwt_val.txt ROOT/HOwt_test.txt --grid small \\
      --out rf_predictions.csv --val-out rf_val_predictions.csv --summary rf_grid.json --scheduler local --jobs 2
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from deepyeast.analysis.cluster import add_cluster_arguments, resolve_scheduler  # noqa: E402
from deepyeast.io_utils import InputError  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="features CSV of the training cells")
    ap.add_argument("--val", required=True, help="features CSV of the validation cells (chooses the grid point)")
    ap.add_argument("--test", required=True, help="features CSV of the test cells (predicted)")
    ap.add_argument("--labels-from", nargs="+", required=True, metavar="LIST",
                    help="split list files giving each cell's label (e.g. HOwt_train.txt HOwt_val.txt HOwt_test.txt)")
    ap.add_argument("--grid", default="small", choices=["small", "paper"], help="parameter grid (default small)")
    ap.add_argument("--out", required=True, help="predictions table CSV for the test cells")
    ap.add_argument("--val-out", default=None,
                    help="predictions table CSV of the validation cells from the chosen forest (for the quality filter)")
    ap.add_argument("--summary", default=None, help="JSON with every grid point's validation accuracy and the choice")
    ap.add_argument("--split-name", default="test", help="value of the 'split' column (default test)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (the i-th (mtry, nodesize) forest uses seed+i)")
    add_cluster_arguments(ap, "forests")
    args = ap.parse_args(argv)
    from deepyeast.rforest import run_baseline

    try:
        s = run_baseline(args.train, args.val, args.test, args.labels_from, args.out, grid=args.grid,
                         seed=args.seed, summary_json=args.summary, split_name=args.split_name, val_out=args.val_out,
                         scheduler=resolve_scheduler(args.scheduler), jobs=args.jobs,
                         log=lambda m: print(m, file=sys.stderr))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a = s["test_accuracy"]
    print(f"random forest: test accuracy {a['value']:.4f} ({a['correct']}/{a['total']}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
