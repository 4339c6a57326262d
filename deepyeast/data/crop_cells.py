"""Cut 64x64 single-cell crops out of two-channel micrographs: cell geometry, crops, the crop step.

Input of :func:`crop_screen` (a user's own screen, or the synthetic one):

* an *images table* (CSV, :func:`deepyeast.data.screen_tables.read_images_table`) with columns
  ``image,plate,protein,label`` and optionally ``split`` and ``mask``.
  ``image`` is a micrograph path (TIFF incl. OME-TIFF, or PNG; relative paths
  are relative to the table); instead of ``image`` a row may give
  ``marker_image`` and ``protein_image``, two single-channel files.
  ``plate`` is an integer plate number, ``protein`` an id without ``-`` or
  ``/`` (e.g. the well, ``001002000``), ``label`` a class index or class name,
  ``split`` one of train/val/test (when absent, splits are assigned by
  protein), ``mask`` a label image of the same size (0 = background, k > 0 =
  cell k; from ``data_prep/segment_cells.py``, CellProfiler, cellpose, YeaZ...);
* or, instead of masks, a *centres table* (CSV, :func:`deepyeast.data.screen_tables.read_centres_table`)
  with columns ``image,x,y`` (pixels, x = column, y = row, origin at the
  top-left pixel's centre) and optionally ``cell`` (an integer id) and
  ``is_cell`` (1/0, copied to ``crops.csv``); CellProfiler's
  ``ImageNumber,ObjectNumber,Location_Center_X,Location_Center_Y`` are
  accepted too.

Output: the archive layout of :mod:`deepyeast.data.lists`:
``OUT/plateNN/<protein>-<field>-<cell>-<k>.png`` and ``OUT/HOwt_<split>.txt``
(``HOwt_transfer_<split>.txt`` with ``prefix="HOwt_transfer_"``), the class
doc, ``crops.csv`` (where each crop came from, with label index and class
name) and, when rejects occurred, ``rejects.txt``.  The whole output folder
is written atomically.
"""

import collections
import dataclasses
import logging
import os
import random

import numpy as np

from deepyeast.constants import CLASS_SETS, IMAGE_SIZE, SPLIT_FRACTIONS, SPLITS, list_prefix
from deepyeast.data.crop_png import write_crop
from deepyeast.data.lists import write_class_doc, write_split_list
from deepyeast.data.micrographs import MicrographFormat, read_mask, read_row_micrograph, size_text
from deepyeast.data.screen_tables import Rejects, read_centres_table, read_images_table
from deepyeast.utils.io import InputError, atomic_folder, write_csv
from deepyeast.utils.progress import progress

BORDER_MODES = ("pad", "skip")
log = logging.getLogger(__name__)


def measure_cells(mask):
    """Cells of a label mask (0 = background, k > 0 = cell k).

    Returns a dict of arrays: ``cell`` (int64 ids, ascending), ``x``, ``y``
    (float64 centroids in pixels, 0-based, x = column, as CellProfiler's
    ``Location_Center_X/Y``) and ``area`` (int64 pixels).
    """
    mask = np.asarray(mask)
    flat = mask.ravel().astype(np.int64)
    if flat.min(initial=0) < 0:
        raise InputError("mask has negative labels")
    n = int(flat.max(initial=0)) + 1
    area = np.bincount(flat, minlength=n)
    ys, xs = np.divmod(np.arange(flat.size), mask.shape[1])
    sy = np.bincount(flat, weights=ys, minlength=n)
    sx = np.bincount(flat, weights=xs, minlength=n)
    ids = np.flatnonzero(area[1:]) + 1
    return {"cell": ids, "x": sx[ids] / area[ids], "y": sy[ids] / area[ids], "area": area[ids]}


def centres_from_mask(mask):
    """Centroids of labelled cells.

    ``mask``: integer H x W, 0 = background.  Returns ``(cell_ids int64 N,
    centres float64 N x 2 as (y, x) pixels)``, ids ascending.
    """
    cells = measure_cells(mask)
    return cells["cell"], np.stack([cells["y"], cells["x"]], axis=1)


# --------------------------------------------------------------------------- cropping

def centre_inside(centres, shape):
    """Bool N: does each (y, x) centre round to a pixel of an image of ``shape`` (H, W)?"""
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    with np.errstate(invalid="ignore"):
        return ((c[:, 0] >= -0.5) & (c[:, 0] < shape[0] - 0.5) & (c[:, 1] >= -0.5) & (c[:, 1] < shape[1] - 0.5))


def crop_cells(image, centres, size=IMAGE_SIZE, border="pad"):
    """Cut ``size x size`` crops centred on cell midpoints.

    ``image``: uint8 C x H x W; ``centres``: N x 2 (y, x) pixel coordinates
    (rounded to the nearest pixel; the crop spans rows ``cy - size/2`` to
    ``cy + size/2 - 1``).  Crops reaching outside the image are zero-padded
    (``border="pad"``) or left out (``"skip"``); a centre outside the image
    raises ``InputError`` (its crop would be blank).

    Returns ``(crops uint8 M x C x size x size, kept int64 M (indices into
    centres), padded bool M)``.
    """
    if border not in BORDER_MODES:
        raise ValueError(f"border must be one of {BORDER_MODES}, got {border!r}")
    image = np.asarray(image)
    c, h, w = image.shape
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    outside = np.flatnonzero(~centre_inside(centres, (h, w)))
    if len(outside):
        cy, cx = centres[outside[0]]
        raise InputError(f"centre {outside[0]} (x={cx:g}, y={cy:g}) lies outside the {w}x{h} image "
                         f"({len(outside)} such centre(s)); a crop there would be blank")
    half = size // 2
    crops, kept, padded = [], [], []
    for i, (cy, cx) in enumerate(centres):
        y0 = int(np.floor(cy + 0.5)) - half
        x0 = int(np.floor(cx + 0.5)) - half
        inside = y0 >= 0 and x0 >= 0 and y0 + size <= h and x0 + size <= w
        if inside:
            crops.append(image[:, y0:y0 + size, x0:x0 + size])
        else:
            if border == "skip":
                continue
            out = np.zeros((c, size, size), image.dtype)
            ya, yb = max(y0, 0), min(y0 + size, h)
            xa, xb = max(x0, 0), min(x0 + size, w)
            if ya < yb and xa < xb:
                out[:, ya - y0:yb - y0, xa - x0:xb - x0] = image[:, ya:yb, xa:xb]
            crops.append(out)
        kept.append(i)
        padded.append(not inside)
    stack = np.stack(crops) if crops else np.zeros((0, c, size, size), image.dtype)
    return stack, np.asarray(kept, np.int64), np.asarray(padded, bool)


def crop_name(plate, protein, field, cell, k):
    """Archive-relative crop path ``plateNN/<protein>-<field>-<cell>-<k>.png``."""
    return f"plate{int(plate):02d}/{protein}-{int(field)}-{int(cell)}-{int(k)}.png"


# --------------------------------------------------------------------------- splits by protein

def assign_splits(protein_cells, protein_labels, fractions=SPLIT_FRACTIONS, seed=0, splits=SPLITS):
    """Assign whole proteins to splits so each class's cells follow ``fractions``.

    ``protein_cells``: dict protein -> number of cells; ``protein_labels``:
    dict protein -> class.  Within each class, proteins are visited in a
    seeded random order and each goes to the split furthest below its target
    share.  Returns dict protein -> split name.  Deterministic per seed.
    """
    fractions = np.asarray(fractions, float) / np.sum(fractions)
    rng = random.Random(seed)
    by_class = collections.defaultdict(list)
    for p in sorted(protein_cells):
        by_class[protein_labels[p]].append(p)
    out = {}
    for label in sorted(by_class, key=str):
        proteins = by_class[label]
        rng.shuffle(proteins)
        total = sum(protein_cells[p] for p in proteins)
        have = np.zeros(len(splits))
        for p in proteins:
            deficit = fractions * total - have
            k = int(np.argmax(deficit))
            out[p] = splits[k]
            have[k] += protein_cells[p]
    return out


@dataclasses.dataclass(frozen=True)
class SplitRule:
    """How proteins the images table gives no split are assigned to splits (:func:`assign_splits`):
    each class's cells shared as ``fractions`` (train, val, test), proteins visited in an order
    seeded with ``seed``."""

    fractions: tuple = SPLIT_FRACTIONS
    seed: int = 0


# --------------------------------------------------------------------------- whole screens

def crop_screen(images_csv, out_root, centres_csv=None, fmt=MicrographFormat(), border="pad", classes="main",
                splits=SplitRule(), skip_bad=False):
    """Turn micrographs + masks (or centres) into an archive root; returns a summary dict.

    See the module docstring for the input tables.  ``fmt``: how the micrographs are read
    (:class:`deepyeast.data.micrographs.MicrographFormat`); ``border``: "pad" or "skip" for cells
    near the edge; ``classes``: the class set of the labels and lists ("main" or "transfer",
    :data:`deepyeast.constants.CLASS_SETS`); ``splits``: :class:`SplitRule`.  Crops are
    :data:`deepyeast.constants.IMAGE_SIZE` pixels a side.  Bad input (unreadable,
    16-bit without ``bits``, single-channel or mis-sized micrograph, mask of
    the wrong size, label outside the class table, bad centre row or a centre
    outside its image, a protein left without cells) raises ``InputError``
    naming the file and row, or with ``skip_bad`` is written to
    ``OUT/rejects.txt`` and counted.  A micrograph without cells is not an
    error: it is listed in the summary (``images_without_cells``) and logged.
    Summary keys: ``n_crops``, ``n_padded``, ``n_skipped_border``,
    ``n_rejected``, ``per_split`` (cells), ``n_proteins``,
    ``images_without_cells``, ``n_centres_unmatched`` (centre rows naming no
    image of the table).
    """
    class_names, prefix, size = CLASS_SETS[classes], list_prefix(classes), IMAGE_SIZE
    bad = rejects = Rejects(skip_bad)
    rows = read_images_table(images_csv, class_names, require=("plate", "protein"), require_label=True, on_bad=bad)
    images = []
    for im in rows:
        if im["mask"] is None and centres_csv is None:
            bad(im["where"], InputError(f"{im['where']}: no mask given and no centres table"))
            continue
        images.append(im)
    centres_by_image = read_centres_table(centres_csv, rows, bad) if centres_csv is not None else {}
    known = {im["path"] for im in rows}
    unmatched = sum(len(v) for k, v in centres_by_image.items() if k not in known)
    if unmatched:
        log.warning("%s: %d centre row(s) name no image of %s; ignored", centres_csv, unmatched, images_csv)

    # protein -> consistent label
    protein_key = {}
    for im in images:
        key = f"plate{im['plate']:02d}/{im['protein']}"
        if key in protein_key and protein_key[key] != im["label"]:
            raise InputError(f"{im['where']}: protein {key} has label {im['label']} here but "
                             f"{protein_key[key]} on an earlier row")
        protein_key[key] = im["label"]

    summary = collections.Counter()
    records = []  # (relpath, label, protein_key, split_or_None, image, cell, y, x, padded, is_cell)
    read_ok = collections.defaultdict(list)  # protein key -> rows whose micrograph was read
    empty = []
    with atomic_folder(out_root) as tmp:
        field_of = collections.Counter()
        for im in progress(images, desc="crop", unit="image"):
            key = f"plate{im['plate']:02d}/{im['protein']}"
            try:
                micro = read_row_micrograph(im, fmt)
                if im["mask"] is not None:
                    mask = read_mask(im["mask"], micro.shape[1:], im["path"])
                    ids, centres = centres_from_mask(mask)
                    quality = np.ones(len(ids), int)
                else:
                    entries = []
                    for e in centres_by_image.get(im["path"], []):
                        if centre_inside([e[1]], micro.shape[1:])[0]:
                            entries.append(e)
                        else:
                            bad(e[3], InputError(f"{e[3]}: centre x={e[1][1]:g}, y={e[1][0]:g} lies outside "
                                                 f"{im['path']} ({size_text(micro)})"))
                    ids = np.asarray([e[0] for e in entries], np.int64)
                    centres = np.asarray([e[1] for e in entries], float).reshape(-1, 2)
                    quality = np.asarray([e[2] for e in entries], int)
            except InputError as e:
                bad(im["where"], e)
                continue
            read_ok[key].append(im["where"])
            if len(ids) == 0:
                empty.append(im["where"])
                log.warning("%s: no cell in %s", im["where"], im["path"])
            field = field_of[key]
            field_of[key] += 1
            crops, kept, padded = crop_cells(micro, centres, size, border)
            summary["n_skipped_border"] += len(centres) - len(kept)
            summary["n_padded"] += int(padded.sum())
            for k, (crop, i, pad) in enumerate(zip(crops, kept, padded)):
                rel = crop_name(im["plate"], im["protein"], field, ids[i], k)
                write_crop(tmp, rel, crop)
                records.append((rel, im["label"], key, im["split"], im["image"], int(ids[i]),
                                float(centres[i][0]), float(centres[i][1]), bool(pad), int(quality[i])))
        cells = collections.Counter(r[2] for r in records)
        for key, wheres in read_ok.items():
            if not cells[key]:
                bad(wheres[0], InputError(f"{wheres[0]}: protein {key} has no cells in any of its "
                                          f"{len(wheres)} micrograph(s) ({', '.join(wheres)})"))
        # splits by protein
        given = {}
        for r in records:
            if r[3] is not None:
                if given.setdefault(r[2], r[3]) != r[3]:
                    raise InputError(f"{images_csv}: protein {r[2]} is given two splits ({given[r[2]]} and {r[3]}); "
                                     f"a protein must stay in one split")
        free = {p: n for p, n in cells.items() if p not in given}
        assigned = dict(given)
        assigned.update(assign_splits(free, protein_key, splits.fractions, splits.seed))
        per_split = collections.defaultdict(list)
        for r in records:
            per_split[assigned[r[2]]].append((r[0], r[1]))
        for split in SPLITS:
            write_split_list(os.path.join(tmp, f"{prefix}{split}.txt"), per_split.get(split, []))
        write_class_doc(os.path.join(tmp, f"{prefix}doc.txt"), class_names)
        write_csv(os.path.join(tmp, "crops.csv"),
                  ([r[0], r[2], assigned[r[2]], r[1], class_names[r[1]], r[4], r[5], f"{r[6]:.2f}", f"{r[7]:.2f}",
                    int(r[8]), r[9]] for r in records),
                  ["path", "protein", "split", "label", "class", "image", "cell", "y", "x", "padded", "is_cell"])
        rejects.write(tmp)
    return {
        "n_crops": len(records),
        "n_padded": summary["n_padded"],
        "n_skipped_border": summary["n_skipped_border"],
        "n_rejected": len(rejects.items),
        "n_proteins": sum(1 for n in cells.values() if n),
        "per_split": {s: len(per_split.get(s, [])) for s in SPLITS},
        "images_without_cells": empty,
        "n_centres_unmatched": unmatched,
    }
