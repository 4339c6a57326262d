"""Small file helpers shared by every step: atomic writes and clear errors."""

import contextlib
import hashlib
import os
import shutil
import tempfile


class InputError(ValueError):
    """Bad user input; the message names the file, line, field or row at fault."""


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
