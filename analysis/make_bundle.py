#!/usr/bin/env python3
"""Write a run's trained model as a bundle folder (Caffe model-zoo style, with bundle.json).

  python analysis/make_bundle.py --deploy DEPLOY --weights W.caffemodel --mean M.binaryproto \\
      --classes ROOT/HOwt_doc.txt --out RUN/model [--solver RUN/train/solver.prototxt] \\
      [--metrics RUN/metrics.json] [--examples ROOT/HOwt_test.txt] [--trained-on TEXT]

OUT (replaced as a whole, atomically, only after it passes the checks a reader makes)
gets deploy.prototxt, weights.caffemodel, mean.binaryproto, classes.txt, readme.md and
bundle.json (see deepyeast/model/bundle.py); with --examples also examples.npy, the
first crop of each class in that split list (the test input of a bioimage.io export).

--classes   a label;label_idx table (HOwt_doc.txt); names equal to DeepYeast's class
            table up to case are written as DeepYeast spells them (ER, Golgi)
--solver    the run's solver: its schedule (and the train net's batch size) go into
            the readme and bundle.json
--metrics   the report's metrics.json: the headline accuracies are copied
--trained-on  one line on the training data (default: from the solver's training LMDB)

Exit codes: 0 done; 2 bad input (one line on stderr naming the file and field).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepyeast.io_utils import InputError  # noqa: E402

HEADLINE_METRICS = ("cell_accuracy", "cell_kappa", "cell_accuracy_filtered", "protein_accuracy",
                    "protein_accuracy_min10", "rf_cell_accuracy", "network_minus_forest_per_cell")
SOLVER_FIELDS = ("type", "base_lr", "lr_policy", "gamma", "stepsize", "momentum", "weight_decay", "max_iter",
                 "random_seed")


def solver_facts(path):
    """Schedule facts of a solver prototxt (and its train net's batch size and data source)."""
    from deepyeast import caffe_pb2, formats
    from deepyeast.engine.net import filter_layers

    solver = formats.read_prototxt(path, caffe_pb2.SolverParameter)
    facts = {"solver": os.path.basename(path)}
    for field in SOLVER_FIELDS:
        if solver.HasField(field):
            value = getattr(solver, field)
            facts[field] = float(f"{value:.7g}") if isinstance(value, float) else value  # float32 fields
    net_path = solver.net or solver.train_net
    if net_path:
        if not os.path.isabs(net_path) and not os.path.exists(net_path):
            net_path = os.path.join(os.path.dirname(path), os.path.basename(net_path))
        net = formats.read_prototxt(net_path, caffe_pb2.NetParameter)
        for layer in filter_layers(net, "TRAIN"):
            if layer.type == "Data":
                facts["batch_size"] = layer.data_param.batch_size
                facts["train_data"] = layer.data_param.source
                if layer.transform_param.mirror or layer.transform_param.crop_size:
                    facts["augmentation"] = (f"mirror {layer.transform_param.mirror}, "
                                             f"crop {layer.transform_param.crop_size}")
                break
    return facts


def headline_metrics(path):
    """The headline entries of a report's metrics.json (those present and not null)."""
    from deepyeast.io_utils import open_input

    with open_input(path, "metrics file") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object of metrics")
    out = {}
    for key in HEADLINE_METRICS:
        value = data.get(key)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if isinstance(v, (int, float, str, list)) and k != "paper"}
        if value not in (None, {}):
            out[key] = value
    return out


def class_names(path):
    from deepyeast.constants import CLASS_NAMES, TRANSFER_CLASS_NAMES
    from deepyeast.model.bundle import read_class_table

    names = read_class_table(path)
    for table in (CLASS_NAMES, TRANSFER_CLASS_NAMES):
        if [n.lower() for n in names] == [n.lower() for n in table]:
            return list(table)
    return names


def example_crops(list_path, classes):
    """The first readable crop of each class in a split list (uint8 K x 2 x 64 x 64), archive = the list's folder."""
    import numpy as np

    from deepyeast.archive import read_crop, read_split_list

    entries, _ = read_split_list(list_path, classes)
    root = os.path.dirname(os.path.abspath(list_path))
    first = {}
    for rel, label in entries:
        if label not in first:
            first[label] = read_crop(os.path.join(root, rel))
        if len(first) == len(classes):
            break
    if not first:
        raise InputError(f"{list_path}: no crops listed")
    return np.stack([first[k] for k in sorted(first)])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deploy", required=True, help="deploy prototxt")
    ap.add_argument("--weights", required=True, help="trained .caffemodel")
    ap.add_argument("--mean", required=True, help="mean.binaryproto of the training crops")
    ap.add_argument("--classes", required=True, help="class table (label;label_idx lines, e.g. HOwt_doc.txt)")
    ap.add_argument("--out", required=True, help="bundle folder to write (e.g. RUN/model)")
    ap.add_argument("--solver", help="the run's solver prototxt (schedule for the readme)")
    ap.add_argument("--metrics", help="the run's metrics.json (headline accuracies for the readme)")
    ap.add_argument("--examples", help="split list whose first crop per class becomes examples.npy")
    ap.add_argument("--trained-on", help="one line describing the training data")
    ap.add_argument("--name", default="DeepYeast", help="model name (default %(default)s)")
    args = ap.parse_args(argv)

    from deepyeast.model.bundle import write_bundle

    try:
        classes = class_names(args.classes)
        training = solver_facts(args.solver) if args.solver else {}
        if args.trained_on:
            training = {"data": args.trained_on, **training}
        metrics = headline_metrics(args.metrics) if args.metrics else {}
        examples = example_crops(args.examples, classes) if args.examples else None
        source = {"weights": os.path.basename(args.weights), "deploy": args.deploy,
                  "mean": os.path.basename(args.mean), "classes": os.path.basename(args.classes)}
        write_bundle(args.out, args.deploy, args.weights, args.mean, classes, name=args.name,
                     description=("DeepYeast (Parnamaa & Parts, G3 2017) trained by this replication: "
                                  "an 11-layer network that calls the subcellular compartment of a "
                                  "GFP-tagged protein from one yeast cell."),
                     mean_note="the per-pixel mean of the training crops (compute_image_mean)",
                     metrics=metrics, training=training, source=source, examples=examples)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({len(classes)} classes"
          + (f", {len(examples)} example crops" if examples is not None else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
