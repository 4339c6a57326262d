"""A folder of micrographs named by a pattern, read as an images table (no images.csv written by hand).

``--images DIR --pattern '{plate}_{well}_{field}_{channel}.tif'`` names every micrograph file of
``DIR`` (and its subfolders: the pattern may hold ``/``) by fields in braces:

``{channel}`` (required)
    the channel of the file; one micrograph is the set of files that differ only in it.
``{well}`` and/or ``{protein}`` (one required)
    the well (e.g. ``B03``) and the protein (strain) imaged there; without ``{protein}``
    the well names the protein, as in a screen with one strain per well.
``{plate}`` (optional)
    a whole number (``P{plate}`` matches ``P01``); without it the screen is one unnamed plate.
``{field}`` (optional)
    the field of view within the well.

Text outside braces must match as written; each field matches at least one character and not
``/``.  The marker and protein channels are picked by their channel values: ``marker``/``protein``
of :class:`ChannelNames` when given (``--channel-names RFP GFP``), else by the usual names
(:data:`MARKER_NAMES`, :data:`PROTEIN_NAMES`, case ignored); other channels are ignored.  Files
with the pattern's extension that do not match it, a micrograph without its marker or protein
file, and a plate that is no whole number are bad input naming the file (one line, exit 2), or
with ``--skip-bad`` listed in rejects.txt.
"""

import dataclasses
import hashlib
import json
import os
import re

from deepyeast.utils.io import InputError

FIELDS = ("plate", "well", "field", "channel", "protein")
"""The names a pattern may hold in braces."""
MARKER_NAMES = ("marker", "red", "rfp", "mcherry", "tdtomato", "mkate", "mkate2")
PROTEIN_NAMES = ("protein", "green", "gfp", "egfp", "yfp", "mneongreen")
"""Channel values recognised without ``--channel-names`` (case ignored): the red cytosolic marker and
the green protein channel of the screen's micrographs."""


@dataclasses.dataclass(frozen=True)
class ChannelNames:
    """The channel values (or OME-Zarr channel labels) of the marker and the protein, e.g. ``RFP``, ``GFP``."""

    marker: str
    protein: str


def compile_pattern(pattern):
    """A filename pattern -> compiled regex matching a ``/``-separated path relative to the folder.

    Raises ``InputError`` for an unknown field, a field given twice, or a pattern without
    ``{channel}`` or without ``{well}``/``{protein}``.
    """
    parts = re.split(r"(\{[^{}]*\})", pattern)
    seen, regex = [], []
    for part in parts:
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            if name not in FIELDS:
                raise InputError(f"--pattern {pattern!r}: unknown field {part} (fields: "
                                 + ", ".join("{" + f + "}" for f in FIELDS) + ")")
            if name in seen:
                raise InputError(f"--pattern {pattern!r}: {part} appears twice")
            seen.append(name)
            regex.append(f"(?P<{name}>[^/]+?)")
        else:
            if "{" in part or "}" in part:
                raise InputError(f"--pattern {pattern!r}: unbalanced brace")
            regex.append(re.escape(part))
    if "channel" not in seen:
        raise InputError(f"--pattern {pattern!r}: needs {{channel}} (the files of a micrograph differ in it)")
    if "well" not in seen and "protein" not in seen:
        raise InputError(f"--pattern {pattern!r}: needs {{well}} or {{protein}} (what each micrograph shows)")
    return re.compile("".join(regex))


def _extension(pattern):
    """The pattern's literal file extension (``.tif``), or None when it ends in a field."""
    tail = re.split(r"\{[^{}]*\}", pattern)[-1].rsplit("/", 1)[-1]
    return tail[tail.rindex("."):].lower() if "." in tail else None


def _pick(values, wanted, known, role, where):
    if wanted is not None:
        hits = [v for v in values if v == wanted] or [v for v in values if v.lower() == wanted.lower()]
        return hits[0] if hits else None
    hits = [v for v in values if v.lower() in known]
    if len(hits) > 1:
        raise InputError(f"{where}: channels {', '.join(hits)} could each be the {role}; pass --channel-names")
    return hits[0] if hits else None


def pick_channels(values, names, where):
    """``(marker, protein)`` among the channel ``values`` of one micrograph (None where missing).

    ``names``: :class:`ChannelNames` or None (then :data:`MARKER_NAMES` / :data:`PROTEIN_NAMES`)."""
    marker = _pick(values, names and names.marker, MARKER_NAMES, "marker", where)
    protein = _pick(values, names and names.protein, PROTEIN_NAMES, "protein", where)
    return marker, protein


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """The micrographs of ``folder`` named by ``pattern`` (see the module doc); stands where an images
    table's path would (``classify_screen``'s ``images``).  ``channel_names``: :class:`ChannelNames`
    or None."""

    folder: str
    pattern: str
    channel_names: object = None

    def __str__(self):
        return f"{self.folder} (pattern {self.pattern})"

    def files(self):
        """Every file under the folder -> sorted list of ``/``-separated relative paths."""
        out = []
        for root, dirs, names in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = os.path.relpath(root, self.folder)
            out += [n if rel == "." else f"{rel.replace(os.sep, '/')}/{n}" for n in names if not n.startswith(".")]
        return sorted(out)

    def rows(self, on_bad):
        """The micrographs as images-table rows (:func:`deepyeast.data.screen_tables.read_images_table`'s
        dicts: ``path`` = the marker file, ``protein_path`` = the protein file, ``plate``, ``protein``,
        ``well``, ``field``; ``where`` = the marker file), sorted by plate, well, protein, field.
        Bad files go to ``on_bad(where, err)`` (which raises without ``--skip-bad``)."""
        if not os.path.isdir(self.folder):
            raise InputError(f"{self.folder}: not a folder (--pattern reads a folder of micrographs)")
        regex = compile_pattern(self.pattern)
        ext = _extension(self.pattern)
        groups = {}
        for rel in self.files():
            where = os.path.join(self.folder, rel)
            m = regex.fullmatch(rel)
            if m is None:
                if ext is not None and rel.lower().endswith(ext):
                    on_bad(where, InputError(f"{where}: does not match --pattern {self.pattern}"))
                continue
            g = m.groupdict()
            key = tuple(g.get(k) for k in ("plate", "well", "protein", "field"))
            groups.setdefault(key, {})[g["channel"]] = (rel, where)
        out = []
        for key in sorted(groups, key=lambda k: tuple("" if v is None else v.zfill(8) for v in k)):
            plate, well, protein, field = key
            files = groups[key]
            first = files[sorted(files)[0]][1]
            try:
                marker, prot = pick_channels(sorted(files), self.channel_names, first)
                missing = [role for role, v in (("marker", marker), ("protein", prot)) if v is None]
                if missing:
                    want = self.channel_names
                    raise InputError(f"{first}: no {' and no '.join(missing)} channel file for this micrograph "
                                     f"(channels found: {', '.join(sorted(files))}"
                                     + (f"; --channel-names {want.marker} {want.protein}" if want else
                                        "; name them with --channel-names MARKER PROTEIN") + ")")
                if plate is not None and not plate.isdigit():
                    raise InputError(f"{first}: plate {plate!r} is not a whole number (put its letters in the "
                                     "pattern, e.g. P{plate})")
                name = protein if protein is not None else well
                if "-" in name:
                    raise InputError(f"{first}: protein id {name!r} must be without '-'")
            except InputError as e:
                on_bad(first, e)
                continue
            rel, where = files[marker]
            out.append(dict(where=where, number=len(out) + 1, image=rel, fields={"pattern": self.pattern},
                            path=os.path.abspath(where), protein_path=os.path.abspath(files[prot][1]),
                            plate=None if plate is None else int(plate), protein=name, label=None, split=None,
                            mask=None, well=well, field=field, zarr=False))
        if not out and not groups:
            raise InputError(f"{self.folder}: no file matches --pattern {self.pattern}")
        return out

    def digest(self):
        """sha256 of what the folder's listing says (the rows' files, plate, well, protein, field) and the
        settings: the images-table part of a resumable run's fingerprint."""
        listing = json.dumps({"pattern": self.pattern, "names": dataclasses.asdict(self.channel_names)
                              if self.channel_names else None, "files": self.files()}, sort_keys=True)
        return hashlib.sha256(listing.encode()).hexdigest()
