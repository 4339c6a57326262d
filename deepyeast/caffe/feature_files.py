"""The features folder on disk: file names, the one writer and the plain readers.

A *features folder* is what ``deepyeast extract`` and ``analysis/predict.py --features-out`` write
(the layout is described in :mod:`deepyeast.analysis.features`, which reads it for the analyses)::

    DIR/paths.txt          one cell path per line, the row order
    DIR/<blob>.npy         float32 N x D, or DIR/<blob>.pool.npy float32 N x 2C (+ DIR/<blob>.top.npz)

It sits beside the other file formats (prototxt, blobs, LMDB) so that the engine's ``extract``
and the analyses write and read it through one module.
"""

import contextlib
import os

import numpy as np

from deepyeast.caffe.feature_stream import TOP_SUFFIX
from deepyeast.utils.io import InputError, atomic_folder, atomic_write_text

__all__ = ["PATHS_FILE", "POOLED_SUFFIX", "feature_file", "feature_folder", "read_features", "read_paths"]

PATHS_FILE = "paths.txt"
POOLED_SUFFIX = ".pool.npy"
"""File suffix of a blob saved as per-channel spatial mean and max (N x 2C)."""


def feature_file(blob, pooled=False):
    """File name of ``blob`` in a features folder: ``<blob>.npy`` or ``<blob>.pool.npy``."""
    return blob + (POOLED_SUFFIX if pooled else ".npy")


@contextlib.contextmanager
def feature_folder(out_dir, paths):
    """Write a features folder: yields a fresh scratch folder to put the blob files in.

    On success ``paths.txt`` (``paths``, one per line) is added, every ``*.npy`` is checked to
    have one row per path, and the folder replaces ``out_dir`` as a whole.  ``out_dir`` may be
    an earlier output folder; a folder holding anything else is refused (it would be lost; see
    :func:`deepyeast.utils.io.check_replaceable`).
    """
    paths = list(paths)
    with atomic_folder(out_dir) as tmp:
        yield tmp
        for name in sorted(os.listdir(tmp)):
            if name.endswith(".npy"):
                rows = np.load(os.path.join(tmp, name), mmap_mode="r").shape[0]
                if rows != len(paths):
                    raise ValueError(f"{name}: {rows} rows for {len(paths)} cells")
        atomic_write_text(os.path.join(tmp, PATHS_FILE), "".join(p + "\n" for p in paths))


def read_features(feature_dir, blob):
    """``DIR/<blob>.npy`` (float32 N x D) and the cell paths -> (array, list of paths)."""
    path = os.path.join(feature_dir, feature_file(blob))
    if not os.path.exists(path):
        raise InputError(f"{path}: no such feature file (blob {blob!r})")
    arr = np.load(path)
    paths = read_paths(os.path.join(feature_dir, PATHS_FILE))
    if len(paths) != arr.shape[0]:
        raise InputError(f"{feature_dir}: {blob}.npy has {arr.shape[0]} rows but paths.txt {len(paths)}")
    return arr, paths


def read_paths(path):
    """Read ``paths.txt``: one cell path per non-empty line -> list[str]."""
    with open(path, encoding="utf-8") as f:
        paths = [line.strip() for line in f if line.strip()]
    if not paths:
        raise InputError(f"{path}: no cell paths")
    return paths
