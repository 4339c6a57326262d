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
--metrics   the report's metrics.json: the headline accuracies are copied
--trained-on  one line on the training data (default: from the solver's training LMDB)
--ood-train, --ood-val  the run's training and validation split lists: the bundle then stores
            the class means and tied covariance of the training cells' fc1 features (a
            Mahalanobis out-of-distribution score, classify_screen's ood flag; at most
            --ood-cells training cells, an even sample), the flag threshold (99th percentile
            of the validation cells' scores) and a temperature fitted on the validation
            cells, with the expected calibration error before and after (readme, bundle.json);
            see deepyeast/analysis/ood.py

Example:
  python analysis/make_bundle.py --model models/deepyeast/deploy.prototxt --weights W.caffemodel \\
      --mean RUN/lmdb/mean.binaryproto --classes ROOT/HOwt_doc.txt --out RUN/model \\
      --solver RUN/train/solver.prototxt --metrics RUN/metrics.json --examples ROOT/HOwt_test.txt
"""

import json
import os

from deepyeast import launcher
from deepyeast.utils.io import InputError

HEADLINE_METRICS = ("cell_accuracy", "cell_kappa", "cell_accuracy_filtered", "protein_accuracy",
                    "protein_accuracy_min10", "rf_cell_accuracy", "network_minus_forest_per_cell")
SOLVER_FIELDS = ("type", "base_lr", "lr_policy", "gamma", "stepsize", "momentum", "weight_decay", "max_iter",
                 "random_seed")


def solver_facts(path):
    """Schedule facts of a solver prototxt (and its train net's batch size and data source)."""
    from deepyeast.caffe import caffe_pb2
    from deepyeast.caffe.prototxt import read_prototxt
    from deepyeast.engine.net import filter_layers

    solver = read_prototxt(path, caffe_pb2.SolverParameter)
    facts = {"solver": os.path.basename(path)}
    for field in SOLVER_FIELDS:
        if solver.HasField(field):
            value = getattr(solver, field)
            facts[field] = float(f"{value:.7g}") if isinstance(value, float) else value  # float32 fields
    net_path = solver.net or solver.train_net
    if net_path:
        if not os.path.isabs(net_path) and not os.path.exists(net_path):
            net_path = os.path.join(os.path.dirname(path), os.path.basename(net_path))
        net = read_prototxt(net_path, caffe_pb2.NetParameter)
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
    from deepyeast.utils.io import open_input

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

    from deepyeast.data.crop_png import read_crop
    from deepyeast.data.lists import read_split_list

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


def list_crops(list_path, classes, limit=None):
    """uint8 N x 2 x 64 x 64 crops and int64 labels of a split list (archive = the list's folder);
    with ``limit``, an even sample of at most that many entries (every k-th, in list order)."""
    import numpy as np

    from deepyeast.data.crop_png import read_crop
    from deepyeast.data.lists import read_split_list

    entries, _ = read_split_list(list_path, classes)
    if not entries:
        raise InputError(f"{list_path}: no crops listed")
    if limit and len(entries) > limit:
        entries = [entries[i] for i in np.linspace(0, len(entries) - 1, limit).round().astype(int)]
    root = os.path.dirname(os.path.abspath(list_path))
    return (np.stack([read_crop(os.path.join(root, rel)) for rel, _ in entries]),
            np.asarray([label for _, label in entries], np.int64))


def ood_statistics(args, classes):
    """(arrays, meta) of :func:`deepyeast.analysis.ood.fit_bundle_statistics` for the run's net, or None."""
    import tempfile

    from deepyeast.analysis.ood import OOD_BLOB, fit_bundle_statistics
    from deepyeast.model.bundle import read_bundle, write_bundle

    if not (args.ood_train or args.ood_val):
        return None
    if not (args.ood_train and args.ood_val):
        raise InputError("--ood-train and --ood-val go together (training cells: class statistics; validation "
                         "cells: threshold and temperature)")
    train_crops, train_labels = list_crops(args.ood_train, classes, args.ood_cells)
    val_crops, val_labels = list_crops(args.ood_val, classes)
    with tempfile.TemporaryDirectory(prefix=".ood-", dir=os.path.dirname(os.path.abspath(args.out))) as tmp:
        plain = write_bundle(os.path.join(tmp, "b"), args.model, args.weights, args.mean, classes)
        predictor = read_bundle(plain).predictor(extra_blobs=(OOD_BLOB,))
        return fit_bundle_statistics(predictor, train_crops, train_labels, val_crops, val_labels, len(classes))


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
                     help="validation split list: the flag threshold and the temperature")
    ood.add_argument("--ood-cells", type=launcher.positive_int, default=20000,
                     help="at most this many training cells, an even sample of the list (default %(default)s)")


def run(args):
    from deepyeast.model.bundle import write_bundle

    classes = class_names(args.classes)
    training = solver_facts(args.solver) if args.solver else {}
    if args.trained_on:
        training = {"data": args.trained_on, **training}
    metrics = headline_metrics(args.metrics) if args.metrics else {}
    examples = example_crops(args.examples, classes) if args.examples else None
    ood = ood_statistics(args, classes)
    source = {"weights": os.path.basename(args.weights), "deploy": args.model,
              "mean": os.path.basename(args.mean), "classes": os.path.basename(args.classes)}
    write_bundle(args.out, args.model, args.weights, args.mean, classes, name=args.name,
                 description=("DeepYeast (Parnamaa & Parts, G3 2017) trained by this replication: "
                              "an 11-layer network that calls the subcellular compartment of a "
                              "GFP-tagged protein from one yeast cell."),
                 mean_note="the per-pixel mean of the training crops (compute_image_mean)",
                 metrics=metrics, training=training, source=source, examples=examples, ood=ood)
    print(f"wrote {args.out} ({len(classes)} classes"
          + (f", {len(examples)} example crops" if examples is not None else "")
          + (f"; out-of-distribution threshold {ood[1]['threshold']:.4g}, temperature {ood[1]['temperature']:.3g}, "
             f"ECE {ood[1]['ece_before']:.3f} -> {ood[1]['ece_after']:.3f}" if ood else "") + ")")


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
