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

Example:
  python analysis/make_bundle.py --model models/deepyeast/deploy.prototxt --weights W.caffemodel \\
      --mean RUN/lmdb/mean.binaryproto --classes ROOT/HOwt_doc.txt --out RUN/model \\
      --solver RUN/train/solver.prototxt --metrics RUN/metrics.json --examples ROOT/HOwt_test.txt

The library logic (the facts gathered from the run) is :mod:`deepyeast.model.run_bundle`.
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


def run(args):
    from deepyeast.model.run_bundle import RunFiles, bundle_from_run

    files = RunFiles(deploy=args.model, weights=args.weights, mean=args.mean, classes=args.classes,
                     solver=args.solver, metrics=args.metrics, examples=args.examples)
    bundle = bundle_from_run(args.out, files, trained_on=args.trained_on, name=args.name)
    examples = bundle.examples()
    print(f"wrote {args.out} ({bundle.n_classes} classes"
          + (f", {len(examples)} example crops" if examples is not None else "") + ")")


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
