"""LMDB databases of Caffe ``Datum`` records, as ``convert_imageset`` writes them, and the one
definition of their keys.

Images are uint8 C x H x W (channel order in :mod:`deepyeast.constants`).  A record's key is
``KEY_FORMAT`` (``"{index:08d}_{path}"``: the write order, then the cell's path relative to its
archive root), so the database's sorted key order -- the order Caffe's ``Data`` layer reads -- is
the written order, and :func:`path_of_key` recovers the cell.
"""

import contextlib
import os
import random
import re
import struct

import numpy as np

from deepyeast.caffe import caffe_pb2
from deepyeast.utils.io import InputError, atomic_path

__all__ = ["KEY_FORMAT", "make_key", "path_of_key", "read_keys", "check_lmdb",
           "write_datum_lmdb", "iter_datum_lmdb", "read_datum_lmdb", "count_datum_lmdb",
           "datum_to_array", "array_to_datum"]

KEY_FORMAT = "{index:08d}_{path}"
"""Key of record ``index`` holding the cell at ``path`` (see :func:`make_key`)."""

_KEY_PREFIX = re.compile(r"^\d{8}_")


def make_key(index, path):
    """The LMDB key of record ``index`` (0-based write order) holding the cell at ``path``."""
    return KEY_FORMAT.format(index=index, path=path)


def path_of_key(key):
    """The cell path of a key written by :func:`make_key` (``00000012_plate01/x.png`` -> ``plate01/x.png``).

    A key without the ``NNNNNNNN_`` prefix (a database written by other tools) is returned as it is.
    """
    return _KEY_PREFIX.sub("", key, count=1)


_META_MAGIC = 0xBEEFC0DE
_META_FIELDS = struct.Struct("=II")       # mm_magic, mm_version (after the 16-byte page header)
_META_PSIZE = 40                          # offset of mm_dbs[0].md_pad, LMDB's page size
_META_LAST = struct.Struct("=QQ")         # mm_last_pg, mm_txnid at offset 136 (64-bit build)
_META_LAST_AT = 136


def check_lmdb(path):
    """Check that the folder ``path`` holds a complete LMDB before it is memory-mapped.

    LMDB maps ``data.mdb`` into memory; reading a page past the end of a truncated file kills
    the process with SIGBUS, which no Python code can catch.  So the two meta pages at the
    file's start are read with ordinary I/O first: their magic number and version say it is an
    LMDB (random bytes are refused), and the current one (the larger transaction id) gives the
    last page in use, so ``data.mdb`` must hold at least ``(last page + 1) x page size`` bytes.
    Raises :class:`InputError` naming the file; returns the file's size.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise InputError(f"{path}: no LMDB folder here")
    data = os.path.join(path, "data.mdb")
    try:
        size = os.path.getsize(data)
        with open(data, "rb") as f:
            first = f.read(_META_LAST_AT + _META_LAST.size)
            metas = [first]
            if len(first) == _META_LAST_AT + _META_LAST.size:
                magic, _ = _META_FIELDS.unpack_from(first, 16)
                psize = struct.unpack_from("=I", first, _META_PSIZE)[0]
                if magic == _META_MAGIC and 512 <= psize <= 1 << 16:
                    f.seek(psize)
                    metas.append(f.read(_META_LAST_AT + _META_LAST.size))
    except FileNotFoundError:
        raise InputError(f"{path}: no LMDB here (data.mdb missing)") from None
    except OSError as err:
        raise InputError(f"{data}: cannot read: {err.strerror}") from None
    if size == 0:
        raise InputError(f"{data}: empty file, not an LMDB database")
    current = None
    for k, meta in enumerate(metas[:2]):
        if len(meta) < _META_LAST_AT + _META_LAST.size:
            raise InputError(f"{data}: truncated: {size} bytes, too short for LMDB's header "
                             "(an interrupted copy or a full disk?); write the database again")
        magic, version = _META_FIELDS.unpack_from(meta, 16)
        if magic != _META_MAGIC:
            raise InputError(f"{data}: not an LMDB database (no LMDB magic number in meta page {k}); "
                             "is it another kind of file, or damaged?")
        if version != 1:
            raise InputError(f"{data}: LMDB data format version {version}, this reader knows version 1")
        last_pg, txnid = _META_LAST.unpack_from(meta, _META_LAST_AT)
        if current is None or txnid > current[1]:
            current = (last_pg, txnid)
    if len(metas) < 2:
        raise InputError(f"{data}: truncated: {size} bytes, too short for LMDB's two meta pages")
    psize = struct.unpack_from("=I", metas[0], _META_PSIZE)[0]
    need = (current[0] + 1) * psize
    if size < need:
        raise InputError(f"{data}: truncated: {size} bytes, but its header says the database uses {need} "
                         f"({current[0] + 1} pages of {psize}); an interrupted copy or a full disk? "
                         "Write the database again")
    return size


def _open_env(path):
    """A read-only LMDB environment on the checked folder ``path`` (:func:`check_lmdb`)."""
    lmdb = _lmdb()
    path = os.fspath(path)
    check_lmdb(path)
    try:
        return lmdb.open(path, readonly=True, lock=False, subdir=True)
    except lmdb.Error as err:
        raise InputError(f"{path}: not a readable LMDB ({err})") from None


@contextlib.contextmanager
def _read_txn(path):
    """A read transaction on the LMDB folder ``path`` (InputError when it is not a whole one)."""
    lmdb = _lmdb()
    env = _open_env(path)
    try:
        with env.begin() as txn:
            try:
                yield txn
            except lmdb.Error as err:
                raise InputError(f"{os.fspath(path)}: damaged LMDB ({err})") from None
    finally:
        env.close()


def read_keys(path):
    """Keys of an LMDB (str) in the Data layer's (sorted) read order."""
    with _read_txn(path) as txn:
        return [k.decode("utf-8", "replace") for k in txn.cursor().iternext(keys=True, values=False)]


def array_to_datum(image, label):
    """Pack a uint8 C x H x W array and an int label into a ``Datum``."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise InputError(f"a Datum holds uint8 C x H x W pixels, got {image.dtype} of shape {image.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(s) for s in image.shape)
    datum.data = np.ascontiguousarray(image).tobytes()
    datum.label = int(label)
    return datum


def datum_to_array(datum, source="datum"):
    """Unpack a ``Datum`` (raw uint8 or float_data) into (C x H x W array, label)."""
    shape = (datum.channels, datum.height, datum.width)
    if datum.encoded:
        raise InputError(f"{source}: encoded (compressed) Datum records are not supported; "
                         "write raw pixels (convert_imageset without -encoded)")
    if datum.data:
        arr = np.frombuffer(datum.data, dtype=np.uint8)
    else:
        arr = np.asarray(datum.float_data, dtype=np.float32)
    if arr.size != shape[0] * shape[1] * shape[2]:
        raise InputError(f"{source}: Datum says shape {shape} but holds {arr.size} values")
    return arr.reshape(shape), int(datum.label)


def _lmdb():
    import lmdb
    return lmdb


def write_datum_lmdb(path, items, shuffle=True, seed=0, map_size=1 << 28, lock=True):
    """Write labelled images to a new LMDB of ``Datum`` records at ``path``.

    Parameters
    ----------
    path : str
        Database folder to create; replaced atomically when the write succeeds
        (an interrupted write leaves nothing at ``path``).
    items : iterable of (name, image, label)
        ``name`` is a str (usually the image's relative path), ``image`` a
        uint8 C x H x W array or a zero-argument callable returning one (so
        large sets are loaded one record at a time), ``label`` an int.
    shuffle : bool
        Shuffle the order with ``random.Random(seed)`` first, like
        ``convert_imageset -shuffle``.  Keys are :func:`make_key` ``(i, name)``, so the
        database's sorted key order is the written order.
    map_size : int
        Initial LMDB map size in bytes; doubled whenever it fills.
    lock : bool
        Refuse a second concurrent writer of ``path`` (:func:`deepyeast.utils.io.output_lock`);
        False when the caller holds a lock on a folder around it (an LMDB bundle).

    Returns
    -------
    int
        Number of records written.
    """
    lmdb = _lmdb()
    items = list(items) if shuffle else items
    if shuffle:
        random.Random(seed).shuffle(items)
    count = 0
    with atomic_path(path, lock=lock) as tmp:
        env = lmdb.open(tmp, map_size=map_size, subdir=True, lock=True)
        try:
            shape = None
            first_name = None
            pending = []

            def flush():
                nonlocal map_size
                while True:
                    try:
                        with env.begin(write=True) as txn:
                            for key, value in pending:
                                txn.put(key, value)
                        break
                    except lmdb.MapFullError:
                        map_size *= 2
                        env.set_mapsize(map_size)
                    except lmdb.Error as err:
                        raise _lmdb_write_error(path, err) from None
                pending.clear()

            for name, image, label in items:
                if callable(image):
                    image = image()
                image = np.asarray(image)
                if shape is None:
                    shape, first_name = image.shape, name
                elif image.shape != shape:
                    raise InputError(f"{name}: image shape {image.shape} differs from shape {shape} "
                                     f"of the first record ({first_name}); all records of an LMDB must agree")
                datum = array_to_datum(image, label)
                pending.append((make_key(count, name).encode("utf-8"), datum.SerializeToString()))
                count += 1
                if len(pending) >= 1000:
                    flush()
            if pending:
                flush()
        finally:
            env.close()
    return count


def _lmdb_write_error(path, err):
    """LMDB's write errors carry the system's message only: a full disk or a file-size limit is
    :class:`StepFailed`, one line naming ``path``; anything else stays LMDB's error.  LMDB reports
    a short write (the disk filled up, or the size limit was reached, in the middle of a page)
    as an I/O error, so that counts too."""
    import errno

    from deepyeast.utils.io import StepFailed, write_error

    text = str(err)
    for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        if os.strerror(code) in text:
            return write_error(os.fspath(path), OSError(code, os.strerror(code)))
    if os.strerror(errno.EIO) in text:
        return StepFailed(f"{os.fspath(path)}: cannot write: {os.strerror(errno.EIO)} (disk full, over the "
                          "file-size limit, or a failing disk); nothing was written under this name and earlier "
                          "outputs are intact")
    return err


def iter_datum_lmdb(path):
    """Yield ``(key, image, label)`` for each record of an LMDB in key order.

    ``image`` is uint8 C x H x W (float32 when the records hold float_data).
    """
    with _read_txn(path) as txn:
        for key, value in txn.cursor():
            datum = caffe_pb2.Datum()
            k = key.decode("utf-8", "replace")
            try:
                datum.ParseFromString(value)
            except Exception as err:  # protobuf DecodeError
                raise InputError(f"{os.fspath(path)}: record {k} is not a Caffe Datum ({err})") from None
            image, label = datum_to_array(datum, source=f"{os.fspath(path)}[{k}]")
            yield k, image, label


def count_datum_lmdb(path):
    """Number of records in an LMDB."""
    env = _open_env(path)
    try:
        return env.stat()["entries"]
    finally:
        env.close()


def read_datum_lmdb(path):
    """Read a whole LMDB: (images N x C x H x W, labels int64 N, keys list of str).

    Records whose shapes disagree raise :class:`InputError` naming both shapes.
    """
    images, labels, keys = [], [], []
    for key, image, label in iter_datum_lmdb(path):
        if images and image.shape != images[0].shape:
            raise InputError(f"{path}: record {key} has shape {image.shape} but record {keys[0]} "
                             f"has {images[0].shape}")
        images.append(image)
        labels.append(label)
        keys.append(key)
    if not images:
        raise InputError(f"{path}: the LMDB is empty")
    return np.stack(images), np.asarray(labels, dtype=np.int64), keys
