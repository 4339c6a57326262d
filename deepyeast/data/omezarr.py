"""OME-Zarr micrographs (NGFF images and HCS plates) through ome-zarr-py.

A screen stored as OME-Zarr is named in an images table by the ``.zarr`` path in the ``image``
column, with the micrograph inside it picked by a fragment after ``#`` or by the columns
``row``, ``column`` and ``field``:

* ``image.zarr``: one NGFF image (a ``multiscales`` group; level 0 is read);
* ``image.zarr#N``: series ``N`` of an image series (bioformats2raw layout: groups ``0``, ``1``...;
  one series may be named without ``#``);
* ``plate.zarr#A/1/0``, or ``plate.zarr`` with row ``A``, column ``1``, field ``0``: field ``0`` of
  well ``A/1`` of an HCS plate (plate -> well -> field image); the field may be left out when the
  well has one; ``well.zarr#0`` names field 0 of a lone well group.

Metadata of NGFF 0.4 (zarr v2) and 0.5 (zarr v3) are read by :func:`ome_zarr.io.parse_url` and the
pixels by :class:`ome_zarr.reader.Reader`.  An image's axes are named (t, c, z, y, x); a single
time point and z plane are taken, several are refused (give one plane, as for TIFF stacks).  The
channel axis gives the micrograph's channels in order; their names (the ``omero`` labels) are
available for choosing the marker and protein channels by name (:func:`channel_names`).

Bad input (not an OME-Zarr, a well or field the plate does not hold, a fragment that does not
fit, a stack of planes, an unreadable chunk) is an ``InputError`` naming the path.
"""

import os
import re

import numpy as np

from deepyeast.data.micrographs import quiet_logger
from deepyeast.utils.io import InputError

ZARR_SUFFIX = ".zarr"
"""How a path to an OME-Zarr container ends (one of its components, e.g. ``plate.zarr/A/1/0``)."""


def split_reference(image):
    """``"plate.zarr#A/1/0"`` -> ``("plate.zarr", "A/1/0")``; ``"x.zarr"`` -> ``("x.zarr", None)``."""
    path, sep, fragment = image.partition("#")
    return path, (fragment.strip() or None) if sep else None


def is_zarr_reference(image):
    """Does an images-table ``image`` value name an OME-Zarr (a path component ends in ``.zarr``)?"""
    path = split_reference(image)[0].rstrip("/\\")
    return any(part.lower().endswith(ZARR_SUFFIX) for part in re.split(r"[/\\]", path))


def _attrs(path):
    """The OME attributes of a zarr group (``plate``, ``well``, ``multiscales``, ``omero``...), or None when
    ``path`` is no OME-Zarr group."""
    from ome_zarr.io import parse_url

    if not os.path.isdir(path):
        return None
    try:
        with quiet_logger("ome_zarr"):
            loc = parse_url(path)
    except Exception as e:  # zarr raises many types for broken metadata
        raise InputError(f"{path}: unreadable OME-Zarr metadata ({type(e).__name__}: {e})") from None
    return None if loc is None else dict(loc.root_attrs or {})


def _names(entries, key="name"):
    return [str(e.get(key)) for e in entries or []]


def _same(a, b):
    """Row/column names compare as written, or as numbers when both are (``1`` = ``01``)."""
    return a == b or (a.isdigit() and b.isdigit() and int(a) == int(b))


def _plate_well(path, attrs, row, column):
    plate = attrs["plate"]
    for well in plate.get("wells", []):
        r, _, c = str(well.get("path", "")).partition("/")
        if _same(r, row) and _same(c, column):
            return os.path.join(path, r, c), f"{r}{c}"
    raise InputError(f"{path}: the plate has no well {row}/{column} (rows {', '.join(_names(plate.get('rows')))}; "
                     f"columns {', '.join(_names(plate.get('columns')))}; {len(plate.get('wells', []))} wells)")


def _well_field(path, field):
    attrs = _attrs(path) or {}
    images = _names((attrs.get("well") or {}).get("images"), "path")
    if not images:
        raise InputError(f"{path}: not an OME-Zarr well (no well metadata listing its fields)")
    if field is None:
        if len(images) > 1:
            raise InputError(f"{path}: the well holds {len(images)} fields ({', '.join(images)}); name one "
                             "(#ROW/COLUMN/FIELD or a field column)")
        field = images[0]
    if field not in images:
        raise InputError(f"{path}: the well has no field {field!r} (fields: {', '.join(images)})")
    return os.path.join(path, field), field


def resolve(path, fragment=None, row=None, column=None, field=None):
    """Find the NGFF image an images-table row names -> ``dict(path, well, field)``.

    ``path``: the ``.zarr`` folder (absolute or relative to the working directory); ``fragment``: the
    text after ``#`` (series ``N``, ``ROW/COLUMN[/FIELD]`` of a plate, or ``FIELD`` of a well);
    ``row``, ``column``, ``field``: the table's columns (str or None), for a plate instead of a
    fragment.  ``path`` of the result is the image group's folder; ``well`` is ``ROW`` + ``COLUMN``
    (e.g. ``B03``) for a plate's field, else None; ``field`` the field's name within its well, or
    the series, or None.
    """
    attrs = _attrs(path)
    if attrs is None:
        raise InputError(f"{path}: not an OME-Zarr (no zarr group with OME metadata there)")
    parts = fragment.split("/") if fragment else []
    if "plate" in attrs:
        if parts and (row or column):
            raise InputError(f"{path}: give the well either after # or in the row/column columns, not both")
        if parts:
            if len(parts) not in (2, 3):
                raise InputError(f"{path}#{fragment}: a plate's micrograph is #ROW/COLUMN/FIELD (e.g. #A/1/0)")
            row, column, field = parts[0], parts[1], parts[2] if len(parts) == 3 else field
        if not row or not column:
            raise InputError(f"{path}: an HCS plate; name the well (#ROW/COLUMN/FIELD, or row and column columns)")
        well_path, well = _plate_well(path, attrs, str(row), str(column))
        image, field = _well_field(well_path, field)
        return {"path": image, "well": well, "field": field}
    if row or column:
        raise InputError(f"{path}: row/column name a plate's well, but this OME-Zarr is no plate")
    if "well" in attrs:
        image, field = _well_field(path, fragment or field)
        return {"path": image, "well": None, "field": field}
    if "multiscales" in attrs:
        if fragment or field:
            raise InputError(f"{path}: one NGFF image; #{fragment or field} names a series or field it does not have")
        return {"path": path, "well": None, "field": None}
    if "bioformats2raw.layout" in attrs:
        series = sorted((n for n in os.listdir(path) if n.isdigit() and _attrs(os.path.join(path, n))), key=int)
        name = fragment or field
        if name is None:
            if len(series) != 1:
                raise InputError(f"{path}: an image series of {len(series)} images; name one (e.g. {path}#0)")
            name = series[0]
        if name not in series:
            raise InputError(f"{path}: the series has no image {name!r} (images: {', '.join(series) or 'none'})")
        return {"path": os.path.join(path, name), "well": None, "field": name}
    raise InputError(f"{path}: an OME-Zarr group of no kind read here (neither image, series, well nor plate; "
                     f"keys {', '.join(sorted(attrs)) or 'none'})")


def _image_node(path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    with quiet_logger("ome_zarr"):
        loc = parse_url(path)
        if loc is None:
            raise InputError(f"{path}: not an OME-Zarr image")
        for node in Reader(loc)():
            if any(isinstance(s, Multiscales) for s in node.specs):
                return node
    raise InputError(f"{path}: no multiscales image in this OME-Zarr group")


def channel_names(path):
    """The channel names of an NGFF image (its ``omero`` labels), or None when it has none."""
    attrs = _attrs(path) or {}
    labels = [c.get("label") for c in (attrs.get("omero") or {}).get("channels", [])]
    return [str(x) for x in labels] if labels and all(labels) else None


def read_image(path, max_pixels):
    """Level 0 of the NGFF image group ``path`` -> ``C x H x W`` array (its own dtype, ``C >= 1``).

    Axes by name: ``c`` gives the channels (absent: one channel), ``t`` and ``z`` must be single
    (several are refused, naming the path); more than ``max_pixels`` values are refused before
    reading.
    """
    try:
        node = _image_node(path)
        data = node.data[0]
        axes = [a["name"] if isinstance(a, dict) else str(a) for a in node.metadata.get("axes", [])]
    except InputError:
        raise
    except Exception as e:  # zarr / ome-zarr raise many types for a broken container
        raise InputError(f"{path}: unreadable OME-Zarr image ({type(e).__name__}: {e})") from None
    if len(axes) != len(data.shape) or "y" not in axes or "x" not in axes:
        raise InputError(f"{path}: cannot tell the image axes (axes {axes}, shape {tuple(data.shape)})")
    for axis in ("t", "z"):
        if axis in axes and data.shape[axes.index(axis)] > 1:
            raise InputError(f"{path}: the image has {data.shape[axes.index(axis)]} {'time points' if axis == 't' else 'z planes'}; "
                             "give one plane (e.g. a maximum projection)")
    values = int(np.prod([int(d) for d in data.shape], dtype=np.float64))
    if values > max_pixels:
        raise InputError(f"{path}: the image declares {' x '.join(map(str, data.shape))} = {values:,} values, more "
                         f"than the {max_pixels:,} a micrograph may hold here; not read (split it into fields)")
    index = tuple(0 if a in ("t", "z") else slice(None) for a in axes)
    kept = [a for a in axes if a not in ("t", "z")]
    try:
        arr = np.asarray(data[index].compute())
    except Exception as e:
        raise InputError(f"{path}: unreadable OME-Zarr pixels ({type(e).__name__}: {e})") from None
    if "c" not in kept:
        return arr[None]
    order = [kept.index(a) for a in ("c", "y", "x")]
    if len(kept) != 3:
        raise InputError(f"{path}: unexpected axes {axes} (need c, y, x and single t, z)")
    return np.ascontiguousarray(np.transpose(arr, order))


def plate_fields(path):
    """Every field of an HCS plate -> list of ``dict(row, column, field, well)`` in the plate's well order."""
    attrs = _attrs(path) or {}
    if "plate" not in attrs:
        raise InputError(f"{path}: not an OME-Zarr HCS plate")
    out = []
    for well in attrs["plate"].get("wells", []):
        r, _, c = str(well.get("path", "")).partition("/")
        wattrs = _attrs(os.path.join(path, r, c)) or {}
        for f in _names((wattrs.get("well") or {}).get("images"), "path"):
            out.append({"row": r, "column": c, "field": f, "well": f"{r}{c}"})
    return out


def is_plate(path):
    """Is ``path`` an OME-Zarr HCS plate (a folder with plate metadata)?"""
    try:
        return "plate" in (_attrs(path) or {})
    except InputError:
        return False


class ZarrPlate:
    """Every field of an OME-Zarr HCS plate, standing where an images table's path would
    (``--images plate.zarr``): one micrograph per field, the well names the protein (one strain per
    well), no plate number (one plate per run)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.folder = self.path
        self.pattern = None

    def __str__(self):
        return self.path

    def rows(self, on_bad):
        """The plate's fields as images-table rows (as :func:`deepyeast.data.screen_tables.read_images_table`'s:
        ``image`` = ``plate.zarr#ROW/COLUMN/FIELD``, ``path`` = the field's image folder, ``well``,
        ``protein`` = the well), in the plate's well order; a well whose metadata cannot be read goes to
        ``on_bad``."""
        out = []
        name = os.path.basename(self.path.rstrip("/\\"))
        for f in plate_fields(self.path):
            ref = f"{f['row']}/{f['column']}/{f['field']}"
            where = f"{self.path}#{ref}"
            try:
                found = resolve(self.path, ref)
            except InputError as e:
                on_bad(where, e)
                continue
            out.append(dict(where=where, number=len(out) + 1, image=f"{name}#{ref}", fields={}, path=found["path"],
                            protein_path=None, plate=None, protein=found["well"], label=None, split=None, mask=None,
                            well=found["well"], field=found["field"], zarr=True))
        if not out:
            raise InputError(f"{self.path}: the plate lists no field (no well with images)")
        return out

    def digest(self):
        """sha256 of the plate's list of fields (the images-table part of a resumable run's fingerprint)."""
        import hashlib
        import json

        return hashlib.sha256(json.dumps(plate_fields(self.path), sort_keys=True).encode()).hexdigest()
