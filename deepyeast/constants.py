"""The facts every part of DeepYeast shares, defined once.

Class tables follow the published DeepYeast split lists (``HOwt_doc.txt`` and
``HOwt_transfer_doc.txt``): a class index in a list file is a position in the
tuples below.

Image layout
------------
A cell crop is ``IMAGE_SIZE`` x ``IMAGE_SIZE`` pixels with ``N_CHANNELS``
channels, stored as uint8.  Inside LMDB records, mean files and network blobs
the layout is Caffe's C x H x W with channel 0 = ``CHANNELS[0]`` (red,
cytosolic mCherry marker) and channel 1 = ``CHANNELS[1]`` (green, the
GFP-tagged protein).  On disk as PNG the crop is RGB with the same two
channels in R and G and an empty B channel, like the published archive.
"""

CLASS_NAMES = (
    "cell periphery",
    "cytoplasm",
    "endosome",
    "ER",
    "Golgi",
    "mitochondrion",
    "nuclear periphery",
    "nucleolus",
    "nucleus",
    "peroxisome",
    "spindle pole",
    "vacuole",
)
"""The 12 compartments of the main data set, indexed by class label."""

TRANSFER_CLASS_NAMES = (
    "actin",
    "bud neck",
    "lipid particle",
    "microtubule",
)
"""The 4 compartments used only for transfer learning, indexed by label."""

N_CLASSES = len(CLASS_NAMES)
N_TRANSFER_CLASSES = len(TRANSFER_CLASS_NAMES)

IMAGE_SIZE = 64
"""Side of a square cell crop, pixels."""

CHANNELS = ("red: cytosolic mCherry marker", "green: GFP-tagged protein")
"""Channel order of a crop in C x H x W arrays (index 0 first)."""

N_CHANNELS = len(CHANNELS)
MARKER_CHANNEL = 0
PROTEIN_CHANNEL = 1

SPLITS = ("train", "val", "test")
"""Split names; the list file of split ``s`` is :func:`list_file` ``(s)`` = ``HOwt_{s}.txt``."""

TRANSFER_SPLITS = ("transfer_train", "transfer_val", "transfer_test")

SPLIT_FRACTIONS = (0.72, 0.14, 0.14)
"""Shares of the cells in train, val and test (65,000 / 12,500 / 12,500 of 90,000), used when
proteins are assigned to splits."""

PAPER_SPLIT_SIZES = {"train": 65000, "val": 12500, "test": 12500}
"""Cells per split in the published data set."""

CLASS_SETS = {"main": CLASS_NAMES, "transfer": TRANSFER_CLASS_NAMES}
"""The two class tables by name: the 12 compartments ("main") and the 4 transfer ones."""

LIST_PREFIX = "HOwt_"
"""Prefix of the published list files (``HOwt_{split}.txt``, the class table ``HOwt_doc.txt``);
the transfer set's carry ``HOwt_transfer_`` (:func:`list_prefix`)."""


def list_prefix(class_set="main"):
    """``"HOwt_"`` for the main set, ``"HOwt_transfer_"`` for the transfer set."""
    if class_set not in CLASS_SETS:
        raise ValueError(f"class set must be one of {', '.join(CLASS_SETS)}, not {class_set!r}")
    return LIST_PREFIX if class_set == "main" else f"{LIST_PREFIX}transfer_"


def list_file(split, class_set="main"):
    """Name of a split list (``HOwt_test.txt``, ``HOwt_transfer_test.txt``); ``split="doc"``: the class table."""
    return f"{list_prefix(class_set)}{split}.txt"


def class_set_of(name):
    """The class set a list file, list prefix or split name belongs to: "transfer" when its base
    name starts with ``HOwt_transfer_`` or ``transfer_``, else "main"."""
    import os

    base = os.path.basename(os.fspath(name))
    return "transfer" if base.startswith((list_prefix("transfer"), "transfer_")) else "main"


PAPER_COUNTS = {
    "protein_accuracy": (279, 282),
    "protein_accuracy_min10": (222, 222),
    "rf_protein_accuracy": (269, 282),
    "rf_protein_accuracy_min10": (214, 222),
}
"""The paper's results that are counts (correct, total): test proteins called right, all of them and
those with at least :data:`MIN_CELLS_PER_PROTEIN` cells, for the network and the random forest."""

PAPER_RESULTS = {
    "cell_accuracy": 0.87,
    "cell_kappa": 0.85,
    "cell_accuracy_filtered": 0.91,
    "rf_cell_accuracy": 0.75,
    "rf_cell_accuracy_filtered": 0.79,
    **{key: correct / total for key, (correct, total) in PAPER_COUNTS.items()},
}
"""Headline numbers of Parnamaa & Parts (2017), for the report's comparison: every number the paper
gives for the network and for the random forest (per cell, after removing non-cells, per protein,
per protein with at least 10 cells)."""


def paper_result(key):
    """The paper's value of a metric for a report row: a count ``{value, correct, total}`` when the
    paper gives one (:data:`PAPER_COUNTS`), else the number of :data:`PAPER_RESULTS`, else None."""
    if key in PAPER_COUNTS:
        correct, total = PAPER_COUNTS[key]
        return {"value": correct / total, "correct": correct, "total": total}
    return PAPER_RESULTS.get(key)


PAPER_N_NONCELLS = 118
"""Non-cells the paper picked by eye from its validation set to train the non-cell filter."""

NONCELL_LIST = "noncells.txt"
"""The non-cell list's name in an archive's main root (the synthetic screen writes it; the
published archive has none)."""

MIN_CELLS_PER_PROTEIN = 10
"""Proteins with at least this many cells form the paper's 222-protein subset."""

MEAN_FILE = "mean.binaryproto"
"""The per-pixel training mean (float32 1 x C x H x W BlobProto): in an LMDB folder beside the split LMDBs
(``data_prep/make_lmdb.py``) and in a model bundle (:mod:`deepyeast.model.bundle`)."""

LMDB_SUFFIX = "_lmdb"
"""A split's Datum LMDB folder is ``<split>_lmdb`` (:func:`lmdb_folder`), as Caffe's examples name them."""


def lmdb_folder(split):
    """The LMDB folder name of a split: ``train_lmdb``, ``val_lmdb``, ``transfer_test_lmdb``."""
    return f"{split}{LMDB_SUFFIX}"


INFERENCE_PRECISIONS = ("fp32", "bf16")
"""Arithmetic of a trained net run on crops (:class:`deepyeast.engine.inference.InferenceSettings`):
``fp32`` is Caffe's; ``bf16`` stores and computes every convolution but the first in bfloat16."""

TRAINING_PRECISIONS = ("fp32", "tf32", "bf16")
"""Arithmetic of training (:class:`deepyeast.engine.solver.Solver`): ``tf32`` matrix products on GPUs,
``bf16`` autocast of the forward pass."""


def class_names_for(n_classes):
    """Return the class-name tuple with ``n_classes`` entries (12 or 4)."""
    if n_classes == N_CLASSES:
        return CLASS_NAMES
    if n_classes == N_TRANSFER_CLASSES:
        return TRANSFER_CLASS_NAMES
    raise ValueError(f"no class table has {n_classes} classes (known: {N_CLASSES}, {N_TRANSFER_CLASSES})")
