"""The DeepYeast image archive: fetching it, reading its split lists and crops.

Layout of an archive root (the published archive, the synthetic screen and a
user's own screen after ``data_prep/crop_cells.py`` all look alike)::

    ROOT/plateNN/<f1>-<f2>-<f3>-<f4>.png   one 64x64 RGB PNG per cell
                                          (R = marker, G = protein, B unused)
    ROOT/HOwt_{train,val,test}.txt         "relpath label" per line
    ROOT/HOwt_doc.txt                      "label;label_idx" class table

A transfer-set root has ``HOwt_transfer_{train,val,test}.txt`` and
``HOwt_transfer_doc.txt`` instead.

Protein identity: the protein of a cell is its plate folder plus the first
dash-separated field of its file name (``plate01/007013000-2-626-38.png`` ->
``plate01/007013000``).  No protein may appear in two splits.
"""

import collections
import hashlib
import os
import shutil
import socket
import struct
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib

import numpy as np

from deepyeast.constants import CLASS_NAMES, IMAGE_SIZE, MIN_CELLS_PER_PROTEIN, N_CHANNELS, TRANSFER_CLASS_NAMES
from deepyeast.utils.io import InputError, atomic_write_text, open_input

# --------------------------------------------------------------------------- sources

ARCHIVE_BASE_URL = "http://kodu.ut.ee/~leopoldp/2016_DeepYeast"
"""Official home of the published data set (Parnamaa & Parts 2017)."""

LIST_MD5 = {
    "HOwt_doc.txt": "33b7780020972e2da4f884c6b5a63b25",
    "HOwt_train.txt": "b71eb4ff50f955adfa72048c6d8c0233",
    "HOwt_val.txt": "2ac1d1874b89d6a1ad3d948d36c1e229",
    "HOwt_test.txt": "c7958faa20232ff52fb196e754645bd1",
    "HOwt_transfer_doc.txt": "699e4f5e390b8af78bbddae39f217745",
    "HOwt_transfer_train.txt": "9dcbe909a81e3bdab6fa72504c4205a7",
    "HOwt_transfer_val.txt": "32177364beaeabf54c4b4e589e2cb998",
    "HOwt_transfer_test.txt": "3d5ff91995abfed6c0dd3b6e1727b6d2",
}
"""md5 of each published split list; the URL is ``ARCHIVE_BASE_URL/code/image_prep/data/<name>``."""

TARBALLS = {
    "main": ("data/main.tar.gz", "f313fc0b8068941ab18ae65eb113afee"),
    "transfer": ("data/transfer.tar.gz", "5dfc4baab5156e3fc6b5694bab96ac41"),
}
"""Image archives: name -> (path below ``ARCHIVE_BASE_URL``, md5)."""

LIST_URL_DIR = "code/image_prep/data"


class FetchError(RuntimeError):
    """A download or extraction failed; the message says what to do."""


# --------------------------------------------------------------------------- protein identity

def protein_of(relpath):
    """Protein id of a cell crop: ``plateNN/<first dash-separated field>``.

    ``relpath`` is the path as written in a split list (forward slashes).
    Raises ``InputError`` when the path has no plate folder.
    """
    parts = relpath.replace("\\", "/").split("/")
    if len(parts) < 2 or not parts[-2] or not parts[-1]:
        raise InputError(f"{relpath!r}: expected 'plateNN/<f1>-<f2>-<f3>-<f4>.png' (plate folder missing)")
    stem = parts[-1].rsplit(".", 1)[0]
    return f"{parts[-2]}/{stem.split('-', 1)[0]}"


def class_names_for_list(path):
    """The class table a split list uses, guessed from its name (``*transfer*`` -> transfer)."""
    return TRANSFER_CLASS_NAMES if "transfer" in os.path.basename(path) else CLASS_NAMES


# --------------------------------------------------------------------------- split lists

def parse_split_list(path, class_names=CLASS_NAMES):
    """Parse a split list without raising on bad lines.

    Returns ``(entries, problems)``: ``entries`` is a list of ``(relpath, label)``
    for every good line (label an int index into ``class_names``); ``problems``
    a list of ``(lineno, relpath_or_None, reason)``.  Bad lines are: not two
    fields, a non-integer label, a label outside the class table, a duplicate
    path.  Blank lines are ignored.
    """
    entries, problems, seen = [], [], {}
    n = len(class_names)
    with open_input(path, "split list") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                problems.append((lineno, None, f"expected 'relpath label', got {line.strip()!r}"))
                continue
            rel, lab = fields
            try:
                label = int(lab)
            except ValueError:
                problems.append((lineno, rel, f"label {lab!r} is not an integer"))
                continue
            if not 0 <= label < n:
                problems.append((lineno, rel, f"label {label} outside the class table (0..{n - 1})"))
                continue
            if rel in seen:
                problems.append((lineno, rel, f"duplicate entry (first on line {seen[rel]})"))
                continue
            seen[rel] = lineno
            entries.append((rel, label))
    return entries, problems


def read_split_list(path, class_names=CLASS_NAMES, skip_bad=False):
    """Read ``relpath label`` lines; returns ``(entries, rejects)``.

    ``entries``: list of ``(relpath:str, label:int)``.  ``rejects``: list of
    ``(relpath_or_line, reason)`` strings for bad lines, only when ``skip_bad``;
    otherwise the first bad line raises ``InputError("path:line: reason")``.
    """
    entries, problems = parse_split_list(path, class_names)
    if problems and not skip_bad:
        lineno, _, reason = problems[0]
        raise InputError(f"{path}:{lineno}: {reason}")
    rejects = [(rel if rel else f"{path}:{lineno}", f"{path}:{lineno}: {reason}") for lineno, rel, reason in problems]
    return entries, rejects


def write_split_list(path, entries):
    """Write ``(relpath, label)`` pairs as a split list, atomically."""
    atomic_write_text(path, "".join(f"{rel} {int(lab)}\n" for rel, lab in entries))


def write_class_doc(path, class_names):
    """Write a ``label;label_idx`` class table like ``HOwt_doc.txt`` (lower-case names)."""
    atomic_write_text(path, "label;label_idx\n" + "".join(f"{n.lower()};{i}\n" for i, n in enumerate(class_names)))


def read_class_doc(path):
    """Read a ``label;label_idx`` table; returns the class names in index order."""
    names = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or lineno == 1 and line.lower().startswith("label;"):
                continue
            try:
                name, idx = line.rsplit(";", 1)
                names[int(idx)] = name
            except ValueError:
                raise InputError(f"{path}:{lineno}: expected 'name;index', got {line!r}") from None
    if sorted(names) != list(range(len(names))):
        raise InputError(f"{path}: class indices are not 0..{len(names) - 1}")
    return [names[i] for i in range(len(names))]


# --------------------------------------------------------------------------- split checks

def split_summary(entries, class_names=CLASS_NAMES):
    """Per-split statistics of ``(relpath, label)`` entries (a JSON-able dict)."""
    per_protein = collections.Counter(protein_of(rel) for rel, _ in entries)
    per_class = collections.Counter(lab for _, lab in entries)
    return {
        "n_cells": len(entries),
        "n_proteins": len(per_protein),
        "n_proteins_min10": sum(1 for c in per_protein.values() if c >= MIN_CELLS_PER_PROTEIN),
        "cells_per_class": {name: per_class.get(i, 0) for i, name in enumerate(class_names)},
    }


def check_splits(list_paths, class_names=None):
    """Check split lists for protein leakage and bad labels.

    ``list_paths``: dict split name -> list file.  ``class_names``: the class
    table, or None to guess it from the file names.  Returns ``(report, ok)``;
    ``report`` holds per split the summary of :func:`split_summary` plus its
    problems, and ``shared_proteins`` (``"a&b" -> sorted protein ids``).
    ``ok`` is False when a protein spans two splits or any line is bad.
    """
    report = {"splits": {}, "shared_proteins": {}, "errors": []}
    proteins = {}
    for split, path in list_paths.items():
        names = class_names or class_names_for_list(path)
        entries, problems = parse_split_list(path, names)
        summary = split_summary(entries, names)
        summary["file"] = os.fspath(path)
        summary["problems"] = [f"{path}:{ln}: {reason}" for ln, _, reason in problems]
        report["errors"].extend(summary["problems"])
        report["splits"][split] = summary
        proteins[split] = {protein_of(rel) for rel, _ in entries}
    splits = list(list_paths)
    for i, a in enumerate(splits):
        for b in splits[i + 1:]:
            shared = sorted(proteins[a] & proteins[b])
            report["shared_proteins"][f"{a}&{b}"] = shared
            if shared:
                report["errors"].append(f"{len(shared)} protein(s) in both {a} and {b}, e.g. {shared[0]}")
    report["ok"] = not report["errors"]
    return report, report["ok"]


# --------------------------------------------------------------------------- crops

def _quiet_cv2():
    import cv2
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # pragma: no cover - old OpenCV
        pass
    return cv2


def decode_crop(data, name="<bytes>", size=IMAGE_SIZE):
    """Decode an archive crop (PNG bytes) into uint8 ``N_CHANNELS x size x size``.

    Channel 0 is the image's red (marker), channel 1 its green (protein).
    Raises ``InputError`` naming ``name`` for a corrupt or truncated file, a
    single-channel or 16-bit image, or a size other than ``size x size``.
    """
    cv2 = _quiet_cv2()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if len(data) else None
    if img is None:
        raise InputError(f"{name}: corrupt or truncated image (cannot decode)")
    if img.dtype != np.uint8:
        raise InputError(f"{name}: {img.dtype.itemsize * 8}-bit image; crops must be 8-bit")
    if img.ndim != 3 or img.shape[2] < 3:
        raise InputError(f"{name}: single-channel (grey) image; crops must be RGB with R=marker, G=protein")
    if img.shape[:2] != (size, size):
        raise InputError(f"{name}: crop is {img.shape[1]}x{img.shape[0]} pixels, expected {size}x{size}")
    # OpenCV gives BGR(A): red is index 2, green index 1.
    out = np.empty((N_CHANNELS, size, size), np.uint8)
    out[0] = img[:, :, 2]
    out[1] = img[:, :, 1]
    return out


def read_crop(path, size=IMAGE_SIZE):
    """Read one crop file -> uint8 ``2 x 64 x 64`` (see :func:`decode_crop`)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise InputError(f"{path}: listed file is missing") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    return decode_crop(data, path, size)


def _png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_crop(crop):
    """uint8 ``2 x H x W`` crop -> PNG bytes (8-bit RGB: R=marker, G=protein, B=0).

    A minimal PNG writer (filter 0, zlib run-length strategy): several times
    faster than general encoders on noisy 64x64 crops, and read by any decoder.
    """
    crop = np.asarray(crop)
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[0] != N_CHANNELS:
        raise ValueError(f"crop must be uint8 {N_CHANNELS}xHxW, got {crop.dtype} {crop.shape}")
    _, h, w = crop.shape
    raw = np.zeros((h, 1 + 3 * w), np.uint8)  # leading 0 per row = PNG filter type "None"
    rgb = raw[:, 1:].reshape(h, w, 3)
    rgb[:, :, 0] = crop[0]
    rgb[:, :, 1] = crop[1]
    comp = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    idat = comp.compress(raw.tobytes()) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


def iter_archive(root, entries, skip_bad=False, rejects=None):
    """Yield ``(relpath, image uint8 2x64x64, label)`` for list entries under ``root``.

    With ``skip_bad`` unreadable crops are left out and ``(relpath, reason)``
    appended to ``rejects`` (a list); otherwise the first bad crop raises.
    """
    for rel, label in entries:
        try:
            img = read_crop(os.path.join(root, rel))
        except InputError as e:
            if not skip_bad:
                raise
            if rejects is not None:
                rejects.append((rel, str(e)))
            continue
        yield rel, img, label


# --------------------------------------------------------------------------- fetching

def file_digest(path, algorithm="md5", chunk=1 << 20):
    """Hex digest of a file with ``hashlib`` algorithm ``algorithm`` (read in chunks)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def md5_of(path, chunk=1 << 20):
    """Hex md5 of a file."""
    return file_digest(path, "md5", chunk)


def download(url, dest, md5=None, timeout=60, chunk=1 << 20, progress=None):
    """Download ``url`` to ``dest``, resuming a partial ``dest + '.part'``.

    A finished file whose md5 matches is not fetched again.  A partial file is
    continued with an HTTP ``Range`` request (restarted when the server ignores
    it).  The file appears under ``dest`` only once complete and (if ``md5`` is
    given) verified.  Raises ``FetchError`` with advice when offline, on an HTTP
    error or on an md5 mismatch.  Returns ``dest``.
    """
    if os.path.exists(dest) and (md5 is None or md5_of(dest) == md5):
        return dest
    os.makedirs(os.path.dirname(os.path.abspath(dest)) or ".", exist_ok=True)
    part = dest + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    req = urllib.request.Request(url, headers={"User-Agent": "deepyeast-fetch"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range past the end: the part is already complete
            resp = None
        else:
            raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, socket.timeout, OSError) as e:
        reason = getattr(e, "reason", e)
        raise FetchError(
            f"cannot reach {url} ({reason}). This machine seems to be offline. Download the file elsewhere, "
            f"put it at {dest} and run the command again (files in place are md5-checked, not downloaded again)."
        ) from None
    if resp is not None:
        with resp:
            status = getattr(resp, "status", 200)
            mode = "ab" if (have and status == 206) else "wb"
            total = resp.headers.get("Content-Length")
            total = int(total) + (have if mode == "ab" else 0) if total else None
            done = have if mode == "ab" else 0
            try:
                with open(part, mode) as f:
                    while True:
                        block = resp.read(chunk)
                        if not block:
                            break
                        f.write(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
            except (OSError, socket.timeout) as e:
                raise FetchError(f"{url}: download interrupted after {done} bytes ({e}); run again to resume") from None
            if total is not None and done < total:
                raise FetchError(f"{url}: connection closed after {done} of {total} bytes; run again to resume")
    if md5 is not None:
        got = md5_of(part)
        if got != md5:
            os.unlink(part)
            raise FetchError(f"{url}: md5 {got} does not match the published {md5}; the partial file was removed, "
                             f"run again to download afresh")
    os.replace(part, dest)
    return dest


def _member_target(dest, member):
    target = os.path.realpath(os.path.join(dest, member.name))
    if os.path.isabs(member.name) or not (target == dest or target.startswith(dest + os.sep)):
        return None
    if member.issym() or member.islnk():
        base = os.path.dirname(target) if member.issym() else dest
        link = os.path.realpath(os.path.join(base, member.linkname))
        if not (link == dest or link.startswith(dest + os.sep)):
            return None
    if member.isdev() or member.isfifo():
        return None
    return target


def safe_extract(tar_path, dest):
    """Extract a (gzipped) tar into ``dest``, refusing members that would land outside it.

    Every member is checked before anything is written: an absolute path,
    ``..`` escaping, a link pointing outside, or a device file makes the whole
    archive be refused with ``FetchError`` naming the member.  Extraction goes
    to a temporary folder inside ``dest`` whose entries are then moved into
    place, so an interrupted run leaves no half-extracted tree under the final
    names.  Returns the list of top-level names extracted.
    """
    dest = os.path.realpath(dest)
    os.makedirs(dest, exist_ok=True)
    try:
        tar = tarfile.open(tar_path)
    except (tarfile.TarError, OSError) as e:
        raise FetchError(f"{tar_path}: not a readable tar archive ({e})") from None
    with tar:
        members = tar.getmembers()
        for m in members:
            if _member_target(dest, m) is None:
                raise FetchError(f"{tar_path}: member {m.name!r} would be written outside {dest}; archive refused")
        tmp = tempfile.mkdtemp(prefix=".extracting.", dir=dest)
        try:
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **kwargs)
            tops = sorted(os.listdir(tmp))
            for name in tops:
                final = os.path.join(dest, name)
                if os.path.isdir(final) and not os.path.islink(final):
                    shutil.rmtree(final)
                os.replace(os.path.join(tmp, name), final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return tops


def _print_progress(label):
    if not sys.stderr.isatty():
        return None

    def show(done, total):
        if total:
            sys.stderr.write(f"\r{label}: {done / 2**20:8.1f} / {total / 2**20:.1f} MiB")
        else:
            sys.stderr.write(f"\r{label}: {done / 2**20:8.1f} MiB")
        sys.stderr.flush()
    return show


def fetch_archive(dest, parts=("lists", "main", "transfer"), base_url=ARCHIVE_BASE_URL, keep_tarballs=True,
                  timeout=60):
    """Download and unpack the published DeepYeast data into ``dest``.

    ``parts``: any of ``"lists"`` (the eight split lists/doc files into
    ``dest``), ``"main"`` and ``"transfer"`` (image tarballs, unpacked into
    ``dest/main`` and ``dest/transfer``).  All files are md5-checked; partial
    downloads resume.  Returns a dict of what was fetched (name -> path).
    """
    out = {}
    dest = os.path.abspath(dest)
    for part in parts:
        if part == "lists":
            for name, md5 in LIST_MD5.items():
                out[name] = download(f"{base_url}/{LIST_URL_DIR}/{name}", os.path.join(dest, name), md5, timeout)
        elif part in TARBALLS:
            rel, md5 = TARBALLS[part]
            tgz = os.path.join(dest, os.path.basename(rel))
            download(f"{base_url}/{rel}", tgz, md5, timeout, progress=_print_progress(os.path.basename(rel)))
            marker = os.path.join(dest, part, ".extracted")
            if not os.path.exists(marker):
                safe_extract(tgz, os.path.join(dest, part))
                atomic_write_text(marker, md5 + "\n")
            if not keep_tarballs:
                os.unlink(tgz)
            out[part] = os.path.join(dest, part)
        else:
            raise ValueError(f"unknown part {part!r}; choose from 'lists', {', '.join(map(repr, TARBALLS))}")
    return out
