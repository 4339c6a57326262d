"""What the DeepYeast layers encode (paper Figure 3).

Inputs
  --features DIR        network features of the cells (analysis/predict.py --features-out or
                        `deepyeast extract`): DIR/<blob>.npy (N x D float32, blob flattened C x H x W)
                        and DIR/paths.txt
  --lists ROOT          archive root with HOwt_{train,val,test}.txt (labels), or
  --labels CSV          a CSV with path,label (e.g. a predictions table)
  --cellprofiler CSV    CellProfiler features of the same cells (for Figure 3D correlations)
  --archive ROOT        archive root holding the cells' PNGs (for Figure 3A patches), or
  --lmdb DIR            a Datum LMDB holding them
  --weights W.caffemodel  the trained weights (for Figure S4: the first layer's filters against Gabor
                        filters)
  --tsne-features DIR   whole maps of some cells (predict.py --features-reduce full --sample 1000): the
                        t-SNE embeds those cells from every neuron's output, as the paper (instead of
                        --n-tsne random cells from pooled maps)

Outputs (in --out DIR)
  tsne.png/pdf, tsne.csv        Figure 3B: t-SNE of --n-tsne random cells per layer, by class
  patches.png/pdf               Figure 3A: input patches (receptive fields) that most activate
                                chosen neurons of conv1, conv2, conv4, conv8 and fc3
  neurons_<blob>.csv            per neuron: mutual information (nats) of its quantile-binned output
                                with the class, fraction of the class entropy, strongest
                                CellProfiler feature and its Pearson r
  neurons.png/pdf               Figure 3D: those per layer, and a box of the CellProfiler features'
                                mutual information with the class (same quantile bins)
  cellprofiler_mi.csv           per CellProfiler feature: its mutual information with the class
  gabor.png/pdf                 Figure S4 (our reading; with --weights): conv1's filters beside their best
                                Gabor filters, their Gabor fit against random filters', and per layer the
                                neurons' strongest |r| to CellProfiler's Gabor texture features
  gabor_filters.csv             per first-layer filter: Gabor fit R^2, per input channel |cosine| and the
                                fitted Gabor's wavelength, sigma, aspect, angle, phase
  interpret.json                summary (settings, per-layer medians, chosen neurons, patch cells)
  result.json                   the result manifest the report reads (written last)

A conv neuron is a channel, summarised per cell by the spatial max (or --neuron-summary mean).

Example:
  python analysis/interpret.py --features RUN/features/test --labels RUN/cells_test.csv \\
      --cellprofiler RUN/cellprofiler/test.csv --archive ROOT --out RUN/interpret
"""

from deepyeast import constants, launcher
from deepyeast.analysis.features import read_label_lists, read_label_table
from deepyeast.analysis.interpret import PATCH_LAYERS, InterpretInputs, InterpretSettings, run_interpretation
from deepyeast.analysis.interpret.tsne import TSNE_MODES


def _neurons(text):
    """'conv1:3,7;fc3:0' -> {'conv1': [3, 7], 'fc3': [0]}"""
    out = {}
    for part in filter(None, text.split(";")):
        blob, _, ids = part.partition(":")
        out[blob.strip()] = [int(v) for v in ids.split(",") if v.strip()]
    return out


def options(p):
    p.add_argument("--features", required=True, metavar="DIR", type=launcher.existing_dir, help="network feature dir")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--lists", metavar="ROOT", type=launcher.existing_dir, help="archive root with the list files")
    source.add_argument("--labels", metavar="CSV", type=launcher.existing_file, help="CSV with columns path,label")
    p.add_argument("--list-prefix", default=constants.LIST_PREFIX, help="list file prefix (default %(default)s)")
    p.add_argument("--classes", choices=sorted(constants.CLASS_SETS), default="main",
                   help="class table of the labels (default %(default)s: the 12 compartments)")
    p.add_argument("--cellprofiler", metavar="CSV", type=launcher.existing_file,
                   help="CellProfiler features of the same cells")
    images = p.add_mutually_exclusive_group()
    images.add_argument("--archive", metavar="ROOT", type=launcher.existing_dir,
                        help="archive root with the cell PNGs (for patches)")
    launcher.add(images, "lmdb", help="Datum LMDB with the cells (for patches)")
    launcher.add(p, "weights", help="trained .caffemodel (Figure S4: its first layer's filters against Gabor filters)")
    p.add_argument("--tsne-features", metavar="DIR", type=launcher.existing_dir,
                   help="whole maps of the t-SNE cells (predict.py --features-reduce full --sample N): t-SNE on "
                        "every neuron's output of those cells, as the paper")
    p.add_argument("--model", metavar="PROTOTXT", type=launcher.existing_file,
                   help="deploy prototxt the features came from (default: models/deepyeast/deploy.prototxt)")
    launcher.add(p, "out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--blobs", help="comma-separated blobs (default: every learned layer's blob present)")
    p.add_argument("--patch-layers", default=",".join(PATCH_LAYERS), help="layers of Figure 3A")
    p.add_argument("--neurons", type=_neurons, default=None,
                   help="neurons for Figure 3A, e.g. 'conv1:3,7;fc3:0,5' (default: highest MI; "
                        "fc3: the first classes)")
    p.add_argument("--n-neurons", type=int, default=4, help="neurons per layer in Figure 3A")
    p.add_argument("--n-patches", type=int, default=8, help="patches per neuron in Figure 3A")
    p.add_argument("--n-tsne", type=int, default=1000, help="random cells in the t-SNE (default 1000)")
    p.add_argument("--tsne-reduce", choices=("pool", "full"), default="pool",
                   help="t-SNE input for conv blobs: per-channel mean+max (default) or all activations")
    p.add_argument("--tsne", choices=TSNE_MODES, default="fast",
                   help="t-SNE settings: fast (standardised, 50 principal components, 500 iterations; default) or "
                        "paper (scikit-learn's defaults on the raw features, as the paper)")
    p.add_argument("--bins", type=int, default=10, help="quantile bins for mutual information (neurons and "
                                                        "CellProfiler features alike)")
    p.add_argument("--neuron-summary", choices=("max", "mean"), default="max",
                   help="conv neuron output per cell: spatial max (default) or mean")
    launcher.add(p, "seed")
    launcher.add(p, "jobs", help="processes for the t-SNE maps, one layer each at a time (default: every CPU, "
                                 "%(default)s here); the results do not depend on it")


def run(args):
    class_names = constants.CLASS_SETS[args.classes]
    if args.lists:
        labels = read_label_lists(args.lists, args.list_prefix, n_classes=len(class_names))
    else:
        labels = read_label_table(args.labels, n_classes=len(class_names))
    inputs = InterpretInputs(args.features, labels, class_names, blobs=args.blobs.split(",") if args.blobs else None,
                             cp_csv=args.cellprofiler, archive_root=args.archive, lmdb_path=args.lmdb,
                             model=args.model, weights=args.weights, tsne_features=args.tsne_features)
    settings = InterpretSettings(n_tsne=args.n_tsne, n_bins=args.bins, patch_layers=tuple(args.patch_layers.split(",")),
                                 neurons=args.neurons, n_neurons=args.n_neurons, n_patches=args.n_patches,
                                 summary=args.neuron_summary, tsne_reduce=args.tsne_reduce, tsne=args.tsne)
    run_interpretation(inputs, args.out, settings, args.context)


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
