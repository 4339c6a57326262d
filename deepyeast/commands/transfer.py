"""Transfer learning to the 4 unseen compartments with few examples (paper Figures 4B, 4C, S6).

Inputs
  --features DIR [DIR ...]  network features of the transfer cells (train, val and test; one
                            folder or one per split), as analysis/predict.py --features-out or
                            `deepyeast extract` write them: DIR/<blob>.npy and DIR/paths.txt
  --lists ROOT              transfer archive root with HOwt_transfer_{train,val,test}.txt
  --labels CSV              or: a CSV with path,split,label (e.g. a predictions table)
  --cellprofiler CSV        CellProfiler features of the same cells (path,<feature>,...)

Outputs (in --out DIR)
  transfer.csv              feature_set,n_per_class,n_train,accuracy,lo,hi,correct,total,
                            max_features,val_accuracy (accuracy as a fraction, 95% bootstrap)
  transfer.json             settings, rows, transfer_accuracy[feature_set][n] with counts
  transfer_accuracy.png/pdf Figure 4C: the forest on fc1 features (the paper's headline; intervals
                            from 20,000 bootstrap resamples) vs CellProfiler features
  transfer_layers.png/pdf   Figure S6: every layer, the best on validation drawn thicker
  transfer_tsne.png/pdf     Figure 4B: t-SNE of the transfer cells' fc1 features by class
  transfer_tsne.csv         its coordinates (path,split,label,x,y)
  result.json               the result manifest the report reads (written last)

Conv blobs are reduced to per-channel spatial mean and max (--reduce pool; see
deepyeast/analysis/transfer.py for why); --reduce full uses every activation.

Example:
  python analysis/transfer.py --features RUN/features/transfer_{train,val,test} --lists ROOT/transfer \\
      --cellprofiler RUN/cellprofiler/transfer_{train,val,test}.csv --out RUN/transfer
"""

from deepyeast import constants, launcher
from deepyeast.analysis.features import read_label_lists, read_label_table
from deepyeast.analysis.interpret.tsne import TSNE_MODES
from deepyeast.analysis.transfer import (HEADLINE_LAYER, HEADLINE_RESAMPLES, MAX_FEATURES_GRID, N_PER_CLASS,
                                         TransferFeatures, TransferSettings, run_transfer)


def _ints(text):
    return tuple(int(v) for v in text.split(","))


def _grid(text):
    return tuple(v if v in ("sqrt", "log2") else float(v) for v in text.split(","))


def options(p):
    p.add_argument("--features", nargs="+", required=True, metavar="DIR", type=launcher.existing_dir,
                   help="network feature folder(s)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--lists", metavar="ROOT", type=launcher.existing_dir,
                        help="transfer archive root with HOwt_transfer_*.txt")
    source.add_argument("--labels", metavar="CSV", type=launcher.existing_file, help="CSV with columns path,split,label")
    p.add_argument("--list-prefix", default=constants.list_prefix("transfer"),
                   help="list file prefix (default %(default)s)")
    p.add_argument("--cellprofiler", metavar="CSV", nargs="+", type=launcher.existing_file,
                   help="CellProfiler features of the same cells (one CSV or one per split)")
    p.add_argument("--model", metavar="PROTOTXT", type=launcher.existing_file,
                   help="deploy prototxt the features came from (default: models/deepyeast/deploy.prototxt)")
    launcher.add(p, "out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--blobs", help="comma-separated blobs (default: every learned layer's blob present)")
    p.add_argument("--reduce", choices=("pool", "full"), default="pool",
                   help="conv blob features: per-channel mean+max (default) or all activations")
    p.add_argument("--n-per-class", type=_ints, default=N_PER_CLASS,
                   help="training sizes per class (default %(default)s)")
    p.add_argument("--grid", type=_grid, default=MAX_FEATURES_GRID,
                   help="random-forest max_features values tried on validation (default sqrt,log2,0.1)")
    p.add_argument("--headline-layer", default=HEADLINE_LAYER,
                   help="layer of the headline curve, Figure 4C (default %(default)s, the paper's)")
    p.add_argument("--headline-resamples", type=launcher.positive_int, default=HEADLINE_RESAMPLES,
                   help="bootstrap resamples of the headline intervals (default %(default)s, the paper's)")
    p.add_argument("--tsne", choices=TSNE_MODES, default="fast",
                   help="t-SNE settings of Figure 4B: fast (default) or paper (scikit-learn's defaults)")
    p.add_argument("--n-tsne", type=launcher.positive_int, default=1000,
                   help="random transfer cells in the t-SNE (default %(default)s)")
    launcher.add(p, "ntree")
    launcher.add(p, "resamples", help="bootstrap resamples of the other curves' intervals (default %(default)s)")
    launcher.add(p, "seed", help="seed of subsampling, forests, bootstrap (default %(default)s)")
    launcher.add(p, "jobs", help="worker processes, one feature set each (default: every CPU)")


def run(args):
    n_classes = constants.N_TRANSFER_CLASSES
    features_note = None
    if args.cellprofiler:
        from deepyeast.analysis.cp_features import describe_feature_csv

        features_note = describe_feature_csv(args.cellprofiler[0])
    if args.lists:
        labels = read_label_lists(args.lists, args.list_prefix, n_classes=n_classes)
    else:
        labels = read_label_table(args.labels, n_classes=n_classes)
    features = TransferFeatures(args.features, labels, blobs=args.blobs.split(",") if args.blobs else None,
                                cp_csv=args.cellprofiler, reduce=args.reduce, model=args.model,
                                features_note=features_note)
    settings = TransferSettings(n_per_class=args.n_per_class, grid=args.grid, n_trees=args.ntree,
                                n_resamples=args.resamples, headline_layer=args.headline_layer,
                                headline_resamples=args.headline_resamples, tsne=args.tsne, n_tsne=args.n_tsne)
    run_transfer(features, args.out, constants.TRANSFER_CLASS_NAMES, settings, args.context)


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
