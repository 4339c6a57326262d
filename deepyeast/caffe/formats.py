"""Caffe's file formats, read and written with DeepYeast's own protobuf subset.

* prototxt (protobuf text format) for nets and solvers,
* LMDB databases of ``Datum`` records, as ``convert_imageset`` writes them,
* mean images as ``.binaryproto`` (a ``BlobProto``), as ``compute_image_mean`` writes them,
* ``.caffemodel`` weights (a ``NetParameter`` whose layers carry blobs),
* ``.solverstate`` (a ``SolverState``: iteration, step and momentum history).

Arrays follow Caffe's layouts: images are uint8 C x H x W (channel order in
:mod:`deepyeast.constants`), mean images float32 C x H x W, parameter blobs
float32 in the shape Caffe gives them (convolution weights
out x in x kh x kw, inner-product weights out x in, biases and batch-norm
statistics 1-D, the batch-norm moving-average factor shape (1,)).
"""

import os
import random
import re
from collections import OrderedDict

import numpy as np
from google.protobuf import text_format

from deepyeast.caffe import caffe_pb2
from deepyeast.utils.io import InputError, atomic_path, atomic_write_bytes, atomic_write_text

__all__ = [
    "read_prototxt", "parse_prototxt", "write_prototxt",
    "CAFFE_LAYER_TYPES", "check_layer_types", "check_mean_shape",
    "write_datum_lmdb", "iter_datum_lmdb", "read_datum_lmdb", "count_datum_lmdb",
    "datum_to_array", "array_to_datum",
    "compute_mean", "write_mean_binaryproto", "read_mean_binaryproto",
    "blob_to_array", "array_to_blob",
    "read_caffemodel", "write_caffemodel",
    "read_solverstate", "write_solverstate",
]


# --------------------------------------------------------------------------- prototxt

def _enclosing_layer_name(text, line_no):
    """Name of the last ``layer { name: ... }`` opened at or before 1-based ``line_no``."""
    name = None
    depth = 0
    layer_depth = None
    for i, line in enumerate(text.splitlines()[:line_no], start=1):
        stripped = line.split("#", 1)[0]
        if re.match(r"\s*layers?\s*\{", stripped) and depth == 0:
            layer_depth = depth + 1
            name = None
        m = re.match(r'\s*name\s*:\s*"([^"]*)"', stripped)
        if m and layer_depth is not None and depth == layer_depth:
            name = m.group(1)
        depth += stripped.count("{") - stripped.count("}")
        if layer_depth is not None and depth < layer_depth and i < line_no:
            layer_depth = None
            name = None
    return name


CAFFE_LAYER_TYPES = frozenset((
    "AbsVal", "Accuracy", "ArgMax", "BNLL", "BatchNorm", "BatchReindex", "Bias", "Clip", "Concat",
    "ContrastiveLoss", "Convolution", "Crop", "Data", "Deconvolution", "Dropout", "DummyData", "ELU",
    "Eltwise", "Embed", "EuclideanLoss", "Exp", "Filter", "Flatten", "HDF5Data", "HDF5Output",
    "HingeLoss", "Im2col", "ImageData", "InfogainLoss", "InnerProduct", "Input", "LRN", "LSTM",
    "LSTMUnit", "Log", "MVN", "MemoryData", "MultinomialLogisticLoss", "PReLU", "Parameter",
    "Pooling", "Power", "Python", "RNN", "ReLU", "Reduction", "Reshape", "SPP", "Scale", "Sigmoid",
    "SigmoidCrossEntropyLoss", "Silence", "Slice", "Softmax", "SoftmaxWithLoss", "Split", "Swish",
    "TanH", "Threshold", "Tile", "WindowData",
))
"""Layer types registered in real Caffe 1.0 as Debian bullseye packages it
(``caffe.layer_type_list()``; tests/test_real_caffe.py checks the two agree)."""


def _line_of_layer(text, name):
    """1-based line of ``name: "<name>"`` in ``text`` (0 when not found)."""
    m = re.search(r'^\s*name\s*:\s*"' + re.escape(name) + r'"', text, re.M)
    return text.count("\n", 0, m.start()) + 1 if m else 0


def check_layer_types(net, source="<net>", text=None):
    """Raise :class:`InputError` for a layer whose ``type`` real Caffe does not know.

    The message names ``source`` (and the line, when the prototxt ``text`` is
    given), the layer and its type.  Returns ``net`` unchanged.
    """
    for i, layer in enumerate(net.layer):
        if layer.type not in CAFFE_LAYER_TYPES:
            line = _line_of_layer(text, layer.name) if (text and layer.name) else 0
            where = f"{source}:{line}" if line else source
            label = f'layer "{layer.name}"' if layer.name else f"layer #{i + 1}"
            raise InputError(f"{where}: {label} has unknown type {layer.type!r} "
                             f"(not a Caffe 1.0 layer type)")
    return net


def check_mean_shape(mean, image_shape, source="mean"):
    """Raise :class:`InputError` unless a C x H x W mean image fits images of ``image_shape``.

    ``image_shape`` is the C x H x W shape of the data (an LMDB record, a crop).
    The message names ``source`` and both shapes.
    """
    mean_shape = tuple(int(d) for d in np.shape(mean))
    image_shape = tuple(int(d) for d in image_shape)
    if mean_shape != image_shape:
        raise InputError(f"{source}: mean image has shape {mean_shape} (C x H x W) but the data "
                         f"has shape {image_shape}; the mean must come from the same kind of images")


def parse_prototxt(text, message_cls, source="<string>"):
    """Parse protobuf text ``text`` into a new ``message_cls`` instance.

    Errors raise :class:`InputError` as ``source:line:column: reason``, naming
    the enclosing layer when there is one.  A ``NetParameter`` is also checked
    for layer types that real Caffe does not know (:func:`check_layer_types`).
    """
    message = message_cls()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        line, col = err.GetLine(), err.GetColumn()
        reason = str(err)
        m = re.match(r"^\d+:\d+ : (.*)$", reason, re.S)
        if m:
            reason = m.group(1)
        where = f"{source}:{line}:{col}" if line else source
        layer = _enclosing_layer_name(text, line) if line else None
        if layer:
            reason += f' (in layer "{layer}")'
        raise InputError(f"{where}: {reason}") from None
    if isinstance(message, caffe_pb2.NetParameter):
        check_layer_types(message, source, text)
    return message


def read_prototxt(path, message_cls):
    """Read a prototxt file into a ``message_cls`` (e.g. ``caffe_pb2.NetParameter``)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from None
    return parse_prototxt(text, message_cls, source=path)


def write_prototxt(path, message):
    """Write ``message`` in protobuf text format to ``path`` (atomically)."""
    atomic_write_text(path, text_format.MessageToString(message))


# --------------------------------------------------------------------------- Datum / LMDB

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


def write_datum_lmdb(path, items, shuffle=True, seed=0, map_size=1 << 28):
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
        ``convert_imageset -shuffle``.  Keys are ``f"{i:08d}_{name}"``, so the
        database's sorted key order is the written order.
    map_size : int
        Initial LMDB map size in bytes; doubled whenever it fills.

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
    with atomic_path(path) as tmp:
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
                pending.append((f"{count:08d}_{name}".encode("utf-8"), datum.SerializeToString()))
                count += 1
                if len(pending) >= 1000:
                    flush()
            if pending:
                flush()
        finally:
            env.close()
    return count


def iter_datum_lmdb(path):
    """Yield ``(key, image, label)`` for each record of an LMDB in key order.

    ``image`` is uint8 C x H x W (float32 when the records hold float_data).
    """
    lmdb = _lmdb()
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise InputError(f"{path}: no LMDB folder here")
    env = lmdb.open(path, readonly=True, lock=False, subdir=True)
    try:
        with env.begin() as txn:
            for key, value in txn.cursor():
                datum = caffe_pb2.Datum()
                datum.ParseFromString(value)
                k = key.decode("utf-8", "replace")
                image, label = datum_to_array(datum, source=f"{path}[{k}]")
                yield k, image, label
    finally:
        env.close()


def count_datum_lmdb(path):
    """Number of records in an LMDB."""
    lmdb = _lmdb()
    env = lmdb.open(os.fspath(path), readonly=True, lock=False, subdir=True)
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


# --------------------------------------------------------------------------- blobs, mean

def array_to_blob(array, legacy_4d=False):
    """A ``BlobProto`` holding float32 ``array``; ``legacy_4d`` also sets num/channels/height/width."""
    array = np.asarray(array, dtype=np.float32)
    blob = caffe_pb2.BlobProto()
    if legacy_4d:
        dims = (1,) * (4 - array.ndim) + tuple(array.shape)
        blob.num, blob.channels, blob.height, blob.width = (int(d) for d in dims)
    else:
        blob.shape.dim.extend(int(d) for d in array.shape)
    blob.data.extend(array.ravel().tolist())
    return blob


def blob_to_array(blob, source="blob"):
    """The float32 array held by a ``BlobProto`` (shape from ``shape`` or the legacy 4-D fields)."""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = (blob.num, blob.channels, blob.height, blob.width)
    if blob.double_data:
        data = np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    else:
        data = np.asarray(blob.data, dtype=np.float32)
    if data.size != int(np.prod(shape)):
        raise InputError(f"{source}: blob shape {shape} needs {int(np.prod(shape))} values, holds {data.size}")
    return data.reshape(shape)


def compute_mean(images):
    """Per-pixel mean of an iterable of uint8 C x H x W images, float32 C x H x W.

    Sums in float64, so the result equals ``compute_image_mean``'s to float32
    rounding for any realistic count.
    """
    total = None
    n = 0
    for image in images:
        image = np.asarray(image)
        if total is None:
            total = np.zeros(image.shape, dtype=np.float64)
        elif image.shape != total.shape:
            raise InputError(f"image {n} has shape {image.shape}, earlier images {total.shape}")
        total += image
        n += 1
    if n == 0:
        raise InputError("cannot compute the mean of no images")
    return (total / n).astype(np.float32)


def write_mean_binaryproto(path, mean):
    """Write a C x H x W float mean image as a 1 x C x H x W ``BlobProto`` (like ``compute_image_mean``)."""
    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim != 3:
        raise InputError(f"{path}: a mean image is C x H x W, got shape {mean.shape}")
    atomic_write_bytes(path, array_to_blob(mean, legacy_4d=True).SerializeToString())


def read_mean_binaryproto(path):
    """Read a mean ``.binaryproto`` as float32 C x H x W."""
    path = os.fspath(path)
    blob = caffe_pb2.BlobProto()
    try:
        with open(path, "rb") as f:
            blob.ParseFromString(f.read())
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from None
    except Exception as err:  # protobuf DecodeError
        raise InputError(f"{path}: not a BlobProto ({err})") from None
    arr = blob_to_array(blob, source=path)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise InputError(f"{path}: a mean image has num 1, got shape {arr.shape}")
        arr = arr[0]
    return arr


# --------------------------------------------------------------------------- caffemodel

def _read_message(path, message_cls):
    path = os.fspath(path)
    msg = message_cls()
    try:
        with open(path, "rb") as f:
            msg.ParseFromString(f.read())
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from None
    except Exception as err:
        raise InputError(f"{path}: not a binary {message_cls.__name__} ({err})") from None
    return msg


def read_caffemodel(path, with_types=False):
    """Read trained weights: an ordered dict layer name -> list of float32 arrays.

    Layers without blobs are left out.  With ``with_types`` also return a
    dict layer name -> layer type.
    """
    net = _read_message(path, caffe_pb2.NetParameter)
    params, types = OrderedDict(), {}
    for layer in net.layer:
        if layer.blobs:
            params[layer.name] = [blob_to_array(b, source=f"{path} layer {layer.name}") for b in layer.blobs]
            types[layer.name] = layer.type
    return (params, types) if with_types else params


def write_caffemodel(path, params, net_name="", layer_types=None):
    """Write ``params`` (layer name -> list of arrays) as a binary ``.caffemodel``.

    Real Caffe and pycaffe copy weights by layer name and check each blob's
    shape, so the arrays must have Caffe's shapes.
    """
    net = caffe_pb2.NetParameter()
    if net_name:
        net.name = net_name
    for name, blobs in params.items():
        layer = net.layer.add()
        layer.name = name
        if layer_types and name in layer_types:
            layer.type = layer_types[name]
        for array in blobs:
            layer.blobs.append(array_to_blob(array))
    atomic_write_bytes(path, net.SerializeToString())


# --------------------------------------------------------------------------- solverstate

def read_solverstate(path):
    """Read a binary ``.solverstate``.

    Returns a dict with ``iter`` (int), ``current_step`` (int), ``learned_net``
    (str, the .caffemodel it was written with) and ``history`` (list of float32
    arrays, one per learnable parameter in the net's parameter order).
    """
    state = _read_message(path, caffe_pb2.SolverState)
    return {
        "iter": int(state.iter),
        "current_step": int(state.current_step),
        "learned_net": state.learned_net,
        "history": [blob_to_array(b, source=f"{path} history {i}") for i, b in enumerate(state.history)],
    }


def write_solverstate(path, iteration, history, learned_net="", current_step=0):
    """Write a binary ``.solverstate`` that real Caffe's SGD solver can restore."""
    state = caffe_pb2.SolverState()
    state.iter = int(iteration)
    state.current_step = int(current_step)
    if learned_net:
        state.learned_net = learned_net
    for array in history:
        state.history.append(array_to_blob(array))
    atomic_write_bytes(path, state.SerializeToString())
