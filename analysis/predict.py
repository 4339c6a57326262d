#!/usr/bin/env python3
"""Per-cell predictions (and layer features) of a trained DeepYeast net.

Inputs
  --model deploy.prototxt     the deploy net (Input blob "data", ends in "prob")
  --weights W.caffemodel      trained weights (real Caffe's or our engine's snapshot)
  --mean mean.binaryproto     per-pixel training mean, subtracted from every crop
  --archive ROOT --list L     crops ROOT/<relpath> named by a split list (relpath label lines),
                              e.g. --list ROOT/HOwt_test.txt; or
  --lmdb DIR                  a Datum LMDB (cell path = key without its 8-digit prefix)
  --split NAME                split written in every row (default: from the list/LMDB name)
  --engine ours|caffe         our PyTorch engine, or real pycaffe in the Caffe root (make caffe)
  --precision fp32|bf16       our engine's arithmetic: fp32 (default) or bf16 convolutions (about
                              2x faster on CPUs with AVX512-BF16; a few calls near a tie change)
  --no-fold                   run BatchNorm/Scale as separate layers (default: folded into the
                              convolution before them, equal within float32 rounding, ~1e-6)

Outputs
  --out CELLS.csv             path,protein,split,label,pred,prob_0,...,prob_{K-1} (one row per
                              cell; label/pred index the class table; K = 12, or 4 for transfer)
  --features-out DIR          DIR/<blob>.npy (float32 N x D, the blob flattened per cell) for each
                              of --blobs, and DIR/paths.txt (cell paths, same row order);
                              DIR is replaced as a whole
  --features-reduce pool      write blobs with a spatial map (conv1..conv8) as DIR/<blob>.pool.npy
                              instead: float32 N x 2C, per-channel spatial mean then max (what
                              analysis/transfer.py uses; default full)

Example
  python analysis/predict.py --engine ours --model models/deepyeast/deploy.prototxt \\
      --weights runs/deepyeast/snapshots/deepyeast_cpu_iter_450.caffemodel \\
      --mean data/deepyeast/mean.binaryproto --archive ROOT --list ROOT/HOwt_test.txt \\
      --out runs/deepyeast/cells_test.csv --features-out runs/deepyeast/features_test \\
      --blobs conv1,conv2,conv3,conv4,conv5,conv6,conv7,conv8,fc1,fc2,fc3
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepyeast.io_utils import InputError  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=("ours", "caffe"), default="ours")
    ap.add_argument("--model", required=True, help="deploy prototxt")
    ap.add_argument("--weights", required=True, help=".caffemodel")
    ap.add_argument("--mean", required=True, help="mean.binaryproto of the training set")
    src = ap.add_argument_group("input (one of)")
    src.add_argument("--archive", help="archive root holding plateNN/*.png")
    src.add_argument("--list", help="split list (relpath label); relative names are taken under --archive")
    src.add_argument("--lmdb", help="Datum LMDB folder instead of --archive/--list")
    ap.add_argument("--split", help="split name for the table (default: from the list/LMDB name)")
    ap.add_argument("--out", required=True, help="predictions CSV to write")
    ap.add_argument("--features-out", help="folder for <blob>.npy features and paths.txt")
    ap.add_argument("--blobs", default="", help="comma-separated blobs to save, e.g. conv1,...,fc3")
    ap.add_argument("--features-reduce", choices=("full", "pool"), default="full",
                    help="conv blobs as whole maps (full) or per-channel mean and max (pool)")
    ap.add_argument("--prob-blob", default="prob", help="blob holding the class probabilities (default prob)")
    ap.add_argument("--batch", type=int, default=100, help="cells per forward pass (default 100)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="our engine's arithmetic (default fp32; bf16 convolutions are ~2x faster on CPU)")
    ap.add_argument("--no-fold", action="store_true",
                    help="keep BatchNorm/Scale as layers (default: folded into the convolution before them)")
    ap.add_argument("--skip-bad", action="store_true", help="leave out unreadable crops instead of stopping")
    args = ap.parse_args(argv)

    from deepyeast import predict

    if bool(args.lmdb) == bool(args.list):
        ap.error("give either --lmdb or --archive with --list")
    blobs = [b for b in args.blobs.split(",") if b]
    if blobs and not args.features_out:
        ap.error("--blobs needs --features-out")
    if args.features_out and not blobs:
        ap.error("--features-out needs --blobs")
    if args.engine == "caffe" and args.precision != "fp32":
        ap.error("--precision bf16 needs --engine ours (real Caffe computes in float32)")
    t0 = time.time()
    try:
        if args.lmdb:
            cells = predict.cells_from_lmdb(args.lmdb)
        else:
            if not args.archive:
                ap.error("--list needs --archive")
            list_path = args.list
            if not os.path.isabs(list_path) and not os.path.exists(list_path):
                list_path = os.path.join(args.archive, list_path)
            cells = predict.cells_from_list(args.archive, list_path, skip_bad=args.skip_bad)
        table = predict.predict_cells(cells, args.model, args.weights, args.mean, engine=args.engine,
                                      split=args.split, out_csv=args.out, features_out=args.features_out,
                                      feature_blobs=blobs, prob_blob=args.prob_blob, batch=args.batch,
                                      feature_reduce=args.features_reduce, precision=args.precision,
                                      fold=not args.no_fold)
    except InputError as err:
        sys.exit(f"error: {err}")
    from deepyeast.archive import class_names_for_list
    scored = ""
    if args.lmdb or len(class_names_for_list(list_path)) == table.probs.shape[1]:
        acc = float((table.pred == table.label).mean())
        scored = f"accuracy {int((table.pred == table.label).sum())}/{table.n_cells} = {acc:.3f}; "
    else:  # e.g. the 12-class net on transfer cells, whose labels index the 4 transfer classes
        scored = f"labels and the net's {table.probs.shape[1]} classes are different tables, no accuracy; "
    print(f"{table.n_cells} cells ({args.engine} engine, {time.time() - t0:.1f} s): {scored}wrote {args.out}"
          + (f" and {len(blobs)} feature blobs in {args.features_out}" if blobs else ""))


if __name__ == "__main__":
    main()
