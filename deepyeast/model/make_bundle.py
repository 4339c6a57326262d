"""A trained run as a model bundle: the facts ``deepyeast make-bundle`` gathers beside the weights.

:func:`bundle_from_run` writes the bundle (:func:`deepyeast.model.bundle.write_bundle`) of a run's
deploy net, weights and mean with what the run knows: the class table (spelled as DeepYeast spells
its classes), the schedule of its solver (:func:`solver_facts`), the headline accuracies of its
``metrics.json`` (:func:`headline_metrics`) and one example crop per class from a split list
(:func:`example_crops`).  The files travel in a :class:`RunFiles`.
"""

import dataclasses
import json
import os

from deepyeast.utils.io import InputError

__all__ = ["RunFiles", "bundle_from_run", "solver_facts", "headline_metrics", "class_names", "example_crops",
           "list_crops"]

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
    forest = data.get("forest_features")
    if any(k.startswith("rf_") for k in out) and isinstance(forest, dict) and forest.get("short"):
        from deepyeast.constants import PAPER_FOREST

        # the forest's numbers are not the paper's forest's: say what it learned from beside them
        out["rf_features"] = (f"{forest['short']}; the paper's forest: {PAPER_FOREST['n_features']} CellProfiler "
                              "features per cell on whole micrographs (Chong et al. 2015)")
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


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """The files of a trained run that go into its bundle.

    deploy, weights, mean : str   deploy prototxt, ``.caffemodel``, ``mean.binaryproto``
    classes : str                 ``label;label_idx`` class table (``HOwt_doc.txt``)
    solver : str or None          the run's solver (its schedule goes into the readme)
    metrics : str or None         the run's ``metrics.json`` (headline accuracies)
    examples : str or None        a split list whose first crop per class becomes ``examples.npy``
    """

    deploy: str
    weights: str
    mean: str
    classes: str
    solver: object = None
    metrics: object = None
    examples: object = None


def bundle_from_run(out_dir, files, trained_on=None, name="DeepYeast", ood=None):
    """Write the bundle of a trained run (``files``: :class:`RunFiles`) to ``out_dir`` (replaced as a whole,
    atomically, once it passes a reader's checks); ``trained_on``: one line on the training data; ``ood``:
    out-of-distribution statistics and temperature for :func:`deepyeast.model.bundle.write_bundle`.
    Returns the written :class:`deepyeast.model.bundle.Bundle`."""
    from deepyeast.model.bundle import BundleInfo, read_bundle, write_bundle

    classes = class_names(files.classes)
    training = solver_facts(files.solver) if files.solver else {}
    if trained_on:
        training = {"data": trained_on, **training}
    metrics = headline_metrics(files.metrics) if files.metrics else {}
    examples = example_crops(files.examples, classes) if files.examples else None
    source = {"weights": os.path.basename(files.weights), "deploy": files.deploy,
              "mean": os.path.basename(files.mean), "classes": os.path.basename(files.classes)}
    info = BundleInfo(name=name, description=("DeepYeast (Parnamaa & Parts, G3 2017) trained by this replication: "
                                              "an 11-layer network that calls the subcellular compartment of a "
                                              "GFP-tagged protein from one yeast cell."),
                      mean_note="the per-pixel mean of the training crops (compute_image_mean)",
                      metrics=metrics, training=training, source=source)
    write_bundle(out_dir, files.deploy, files.weights, files.mean, classes, info, examples=examples, ood=ood)
    return read_bundle(out_dir, verify=False, check_net=False)
