"""Cut 64x64 single-cell crops out of two-channel micrographs.

Input of :func:`crop_screen` (a user's own screen, or the synthetic one):

* an *images table* (CSV) with columns ``image,plate,protein,label`` and
  optionally ``split`` and ``mask``.  ``image`` is a micrograph path (TIFF or
  PNG; relative paths are relative to the table), ``plate`` an integer plate
  number, ``protein`` an id without ``-`` or ``/`` (e.g. the well,
  ``001002000``), ``label`` a class index or class name, ``split`` one of
  train/val/test (when absent, splits are assigned by protein), ``mask`` a
  label image of the same size (0 = background, k > 0 = cell k);
* or, instead of masks, a *centres table* (CSV) with columns ``image,x,y``
  (pixels, x = column, y = row, origin at the top-left pixel's centre) and
  optionally ``cell`` (an integer id) and ``is_cell`` (1/0, copied to
  ``cell_quality.csv``).

Output: the archive layout of :mod:`deepyeast.data.lists`:
``OUT/plateNN/<protein>-<field>-<cell>-<k>.png`` and ``OUT/HOwt_<split>.txt``
(``HOwt_transfer_<split>.txt`` with ``prefix="HOwt_transfer_"``), the class
doc, ``crops.csv`` (where each crop came from) and, when rejects occurred,
``rejects.txt``.  The whole output folder is written atomically.
"""

import collections
import csv
import os
import random

import numpy as np

from deepyeast.data.crop_png import write_crop
from deepyeast.data.lists import write_class_doc, write_split_list
from deepyeast.constants import CLASS_NAMES, IMAGE_SIZE, LIST_PREFIX, SPLIT_FRACTIONS, SPLITS
from deepyeast.utils.io import InputError, atomic_path, atomic_write_text, open_input

BORDER_MODES = ("pad", "skip")


# --------------------------------------------------------------------------- reading

def to_two_channel(img, name, channels=(0, 1), bits=None):
    """Pick the marker and protein channels of a decoded micrograph.

    ``img``: H x W x C (or C x H x W when C <= 8 is the first axis) array;
    ``channels``: (marker index, protein index) along the channel axis;
    ``bits``: for 16-bit input, its significant bit depth (e.g. 12): values are
    shifted down to 8 bits; without it 16-bit input is refused.
    Returns uint8 ``2 x H x W``.
    """
    img = np.asarray(img)
    if img.ndim == 2 or (img.ndim == 3 and min(img.shape[0], img.shape[-1]) == 1):
        raise InputError(f"{name}: single-channel image; need two channels (marker and protein)")
    if img.ndim != 3:
        raise InputError(f"{name}: expected a 2-D multi-channel image, got array of shape {img.shape}")
    if img.shape[0] <= 8 and img.shape[-1] > 8:
        chw = img
    else:
        chw = np.moveaxis(img, -1, 0)
    for c in channels:
        if not 0 <= c < chw.shape[0]:
            raise InputError(f"{name}: channel {c} requested but the image has {chw.shape[0]} channels")
    out = chw[list(channels)]
    if out.dtype == np.uint8:
        return np.ascontiguousarray(out)
    if out.dtype == np.uint16:
        if bits is None:
            raise InputError(f"{name}: 16-bit image; pass bits=N (--bits N, the camera's bit depth) to rescale to 8 bits")
        shift = max(int(bits) - 8, 0)
        return np.clip(out.astype(np.uint32) >> shift, 0, 255).astype(np.uint8)
    raise InputError(f"{name}: unsupported pixel type {out.dtype}; need 8-bit (or 16-bit with bits=N)")


def read_image_array(path):
    """Decode a TIFF or PNG file as stored (TIFF via tifffile, others via OpenCV, RGB order)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: file is missing")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".tif", ".tiff"):
        import tifffile
        try:
            return tifffile.imread(path)
        except Exception as e:  # tifffile raises many types for a bad file
            raise InputError(f"{path}: corrupt or truncated TIFF ({type(e).__name__}: {e})") from None
    from deepyeast.data.crop_png import quiet_cv2
    cv2 = quiet_cv2()
    with open(path, "rb") as f:
        data = f.read()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None:
        raise InputError(f"{path}: corrupt or truncated image (cannot decode)")
    if img.ndim == 3 and img.shape[2] >= 3:
        img = img[:, :, [2, 1, 0] + list(range(3, img.shape[2]))]  # BGR(A) -> RGB(A)
    return img


def read_micrograph(path, channels=(0, 1), bits=None):
    """Read a micrograph -> uint8 ``2 x H x W`` (marker, protein); see :func:`to_two_channel`."""
    return to_two_channel(read_image_array(path), path, channels, bits)


def read_mask(path, shape, image_name="micrograph"):
    """Read a label mask (0 = background, k > 0 = cell k) -> int64 ``H x W``.

    Raises ``InputError`` when its size differs from ``shape`` (H, W).
    """
    m = np.asarray(read_image_array(path))
    if m.ndim == 3:
        if m.shape[2] in (3, 4) and m.shape[:2] == tuple(shape):
            m = m[:, :, 0]
        else:
            raise InputError(f"{path}: mask must be a single-channel label image, got shape {m.shape}")
    if m.shape != tuple(shape):
        raise InputError(f"{path}: mask is {m.shape[1]}x{m.shape[0]} but {image_name} is {shape[1]}x{shape[0]}")
    return m.astype(np.int64)


def centres_from_mask(mask):
    """Centroids of labelled cells.

    ``mask``: integer H x W, 0 = background.  Returns ``(cell_ids int64 N,
    centres float64 N x 2 as (y, x) pixels)``, ids ascending.
    """
    mask = np.asarray(mask)
    flat = mask.ravel().astype(np.int64)
    if flat.min(initial=0) < 0:
        raise InputError("mask has negative labels")
    n = int(flat.max(initial=0)) + 1
    counts = np.bincount(flat, minlength=n)
    ys, xs = np.divmod(np.arange(flat.size), mask.shape[1])
    sy = np.bincount(flat, weights=ys, minlength=n)
    sx = np.bincount(flat, weights=xs, minlength=n)
    ids = np.flatnonzero(counts[1:]) + 1
    return ids, np.stack([sy[ids] / counts[ids], sx[ids] / counts[ids]], axis=1)


# --------------------------------------------------------------------------- cropping

def crop_cells(image, centres, size=IMAGE_SIZE, border="pad"):
    """Cut ``size x size`` crops centred on cell midpoints.

    ``image``: uint8 C x H x W; ``centres``: N x 2 (y, x) pixel coordinates
    (rounded to the nearest pixel; the crop spans rows ``cy - size/2`` to
    ``cy + size/2 - 1``).  Crops reaching outside the image are zero-padded
    (``border="pad"``) or left out (``"skip"``).

    Returns ``(crops uint8 M x C x size x size, kept int64 M (indices into
    centres), padded bool M)``.
    """
    if border not in BORDER_MODES:
        raise ValueError(f"border must be one of {BORDER_MODES}, got {border!r}")
    image = np.asarray(image)
    c, h, w = image.shape
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
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


# --------------------------------------------------------------------------- whole screens

def _read_csv(path, required):
    with open_input(path, "table", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
        return [(i + 2, row) for i, row in enumerate(reader)]


def _parse_label(value, class_names, where):
    value = value.strip()
    try:
        label = int(value)
    except ValueError:
        lowered = [n.lower() for n in class_names]
        if value.lower() not in lowered:
            raise InputError(f"{where}: label {value!r} is not a class index or name ({', '.join(class_names)})") from None
        return lowered.index(value.lower())
    if not 0 <= label < len(class_names):
        raise InputError(f"{where}: label {label} outside the class table (0..{len(class_names) - 1})")
    return label


def crop_screen(images_csv, out_root, centres_csv=None, channels=(0, 1), bits=None, border="pad",
                class_names=CLASS_NAMES, prefix=LIST_PREFIX, fractions=SPLIT_FRACTIONS, seed=0,
                skip_bad=False, size=IMAGE_SIZE):
    """Turn micrographs + masks (or centres) into an archive root; returns a summary dict.

    See the module docstring for the input tables.  Bad input (unreadable or
    16-bit/single-channel micrograph, mask of the wrong size, label outside the
    class table, bad centre row) raises ``InputError`` naming the file and
    row, or with ``skip_bad`` is written to ``OUT/rejects.txt`` and counted.
    Summary keys: ``n_crops``, ``n_padded``, ``n_skipped_border``,
    ``n_rejected``, ``per_split`` (cells), ``n_proteins``.
    """
    base = os.path.dirname(os.path.abspath(images_csv))
    rows = _read_csv(images_csv, ("image", "plate", "protein", "label"))
    rejects = []

    def bad(where, err):
        if not skip_bad:
            raise err
        rejects.append((where, str(err)))

    centres_by_image = collections.defaultdict(list)
    if centres_csv is not None:
        cbase = os.path.dirname(os.path.abspath(centres_csv))
        for lineno, row in _read_csv(centres_csv, ("image", "x", "y")):
            where = f"{centres_csv}:{lineno}"
            try:
                cell = int(row["cell"]) if row.get("cell") not in (None, "") else len(centres_by_image[row["image"]])
                is_cell = int(row["is_cell"]) if row.get("is_cell") not in (None, "") else 1
                xy = (float(row["y"]), float(row["x"]))
            except ValueError as e:
                bad(where, InputError(f"{where}: bad number ({e})"))
                continue
            key = os.path.normpath(os.path.join(cbase, row["image"]))
            centres_by_image[key].append((cell, xy, is_cell))

    images = []
    for lineno, row in rows:
        where = f"{images_csv}:{lineno}"
        try:
            label = _parse_label(row["label"], class_names, where)
            plate = int(row["plate"])
            protein = row["protein"].strip()
            if not protein or "-" in protein or "/" in protein:
                raise InputError(f"{where}: protein id {protein!r} must be non-empty without '-' or '/'")
            split = (row.get("split") or "").strip() or None
            if split is not None and split not in SPLITS:
                raise InputError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
        except (InputError, ValueError) as e:
            bad(where, e if isinstance(e, InputError) else InputError(f"{where}: {e}"))
            continue
        path = os.path.normpath(os.path.join(base, row["image"]))
        mask = row.get("mask") or None
        if mask is None and centres_csv is None:
            bad(where, InputError(f"{where}: no mask given and no centres table"))
            continue
        images.append(dict(path=path, plate=plate, protein=protein, label=label, split=split,
                           mask=os.path.normpath(os.path.join(base, mask)) if mask else None, where=where))

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
    with atomic_path(out_root) as tmp:
        os.makedirs(tmp)
        field_of = collections.Counter()
        for im in images:
            key = f"plate{im['plate']:02d}/{im['protein']}"
            try:
                micro = read_micrograph(im["path"], channels, bits)
                if im["mask"] is not None:
                    mask = read_mask(im["mask"], micro.shape[1:], im["path"])
                    ids, centres = centres_from_mask(mask)
                    quality = np.ones(len(ids), int)
                else:
                    entries = centres_by_image.get(im["path"], [])
                    ids = np.asarray([e[0] for e in entries], np.int64)
                    centres = np.asarray([e[1] for e in entries], float).reshape(-1, 2)
                    quality = np.asarray([e[2] for e in entries], int)
            except InputError as e:
                bad(im["where"], e)
                continue
            field = field_of[key]
            field_of[key] += 1
            crops, kept, padded = crop_cells(micro, centres, size, border)
            summary["n_skipped_border"] += len(centres) - len(kept)
            summary["n_padded"] += int(padded.sum())
            for k, (crop, i, pad) in enumerate(zip(crops, kept, padded)):
                rel = crop_name(im["plate"], im["protein"], field, ids[i], k)
                write_crop(tmp, rel, crop)
                records.append((rel, im["label"], key, im["split"], os.path.relpath(im["path"], base), int(ids[i]),
                                float(centres[i][0]), float(centres[i][1]), bool(pad), int(quality[i])))
        # splits by protein
        cells = collections.Counter(r[2] for r in records)
        given = {}
        for r in records:
            if r[3] is not None:
                if given.setdefault(r[2], r[3]) != r[3]:
                    raise InputError(f"{images_csv}: protein {r[2]} is given two splits ({given[r[2]]} and {r[3]}); "
                                     f"a protein must stay in one split")
        free = {p: n for p, n in cells.items() if p not in given}
        assigned = dict(given)
        assigned.update(assign_splits(free, protein_key, fractions, seed))
        per_split = collections.defaultdict(list)
        for r in records:
            per_split[assigned[r[2]]].append((r[0], r[1]))
        for split in SPLITS:
            write_split_list(os.path.join(tmp, f"{prefix}{split}.txt"), per_split.get(split, []))
        write_class_doc(os.path.join(tmp, f"{prefix}doc.txt"), class_names)
        lines = ["path,protein,split,label,image,cell,y,x,padded,is_cell"]
        lines += [f"{r[0]},{r[2]},{assigned[r[2]]},{r[1]},{r[4]},{r[5]},{r[6]:.2f},{r[7]:.2f},{int(r[8])},{r[9]}"
                  for r in records]
        atomic_write_text(os.path.join(tmp, "crops.csv"), "\n".join(lines) + "\n")
        if rejects:
            atomic_write_text(os.path.join(tmp, "rejects.txt"), "".join(f"{w}\t{reason}\n" for w, reason in rejects))
    return {
        "n_crops": len(records),
        "n_padded": summary["n_padded"],
        "n_skipped_border": summary["n_skipped_border"],
        "n_rejected": len(rejects),
        "n_proteins": len(cells),
        "per_split": {s: len(per_split.get(s, [])) for s in SPLITS},
    }
