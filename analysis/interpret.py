#!/usr/bin/env python3
"""What the DeepYeast layers encode (paper Figure 3).

Inputs
  --features DIR        network features of the cells (`python -m deepyeast extract`):
                        DIR/<blob>.npy (N x D float32, blob flattened C x H x W) and DIR/paths.txt
  --lists ROOT          archive root with HOwt_{train,val,test}.txt (labels), or
  --labels CSV          a CSV with path,label (e.g. a predictions table)
  --cellprofiler CSV    CellProfiler features of the same cells (for Figure 3D correlations)
  --archive ROOT        archive root holding the cells' PNGs (for Figure 3A patches), or
  --lmdb DIR            a Datum LMDB holding them

Outputs (in --out)
  tsne.png/pdf, tsne.csv        Figure 3B: t-SNE of --n-tsne random cells per layer, by class
  patches.png/pdf               Figure 3A: input patches (receptive fields) that most activate
                                chosen neurons of conv1, conv2, conv4, conv8 and fc3
  neurons_<blob>.csv            per neuron: mutual information (nats) of its quantile-binned output
                                with the class, fraction of the class entropy, strongest
                                CellProfiler feature and its Pearson r
  neurons.png/pdf               Figure 3D: those per layer
  interpret.json                summary (settings, per-layer medians, chosen neurons, patch cells)

A conv neuron is a channel, summarised per cell by the spatial max (or --summary mean).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepyeast import constants  # noqa: E402
from deepyeast.analysis.features import read_label_lists, read_label_table  # noqa: E402
from deepyeast.analysis.interpret import PATCH_LAYERS, run_interpretation  # noqa: E402
from deepyeast.utils.io import InputError  # noqa: E402


def _neurons(text):
    """'conv1:3,7;fc3:0' -> {'conv1': [3, 7], 'fc3': [0]}"""
    out = {}
    for part in filter(None, text.split(";")):
        blob, _, ids = part.partition(":")
        out[blob.strip()] = [int(v) for v in ids.split(",") if v.strip()]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", required=True, metavar="DIR", help="network feature dir")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--lists", metavar="ROOT", help="archive root with the list files")
    source.add_argument("--labels", metavar="CSV", help="CSV with columns path,label")
    parser.add_argument("--list-prefix", default="HOwt", help="list file prefix (default %(default)s)")
    parser.add_argument("--classes", choices=("main", "transfer"), default="main",
                        help="class table of the labels (default %(default)s: the 12 compartments)")
    parser.add_argument("--cellprofiler", metavar="CSV", help="CellProfiler features of the same cells")
    images = parser.add_mutually_exclusive_group()
    images.add_argument("--archive", metavar="ROOT", help="archive root with the cell PNGs (for patches)")
    images.add_argument("--lmdb", metavar="DIR", help="Datum LMDB with the cells (for patches)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--blobs", help="comma-separated blobs (default: every conv1..fc3 present)")
    parser.add_argument("--patch-layers", default=",".join(PATCH_LAYERS), help="layers of Figure 3A")
    parser.add_argument("--neurons", type=_neurons, default=None,
                        help="neurons for Figure 3A, e.g. 'conv1:3,7;fc3:0,5' (default: highest MI; "
                             "fc3: the first classes)")
    parser.add_argument("--n-neurons", type=int, default=4, help="neurons per layer in Figure 3A")
    parser.add_argument("--n-patches", type=int, default=8, help="patches per neuron in Figure 3A")
    parser.add_argument("--n-tsne", type=int, default=1000, help="random cells in the t-SNE (default 1000)")
    parser.add_argument("--tsne-reduce", choices=("pool", "full"), default="pool",
                        help="t-SNE input for conv blobs: per-channel mean+max (default) or all activations")
    parser.add_argument("--bins", type=int, default=10, help="quantile bins for mutual information")
    parser.add_argument("--summary", choices=("max", "mean"), default="max",
                        help="conv neuron output per cell: spatial max (default) or mean")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    class_names = constants.CLASS_NAMES if args.classes == "main" else constants.TRANSFER_CLASS_NAMES
    try:
        if args.lists:
            labels = read_label_lists(args.lists, args.list_prefix, n_classes=len(class_names))
        else:
            labels = read_label_table(args.labels, n_classes=len(class_names))
        run_interpretation(args.features, args.out, labels, class_names,
                           blobs=args.blobs.split(",") if args.blobs else None, cp_csv=args.cellprofiler,
                           archive_root=args.archive, lmdb_path=args.lmdb, n_tsne=args.n_tsne, n_bins=args.bins,
                           patch_layers=tuple(args.patch_layers.split(",")), neurons=args.neurons,
                           n_neurons=args.n_neurons, n_patches=args.n_patches, summary=args.summary,
                           tsne_reduce=args.tsne_reduce, seed=args.seed)
    except InputError as err:
        parser.exit(2, f"error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
