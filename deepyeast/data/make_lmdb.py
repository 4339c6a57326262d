"""Split lists -> Caffe LMDBs + per-pixel training mean + manifests (an "LMDB bundle").

Bundle layout (``OUT``)::

    OUT/train_lmdb/  OUT/val_lmdb/  OUT/test_lmdb/   Caffe Datum records, shuffled
    OUT/mean.binaryproto                             per-pixel mean of train_lmdb
    OUT/<split>_manifest.json                        counts per class / protein, checksums
    OUT/<split>_rejects.txt                          only with skip_bad and rejects

Records are written in a seeded shuffled order with keys ``KEY_FORMAT`` of :mod:`deepyeast.caffe.lmdb`
(what ``convert_imageset -shuffle`` does), images streamed one at a time from
the archive, so memory does not grow with the number of cells.  The mean is
computed from the written train LMDB, as Caffe's ``compute_image_mean`` does.

The bundle is one output: it is written into a fresh hidden folder beside ``OUT`` and swapped
in as a whole when every file is written (:func:`deepyeast.utils.io.atomic_folder`), under a
lock that refuses a second concurrent writer of ``OUT``.  An interrupted or killed run leaves
the previous bundle as it was (never a new LMDB beside an old mean), and the next run removes
what the killed one left.
"""

import collections
import dataclasses
import hashlib
import json
import os
import random

import numpy as np

from deepyeast.data.crop_png import read_crop
from deepyeast.data.lists import check_splits, protein_of, read_split_list
from deepyeast.utils.progress import progress as progress_report
from deepyeast.utils.io import file_digest
from deepyeast.constants import (CLASS_NAMES, CLASS_SETS, IMAGE_SIZE, LIST_PREFIX, LMDB_SUFFIX, MEAN_FILE,
                                 N_CHANNELS, SPLITS, class_set_of, lmdb_folder)
from deepyeast.utils.io import InputError, atomic_folder, atomic_write_json, atomic_write_text
from deepyeast.utils.run_context import RunContext


def list_path(root, split, prefix=LIST_PREFIX):
    """Path of a split list: ``root/<prefix><split>.txt``."""
    return os.path.join(root, f"{prefix}{split}.txt")



def _try_read(root, entry):
    rel, label = entry
    try:
        return rel, label, read_crop(os.path.join(root, rel))
    except InputError as e:
        return rel, label, e


def _read_ahead(root, entries, threads=2, block=256):
    """Yield ``(relpath, label, image or InputError)`` in order, decoding in threads.

    File reading and PNG decoding release the GIL, so a small pool overlaps
    them with the LMDB writes; at most two blocks of crops are held in memory.
    """
    from concurrent.futures import ThreadPoolExecutor
    it = iter(entries)
    with ThreadPoolExecutor(threads) as pool:
        def submit():
            chunk = [e for _, e in zip(range(block), it)]
            return [pool.submit(_try_read, root, e) for e in chunk]
        pending = submit()
        while pending:
            following = submit()
            for fut in pending:
                yield fut.result()
            pending = following


@dataclasses.dataclass(frozen=True)
class SplitEntries:
    """One split's crops: its name (``split``), ``entries`` (list of ``(relpath, label)`` under the
    archive root), the list file they came from (or None) and the lines already rejected while
    reading it (``rejects``: ``(path, reason)`` pairs)."""

    split: str
    entries: list
    list_file: str = None
    rejects: tuple = ()


def write_split_lmdb(root, source, lmdb_path, class_names=CLASS_NAMES, skip_bad=False, lock=True,
                     context=RunContext()):
    """Write one split's crops (``source``: :class:`SplitEntries`) to an LMDB and return its manifest dict.

    The order is shuffled with ``random.Random(context.seed)``.  A crop that cannot be read
    (missing, corrupt, wrong size, single-channel, 16-bit) raises ``InputError``, or with
    ``skip_bad`` is left out and listed in the manifest's ``rejects``.
    """
    from deepyeast.caffe.lmdb import KEY_FORMAT, write_datum_lmdb

    split, list_file, seed, progress = source.split, source.list_file, context.seed, context.progress
    order = list(source.entries)
    random.Random(seed).shuffle(order)
    rejects = list(source.rejects)
    per_class = collections.Counter()
    per_protein = collections.Counter()
    content = hashlib.sha256()

    def records():
        bar = progress_report(order, len(order), f"{split} -> lmdb", "crop", None if progress else False)
        for rel, label, result in _read_ahead(root, bar):
            if isinstance(result, InputError):
                if not skip_bad:
                    raise result
                rejects.append((rel, str(result)))
                continue
            per_class[label] += 1
            per_protein[protein_of(rel)] += 1
            content.update(f"{rel}\t{label}\n".encode())
            content.update(result.tobytes())
            yield rel, result, label

    n = write_datum_lmdb(lmdb_path, records(), shuffle=False, lock=lock)
    manifest = {
        "split": split,
        "lmdb": os.path.basename(lmdb_path),
        "list_file": os.path.basename(list_file) if list_file else None,
        "list_sha256": file_digest(list_file, "sha256") if list_file else None,
        "n_records": n,
        "n_rejected": len(rejects),
        "image_shape": [N_CHANNELS, IMAGE_SIZE, IMAGE_SIZE],
        "key_format": KEY_FORMAT,
        "shuffle_seed": seed,
        "cells_per_class": {name: per_class.get(i, 0) for i, name in enumerate(class_names)},
        "n_proteins": len(per_protein),
        "cells_per_protein": dict(sorted(per_protein.items())),
        "content_sha256": content.hexdigest(),
        "data_mdb_sha256": file_digest(os.path.join(lmdb_path, "data.mdb"), "sha256"),
        "rejects": [{"path": p, "reason": r} for p, r in rejects],
    }
    return manifest


def build_lmdbs(root, out_dir, splits=SPLITS, prefix=LIST_PREFIX, class_names=None, list_dir=None, skip_bad=False,
                context=RunContext()):
    """Convert an archive root's split lists into an LMDB bundle in ``out_dir``.

    ``root``: archive root holding the crops; ``list_dir``: where the
    ``<prefix><split>.txt`` lists are (default ``root``); ``class_names``:
    class table (default: by ``prefix``, transfer when it contains
    "transfer").  Before anything is written the lists are checked: a bad line
    (label outside the table, duplicate) or a protein in two splits raises
    ``InputError``; with ``skip_bad`` those lines (for a shared protein: its
    cells in the later split) are rejected instead.  Returns a summary dict
    (per split: records, rejects; the mean file).  ``context``: the shuffle seed (split k
    shuffled with seed + k) and progress bars.  The bundle replaces ``out_dir`` as a whole
    (see the module docstring); an ``out_dir`` a step did not write is refused
    (:func:`deepyeast.utils.io.check_replaceable`).
    """
    list_dir = list_dir or root
    if class_names is None:
        class_names = CLASS_SETS[class_set_of(prefix)]
    paths = {s: list_path(list_dir, s, prefix) for s in splits}
    for s, p in paths.items():
        if not os.path.exists(p):
            raise InputError(f"{p}: split list is missing")
    report, ok = check_splits(paths, class_names)
    for s, p in paths.items():
        if report["splits"][s]["n_cells"] == 0:  # a 0-record LMDB would train or test on nothing
            raise InputError(f"{p}: the {s} list has no usable 'relpath label' line")
    if not ok and not skip_bad:
        raise InputError("split lists are inconsistent: " + "; ".join(report["errors"][:5]))
    with atomic_folder(out_dir) as tmp:
        return _write_bundle(root, tmp, splits, paths, class_names, skip_bad, context)


def _write_bundle(root, out_dir, splits, paths, class_names, skip_bad, context):
    from deepyeast.caffe.blobs import compute_mean, write_mean_binaryproto
    from deepyeast.caffe.lmdb import iter_datum_lmdb

    seen_in = {}
    summary = {"splits": {}}
    for k, s in enumerate(splits):
        entries, rejects = read_split_list(paths[s], class_names, skip_bad=skip_bad)
        kept = []
        for rel, label in entries:
            protein = protein_of(rel)
            first = seen_in.setdefault(protein, s)
            if first != s:
                rejects.append((rel, f"{paths[s]}: protein {protein} is already in split {first}"))
                continue
            kept.append((rel, label))
        manifest = write_split_lmdb(root, SplitEntries(s, kept, paths[s], tuple(rejects)),
                                    os.path.join(out_dir, lmdb_folder(s)), class_names, skip_bad, lock=False,
                                    context=context.with_(seed=context.seed + k))
        atomic_write_json(os.path.join(out_dir, f"{s}_manifest.json"), manifest)
        if manifest["rejects"]:
            atomic_write_text(os.path.join(out_dir, f"{s}_rejects.txt"),
                              "".join(f"{r['path']}\t{r['reason']}\n" for r in manifest["rejects"]))
        summary["splits"][s] = {"n_records": manifest["n_records"], "n_rejected": manifest["n_rejected"]}
    mean_split = "train" if "train" in splits else splits[0]
    mean = compute_mean(img for _, img, _ in iter_datum_lmdb(os.path.join(out_dir, lmdb_folder(mean_split))))
    write_mean_binaryproto(os.path.join(out_dir, MEAN_FILE), mean)
    summary["mean"] = {"file": MEAN_FILE, "from": lmdb_folder(mean_split),
                       "per_channel": [float(v) for v in mean.reshape(mean.shape[0], -1).mean(1)]}
    summary["n_records"] = sum(v["n_records"] for v in summary["splits"].values())
    summary["n_rejected"] = sum(v["n_rejected"] for v in summary["splits"].values())
    return summary


def read_manifest(out_dir, split):
    """Load ``out_dir/<split>_manifest.json``."""
    with open(os.path.join(out_dir, f"{split}_manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def mean_image(out_dir):
    """The bundle's per-pixel mean, float32 C x H x W."""
    from deepyeast.caffe.blobs import read_mean_binaryproto
    return np.asarray(read_mean_binaryproto(os.path.join(out_dir, MEAN_FILE)), np.float32)
