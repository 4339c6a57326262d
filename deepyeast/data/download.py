"""The published DeepYeast data set: downloading it with md5 checks and unpacking its tarballs.

``fetch_archive`` writes the eight split lists into a folder and unpacks ``main.tar.gz`` and
``transfer.tar.gz`` into its ``main/`` and ``transfer/`` (the layout of :mod:`deepyeast.data.lists`).
Downloads resume (HTTP ``Range``); members of a tarball that would land outside the destination
are refused by ``tarfile``'s ``data`` extraction filter before anything is written.
"""

import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request

from deepyeast.constants import list_file
from deepyeast.utils.io import StepFailed, atomic_write_text, file_digest, output_lock

# --------------------------------------------------------------------------- sources

ARCHIVE_BASE_URL = "http://kodu.ut.ee/~leopoldp/2016_DeepYeast"
"""Official home of the published data set (Parnamaa & Parts 2017)."""

LIST_MD5 = {
    list_file("doc"): "33b7780020972e2da4f884c6b5a63b25",
    list_file("train"): "b71eb4ff50f955adfa72048c6d8c0233",
    list_file("val"): "2ac1d1874b89d6a1ad3d948d36c1e229",
    list_file("test"): "c7958faa20232ff52fb196e754645bd1",
    list_file("doc", "transfer"): "699e4f5e390b8af78bbddae39f217745",
    list_file("train", "transfer"): "9dcbe909a81e3bdab6fa72504c4205a7",
    list_file("val", "transfer"): "32177364beaeabf54c4b4e589e2cb998",
    list_file("test", "transfer"): "3d5ff91995abfed6c0dd3b6e1727b6d2",
}
"""md5 of each published split list; the URL is ``ARCHIVE_BASE_URL/code/image_prep/data/<name>``."""

TARBALLS = {
    "main": ("data/main.tar.gz", "f313fc0b8068941ab18ae65eb113afee"),
    "transfer": ("data/transfer.tar.gz", "5dfc4baab5156e3fc6b5694bab96ac41"),
}
"""Image archives: name -> (path below ``ARCHIVE_BASE_URL``, md5)."""

LIST_URL_DIR = "code/image_prep/data"


class FetchError(StepFailed):
    """A download or extraction failed; the message says what to do."""



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


def safe_extract(tar_path, dest):
    """Extract a (gzipped) tar into ``dest``, refusing members that would land outside it.

    Every member is checked before anything is written, by ``tarfile``'s ``data`` filter (no
    ``..`` escaping, no link pointing outside, no device file) and for an absolute name (which
    that filter would silently make relative): one such member makes the whole archive be
    refused with ``FetchError`` naming the member.  Extraction (with the same filter) goes to a
    temporary folder inside ``dest`` whose entries are then moved into place, so an
    interrupted run leaves no half-extracted tree under the final names.  The extraction holds a
    lock on ``dest`` (a second concurrent extraction into it is refused) and first removes the
    temporary folders that killed runs left behind.  Returns the list of top-level names extracted.
    """
    if not hasattr(tarfile, "data_filter"):
        raise FetchError("safe extraction needs a Python whose tarfile has extraction filters "
                         "(3.9.17+, 3.10.12+, 3.11.4+)")
    dest = os.path.realpath(dest)
    os.makedirs(dest, exist_ok=True)
    try:
        tar = tarfile.open(tar_path)
    except (tarfile.TarError, OSError) as e:
        raise FetchError(f"{tar_path}: not a readable tar archive ({e})") from None
    with tar:
        members = tar.getmembers()
        for m in members:
            reason = "absolute path" if (os.path.isabs(m.name) or m.name.startswith(("/", os.sep))) else None
            if reason is None:
                try:
                    tarfile.data_filter(m, dest)
                except tarfile.FilterError as e:
                    reason = str(e)
            if reason is not None:
                raise FetchError(f"{tar_path}: member {m.name!r} would be written outside {dest} ({reason}); "
                                 "archive refused")
        with output_lock(dest):
            for name in os.listdir(dest):
                if name.startswith(EXTRACTING_PREFIX):  # left by a killed run (we hold the lock)
                    shutil.rmtree(os.path.join(dest, name), ignore_errors=True)
            tmp = tempfile.mkdtemp(prefix=EXTRACTING_PREFIX, dir=dest)
            try:
                tar.extractall(tmp, members=members, filter="data")
                tops = sorted(os.listdir(tmp))
                for name in tops:
                    final = os.path.join(dest, name)
                    if os.path.isdir(final) and not os.path.islink(final):
                        shutil.rmtree(final)
                    os.replace(os.path.join(tmp, name), final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return tops


EXTRACTING_PREFIX = ".extracting."
"""Name prefix of :func:`safe_extract`'s temporary folder inside the destination."""


def download_progress(label):
    """A ``download`` progress callback reporting MiB on stderr (:mod:`deepyeast.utils.progress`)."""
    from deepyeast.utils.progress import Progress

    state = {}

    def show(done, total):
        if "bar" not in state:
            state["bar"] = Progress(total=total // 2**20 if total else None, desc=label, unit="MiB")
        bar = state["bar"]
        bar.update(done // 2**20 - bar.n)
        if total and done >= total:
            bar.close()
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
            download(f"{base_url}/{rel}", tgz, md5, timeout, progress=download_progress(os.path.basename(rel)))
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
