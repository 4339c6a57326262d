"""Per-cell predictions (and layer features) of a trained DeepYeast net.

Inputs
  --bundle DIR                a model bundle (RUN/model of make demo / make reproduce, make_bundle.py's
                              or convert_keras_weights.py's output): the net, its weights, its mean
                              and its input scale ((crop - mean) * scale, e.g. 1/127.5 for the
                              authors' Keras model); or the loose files of a net trained here:
  --model deploy.prototxt     the deploy net (Input blob "data", ends in "prob")
  --weights W.caffemodel      trained weights (real Caffe's or our engine's snapshot)
  --mean mean.binaryproto     per-pixel training mean, subtracted from every crop (input scale 1);
                              files of a bundle whose preprocessing they would not reproduce are
                              refused (give --bundle)
  --archive ROOT --list L     crops ROOT/<relpath> named by a split list (relpath label lines),
                              e.g. --list ROOT/HOwt_test.txt; or
  --lmdb DIR                  a Datum LMDB (cell path = key without its 8-digit prefix); or
  --mixed TABLE               the crops of the proteins with two compartments a mixed-protein table
                              names (protein,compartment_a,compartment_b), found as
                              plateNN/<f1>-*.png next to the table; --not-in LIST... checks that
                              none of them is in a split list; rows have split "mixed" and the
                              first compartment as label
  --sample N [--seed S]       with --list: a seeded random sample of N of the listed cells, in list
                              order (e.g. the 1,000 t-SNE cells whose whole maps make reproduce keeps)
  --split NAME                split written in every row (default: from the list/LMDB name)
  --engine ours|caffe         our PyTorch engine, or real pycaffe in the Caffe root (make caffe)
  --precision fp32|bf16       our engine's arithmetic: fp32 (default) or bf16 convolutions (about
                              2x faster on CPUs with AVX512-BF16; a few calls near a tie change)
  --gpu ID                    run our engine on this CUDA device (default: CPU)
  --no-fold                   run BatchNorm/Scale as separate layers (default: folded into the
                              convolution before them, equal within float32 rounding, ~1e-6)

Outputs
  --out CELLS.csv             path,protein,split,label,pred,prob_0,...,prob_{K-1} (one row per
                              cell; label/pred index the class table; K = 12, or 4 for transfer);
                              --out is the table itself (the step's product other steps read)
  --features-out DIR          DIR/<blob>.npy (float32 N x D, the blob flattened per cell) for each
                              of --blobs (default: every layer with learned weights, conv1 ..
                              fc3 for DeepYeast), and DIR/paths.txt (cell paths, same row order);
                              DIR is replaced as a whole
  --features-reduce pool|full pool (default): blobs with a spatial map (conv1..conv8) as
                              DIR/<blob>.pool.npy, float32 N x 2C, per-channel spatial mean then
                              max (what transfer and interpretation use), and DIR/<blob>.top.npz,
                              each channel's 16 most activated cells with the position of their
                              strongest unit (the activating-patch search); 15 KiB per cell
                              for DeepYeast.  full: whole maps, 4 MiB per cell (conv1 alone 1 MiB)

Examples
  python analysis/predict.py --bundle runs/demo/model --archive ROOT --list ROOT/HOwt_test.txt \\
      --out cells_test.csv
  python analysis/predict.py --engine ours --model models/deepyeast/deploy.prototxt \\
      --weights runs/deepyeast/snapshots/deepyeast_cpu_iter_450.caffemodel \\
      --mean data/deepyeast/mean.binaryproto --archive ROOT --list ROOT/HOwt_test.txt \\
      --out runs/deepyeast/cells_test.csv --features-out runs/deepyeast/features_test
"""

import os
import time

from deepyeast import launcher
from deepyeast.utils.io import InputError


def options(p):
    p.add_argument("--engine", choices=("ours", "caffe"), default="ours",
                   help="our PyTorch engine or real pycaffe in the Caffe root (default %(default)s)")
    net = p.add_argument_group("network (--bundle, or --model with --weights and --mean)")
    launcher.add(net, "bundle")
    launcher.add(net, "model", help="deploy prototxt")
    launcher.add(net, "weights")
    launcher.add(net, "mean")
    src = p.add_argument_group("input (one of)")
    launcher.add(src, "archive")
    src.add_argument("--list", help="split list (relpath label); relative names are taken under --archive")
    launcher.add(src, "lmdb", help="Datum LMDB folder instead of --archive/--list")
    src.add_argument("--mixed", metavar="TABLE", type=launcher.existing_file,
                     help="mixed-protein table: predict its proteins' crops (next to the table)")
    src.add_argument("--not-in", nargs="+", default=(), metavar="LIST", type=launcher.existing_file,
                     help="with --mixed: split lists the mixed proteins must not be in")
    p.add_argument("--sample", type=int, default=None, metavar="N",
                   help="with --list: a seeded random sample of N listed cells, kept in list order (all if N >= cells)")
    launcher.add(p, "seed", help="seed of --sample (default %(default)s)")
    p.add_argument("--split", help="split name for the table (default: from the list/LMDB name)")
    launcher.add(p, "out", required=True, metavar="CSV", help="predictions CSV to write")
    p.add_argument("--features-out", metavar="DIR", help="folder for <blob>.npy features and paths.txt")
    p.add_argument("--blobs", default=None,
                   help="comma-separated blobs to save (default with --features-out: every learned layer's blob)")
    p.add_argument("--features-reduce", choices=("full", "pool"), default="pool",
                   help="conv blobs as per-channel mean and max with each channel's top cells (pool, the "
                        "default) or as whole maps (full)")
    p.add_argument("--prob-blob", default=None,
                   help="blob holding the class probabilities (default: the bundle's output blob, else prob)")
    launcher.add(p, "batch", help="cells per forward pass (default %(default)s)")
    launcher.add(p, "precision")
    launcher.add(p, "gpu")
    p.add_argument("--no-fold", action="store_true",
                   help="keep BatchNorm/Scale as layers (default: folded into the convolution before them)")
    p.add_argument("--skip-bad", action="store_true", help="leave out unreadable crops instead of stopping")


def network(args):
    """(NetFiles, probability blob) of ``--bundle`` or of ``--model/--weights/--mean``; InputError otherwise."""
    from deepyeast.analysis import predict

    loose = [f"--{k}" for k in ("model", "weights", "mean") if getattr(args, k)]
    if args.bundle:
        if loose:
            raise InputError(f"--bundle carries the net, its weights and its mean; drop {', '.join(loose)}")
        from deepyeast.model import read_bundle

        bundle = read_bundle(args.bundle)
        return bundle.net_files, args.prob_blob or bundle.output_blob
    if len(loose) != 3:
        raise InputError("give --bundle DIR, or all of --model, --weights and --mean")
    return predict.net_files(args.model, args.weights, args.mean), args.prob_blob or "prob"


def run(args):
    from deepyeast.analysis import predict
    from deepyeast.analysis.features import network_blobs
    from deepyeast.data.lists import class_names_for_list

    if sum(map(bool, (args.lmdb, args.list, args.mixed))) != 1:
        raise InputError("give one of --lmdb, --archive with --list, or --mixed")
    if args.list and not args.archive:
        raise InputError("--list needs --archive")
    if args.sample is not None and not args.list:
        raise InputError("--sample needs --archive with --list")
    blobs = [b for b in (args.blobs or "").split(",") if b]
    if blobs and not args.features_out:
        raise InputError("--blobs needs --features-out")
    if args.engine == "caffe" and args.precision != "fp32":
        raise InputError("--precision bf16 needs --engine ours (real Caffe computes in float32)")
    if args.engine == "caffe" and args.gpu is not None:
        raise InputError("--gpu needs --engine ours (the Caffe root runs pycaffe on the CPU)")
    model, prob_blob = network(args)
    if args.features_out and not blobs:
        blobs = network_blobs(model.deploy)
    t0 = time.time()
    list_path = None
    if args.lmdb:
        cells = predict.cells_from_lmdb(args.lmdb)
    elif args.mixed:
        from deepyeast.data.lists import MIXED_SPLIT
        cells = predict.cells_from_mixed(args.mixed, args.not_in, skip_bad=args.skip_bad)
        args.split = args.split or MIXED_SPLIT
    else:
        list_path = args.list
        if not os.path.isabs(list_path) and not os.path.exists(list_path):
            list_path = os.path.join(args.archive, list_path)
        cells = predict.cells_from_list(args.archive, list_path, skip_bad=args.skip_bad, sample=args.sample,
                                        seed=args.seed)
    features = predict.FeatureRequest(args.features_out, tuple(blobs), args.features_reduce) \
        if args.features_out else None
    table = predict.predict_cells(cells, model, launcher.inference_settings(args, fold=not args.no_fold),
                                  engine=args.engine, split=args.split, out_csv=args.out, features=features,
                                  prob_blob=prob_blob)
    if list_path is None or len(class_names_for_list(list_path)) == table.probs.shape[1]:
        acc = float((table.pred == table.label).mean())
        scored = f"accuracy {int((table.pred == table.label).sum())}/{table.n_cells} cells = {acc:.3f}; "
    else:  # e.g. the 12-class net on transfer cells, whose labels index the 4 transfer classes
        scored = f"labels and the net's {table.probs.shape[1]} classes are different tables, no accuracy; "
    print(f"{table.n_cells} cells ({args.engine} engine, {time.time() - t0:.1f} s): {scored}wrote {args.out}"
          + (f" and {len(blobs)} feature blobs in {args.features_out}" if blobs else ""))


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
