"""Small file helpers shared by every step: atomic writes and clear errors.

Two exception classes carry a step's failure to :mod:`deepyeast.launcher`, which turns each
into one line on stderr and an exit code: :class:`InputError` (bad input, exit 2) and
:class:`StepFailed` (the step could not finish for a reason outside its input, exit 3).
"""

import contextlib
import contextvars
import errno
import hashlib
import os
import re
import shutil
import tempfile


class InputError(ValueError):
    """Bad user input; the message names the file, line, field or row at fault."""


class StepFailed(RuntimeError):
    """A step could not finish for a reason outside its input (network, diverged training, a tool
    that failed); the message says what happened and what to do."""


# errno values that mean "the disk (or the file-size limit) is full", and "this location cannot be written"
_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST}
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")  # numpy's tofile() when the disk fills up


def write_error(path, err):
    """The one-line error for an ``OSError`` met while writing the output ``path``.

    Disk full / file too large / quota / a short write -> :class:`StepFailed` (exit 3); a location that cannot be
    written (read-only, a component that is a file, no permission) -> :class:`InputError` (exit 2);
    anything else is returned as None (the caller re-raises the original).
    """
    reason = err.strerror or str(err)
    if err.errno is None and _SHORT_WRITE.search(str(err)):
        reason = f"a short write ({err})"
    if err.errno in _FULL or reason.startswith("a short write"):
        return StepFailed(f"{path}: cannot write: {reason} (disk full or over the file-size limit); "
                          "nothing was written under this name and earlier outputs are intact")
    if err.errno in _UNWRITABLE:
        return InputError(f"{path}: cannot write here: {reason}")
    return None


def check_writable(path, what="output"):
    """Raise :class:`InputError` unless ``path`` (a file or folder to be written) can be created.

    Run at a step's start, so an unwritable output is found before any work (Caffe checks its
    ``snapshot_prefix`` the same way): walks up to the nearest existing ancestor, which must be a
    folder in which a file can really be created (a probe file is made and removed).
    """
    path = os.path.abspath(os.fspath(path))
    probe_dir = path if os.path.isdir(path) else os.path.dirname(path)
    anc = probe_dir
    while not os.path.lexists(anc):
        anc = os.path.dirname(anc)
    if not os.path.isdir(anc):
        raise InputError(f"{path}: cannot write the {what}: {anc} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".deepyeast-write-test.", dir=anc)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputError(f"{path}: cannot write the {what}: {anc}: {err.strerror}") from None


def _makedirs(directory, final):
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise (write_error(final, err) or err) from None


@contextlib.contextmanager
def output_lock(path):
    """Hold an exclusive lock on the output ``path`` (a hidden ``.NAME.lock`` file beside it).

    A second writer of the same output fails at once with :class:`StepFailed` naming the holder's
    process id, instead of interleaving its files with the first's.  The lock is the kernel's
    (``flock``): it is released when the holder exits, even by ``kill -9`` (which leaves the empty
    lock file behind; the next writer takes it over and removes it on release).
    """
    import fcntl

    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    _makedirs(directory, path)
    lock_path = os.path.join(directory, f".{os.path.basename(path)}.lock")
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise (write_error(path, err) or err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StepFailed(f"{path}: another process (pid {holder}) is writing it now; wait for it to "
                             "finish (or stop it) and run again") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed this file on release: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock_path
    finally:
        try:
            os.unlink(lock_path)  # while still holding it: a waiting writer then retries on a new file
        except OSError:
            pass
        os.close(fd)


OUTPUT_MARKER = ".deepyeast-output"
"""Name of the file every folder output (:func:`atomic_path` of a folder, :func:`atomic_folder`) gets: a later
run may replace a folder that holds it; any other non-empty folder is refused (:func:`check_replaceable`)."""

_FORCE_REPLACE = contextvars.ContextVar("deepyeast_force_replace", default=False)
_WRITER = contextvars.ContextVar("deepyeast_writer", default="a DeepYeast step")
_INPUTS = contextvars.ContextVar("deepyeast_inputs", default=())


@contextlib.contextmanager
def output_policy(force=False, writer=None, inputs=()):
    """Within this context (the launcher's, around a step): folder outputs may replace folders no step
    wrote when ``force`` (``--force``); their :data:`OUTPUT_MARKER` names ``writer`` (e.g.
    ``"segment_cells.py"``); a folder output that is, holds or lies inside one of ``inputs`` (the step's
    input files and folders) is refused (:func:`check_replaceable`)."""
    tokens = [(_FORCE_REPLACE, _FORCE_REPLACE.set(bool(force))),
              (_INPUTS, _INPUTS.set(tuple(os.fspath(i) for i in inputs)))]
    if writer:
        tokens.append((_WRITER, _WRITER.set(str(writer))))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def _inside(path, folder):
    """Whether the absolute ``path`` is ``folder`` or lies below it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_replaceable(path):
    """Raise :class:`InputError` unless the folder ``path`` may be written (replaced as a whole) by a step.

    Refused, whatever ``--force`` says: a folder that is, holds or lies inside one of the step's inputs
    (:func:`output_policy`), the current folder, the home folder or a folder holding either.  An
    existing folder is replaced only when it is empty, holds :data:`OUTPUT_MARKER` (a step's earlier
    output) or inside :func:`output_policy` ``(force=True)``; any other is refused with one line naming
    it and one of the files it holds.
    """
    path = os.path.abspath(os.fspath(path))
    real = os.path.realpath(path)
    for inp in _INPUTS.get():
        i = os.path.realpath(inp)
        if _inside(i, real):
            raise InputError(f"{path}: the output folder would replace the step's own input {inp}: give another "
                             "output folder")
        if os.path.isdir(i) and _inside(real, i):
            raise InputError(f"{path}: the output folder is inside the step's input folder {inp}: give a folder "
                             "outside it")
    if not os.path.isdir(path) or os.path.islink(path):
        return
    for name, held in (("the current folder", os.getcwd()), ("your home folder", os.path.expanduser("~"))):
        if _inside(os.path.realpath(held), os.path.realpath(path)):
            raise InputError(f"{path}: is {name} or holds it, and an output folder is replaced as a whole: "
                             "give a new folder for the output")
    try:
        names = sorted(os.listdir(path))
    except OSError as err:
        raise InputError(f"{path}: cannot read the output folder: {err.strerror}") from None
    if not names or OUTPUT_MARKER in names or _FORCE_REPLACE.get():
        return
    raise InputError(f"{path}: not written by a DeepYeast step (it holds {names[0]}"
                     f"{f' and {len(names) - 1} more' if len(names) > 1 else ''}), and an output folder is "
                     "replaced as a whole: give a new or empty folder, or --force to delete what it holds")


def _mark_output(folder):
    """Leave :data:`OUTPUT_MARKER` in the finished output ``folder``."""
    with open(os.path.join(folder, OUTPUT_MARKER), "w", encoding="utf-8") as f:
        f.write(f"written by {_WRITER.get()}; a later run may replace this folder with everything in it\n")


def _partial_prefix(path):
    return f".{os.path.basename(path)}."


def remove_stale_partials(path):
    """Remove what killed writers of ``path`` left beside it (``.NAME.*.partial*``); call it holding
    :func:`output_lock` of ``path``, so no live writer's temporary is touched.  Returns their names."""
    path = os.path.abspath(os.fspath(path))
    directory, prefix = os.path.dirname(path), _partial_prefix(path)
    removed = []
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.startswith(prefix) and ".partial" in name[len(prefix):]:
                _remove(os.path.join(directory, name))
                removed.append(name)
    return removed


def _exchange(a, b):
    """Swap the names ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where
    the system cannot."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), b)


@contextlib.contextmanager
def atomic_path(path, suffix="", lock=False, folder=False):
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    Works for files and directories (an LMDB folder, say).  On an exception the
    temporary is removed and ``path`` is left untouched, so a failed or
    interrupted step never leaves a half-written output under the final name.  A folder
    replaces an existing folder in one step (an atomic exchange where Linux offers it).
    Errors writing the temporary become one line naming ``path`` (:func:`write_error`).
    A folder output (``folder``, or an existing folder ``path``) is checked by :func:`check_replaceable`
    before the caller's work and again before the exchange, and gets :data:`OUTPUT_MARKER`.
    With ``lock``, a second writer of ``path`` is refused (:func:`output_lock`) and what killed
    writers left beside it is removed first.
    """
    path = os.fspath(path)
    if folder and os.path.lexists(path) and not os.path.isdir(path):
        raise InputError(f"{path}: is a file; give a folder for this output")
    if folder or os.path.isdir(path):
        check_replaceable(path)
    if lock:
        with output_lock(path):
            remove_stale_partials(path)
            with atomic_path(path, suffix, folder=folder) as tmp:
                yield tmp
        return
    directory = os.path.dirname(os.path.abspath(path))
    _makedirs(directory, path)
    base = os.path.basename(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".partial" + suffix, dir=directory)
    except OSError as err:
        raise (write_error(path, err) or err) from None
    os.close(fd)
    os.unlink(tmp)
    try:
        yield tmp
    except OSError as err:
        _remove(tmp)
        converted = write_error(path, err) if _about(err, tmp) else None
        if converted is None:
            raise
        raise converted from None
    except BaseException:
        _remove(tmp)
        raise
    try:
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            check_replaceable(path)  # again: the folder may have changed during the step
            _mark_output(tmp)
        if os.path.isdir(path) and not os.path.islink(path):
            if _exchange(tmp, path):
                _remove(tmp)  # now the old folder
            else:
                old = tmp + ".old"
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise (write_error(path, err) or err) from None
    except BaseException:
        _remove(tmp)
        raise


def _about(err, tmp):
    """Whether ``err`` concerns the temporary ``tmp`` (or a file inside it), or names no file at all."""
    names = [n for n in (err.filename, getattr(err, "filename2", None)) if n]
    if not names:
        return True
    tmp = os.path.abspath(tmp)
    return any(os.path.abspath(os.fsdecode(n)) == tmp or os.path.abspath(os.fsdecode(n)).startswith(tmp + os.sep)
               for n in names)


@contextlib.contextmanager
def atomic_folder(path, lock=True):
    """Yield a fresh, empty folder that replaces the folder ``path`` as a whole on success.

    A multi-file output (features, an LMDB bundle, an archive root) is written into it and
    appears under ``path`` all at once; on an exception (or ``kill -9``) nothing at ``path``
    changes.  With ``lock`` (default) a concurrent writer of ``path`` is refused and the
    temporaries of killed writers are removed first (:func:`atomic_path`).
    """
    with atomic_path(path, lock=lock, folder=True) as tmp:
        os.makedirs(tmp)
        yield tmp


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
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


def json_safe(obj, _where="", _found=None):
    """``(copy, replaced)``: ``obj`` with numpy scalars/arrays as Python values and every NaN or
    infinity replaced by None; ``replaced`` maps each replaced value's place (``a.b[2]``) to its text."""
    import math

    found = {} if _found is None else _found
    if isinstance(obj, dict):
        out = {str(k): json_safe(v, f"{_where}.{k}" if _where else str(k), found)[0] for k, v in obj.items()}
    elif isinstance(obj, (list, tuple)):
        out = [json_safe(v, f"{_where}[{i}]", found)[0] for i, v in enumerate(obj)]
    elif hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        out = json_safe(obj.tolist(), _where, found)[0]
    elif isinstance(obj, float) and not math.isfinite(obj):
        found[_where or "(value)"] = repr(obj)
        out = None
    else:
        out = obj
    return out, found


NON_FINITE_KEY = "non_finite"
"""Key under which :func:`json_text` lists the values it wrote as null (place -> "nan"/"inf")."""


def json_text(obj, indent=1):
    """Strict JSON text of ``obj`` (always valid JSON: NaN and infinities are written as ``null``).

    When ``obj`` is a dict and a value was replaced, the dict also gets :data:`NON_FINITE_KEY`:
    each replaced value's place and what it was, so a reader sees that a null was a NaN.
    """
    import json

    clean, replaced = json_safe(obj)
    if replaced and isinstance(clean, dict):
        clean[NON_FINITE_KEY] = dict(clean.get(NON_FINITE_KEY) or {}, **replaced)
    return json.dumps(clean, indent=indent, allow_nan=False, default=str) + "\n"


def atomic_write_json(path, obj, indent=1):
    """Write ``obj`` as strict JSON (:func:`json_text`) to ``path`` atomically."""
    atomic_write_text(path, json_text(obj, indent))


def read_input_bytes(path, what=""):
    """The whole content of an input file as bytes.

    An unreadable file becomes an :class:`InputError` naming the file (and the ``what`` it was
    meant to be, e.g. ``"image"``, when given) and the reason.
    """
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read{' ' + what if what else ''}: {e.strerror}") from None


def decode_text(data, path, what):
    """UTF-8 ``data`` (bytes) of the file ``path`` as str, without the byte-order mark Excel's "CSV UTF-8"
    puts first.  Other bytes (Excel's Latin-1 "CSV", a binary file) become an :class:`InputError` naming the
    file, the line and the byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise InputError(f"{path}:{line}: the {what} is not UTF-8 text (byte 0x{data[err.start]:02x} at column "
                         f"{column}); save it as UTF-8 (in Excel: CSV UTF-8)") from None


def open_input(path, what, **kwargs):
    """Open a text input for reading: like ``open(path, encoding="utf-8", **kwargs)``, with a byte-order mark
    skipped and bytes that are not UTF-8 refused (:func:`decode_text`), before the caller reads a line.

    An unreadable file becomes an :class:`InputError` naming the file, the
    ``what`` it was meant to be (e.g. ``"predictions table"``) and the reason.
    """
    import io

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot open {what}: {e.strerror}") from None
    return io.StringIO(decode_text(data, path, what), newline=kwargs.get("newline"))


def csv_header(reader, path, expected):
    """The first row of a ``csv.reader`` (its header); an empty file is an :class:`InputError` naming
    ``path`` and what its header should be (``expected``, e.g. ``"a header line"``)."""
    try:
        return next(reader)
    except StopIteration:
        raise InputError(f"{path}: empty file, expected {expected}") from None


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
