"""Cut 64x64 single-cell crops out of two-channel micrographs.

Input of :func:`crop_screen` (a user's own screen, or the synthetic one):

* an *images table* (CSV, :func:`read_images_table`) with columns
  ``image,plate,protein,label`` and optionally ``split`` and ``mask``.
  ``image`` is a micrograph path (TIFF incl. OME-TIFF, or PNG; relative paths
  are relative to the table); instead of ``image`` a row may give
  ``marker_image`` and ``protein_image``, two single-channel files.
  ``plate`` is an integer plate number, ``protein`` an id without ``-`` or
  ``/`` (e.g. the well, ``001002000``), ``label`` a class index or class name,
  ``split`` one of train/val/test (when absent, splits are assigned by
  protein), ``mask`` a label image of the same size (0 = background, k > 0 =
  cell k; from ``data_prep/segment_cells.py``, CellProfiler, cellpose, YeaZ...);
* or, instead of masks, a *centres table* (CSV, :func:`read_centres_table`)
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
import contextlib
import csv
import logging
import os
import random

import numpy as np

from deepyeast.data.crop_png import write_crop
from deepyeast.data.lists import write_class_doc, write_split_list
from deepyeast.constants import CLASS_NAMES, IMAGE_SIZE, LIST_PREFIX, SPLIT_FRACTIONS, SPLITS
from deepyeast.utils.io import InputError, atomic_folder, atomic_write_text, open_input, read_input_bytes, write_csv
from deepyeast.utils.progress import progress

BORDER_MODES = ("pad", "skip")
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- reading

TIFF_CHANNEL_AXES = "CS"
"""tifffile axis codes read as channels (C: channel, S: samples of an RGB(A) page)."""
TIFF_PLANE_AXES = "QI"
"""Unnamed axes of plain TIFF stacks (pages); read as channels when no C/S axis is present."""


def read_channels(path):
    """Decode a micrograph file as stored -> ``C x H x W`` array (its own dtype, ``C >= 1``).

    TIFF (incl. OME-TIFF and ImageJ hyperstacks) is read with tifffile by its
    axes: C (and RGB samples S) are channels, the pages of a plain stack (Q/I)
    are channels when no C axis is named, and singleton Z/T axes are dropped; a
    stack with several Z planes or time points is refused (give one plane,
    e.g. a maximum projection).  Other formats (PNG, JPEG, BMP) go through
    OpenCV, in RGB(A) order.  Raises ``InputError`` naming the file.
    """
    if not os.path.exists(path):
        raise InputError(f"{path}: file is missing")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".tif", ".tiff"):
        return _read_tiff_channels(path)
    img = read_image_array(path)
    return img[None] if img.ndim == 2 else np.ascontiguousarray(np.moveaxis(img, -1, 0))


@contextlib.contextmanager
def _quiet_tifffile():
    """tifffile logs warnings about a broken file before it raises; our one-line error says it instead."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


MAX_PIXELS = 1 << 26
"""Most pixels a micrograph may declare, all its planes together (67,108,864: e.g. 4 planes of 4096 x 4096).
Checked before decoding: a small compressed file can declare gigabytes of pixels (a decompression bomb)."""


def check_declared_size(path, shape, what="image"):
    """InputError naming ``path`` when the ``shape`` its header declares holds more than :data:`MAX_PIXELS`
    values (checked before decoding)."""
    n = int(np.prod([int(d) for d in shape], dtype=np.float64)) if len(shape) else 0
    if n > MAX_PIXELS:
        raise InputError(f"{path}: the {what} declares {' x '.join(map(str, shape))} = {n:,} values, more than the "
                         f"{MAX_PIXELS:,} a micrograph may hold here; not decoded (split it into fields)")


def _read_tiff_channels(path):
    import tifffile
    try:
        with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
            series = tif.series
            if not series:
                raise InputError(f"{path}: corrupt or truncated TIFF (no readable image in it)")
            first = series[0]
            if len(series) > 1 and series[1].shape == first.shape:
                raise InputError(f"{path}: TIFF holds {len(series)} image series (fields or positions); "
                                 f"give one field per file")
            check_declared_size(path, first.shape, "TIFF")
            arr, axes = first.asarray(), first.axes
    except InputError:
        raise
    except Exception as e:  # tifffile raises many types for a bad file
        raise InputError(f"{path}: corrupt or truncated TIFF ({type(e).__name__}: {e})") from None
    arr = np.asarray(arr)
    if len(axes) != arr.ndim or "Y" not in axes or "X" not in axes:
        raise InputError(f"{path}: cannot tell the image axes of this TIFF (axes {axes!r}, shape {arr.shape})")
    named = [a for a in axes if a in TIFF_CHANNEL_AXES]
    channel_axes = named if named else [a for a in axes if a in TIFF_PLANE_AXES]
    for a, n in zip(axes, arr.shape):
        if a not in "YX" and a not in channel_axes and n > 1:
            what = {"Z": "Z planes", "T": "time points"}.get(a, f"planes along axis {a}")
            raise InputError(f"{path}: TIFF has {n} {what} (axes {axes}, shape {arr.shape}); give one plane "
                             f"per channel (e.g. a maximum projection)")
    if len(channel_axes) > 1:
        raise InputError(f"{path}: TIFF has more than one channel axis (axes {axes}, shape {arr.shape})")
    keep = "".join(a for a in axes if a in "YX" or a in channel_axes)
    arr = arr.reshape([n for a, n in zip(axes, arr.shape) if a in keep])
    order = [keep.index(a) for a in channel_axes] + [keep.index("Y"), keep.index("X")]
    arr = np.transpose(arr, order)
    return np.ascontiguousarray(arr if channel_axes else arr[None])


def _size(a):
    return f"{a.shape[-1]}x{a.shape[-2]}"


_WARNED_BITS = set()
"""--bits values warned about in this process (:func:`to_uint8` says it once, not for every micrograph)."""


def to_uint8(img, name, bits=None):
    """Bring 8- or 16-bit pixel data to uint8.

    ``bits``: the significant bit depth of 16-bit data (e.g. 12 for a 12-bit
    camera): values are shifted down by ``bits - 8``.  16-bit data without
    ``bits``, or with values at or above ``2**bits`` (which would saturate),
    is refused with the observed maximum and the ``bits`` it needs.  ``bits``
    is ignored for 8-bit data.
    """
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    if img.dtype != np.uint16:
        raise InputError(f"{name}: unsupported pixel type {img.dtype}; need 8-bit (or 16-bit with --bits N)")
    peak = int(img.max(initial=0))
    need = max(8, peak.bit_length())
    if bits is None:
        raise InputError(f"{name}: 16-bit image (max value {peak}, so --bits {need} or more); pass --bits N, the "
                         f"camera's bit depth (e.g. --bits 12 for a 12-bit camera), to rescale to 8 bits")
    bits = int(bits)
    if not 8 <= bits <= 16:
        raise InputError(f"{name}: --bits {bits} outside 8..16")
    if peak >= 2 ** bits:
        raise InputError(f"{name}: values up to {peak} do not fit --bits {bits} (max {2 ** bits - 1}) and would "
                         f"saturate; pass --bits {need}")
    if peak < 2 ** (bits - 4) and bits not in _WARNED_BITS:  # under 1/16 of the declared range
        _WARNED_BITS.add(bits)
        log.warning("%s: values reach only %d, far below --bits %d (max %d): the crops will be %dx darker than the "
                    "camera's range allows; is it a %d-bit camera (--bits %d)?", name, peak, bits, 2 ** bits - 1,
                    2 ** (bits - need), need, need)
    return (img >> (bits - 8)).astype(np.uint8)


MIN_SIDE = 8
"""Fewest pixels along each side of a micrograph (a yeast cell is about 20 px across at the screen's scale)."""


def to_two_channel(img, name, channels=(0, 1), bits=None):
    """Pick the marker and protein channels of a decoded micrograph.

    ``img``: ``C x H x W`` array (as :func:`read_channels` returns it);
    ``channels``: (marker index, protein index) along the channel axis;
    ``bits``: see :func:`to_uint8`.  Returns uint8 ``2 x H x W``.
    """
    img = np.asarray(img)
    if img.ndim >= 2 and min(img.shape[-2:]) < MIN_SIDE:
        raise InputError(f"{name}: an image of {img.shape[-1]} x {img.shape[-2]} pixels (array shape "
                         f"{tuple(img.shape)}, channels first) is too small for a micrograph of cells")
    if img.ndim == 2 or (img.ndim == 3 and img.shape[0] == 1):
        raise InputError(f"{name}: single-channel image; need two channels (marker and protein) in one file, "
                         f"or two files in marker_image,protein_image columns")
    if img.ndim != 3:
        raise InputError(f"{name}: expected a 2-D multi-channel image, got array of shape {img.shape}")
    for c in channels:
        if not 0 <= c < img.shape[0]:
            raise InputError(f"{name}: channel {c} requested but the image has {img.shape[0]} channels")
    return to_uint8(img[list(channels)], name, bits)


def read_image_array(path):
    """Decode a TIFF or PNG file as stored (TIFF via tifffile, others via OpenCV, RGB order)."""
    if not os.path.exists(path):
        raise InputError(f"{path}: file is missing")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".tif", ".tiff"):
        import tifffile
        try:
            with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
                if not tif.series:
                    raise InputError(f"{path}: corrupt or truncated TIFF (no readable image in it)")
                check_declared_size(path, tif.series[0].shape, "TIFF")
                return tif.series[0].asarray()
        except InputError:
            raise
        except Exception as e:  # tifffile raises many types for a bad file
            raise InputError(f"{path}: corrupt or truncated TIFF ({type(e).__name__}: {e})") from None
    from deepyeast.data.crop_png import quiet_cv2
    cv2 = quiet_cv2()
    _check_header_size(path)
    data = read_input_bytes(path, "image")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None:
        raise InputError(f"{path}: corrupt or truncated image (cannot decode)")
    if img.ndim == 3 and img.shape[2] >= 3:
        img = img[:, :, [2, 1, 0] + list(range(3, img.shape[2]))]  # BGR(A) -> RGB(A)
    return img


def _check_header_size(path):
    """:func:`check_declared_size` of a PNG/JPEG/BMP from its header (PIL reads the size without decoding)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit decides
            with Image.open(path) as im:
                w, h = im.size
                bands = len(im.getbands())
    except Image.DecompressionBombError as err:  # PIL's own (higher) limit
        raise InputError(f"{path}: the image declares too many pixels ({err}); not decoded") from None
    except Exception:  # not an image PIL knows: OpenCV's decoder says what is wrong
        return
    check_declared_size(path, (h, w, bands), "image")


def read_single_channel(path, what="image"):
    """Read a one-channel image -> ``H x W`` (its own dtype); grey RGB (equal channels) counts as one."""
    img = read_channels(path)
    grey_rgb = img.shape[0] in (3, 4) and np.array_equal(img[0], img[1]) and np.array_equal(img[0], img[2])
    if img.shape[0] > 1 and not grey_rgb:
        raise InputError(f"{path}: {what} must be a single-channel image, got {img.shape[0]} channels")
    return img[0]


def read_micrograph(path, channels=(0, 1), bits=None):
    """Read a multi-channel micrograph -> uint8 ``2 x H x W`` (marker, protein); see :func:`to_two_channel`."""
    return to_two_channel(read_channels(path), path, channels, bits)


def read_micrograph_pair(marker_path, protein_path, bits=None):
    """Read marker and protein from two single-channel files -> uint8 ``2 x H x W``.

    Both must have the same size; ``bits`` as in :func:`to_uint8` (applied to each file).
    """
    marker = to_uint8(read_single_channel(marker_path, "marker image"), marker_path, bits)
    protein = to_uint8(read_single_channel(protein_path, "protein image"), protein_path, bits)
    if marker.shape != protein.shape:
        raise InputError(f"{protein_path}: protein image is {_size(protein)} but marker image {marker_path} "
                         f"is {_size(marker)}")
    return np.stack([marker, protein])


def read_mask(path, shape, image_name="micrograph"):
    """Read a label mask (0 = background, k > 0 = cell k) -> int64 ``H x W``.

    Raises ``InputError`` when its size differs from ``shape`` (H, W).
    """
    m = read_single_channel(path, "mask (a label image)")
    if m.dtype.kind == "f" and np.all(np.isfinite(m)) and np.array_equal(m, np.rint(m)):
        m = m.astype(np.int64)  # whole-number labels stored as floats
    if m.dtype.kind not in "ui":
        raise InputError(f"{path}: mask must hold whole-number labels, got pixel type {m.dtype}")
    if m.shape != tuple(shape):
        raise InputError(f"{path}: mask is {m.shape[1]}x{m.shape[0]} but {image_name} is {shape[1]}x{shape[0]}")
    return m.astype(np.int64)


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


# --------------------------------------------------------------------------- whole screens

def _read_csv(path, required):
    with open_input(path, "table", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
        return [(i + 2, row) for i, row in enumerate(reader)], list(reader.fieldnames or [])


def parse_label(value, class_names, where):
    """A class index or class name (case-insensitive) -> index into ``class_names``; ``InputError`` otherwise."""
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


class Rejects:
    """What to do with a bad row: ``rejects(where, err)`` raises ``InputError("<where>: <reason>")``,
    or with ``skip_bad`` records ``(where, reason)`` in ``rejects.items``.  ``where`` is
    ``"file:line"``; a reason that starts with it already is not prefixed twice."""

    def __init__(self, skip_bad=False):
        self.skip_bad = skip_bad
        self.items = []

    def __call__(self, where, err):
        reason = str(err)
        if reason.startswith(f"{where}: "):
            reason = reason[len(where) + 2:]
        if not self.skip_bad:
            raise InputError(f"{where}: {reason}") from None
        self.items.append((where, reason))

    def write(self, folder):
        """Write ``folder/rejects.txt`` (``where<TAB>reason`` per line) when anything was skipped."""
        if self.items:
            atomic_write_text(os.path.join(folder, "rejects.txt"), "".join(f"{w}\t{r}\n" for w, r in self.items))


def _raise(where, err):
    Rejects()(where, err)


def _cell(row, name):
    return (row.get(name) or "").strip()


def read_images_table(images_csv, class_names=CLASS_NAMES, require=("plate", "protein"), require_label=False,
                      on_bad=None):
    """Read an images table (CSV) -> list of row dicts, in table order.

    Columns: ``image`` (one multi-channel micrograph) or ``marker_image`` +
    ``protein_image`` (two single-channel files), chosen per row; ``plate``
    (integer), ``protein`` (id without ``-``/``/``), ``label`` (class index or
    name), ``split``, ``mask`` (label image) and ``well`` (a name, e.g. ``B03``),
    each optional unless named in ``require`` / ``require_label``.  Paths are
    relative to the table.  An ``image`` naming an OME-Zarr (``x.zarr``,
    ``x.zarr#SERIES``, ``plate.zarr#ROW/COLUMN/FIELD``, or ``plate.zarr`` with
    ``row``, ``column``, ``field`` columns; :mod:`deepyeast.data.omezarr`) is
    resolved to its NGFF image when the table is read.

    Each dict: ``where`` (``"table:line"``), ``number`` (1-based data row, or
    the table's ``ImageNumber`` column, as CellProfiler numbers images),
    ``image`` (the image column as written, or ``marker_image``), ``path``
    (absolute: the micrograph, or the marker file), ``protein_path`` (absolute,
    or None for one multi-channel file), ``plate`` (int or None), ``protein``
    (str or None), ``label`` (int or None), ``split`` (or None), ``mask``
    (absolute or None), ``well`` (str or None: the table's, else an OME-Zarr
    plate's), ``zarr`` (True when ``path`` is an NGFF image folder), ``fields``
    (the row as read).  A bad row raises
    ``InputError`` naming table and line, or is handed to ``on_bad(where, err)``
    and left out.
    """
    on_bad = _raise if on_bad is None else on_bad
    base = os.path.dirname(os.path.abspath(images_csv))
    rows, header = _read_csv(images_csv, tuple(require) + (("label",) if require_label else ()))
    if "image" not in header and not {"marker_image", "protein_image"} <= set(header):
        raise InputError(f"{images_csv}: needs an image column, or marker_image and protein_image columns "
                         f"(header: {header})")
    out = []
    for number, (lineno, row) in enumerate(rows, 1):
        where = f"{images_csv}:{lineno}"
        try:
            image, marker, protein_file = _cell(row, "image"), _cell(row, "marker_image"), _cell(row, "protein_image")
            if image and (marker or protein_file):
                raise InputError(f"{where}: give either image or marker_image + protein_image, not both")
            if not image and not (marker and protein_file):
                raise InputError(f"{where}: no micrograph: image is empty"
                                 + (" and marker_image/protein_image incomplete" if marker or protein_file else ""))
            rec = dict(where=where, number=number, image=image or marker, fields=row,
                       path=os.path.normpath(os.path.join(base, image or marker)),
                       protein_path=os.path.normpath(os.path.join(base, protein_file)) if protein_file else None,
                       plate=None, protein=None, label=None, split=None, mask=None, well=_cell(row, "well") or None,
                       zarr=False)
            _zarr_row(rec, row, base)
            if _cell(row, "ImageNumber"):
                rec["number"] = int(_cell(row, "ImageNumber"))
            if _cell(row, "plate") or "plate" in require:
                if not _cell(row, "plate").isdigit():
                    raise InputError(f"{where}: plate {_cell(row, 'plate')!r} is not a whole number")
                rec["plate"] = int(_cell(row, "plate"))
            if _cell(row, "protein") or "protein" in require:
                protein = _cell(row, "protein")
                if not protein or "-" in protein or "/" in protein:
                    raise InputError(f"{where}: protein id {protein!r} must be non-empty without '-' or '/'")
                rec["protein"] = protein
            if _cell(row, "label") or require_label:
                rec["label"] = parse_label(_cell(row, "label"), class_names, where)
            split = _cell(row, "split") or None
            if split is not None and split not in SPLITS:
                raise InputError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
            rec["split"] = split
            if _cell(row, "mask"):
                rec["mask"] = os.path.normpath(os.path.join(base, _cell(row, "mask")))
        except InputError as e:
            on_bad(where, e)
            continue
        except ValueError as e:
            on_bad(where, InputError(f"{where}: {e}"))
            continue
        out.append(rec)
    return out


def _zarr_row(rec, row, base):
    """An ``image`` naming an OME-Zarr (:mod:`deepyeast.data.omezarr`): ``path`` becomes the NGFF image's
    folder, ``image`` the container with the image's place in it (``plate.zarr#A/1/0``, also when the
    row/column/field columns named it), ``well`` the plate's well (unless the table names it), ``zarr`` True."""
    from deepyeast.data import omezarr

    if rec["protein_path"] is not None or not omezarr.is_zarr_reference(rec["image"]):
        return
    container, fragment = omezarr.split_reference(rec["image"])
    found = omezarr.resolve(os.path.normpath(os.path.join(base, container)), fragment, _cell(row, "row") or None,
                            _cell(row, "column") or None, _cell(row, "field") or None)
    inside = os.path.relpath(found["path"], os.path.normpath(os.path.join(base, container))).replace(os.sep, "/")
    rec.update(path=found["path"], zarr=True, well=rec["well"] or found["well"],
               image=container if inside == "." else f"{container}#{inside}")


def read_row_micrograph(rec, channels=(0, 1), bits=None):
    """The micrograph of an images-table row (:func:`read_images_table`) -> uint8 ``2 x H x W``."""
    if rec.get("zarr"):
        from deepyeast.data.omezarr import read_image
        return to_two_channel(read_image(rec["path"], MAX_PIXELS), rec["path"], channels, bits)
    if rec["protein_path"] is not None:
        return read_micrograph_pair(rec["path"], rec["protein_path"], bits)
    return read_micrograph(rec["path"], channels, bits)


CENTRE_COLUMNS = {
    "x": ("x", "Location_Center_X"),
    "y": ("y", "Location_Center_Y"),
    "cell": ("cell", "ObjectNumber", "Number_Object_Number"),
    "image": ("image", "ImageNumber"),
}
"""Accepted column names of a centres table, ours first, then CellProfiler's (also with an object
prefix, e.g. ``Cells_Location_Center_X``; ``ImageNumber`` refers to the images table's rows)."""


def _centre_columns(path, header):
    found = {}
    for key, names in CENTRE_COLUMNS.items():
        for name in names:
            hits = [h for h in header if h == name] or \
                   ([h for h in header if h.endswith("_" + name)] if name[0].isupper() else [])
            if len(hits) > 1:
                raise InputError(f"{path}: several columns could be the {key} column ({', '.join(hits)}); keep one")
            if hits:
                found[key] = hits[0]
                break
        if key not in found and key != "cell":
            raise InputError(f"{path}: no {key} column (one of {', '.join(names)}; header: {header})")
    return found


def read_centres_table(centres_csv, images, on_bad=None):
    """Read a centres table -> dict micrograph path -> list of ``(cell, (y, x), is_cell, where)``.

    Columns: ``image`` (path as in the images table; relative to this table)
    or CellProfiler's ``ImageNumber`` (the images table's ``ImageNumber``
    column, else its 1-based data row); ``x``/``y`` or
    ``Location_Center_X``/``Location_Center_Y`` (pixels, 0-based, x = column);
    optionally ``cell`` or ``ObjectNumber`` (integer id; default: order in the
    table) and ``is_cell`` (1/0).  ``images``: rows from :func:`read_images_table`.
    """
    on_bad = _raise if on_bad is None else on_bad
    cbase = os.path.dirname(os.path.abspath(centres_csv))
    rows, header = _read_csv(centres_csv, ())
    col = _centre_columns(centres_csv, header)
    by_number = {im["number"]: im["path"] for im in images}
    out = collections.defaultdict(list)
    for lineno, row in rows:
        where = f"{centres_csv}:{lineno}"
        try:
            if col["image"] == "image":
                key = os.path.normpath(os.path.join(cbase, _cell(row, "image")))
            else:
                key = by_number.get(int(_cell(row, col["image"])), f"ImageNumber {_cell(row, col['image'])}")
            cell = _cell(row, col.get("cell", ""))
            cell = int(float(cell)) if cell else len(out[key])
            is_cell = int(_cell(row, "is_cell") or 1)
            yx = (float(_cell(row, col["y"])), float(_cell(row, col["x"])))
            if not np.all(np.isfinite(yx)):
                raise ValueError(f"centre x={yx[1]}, y={yx[0]} is not a finite number")
        except ValueError as e:
            on_bad(where, InputError(f"{where}: bad number ({e})"))
            continue
        out[key].append((cell, yx, is_cell, where))
    return out


def crop_screen(images_csv, out_root, centres_csv=None, channels=(0, 1), bits=None, border="pad",
                class_names=CLASS_NAMES, prefix=LIST_PREFIX, fractions=SPLIT_FRACTIONS, seed=0,
                skip_bad=False, size=IMAGE_SIZE):
    """Turn micrographs + masks (or centres) into an archive root; returns a summary dict.

    See the module docstring for the input tables.  Bad input (unreadable,
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
                micro = read_row_micrograph(im, channels, bits)
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
                                                 f"{im['path']} ({_size(micro)})"))
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
        assigned.update(assign_splits(free, protein_key, fractions, seed))
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

