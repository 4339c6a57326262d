"""What the DeepYeast layers encode (paper Figure 3), plus the feature loading
that the transfer-learning analysis shares.

Inputs
------
* Network features as written by ``deepyeast extract``: ``DIR/<blob>.npy``
  (float32, N x D with the blob flattened per cell in Caffe's C x H x W order,
  or already N x C x H x W) and ``DIR/paths.txt`` (one cell path per row, same
  order).
* Cell labels: the archive's list files (``ROOT/HOwt_{split}.txt`` or
  ``ROOT/HOwt_transfer_{split}.txt``, ``relpath label`` per line) or any CSV
  with the columns ``path,label`` (and optionally ``split``), e.g. a
  predictions table.
* CellProfiler features: CSV ``path,<feature_1>,...`` (float), one row per cell.
* Cell images (for activating patches): PNGs under the archive root (R =
  marker, G = protein) or a Datum LMDB (``deepyeast.formats``).

Layer geometry
--------------
The DeepYeast net (``models/deepyeast/``) has 3x3 convolutions, stride 1,
pad 1 (conv1..conv8, 64, 64, 128, 128, 256, 256, 256, 256 channels) with 2x2
stride-2 max pooling after conv2, conv4 and conv8, then fully connected layers
fc1 (512), fc2 (512), fc3 (12 class scores).  ``network_geometry`` derives
each blob's shape and each unit's receptive field in input pixels from that
list with the usual recurrences (j = jump between neighbouring units in input
pixels, r = receptive field side, s = centre of unit 0)::

    r_out = r_in + (k - 1) * j_in
    s_out = s_in + ((k - 1) / 2 - pad) * j_in
    j_out = j_in * stride

giving conv1 3x3, conv2 5x5, conv3 10x10, conv4 14x14, conv5..conv8 24, 32,
40, 48 pixels.

Per-neuron summaries
--------------------
Mutual information is the plug-in estimate on quantile bins, in nats; it is
biased upwards by about (bins - 1)(classes - 1) / (2 N) (0.004 nats for 10
bins, 12 classes, 12,500 cells; much more on a few hundred cells), so each
layer also reports the median MI after shuffling the labels once.

A conv "neuron" is a channel.  Its output for a cell is summarised by the
spatial maximum of its feature map (``summary="max"``, what the activating
patches show) or mean; a fully connected neuron is its single value.
"""

import csv
import json
import math
import os
from dataclasses import dataclass

import numpy as np

from deepyeast import constants
from deepyeast.utils.io import InputError, atomic_path, atomic_write_text
from deepyeast.analysis.predict import POOLED_SUFFIX

# --------------------------------------------------------------------------
# Layer geometry and receptive fields
# --------------------------------------------------------------------------

DEEPYEAST_LAYERS = (
    # (name, kind, kernel, stride, pad, outputs)
    ("conv1", "conv", 3, 1, 1, 64),
    ("conv2", "conv", 3, 1, 1, 64),
    ("pool1", "pool", 2, 2, 0, None),
    ("conv3", "conv", 3, 1, 1, 128),
    ("conv4", "conv", 3, 1, 1, 128),
    ("pool2", "pool", 2, 2, 0, None),
    ("conv5", "conv", 3, 1, 1, 256),
    ("conv6", "conv", 3, 1, 1, 256),
    ("conv7", "conv", 3, 1, 1, 256),
    ("conv8", "conv", 3, 1, 1, 256),
    ("pool3", "pool", 2, 2, 0, None),
    ("fc1", "fc", None, None, None, 512),
    ("fc2", "fc", None, None, None, 512),
    ("fc3", "fc", None, None, None, constants.N_CLASSES),
)
"""The DeepYeast layer sequence as (name, kind, kernel, stride, pad, outputs).

Kept here so that importing needs no prototxt; ``tests/test_interpret.py``
checks it against ``models/deepyeast/deploy.prototxt``."""



def layers_from_prototxt(path):
    """Read the (name, kind, kernel, stride, pad, outputs) sequence of a Caffe net prototxt.

    Only Convolution, Pooling and InnerProduct layers count (BatchNorm, Scale,
    ReLU, Dropout act in place and keep the geometry).  A test checks that
    ``models/deepyeast/deploy.prototxt`` gives ``DEEPYEAST_LAYERS``.
    """
    from deepyeast.caffe import caffe_pb2
    from deepyeast.caffe.prototxt import read_prototxt
    net = read_prototxt(path, caffe_pb2.NetParameter)
    out = []
    for layer in net.layer:
        if layer.type == "Convolution":
            p = layer.convolution_param
            out.append((layer.name, "conv", p.kernel_size[0], p.stride[0] if p.stride else 1,
                        p.pad[0] if p.pad else 0, p.num_output))
        elif layer.type == "Pooling":
            p = layer.pooling_param
            out.append((layer.name, "pool", p.kernel_size, p.stride, p.pad, None))
        elif layer.type == "InnerProduct":
            out.append((layer.name, "fc", None, None, None, layer.inner_product_param.num_output))
    return tuple(out)


NETWORK_BLOBS = tuple(name for name, kind, *_ in DEEPYEAST_LAYERS if kind != "pool")
"""Blobs whose features the analyses use, input side first (conv1 .. fc3)."""

PATCH_LAYERS = ("conv1", "conv2", "conv4", "conv8", "fc3")
"""Layers 1, 2, 4, 8 and 11 of the net, shown in Figure 3A."""


@dataclass(frozen=True)
class LayerGeometry:
    """Shape and receptive field of one blob.

    ``channels, height, width``: blob shape per cell (height = width = 1 for
    fully connected layers).  ``receptive_field``: side in input pixels of the
    square seen by one unit (the whole image for fc layers).  ``jump``: input
    pixels between neighbouring units.  ``start``: input-pixel coordinate of
    the centre of unit (0, 0) (may be x.5 for an even receptive field).
    """

    name: str
    kind: str
    channels: int
    height: int
    width: int
    receptive_field: int
    jump: int
    start: float

    @property
    def size(self):
        """Values per cell (C * H * W)."""
        return self.channels * self.height * self.width


def network_geometry(layers=DEEPYEAST_LAYERS, image_size=constants.IMAGE_SIZE,
                     in_channels=constants.N_CHANNELS):
    """Return ``{blob name: LayerGeometry}`` for ``layers`` on a square input.

    Output sizes follow Caffe: floor rounding for convolution, ceil rounding
    for pooling.  Fully connected layers see the whole input.
    """
    size, channels, rf, jump, start = image_size, in_channels, 1, 1, 0.0
    out = {}
    for name, kind, k, stride, pad, n_out in layers:
        if kind == "fc":
            size, channels, rf, jump, start = 1, n_out, image_size, image_size, (image_size - 1) / 2
        else:
            if kind == "conv":
                size = (size + 2 * pad - k) // stride + 1
                channels = n_out
            elif kind == "pool":
                size = int(math.ceil((size + 2 * pad - k) / stride)) + 1
            else:
                raise ValueError(f"layer {name}: unknown kind {kind!r}")
            rf = rf + (k - 1) * jump
            start = start + ((k - 1) / 2 - pad) * jump
            jump = jump * stride
        out[name] = LayerGeometry(name, kind, channels, size, size, rf, jump, start)
    return out


GEOMETRY = network_geometry()


def receptive_field_box(geometry, row, col):
    """Input-pixel box ``(top, left, side)`` seen by unit (row, col) of a blob.

    ``top``/``left`` may be negative or the box may reach past the image: the
    net pads with zeros there.  For an fc layer the box is the whole image.
    """
    half = (geometry.receptive_field - 1) / 2
    top = geometry.start + row * geometry.jump - half
    left = geometry.start + col * geometry.jump - half
    return int(round(top)), int(round(left)), geometry.receptive_field


def cut_patch(image, top, left, side):
    """Cut a ``side`` x ``side`` patch from ``image`` (C x H x W), zero-padded
    where the box leaves the image.  Returns an array of ``image.dtype``."""
    c, h, w = image.shape
    patch = np.zeros((c, side, side), dtype=image.dtype)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + side, h), min(left + side, w)
    if y1 > y0 and x1 > x0:
        patch[:, y0 - top:y1 - top, x0 - left:x1 - left] = image[:, y0:y1, x0:x1]
    return patch


# --------------------------------------------------------------------------
# Loading features, labels, CellProfiler tables, images
# --------------------------------------------------------------------------

def read_paths(path):
    """Read ``paths.txt``: one cell path per non-empty line -> list[str]."""
    with open(path, encoding="utf-8") as f:
        paths = [line.strip() for line in f if line.strip()]
    if not paths:
        raise InputError(f"{path}: no cell paths")
    return paths


def load_blob(feature_dir, blob, geometry=None):
    """Memory-map ``feature_dir/<blob>.npy`` as N x C x H x W float32 (fc: N x C x 1 x 1).

    The row count must match ``paths.txt``; the per-cell size must match the
    blob's geometry (``GEOMETRY[blob]`` unless ``geometry`` is given).  Blobs
    not in the geometry table are returned as N x D x 1 x 1.
    """
    path = os.path.join(feature_dir, f"{blob}.npy")
    if not os.path.exists(path):
        raise InputError(f"{path}: no such feature file (blob {blob!r})")
    array = np.load(path, mmap_mode="r")
    n_paths = len(read_paths(os.path.join(feature_dir, "paths.txt")))
    if array.shape[0] != n_paths:
        raise InputError(f"{path}: {array.shape[0]} rows but paths.txt has {n_paths}")
    geometry = geometry or GEOMETRY.get(blob)
    if array.ndim == 4:
        return array
    if array.ndim != 2:
        raise InputError(f"{path}: expected N x D or N x C x H x W, got shape {array.shape}")
    if geometry is None:
        return array.reshape(array.shape[0], array.shape[1], 1, 1)
    if array.shape[1] != geometry.size:
        raise InputError(f"{path}: {array.shape[1]} values per cell, but blob {blob} is "
                         f"{geometry.channels}x{geometry.height}x{geometry.width} = {geometry.size}")
    return array.reshape(array.shape[0], geometry.channels, geometry.height, geometry.width)


def has_blob(feature_dir, blob):
    """Whether ``feature_dir`` holds ``blob`` as a whole (``<blob>.npy``) or pooled (``<blob>.pool.npy``)."""
    return any(os.path.exists(os.path.join(feature_dir, blob + suffix)) for suffix in (".npy", POOLED_SUFFIX))


def blob_features(feature_dir, blob, reduce="pool"):
    """:func:`layer_features` of a saved blob: float32 N x F.

    Reads ``<blob>.pool.npy`` (written by ``analysis/predict.py --features-reduce
    pool``: N x 2C, per-channel mean then max) when the whole blob was not
    saved; that file serves ``reduce="pool"`` only.
    """
    whole = os.path.join(feature_dir, f"{blob}.npy")
    pooled = os.path.join(feature_dir, blob + POOLED_SUFFIX)
    if os.path.exists(whole) or not os.path.exists(pooled):
        return layer_features(load_blob(feature_dir, blob), reduce)
    if reduce != "pool":
        raise InputError(f"{pooled}: blob {blob!r} was saved pooled (per-channel mean and max); "
                         f"reduce={reduce!r} needs the whole blob (predict.py --features-reduce full)")
    array = np.load(pooled, mmap_mode="r")
    n_paths = len(read_paths(os.path.join(feature_dir, "paths.txt")))
    geometry = GEOMETRY.get(blob)
    if array.ndim != 2 or array.shape[0] != n_paths or (geometry and array.shape[1] != 2 * geometry.channels):
        want = f"{n_paths} x {2 * geometry.channels}" if geometry else f"{n_paths} x 2C"
        raise InputError(f"{pooled}: shape {array.shape}, expected {want} (rows of paths.txt x 2 x channels)")
    out = np.asarray(array, dtype=np.float32)
    _check_finite(out, pooled)
    return out


def channel_mean_max(activations, rows=None, chunk=256):
    """Each channel's spatial mean and maximum per cell, in one pass over the blob.

    ``activations``: N x C x H x W (a memory map is fine: it is read in chunks
    of ``chunk`` cells, so a conv1 blob of 256 KiB per cell is never loaded
    whole).  ``rows``: optional index array selecting cells (output in that
    order).  Returns ``(mean, max)``, each float32 len(rows) x C.
    """
    every = rows is None
    rows = np.arange(activations.shape[0]) if every else np.asarray(rows)
    means = np.empty((len(rows), activations.shape[1]), dtype=np.float32)
    maxima = np.empty_like(means)
    for i in range(0, len(rows), chunk):
        if every:  # a contiguous slice of the memory map: no fancy-indexing copy
            block = np.asarray(activations[i:i + chunk], dtype=np.float32)
        else:
            block = np.asarray(activations[np.sort(rows[i:i + chunk])], dtype=np.float32)
            block = block[np.argsort(np.argsort(rows[i:i + chunk]))]
        block = block.reshape(block.shape[0], block.shape[1], -1)
        means[i:i + chunk] = block.mean(axis=2)
        maxima[i:i + chunk] = block.max(axis=2)
    _check_finite(maxima, "max of blob")
    _check_finite(means, "mean of blob")
    return means, maxima


def neuron_outputs(activations, summary="max", rows=None, chunk=256):
    """Per-neuron scalar per cell: float32 N x C from an N x C x H x W blob.

    ``summary``: ``"max"`` or ``"mean"`` over the spatial map (identical for fc
    blobs).  ``rows``: optional index array selecting cells.
    """
    if summary not in ("max", "mean"):
        raise ValueError(f"summary must be 'max' or 'mean', not {summary!r}")
    means, maxima = channel_mean_max(activations, rows, chunk)
    return maxima if summary == "max" else means


def layer_features(activations, reduce="pool", rows=None, chunk=256):
    """Feature matrix (float32 N x F) of a blob for classifiers and t-SNE.

    ``reduce="pool"``: a conv blob becomes per-channel spatial mean and max
    (F = 2C); an fc blob stays as is (F = C).  ``reduce="full"``: the whole
    flattened blob (F = C*H*W; conv1 is 262,144 values per cell).
    """
    if activations.shape[2] * activations.shape[3] == 1 or reduce == "full":
        rows = np.arange(activations.shape[0]) if rows is None else np.asarray(rows)
        out = np.asarray(activations.reshape(activations.shape[0], -1)[np.sort(rows)], dtype=np.float32)
        out = out[np.argsort(np.argsort(rows))]
        _check_finite(out, "blob")
        return out
    if reduce != "pool":
        raise ValueError(f"reduce must be 'pool' or 'full', not {reduce!r}")
    return np.concatenate(channel_mean_max(activations, rows, chunk), axis=1)


def _check_finite(array, what):
    if not np.all(np.isfinite(array)):
        row = int(np.argwhere(~np.isfinite(array))[0][0])
        raise InputError(f"{what}: non-finite value in row {row}")


def _normalize_path(path):
    path = path.strip().replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path


def match_paths(wanted, known, what):
    """Map each path in ``wanted`` to an index into ``known``.

    Exact match first; otherwise the longest trailing part of the path (e.g.
    ``plate01/1-2-3-4.png`` for ``/data/archive/plate01/1-2-3-4.png``) that is
    a known path.  Raises InputError naming the first path without a match.
    """
    index = {_normalize_path(p): i for i, p in enumerate(known)}
    out = np.empty(len(wanted), dtype=np.int64)
    for row, path in enumerate(wanted):
        parts = _normalize_path(path).split("/")
        for start in range(len(parts)):
            hit = index.get("/".join(parts[start:]))
            if hit is not None:
                out[row] = hit
                break
        else:
            raise InputError(f"{what}: row {row + 1}: path {path!r} not found")
    return out


def read_label_lists(root, prefix="HOwt", splits=constants.SPLITS, n_classes=None):
    """Read ``root/{prefix}_{split}.txt`` list files -> dict path -> (split, label).

    Splits whose file is missing are skipped; at least one must exist.
    """
    labels = {}
    found = False
    for split in splits:
        path = os.path.join(root, f"{prefix}_{split}.txt")
        if not os.path.exists(path):
            continue
        found = True
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 2:
                    raise InputError(f"{path}:{line_no}: expected 'relpath label', got {line.strip()!r}")
                try:
                    label = int(fields[1])
                except ValueError:
                    raise InputError(f"{path}:{line_no}: label {fields[1]!r} is not an integer") from None
                _check_label(label, n_classes, f"{path}:{line_no}")
                labels[_normalize_path(fields[0])] = (split, label)
    if not found:
        raise InputError(f"{root}: no list files {prefix}_{{{','.join(splits)}}}.txt")
    return labels


def read_label_table(path, n_classes=None):
    """Read a CSV with columns ``path,label`` (and optional ``split``) -> dict path -> (split, label).

    A predictions table qualifies.  Split names like ``transfer_train`` are
    shortened to ``train``.
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label"} - set(reader.fieldnames or ())
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        labels = {}
        for row_no, row in enumerate(reader, 2):
            try:
                label = int(row["label"])
            except (TypeError, ValueError):
                raise InputError(f"{path}: row {row_no}: label {row['label']!r} is not an integer") from None
            _check_label(label, n_classes, f"{path}: row {row_no}")
            split = (row.get("split") or "").removeprefix("transfer_")
            labels[_normalize_path(row["path"])] = (split, label)
    if not labels:
        raise InputError(f"{path}: no rows")
    return labels


def _check_label(label, n_classes, where):
    if n_classes is not None and not 0 <= label < n_classes:
        raise InputError(f"{where}: label {label} outside the class table (0..{n_classes - 1})")


def labels_for_paths(paths, labels, what):
    """Look up ``(splits array[str], labels int64)`` for cell ``paths`` in a label dict."""
    keys = list(labels)
    idx = match_paths(paths, keys, what)
    splits = np.array([labels[keys[i]][0] for i in idx], dtype=object)
    values = np.array([labels[keys[i]][1] for i in idx], dtype=np.int64)
    return splits, values


def read_cellprofiler_csv(path):
    """Read CellProfiler features: ``(paths list[str], names list[str], values float64 N x F)``.

    Parsing and its errors are ``deepyeast.cp_features.read_feature_csv``'s.
    Missing values (NaN, e.g. a texture on a degenerate mask) are replaced by
    the column median (0 for an all-NaN column) so that forests and
    correlations see every cell; infinities are an error naming row and column.
    """
    from deepyeast.analysis.cp_features import read_feature_csv
    paths, names, values = read_feature_csv(path)
    if not paths:
        raise InputError(f"{path}: no rows")
    bad = np.argwhere(np.isinf(values))
    if len(bad):
        r, c = bad[0]
        raise InputError(f"{path}:{r + 2}: column {names[c]!r}: infinite value")
    missing = np.isnan(values)
    if missing.any():
        with np.errstate(all="ignore"):
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                medians = np.nan_to_num(np.nanmedian(values, axis=0))
        values = np.where(missing, medians[None, :], values)
    return paths, names, values


def load_cell_images(paths, archive_root=None, lmdb_path=None):
    """Cell crops for ``paths``: uint8 N x C x 64 x 64 (C = 2: marker, protein).

    From PNGs under ``archive_root`` (R = marker, G = protein) or from a Datum
    LMDB whose keys are ``NNNNNNNN_<path>``.
    """
    if lmdb_path is not None:
        from deepyeast.caffe.lmdb import iter_datum_lmdb, path_of_key
        names, images = [], []
        for key, image, _label in iter_datum_lmdb(lmdb_path):
            names.append(path_of_key(key))
            images.append(image)
        idx = match_paths(paths, names, f"{lmdb_path} (LMDB keys)")
        return np.stack([images[i] for i in idx]).astype(np.uint8)
    if archive_root is None:
        raise ValueError("give archive_root or lmdb_path to read cell images")
    from PIL import Image
    out = []
    for path in paths:
        full = path if os.path.isabs(path) else os.path.join(archive_root, path)
        try:
            with Image.open(full) as im:
                rgb = np.asarray(im.convert("RGB"))
        except OSError as err:
            raise InputError(f"{full}: cannot read cell image ({err})") from None
        out.append(rgb[:, :, :constants.N_CHANNELS].transpose(2, 0, 1))
    return np.stack(out).astype(np.uint8)


def to_rgb(image, stretch=True):
    """C x H x W uint8 crop (marker, protein) -> H x W x 3 float in [0, 1]: red = marker, green = protein.

    ``stretch``: scale each channel by its own maximum so dim cells stay visible.
    """
    image = np.asarray(image, dtype=np.float32)
    rgb = np.zeros(image.shape[1:] + (3,), dtype=np.float32)
    for c in range(min(image.shape[0], 2)):
        top = image[c].max() if stretch else 255.0
        rgb[:, :, c] = image[c] / top if top > 0 else 0.0
    return np.clip(rgb, 0.0, 1.0)


# --------------------------------------------------------------------------
# Statistics: mutual information, correlation to CellProfiler features
# --------------------------------------------------------------------------

def quantile_bins(values, n_bins=10):
    """Discretize a 1-D array into at most ``n_bins`` equal-count bins (int64).

    Bins come from ranks, so tied values always share a bin: a neuron with k
    distinct outputs gets at most k bins.
    """
    from scipy.stats import rankdata
    values = np.asarray(values)
    ranks = rankdata(values, method="min") - 1  # 0-based rank of the first tie
    return (ranks * n_bins // len(values)).astype(np.int64)


def mutual_information_per_neuron(outputs, labels, n_bins=10):
    """Mutual information (nats) between each neuron's binned output and the class.

    ``outputs``: float N x M (one column per neuron); ``labels``: int N.
    Returns float64 M.  The maximum possible value is the class entropy
    (``class_entropy(labels)``).  Same value as scikit-learn's
    ``mutual_info_score(labels, quantile_bins(column))`` per column, computed
    for all columns at once from one contingency table per neuron.
    """
    from scipy.stats import rankdata
    outputs = np.asarray(outputs)
    labels = np.asarray(labels)
    n, m = outputs.shape
    if m == 0:
        return np.zeros(0)
    _, y = np.unique(labels, return_inverse=True)
    n_classes = int(y.max()) + 1
    bins = ((rankdata(outputs, method="min", axis=0) - 1) * n_bins // n).astype(np.int64)  # N x M
    cells = (np.arange(m)[None, :] * n_bins + bins) * n_classes + y[:, None]
    joint = np.bincount(cells.ravel(), minlength=m * n_bins * n_classes).reshape(m, n_bins, n_classes) / n
    p_bin = joint.sum(axis=2, keepdims=True)
    p_class = np.bincount(y, minlength=n_classes)[None, None, :] / n
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / (p_bin * p_class)), 0.0)
    return np.maximum(terms.sum(axis=(1, 2)), 0.0)


def class_entropy(labels):
    """Entropy (nats) of the empirical class distribution of ``labels``."""
    counts = np.bincount(np.asarray(labels))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def strongest_correlations(outputs, features):
    """For each neuron, the feature with the largest |Pearson r|.

    ``outputs``: N x M neuron outputs; ``features``: N x F.  Returns
    ``(index int64 M, r float64 M)`` with the signed r of the chosen feature.
    Constant columns have r = 0 with everything.
    """
    a = _standardize(outputs)
    b = _standardize(features)
    r = a.T @ b / a.shape[0]
    best = np.argmax(np.abs(r), axis=1)
    return best, r[np.arange(r.shape[0]), best]


def _standardize(x):
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    sd = x.std(axis=0)
    return np.divide(x, sd, out=np.zeros_like(x), where=sd > 0)


# --------------------------------------------------------------------------
# Top-activating patches
# --------------------------------------------------------------------------

def top_activating_units(activations, channel, k=8, chunk=256):
    """The ``k`` cells where neuron ``channel`` fires most, one position per cell.

    ``activations``: N x C x H x W.  Returns a list of ``(cell, row, col,
    value)`` sorted by value, highest first; (row, col) is the cell's
    argmax position in the channel's map.
    """
    n, _, h, w = activations.shape
    best_value = np.empty(n, dtype=np.float64)
    best_pos = np.empty(n, dtype=np.int64)
    for i in range(0, n, chunk):
        block = np.asarray(activations[i:i + chunk, channel], dtype=np.float64).reshape(-1, h * w)
        best_pos[i:i + chunk] = block.argmax(axis=1)
        best_value[i:i + chunk] = block.max(axis=1)
    order = np.argsort(-best_value, kind="stable")[:k]
    return [(int(c), int(best_pos[c] // w), int(best_pos[c] % w), float(best_value[c])) for c in order]


def activating_patches(activations, geometry, channel, images, k=8):
    """Input patches (C x rf x rf each) that most activate one neuron.

    For a conv blob: the receptive-field patch around each of the top-``k``
    cells' maximal position.  For an fc blob: the whole crops with the
    highest outputs.  ``images``: N x C x H x W aligned with ``activations``.
    Returns a list of dicts ``cell, row, col, value, patch``.
    """
    out = []
    for cell, row, col, value in top_activating_units(activations, channel, k):
        if geometry.kind == "fc":
            patch = images[cell]
        else:
            patch = cut_patch(images[cell], *receptive_field_box(geometry, row, col))
        out.append(dict(cell=cell, row=row, col=col, value=value, patch=patch))
    return out


# --------------------------------------------------------------------------
# The whole analysis
# --------------------------------------------------------------------------

def run_interpretation(feature_dir, out_dir, labels, class_names, blobs=None, cp_csv=None,
                       archive_root=None, lmdb_path=None, n_tsne=1000, n_bins=10,
                       patch_layers=PATCH_LAYERS, neurons=None, n_neurons=4, n_patches=8,
                       summary="max", tsne_reduce="pool", seed=0, log=print):
    """Write the Figure 3 analyses for the cells in ``feature_dir`` to ``out_dir``.

    ``labels``: dict path -> (split, label) (``read_label_lists`` /
    ``read_label_table``).  ``blobs``: blob names to analyse (default: every
    ``NETWORK_BLOBS`` present).  ``neurons``: optional dict layer -> list of
    channels for the patch figure (default: the ``n_neurons`` channels with the
    highest mutual information).  Images for patches come from
    ``archive_root`` or ``lmdb_path``; without either, patches are skipped.

    Outputs: ``tsne.{png,pdf}`` and ``tsne.csv`` (Figure 3B),
    ``patches.{png,pdf}`` (3A), ``neurons_<blob>.csv`` and
    ``neurons.{png,pdf}`` (3D), ``interpret.json``.  Returns the summary dict.
    """
    paths = read_paths(os.path.join(feature_dir, "paths.txt"))
    _splits, y = labels_for_paths(paths, labels, os.path.join(feature_dir, "paths.txt"))
    if blobs is None:
        blobs = [b for b in NETWORK_BLOBS if os.path.exists(os.path.join(feature_dir, f"{b}.npy"))]
    if not blobs:
        raise InputError(f"{feature_dir}: no feature files for blobs {', '.join(NETWORK_BLOBS)}")
    cp = None
    if cp_csv is not None:
        cp_paths, cp_names, cp_values = read_cellprofiler_csv(cp_csv)
        cp = (cp_names, cp_values[match_paths(paths, cp_paths, f"{cp_csv} (for {feature_dir}/paths.txt)")])
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    tsne_rows = np.sort(rng.choice(len(paths), size=min(n_tsne, len(paths)), replace=False))
    h_class = class_entropy(y)
    summary_out = dict(feature_dir=feature_dir, n_cells=len(paths), blobs=list(blobs), seed=seed,
                       n_bins=n_bins, neuron_summary=summary, class_entropy_nats=h_class,
                       tsne_cells=int(len(tsne_rows)), tsne_reduce=tsne_reduce, layers={})
    embeddings, mi_by_blob, r_by_blob, chance_by_blob = {}, {}, {}, {}
    for blob in blobs:
        act = load_blob(feature_dir, blob)
        # one pass over the (memory-mapped) blob: per-channel mean and max of every cell
        spatial = act.shape[2] * act.shape[3] > 1
        means, maxima = channel_mean_max(act)
        outputs = maxima if summary == "max" else means
        mi = mutual_information_per_neuron(outputs, y, n_bins)
        mi_by_blob[blob] = mi
        rows = [dict(neuron=m, mutual_information=mi[m], mi_fraction=mi[m] / h_class if h_class else 0.0)
                for m in range(len(mi))]
        if cp is not None:
            best, r = strongest_correlations(outputs, cp[1])
            r_by_blob[blob] = r
            for m, row in enumerate(rows):
                row.update(best_cellprofiler_feature=cp[0][best[m]], pearson_r=r[m])
        _write_csv(os.path.join(out_dir, f"neurons_{blob}.csv"), rows)
        chance = mutual_information_per_neuron(outputs, rng.permutation(y), n_bins)
        chance_by_blob[blob] = float(np.median(chance))
        layer = dict(n_neurons=len(mi), mi_median=float(np.median(mi)), mi_max=float(mi.max()),
                     mi_shuffled_median=chance_by_blob[blob],
                     top_neurons=[int(i) for i in np.argsort(-mi)[:n_neurons]])
        if cp is not None:
            layer["abs_r_median"] = float(np.median(np.abs(r_by_blob[blob])))
        summary_out["layers"][blob] = layer
        log(f"[interpret] {blob}: {len(mi)} neurons, median MI {layer['mi_median']:.3f} nats")
        if tsne_reduce == "pool":  # layer_features' pooling, from the summaries already taken
            tsne_x = np.concatenate([means, maxima], 1)[tsne_rows] if spatial else means[tsne_rows]
        else:
            tsne_x = layer_features(act, tsne_reduce, tsne_rows)
        embeddings[blob] = tsne_embedding(tsne_x, seed)
    tsne_table = [dict(path=paths[i], label=int(y[i]), **{f"{b}_{a}": embeddings[b][j, a_i]
                       for b in blobs for a_i, a in enumerate("xy")}) for j, i in enumerate(tsne_rows)]
    _write_csv(os.path.join(out_dir, "tsne.csv"), tsne_table)
    plot_tsne_grid(embeddings, y[tsne_rows], class_names, os.path.join(out_dir, "tsne"))
    plot_neuron_summary(mi_by_blob, r_by_blob, h_class, os.path.join(out_dir, "neurons"), chance_by_blob)
    if archive_root is not None or lmdb_path is not None:
        layers = [b for b in patch_layers if b in blobs]
        images = load_cell_images(paths, archive_root, lmdb_path)
        panels = []
        for blob in layers:
            act = load_blob(feature_dir, blob)
            chosen = (neurons or {}).get(blob) or summary_out["layers"][blob]["top_neurons"]
            if blob == "fc3" and not (neurons or {}).get(blob):
                chosen = list(range(act.shape[1]))  # every class score of the trained net
            for channel in chosen:
                if not 0 <= channel < act.shape[1]:
                    raise InputError(f"neuron {channel} of {blob}: blob has {act.shape[1]} neurons")
                panels.append((blob, channel, activating_patches(act, GEOMETRY[blob], channel, images, n_patches)))
        summary_out["patches"] = [dict(blob=b, neuron=c, cells=[paths[p["cell"]] for p in ps],
                                       positions=[[p["row"], p["col"]] for p in ps],
                                       values=[p["value"] for p in ps]) for b, c, ps in panels]
        plot_patches(panels, os.path.join(out_dir, "patches"))
    atomic_write_text(os.path.join(out_dir, "interpret.json"), json.dumps(summary_out, indent=2) + "\n")
    return summary_out


def tsne_embedding(features, seed=0, perplexity=30.0, pca_dims=50, max_iter=500, threads=1):
    """2-D t-SNE (sklearn, Barnes-Hut) of N x F features -> float32 N x 2.

    Features are standardized, then reduced to ``pca_dims`` principal
    components when wider (the usual t-SNE preprocessing).  ``max_iter`` 500
    (sklearn's default is 1000) halves the time; 1,000 cells converge well
    before.  OpenMP is limited to ``threads``: on a busy 2-core machine two
    spinning OpenMP threads made one embedding 7x slower (70 s vs 9.4 s).
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits
    x = _standardize(features)
    with threadpool_limits(limits=threads):
        if x.shape[1] > pca_dims and x.shape[0] > pca_dims:
            x = PCA(pca_dims, random_state=seed).fit_transform(x)
        perplexity = min(perplexity, max(1.0, (x.shape[0] - 1) / 3))
        tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max_iter)
        return tsne.fit_transform(x).astype(np.float32)


# --------------------------------------------------------------------------
# Output helpers and figures
# --------------------------------------------------------------------------

def _write_csv(path, rows):
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, (float, np.floating)) else v)
                                 for k, v in row.items()})


def save_figure(fig, stem):
    """Save a matplotlib figure as ``stem.png`` and ``stem.pdf`` (atomically) and close it."""
    import matplotlib.pyplot as plt
    for ext in ("png", "pdf"):
        with atomic_path(f"{stem}.{ext}", suffix=f".{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
    plt.close(fig)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def class_colors(n):
    """``n`` distinguishable RGBA colours (tab20 for up to 20 classes)."""
    plt = _pyplot()
    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
    return [cmap(i) for i in range(n)]


def plot_tsne_grid(embeddings, labels, class_names, stem):
    """Figure 3B: one t-SNE panel per layer, points coloured by class."""
    plt = _pyplot()
    blobs = list(embeddings)
    cols = min(4, len(blobs))
    rows = math.ceil(len(blobs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows + 0.8), squeeze=False)
    colors = class_colors(len(class_names))
    for ax, blob in zip(axes.flat, blobs):
        xy = embeddings[blob]
        for k, name in enumerate(class_names):
            sel = labels == k
            ax.scatter(xy[sel, 0], xy[sel, 1], s=3, color=colors[k], label=name, rasterized=True)
        ax.set_title(blob)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(blobs):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], marker="o", ls="", color=colors[k], label=n) for k, n in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(class_names)), fontsize=8, frameon=False)
    fig.suptitle(f"t-SNE of {len(labels)} cells per layer, coloured by compartment")
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    save_figure(fig, stem)


def plot_neuron_summary(mi_by_blob, r_by_blob, h_class, stem, chance_by_blob=None):
    """Figure 3D: per layer, the distribution of neurons' class MI and best |r| to CellProfiler.

    ``chance_by_blob``: per layer, the median MI with shuffled labels (drawn as x)."""
    plt = _pyplot()
    blobs = list(mi_by_blob)
    n_panels = 2 if r_by_blob else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(0.6 * len(blobs) * n_panels + 3, 3.6), squeeze=False)
    ax = axes[0, 0]
    ax.boxplot([mi_by_blob[b] for b in blobs], showfliers=False)
    ax.set_xticks(range(1, len(blobs) + 1), blobs, rotation=45)
    ax.axhline(h_class, ls="--", color="grey", lw=1, label="class entropy (max)")
    if chance_by_blob:
        ax.plot(range(1, len(blobs) + 1), [chance_by_blob[b] for b in blobs], "x", color="grey",
                label="median with shuffled labels")
    ax.set_ylabel("mutual information with class (nats)")
    ax.set_title("Neuron output vs compartment")
    ax.legend(fontsize=8)
    if r_by_blob:
        ax = axes[0, 1]
        ax.boxplot([np.abs(r_by_blob[b]) for b in blobs], showfliers=False)
        ax.set_xticks(range(1, len(blobs) + 1), blobs, rotation=45)
        ax.set_ylim(0, 1)
        ax.set_ylabel("strongest |Pearson r| to a CellProfiler feature")
        ax.set_title("Neuron output vs CellProfiler")
    fig.tight_layout()
    save_figure(fig, stem)


def plot_patches(panels, stem):
    """Figure 3A: one row per (layer, neuron), the top-activating input patches across.

    fc3 neurons are named by the trained net's classes (``constants.CLASS_NAMES``)."""
    plt = _pyplot()
    n_cols = max(len(p) for _, _, p in panels)
    fig, axes = plt.subplots(len(panels), n_cols, figsize=(1.0 * n_cols + 1.4, 1.0 * len(panels) + 0.5),
                             squeeze=False)
    for r, (blob, channel, patches) in enumerate(panels):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(patches):
                ax.imshow(to_rgb(patches[c]["patch"]), interpolation="nearest")
            else:
                ax.axis("off")
        name = constants.CLASS_NAMES[channel] if blob == "fc3" and channel < constants.N_CLASSES else f"#{channel}"
        side = patches[0]["patch"].shape[-1] if patches else 0
        axes[r, 0].set_ylabel(f"{blob} {name}\n{side}x{side} px", fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("Input patches that most activate chosen neurons (red: marker, green: protein)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    save_figure(fig, stem)
