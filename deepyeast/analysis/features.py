"""Network features on disk, and the per-cell tables aligned with them.

A *features folder* is what ``deepyeast extract`` and ``analysis/predict.py --features-out`` write,
and the one format every analysis reads::

    DIR/paths.txt          one cell path per line (relative to its archive root), the row order
    DIR/<blob>.npy         float32 N x D: each cell's blob flattened in Caffe's C x H x W order
    DIR/<blob>.pool.npy    (instead, for a spatial blob) float32 N x 2C: each channel's spatial
                           mean, then each channel's spatial max
    DIR/<blob>.top.npz     (beside a pooled blob) each channel's top cells: value float32, cell
                           int64 (row of paths.txt), row, col int32 (the unit), each C x k
                           (:class:`deepyeast.caffe.feature_stream.TopActivations`)

:func:`feature_folder` is the one writer (the whole folder appears at once, rows checked against
``paths.txt``; it and the file names live with the other file formats, in
:mod:`deepyeast.caffe.feature_files`); :func:`read_paths`, :func:`load_blob`, :func:`blob_features`,
:func:`blob_mean_max`, :func:`read_top` and :func:`read_features` the readers.  The files are
written batch by batch (:mod:`deepyeast.caffe.feature_stream`) and read in chunks or memory-mapped,
so no step holds a layer's features of every cell at once.  A blob's C x H x W comes from the net
(:func:`network_geometry`, the engine's :meth:`deepyeast.engine.Net.geometry` of the DeepYeast
deploy prototxt unless another is given), and :func:`network_blobs` names the blobs the
analyses use (the tops of the layers with learned parameters: conv1 .. conv8, fc1 .. fc3).

The per-cell tables: labels from the split lists (:func:`read_label_lists`) or a CSV
(:func:`read_label_table`), CellProfiler features (:func:`read_cellprofiler_csv`), matched to
the feature rows by path (:func:`match_paths`, :func:`labels_for_paths`).
"""

import csv
import functools
import os

import numpy as np

from deepyeast.caffe.feature_files import (PATHS_FILE, POOLED_SUFFIX, feature_file, feature_folder,  # noqa: F401
                                           read_features, read_paths)  # (the format; re-exported for its readers)
from deepyeast.caffe.feature_stream import TOP_SUFFIX, NpyWriter, TopActivations  # noqa: F401 (re-exported)
from deepyeast.constants import LIST_PREFIX, SPLITS, class_names_for
from deepyeast.data.lists import class_names_for_list, read_split_list
from deepyeast.utils.io import InputError, open_input


@functools.lru_cache(maxsize=8)
def _shape_net(model):
    from deepyeast.engine import Net

    return Net.for_shapes(model, "TEST")


def _model(model):
    if model is None:
        from deepyeast.caffe.zoo import zoo_file

        model = zoo_file("deploy.prototxt")
    return os.path.abspath(os.fspath(model))


def network_geometry(model=None):
    """``{blob: BlobGeometry}`` (per-cell C x H x W, receptive field) of a deploy net (default: DeepYeast's)."""
    return _shape_net(_model(model)).geometry()


def network_blobs(model=None):
    """The blobs the analyses use, input side first: tops of the layers with learned parameters."""
    return list(_shape_net(_model(model)).learned_blobs)


def __getattr__(name):
    # GEOMETRY / NETWORK_BLOBS: the DeepYeast deploy net's, computed on first use
    if name == "GEOMETRY":
        return network_geometry()
    if name == "NETWORK_BLOBS":
        return tuple(network_blobs())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_blob(feature_dir, blob, geometry=None):
    """Memory-map ``feature_dir/<blob>.npy`` as N x C x H x W float32 (fc: N x C x 1 x 1).

    The row count must match ``paths.txt``; the per-cell size must match the
    blob's geometry (:func:`network_geometry` of the DeepYeast deploy net unless ``geometry``
    is given).  Blobs that net does not have are returned as N x D x 1 x 1.
    """
    path = os.path.join(feature_dir, f"{blob}.npy")
    if not os.path.exists(path):
        raise InputError(f"{path}: no such feature file (blob {blob!r})")
    array = np.load(path, mmap_mode="r")
    n_paths = len(read_paths(os.path.join(feature_dir, PATHS_FILE)))
    if array.shape[0] != n_paths:
        raise InputError(f"{path}: {array.shape[0]} rows but paths.txt has {n_paths}")
    geometry = geometry or network_geometry().get(blob)
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
                         f"reduce={reduce!r} needs the whole blob (analysis/predict.py --features-reduce full)")
    array = np.load(pooled, mmap_mode="r")
    n_paths = len(read_paths(os.path.join(feature_dir, PATHS_FILE)))
    geometry = network_geometry().get(blob)
    if array.ndim != 2 or array.shape[0] != n_paths or (geometry and array.shape[1] != 2 * geometry.channels):
        want = f"{n_paths} x {2 * geometry.channels}" if geometry else f"{n_paths} x 2C"
        raise InputError(f"{pooled}: shape {array.shape}, expected {want} (rows of paths.txt x 2 x channels)")
    out = np.asarray(array, dtype=np.float32)
    _check_finite(out, pooled)
    return out


def blob_mean_max(feature_dir, blob, geometry=None):
    """Each channel's spatial mean and maximum per cell of a saved blob: ``(mean, max)``, float32 N x C each.

    From ``<blob>.npy`` (read in chunks, :func:`channel_mean_max`) or, when only that was
    saved, ``<blob>.pool.npy``.  An fc blob's mean and max are its values.
    """
    if os.path.exists(os.path.join(feature_dir, feature_file(blob))):
        return channel_mean_max(load_blob(feature_dir, blob, geometry))
    pooled = blob_features(feature_dir, blob, "pool")
    c = pooled.shape[1] // 2
    return pooled[:, :c], pooled[:, c:]


def read_top(feature_dir, blob, geometry=None):
    """``<blob>.top.npz`` of a features folder: ``dict(value, cell, row, col)``, each C x k (see
    :class:`~deepyeast.caffe.feature_stream.TopActivations`), checked against ``paths.txt`` and the
    blob's geometry (:func:`network_geometry` unless given)."""
    path = os.path.join(feature_dir, blob + TOP_SUFFIX)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file (blob {blob!r} has neither whole maps nor top activations: "
                         "analysis/predict.py --features-reduce pool writes them)")
    try:
        with np.load(path, allow_pickle=False) as z:
            top = {k: np.asarray(z[k]) for k in ("value", "cell", "row", "col")}
    except (KeyError, ValueError, OSError) as err:
        raise InputError(f"{path}: not a top-activations file ({err})") from None
    shapes = {a.shape for a in top.values()}
    n_paths = len(read_paths(os.path.join(feature_dir, PATHS_FILE)))
    geometry = geometry or network_geometry().get(blob)
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise InputError(f"{path}: value, cell, row, col must be C x k arrays of one shape, got {sorted(shapes)}")
    if len(top["cell"]) and (top["cell"].min() < 0 or top["cell"].max() >= n_paths):
        raise InputError(f"{path}: a cell index outside the {n_paths} rows of paths.txt")
    if geometry is not None and (top["value"].shape[0] != geometry.channels or
                                 (top["row"].size and (top["row"].max() >= geometry.height or
                                                       top["col"].max() >= geometry.width))):
        raise InputError(f"{path}: does not fit blob {blob} ({geometry.channels} x {geometry.height} x "
                         f"{geometry.width})")
    return top


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


def read_label_lists(root, prefix=LIST_PREFIX, splits=SPLITS, n_classes=None):
    """Read ``root/<prefix><split>.txt`` split lists -> dict path -> (split, label).

    ``prefix``: ``"HOwt_"`` (the main set, default) or ``"HOwt_transfer_"`` (a trailing ``_`` may
    be left out).  Parsed by :func:`deepyeast.data.lists.read_split_list` (errors name file and
    line); labels are checked against the class table of ``n_classes`` classes (default: the
    table the prefix names).  Splits whose file is missing are skipped; at least one must exist.
    """
    prefix = prefix if prefix.endswith("_") else prefix + "_"
    class_names = class_names_for(n_classes) if n_classes else class_names_for_list(prefix)
    labels = {}
    found = False
    for split in splits:
        path = os.path.join(root, f"{prefix}{split}.txt")
        if not os.path.exists(path):
            continue
        found = True
        entries, _ = read_split_list(path, class_names)
        for rel, label in entries:
            labels[_normalize_path(rel)] = (split, label)
    if not found:
        raise InputError(f"{root}: no list files {prefix}{{{','.join(splits)}}}.txt")
    return labels


def read_label_table(path, n_classes=None):
    """Read a CSV with columns ``path,label`` (and optional ``split``) -> dict path -> (split, label).

    A predictions table qualifies.  Split names like ``transfer_train`` are
    shortened to ``train``.
    """
    with open_input(path, "label table", newline="") as f:
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

    Parsing and its errors are ``deepyeast.analysis.cp_features.read_feature_csv``'s.
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

