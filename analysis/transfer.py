#!/usr/bin/env python3
"""Transfer learning to the 4 unseen compartments with few examples (paper Figure 4C).

Inputs
  --features DIR [DIR ...]  network features of the transfer cells (train, val and
                            test; one dir or one per split) as written by
                            `python -m deepyeast extract`: DIR/<blob>.npy (N x D
                            float32) and DIR/paths.txt
  --lists ROOT              transfer archive root with HOwt_transfer_{train,val,test}.txt
  --labels CSV              or: a CSV with path,split,label (e.g. a predictions table)
  --cellprofiler CSV        CellProfiler features of the same cells (path,<feature>,...)

Outputs (in --out)
  transfer.csv              feature_set,n_per_class,n_train,accuracy,lo,hi,correct,total,
                            max_features,val_accuracy (accuracy as a fraction, 95% bootstrap)
  transfer.json             settings, rows, transfer_accuracy[feature_set][n] with counts
  transfer_layers.png/pdf   accuracy vs examples per class, every feature set (log x)
  transfer_accuracy.png/pdf Figure 4C: best layer (chosen on validation) vs CellProfiler

Conv blobs are reduced to per-channel spatial mean and max (--reduce pool; see
deepyeast/transfer.py for why); --reduce full uses every activation.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepyeast import constants  # noqa: E402
from deepyeast.analysis.features import read_label_lists, read_label_table  # noqa: E402
from deepyeast.utils.io import InputError  # noqa: E402
from deepyeast.analysis.transfer import MAX_FEATURES_GRID, N_PER_CLASS, run_transfer  # noqa: E402


def _ints(text):
    return tuple(int(v) for v in text.split(","))


def _grid(text):
    return tuple(v if v in ("sqrt", "log2") else float(v) for v in text.split(","))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", nargs="+", required=True, metavar="DIR", help="network feature dir(s)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--lists", metavar="ROOT", help="transfer archive root with HOwt_transfer_*.txt")
    source.add_argument("--labels", metavar="CSV", help="CSV with columns path,split,label")
    parser.add_argument("--list-prefix", default="HOwt_transfer", help="list file prefix (default %(default)s)")
    parser.add_argument("--cellprofiler", metavar="CSV", nargs="+",
                        help="CellProfiler features of the same cells (one CSV or one per split)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--blobs", help="comma-separated blobs (default: every conv1..fc3 present)")
    parser.add_argument("--reduce", choices=("pool", "full"), default="pool",
                        help="conv blob features: per-channel mean+max (default) or all activations")
    parser.add_argument("--n-per-class", type=_ints, default=N_PER_CLASS,
                        help="training sizes per class (default %(default)s)")
    parser.add_argument("--grid", type=_grid, default=MAX_FEATURES_GRID,
                        help="random-forest max_features values tried on validation (default sqrt,log2,0.1)")
    parser.add_argument("--trees", type=int, default=100, help="trees per forest (default %(default)s)")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap resamples (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of subsampling, forests, bootstrap")
    parser.add_argument("--jobs", type=int, default=-1,
                        help="worker processes, one feature set each (default -1: all cores)")
    args = parser.parse_args(argv)
    n_classes = constants.N_TRANSFER_CLASSES
    try:
        if args.lists:
            labels = read_label_lists(args.lists, args.list_prefix, n_classes=n_classes)
        else:
            labels = read_label_table(args.labels, n_classes=n_classes)
        run_transfer(args.features, labels, args.out, constants.TRANSFER_CLASS_NAMES,
                     blobs=args.blobs.split(",") if args.blobs else None, cp_csv=args.cellprofiler,
                     reduce=args.reduce, n_per_class=args.n_per_class, grid=args.grid, n_trees=args.trees,
                     n_boot=args.boot, seed=args.seed, n_jobs=args.jobs)
    except InputError as err:
        parser.exit(2, f"error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
