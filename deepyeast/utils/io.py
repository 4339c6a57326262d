"""Small file helpers shared by every step: atomic writes and clear errors.

Two exception classes carry a step's failure to :mod:`deepyeast.launcher`, which turns each
into one line on stderr and an exit code: :class:`InputError` (bad input, exit 2) and
:class:`StepFailed` (the step could not finish for a reason outside its input, exit 3).
"""

import contextlib
import hashlib
import os
import shutil
import tempfile


class InputError(ValueError):
    """Bad user input; the message names the file, line, field or row at fault."""


class StepFailed(RuntimeError):
    """A step could not finish for a reason outside its input (network, diverged training, a tool
    that failed); the message says what happened and what to do."""


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    Works for files and directories (an LMDB folder, say).  On an exception the
    temporary is removed and ``path`` is left untouched, so a failed or
    interrupted step never leaves a half-written output under the final name.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".partial" + suffix, dir=directory)
    os.close(fd)
    os.unlink(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if os.path.isdir(path) and not os.path.islink(path):
        old = tmp + ".old"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_folder(path):
    """Yield a fresh, empty folder that replaces the folder ``path`` as a whole on success.

    A multi-file output (features, an LMDB bundle, an archive root) is written into it and
    appears under ``path`` all at once; on an exception nothing at ``path`` changes.
    """
    with atomic_path(path) as tmp:
        os.makedirs(tmp)
        yield tmp


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.unlink(path)


def atomic_write_text(path, text):
    """Write ``text`` (str) to ``path`` atomically, UTF-8."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def atomic_write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def open_input(path, what, **kwargs):
    """Open a text input (``open(path, encoding="utf-8", **kwargs)``) for reading.

    An unreadable file becomes an :class:`InputError` naming the file, the
    ``what`` it was meant to be (e.g. ``"predictions table"``) and the reason.
    """
    try:
        return open(path, encoding="utf-8", **kwargs)
    except OSError as e:
        raise InputError(f"{path}: cannot open {what}: {e.strerror}") from None


def file_digest(path, algorithm="md5", chunk=1 << 20):
    """Hex digest of a file with ``hashlib`` algorithm ``algorithm`` (read in chunks)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def write_csv(path, rows, columns=None, float_format=".6g"):
    """Write a table as CSV, atomically.

    ``rows``: dicts (keyed by ``columns``; default: the first row's keys) or sequences (then
    ``columns`` is the header).  Floats are written with ``float_format``, None as an empty field.
    """
    import csv

    rows = list(rows)
    if columns is None:
        if not rows or not isinstance(rows[0], dict):
            raise ValueError("write_csv needs columns for rows that are not dicts")
        columns = list(rows[0])

    def cell(v):
        if v is None:
            return ""
        if isinstance(v, float) or type(v).__name__ in ("float32", "float64"):
            return format(float(v), float_format)
        return v

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(columns)
            for row in rows:
                values = [row.get(c) for c in columns] if isinstance(row, dict) else list(row)
                writer.writerow([cell(v) for v in values])
