"""A screen's tables: the images table, the centres table, and the rows a run rejects.

The *images table* (CSV, :func:`read_images_table`) lists the micrographs of a screen, one row
each (columns in :mod:`deepyeast.data.crop_cells`); the *centres table*
(:func:`read_centres_table`) gives cell centres instead of masks, ours or CellProfiler's
columns.  A bad row raises :class:`~deepyeast.utils.io.InputError` naming the table and line, or
with ``skip_bad`` goes to :class:`Rejects` (written as ``rejects.txt``).
"""

import collections
import csv
import os

import numpy as np

from deepyeast.constants import CLASS_NAMES, SPLITS
from deepyeast.utils.io import InputError, atomic_write_text, open_input


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
