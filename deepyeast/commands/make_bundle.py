"""Write a run's trained model as a bundle folder (Caffe model-zoo style, with bundle.json).

--out DIR (replaced as a whole, atomically, only after it passes the checks a reader
makes) gets deploy.prototxt, weights.caffemodel, mean.binaryproto, classes.txt,
readme.md and bundle.json (see deepyeast/model/bundle.py); with --examples also
examples.npy, the first crop of each class in that split list (the test input of a
bioimage.io export).

--classes   a label;label_idx table (HOwt_doc.txt); names equal to DeepYeast's class
            table up to case are written as DeepYeast spells them (ER, Golgi)
--solver    the run's solver: its schedule (and the train net's batch size) go into
            the readme and bundle.json
--metrics   the report's metrics.json: the headline accuracies are copied, and beside the
            forest's, what it learned from (rf_features: ours are not the paper's 435 features)
--trained-on  one line on the training data (default: from the solver's training LMDB)
--ood-train, --ood-val  the run's training and validation split lists: the bundle then stores
            the class means and tied covariance of the training cells' fc1 features and the
            mean and covariance of their crops' input statistics (classify_screen's
            out-of-distribution score and flag; at most --ood-cells training cells, an even
            sample), the flag thresholds (99th percentiles of the validation cells' scores) and
            a temperature fitted on the validation cells, with the expected calibration error
            before and after (readme, bundle.json); see deepyeast/analysis/ood.py
--precision the network's arithmetic for those statistics: fp32 (default) or bf16 (recorded
            in bundle.json as ood.network_precision and in the readme)

Example:
  python analysis/make_bundle.py --model models/deepyeast/deploy.prototxt --weights W.caffemodel \\
      --mean RUN/lmdb/mean.binaryproto --classes ROOT/HOwt_doc.txt --out RUN/model \\
      --solver RUN/train/solver.prototxt --metrics RUN/metrics.json --examples ROOT/HOwt_test.txt

The library logic (the facts gathered from the run) is :mod:`deepyeast.model.make_bundle`.
"""

from deepyeast import launcher


def options(p):
    launcher.add(p, "model", required=True, help="deploy prototxt of the trained net")
    launcher.add(p, "weights", required=True)
    launcher.add(p, "mean", required=True, help="mean.binaryproto of the training crops")
    p.add_argument("--classes", required=True, metavar="TXT", type=launcher.existing_file,
                   help="class table (label;label_idx lines, e.g. HOwt_doc.txt)")
    launcher.add(p, "out", required=True, metavar="DIR", help="bundle folder to write (e.g. RUN/model)")
    p.add_argument("--solver", metavar="PROTOTXT", type=launcher.existing_file,
                   help="the run's solver prototxt (schedule for the readme)")
    p.add_argument("--metrics", metavar="JSON", type=launcher.existing_file,
                   help="the run's metrics.json (headline accuracies for the readme)")
    p.add_argument("--examples", metavar="LIST", type=launcher.existing_file,
                   help="split list whose first crop per class becomes examples.npy")
    p.add_argument("--trained-on", help="one line describing the training data")
    p.add_argument("--name", default="DeepYeast", help="model name (default %(default)s)")
    ood = p.add_argument_group("out-of-distribution statistics and temperature")
    ood.add_argument("--ood-train", metavar="LIST", type=launcher.existing_file,
                     help="training split list (e.g. ROOT/HOwt_train.txt): class statistics of fc1 features")
    ood.add_argument("--ood-val", metavar="LIST", type=launcher.existing_file,
                     help="validation split list: the flag thresholds and the temperature")
    ood.add_argument("--ood-cells", type=launcher.positive_int, default=20000,
                     help="at most this many training cells, an even sample of the list (default %(default)s)")
    launcher.add(ood, "precision", help="arithmetic of the network computing the statistics' features: fp32 "
                                        "(Caffe's, classify_screen's default) or bf16 (about 2x faster; the thresholds "
                                        "move by a fraction of a percent) (default %(default)s)")


def ood_statistics(args):
    """(arrays, meta) of :func:`deepyeast.analysis.ood.fit_bundle_statistics` for the run's net, or None."""
    from deepyeast.analysis.ood import OOD_BLOB, fit_bundle_statistics
    from deepyeast.caffe.blobs import read_mean_binaryproto
    from deepyeast.engine.inference import NetFiles, Predictor
    from deepyeast.model.make_bundle import class_names, list_crops
    from deepyeast.utils.io import InputError

    if not (args.ood_train or args.ood_val):
        return None
    if not (args.ood_train and args.ood_val):
        raise InputError("--ood-train and --ood-val go together (training cells: class statistics; validation "
                         "cells: thresholds and temperature)")
    classes = class_names(args.classes)
    train_crops, train_labels = list_crops(args.ood_train, classes, args.ood_cells)
    val_crops, val_labels = list_crops(args.ood_val, classes)
    predictor = Predictor(NetFiles(args.model, args.weights, read_mean_binaryproto(args.mean)),
                          launcher.inference_settings(args), keep=("prob", OOD_BLOB))
    return fit_bundle_statistics(predictor, train_crops, train_labels, val_crops, val_labels, len(classes))


def run(args):
    from deepyeast.model.make_bundle import RunFiles, bundle_from_run

    files = RunFiles(deploy=args.model, weights=args.weights, mean=args.mean, classes=args.classes,
                     solver=args.solver, metrics=args.metrics, examples=args.examples)
    ood = ood_statistics(args)
    bundle = bundle_from_run(args.out, files, trained_on=args.trained_on, name=args.name, ood=ood)
    examples = bundle.examples()
    print(f"wrote {args.out} ({bundle.n_classes} classes"
          + (f", {len(examples)} example crops" if examples is not None else "")
          + (f"; out-of-distribution thresholds {ood[1]['threshold']:.4g} (fc1), {ood[1]['input_threshold']:.4g} "
             f"(input), temperature {ood[1]['temperature']:.3g}, ECE {ood[1]['ece_before']:.3f} -> "
             f"{ood[1]['ece_after']:.3f}" if ood else "") + ")")


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
