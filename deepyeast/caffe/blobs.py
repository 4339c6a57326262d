"""Caffe's binary blob files: mean images (``.binaryproto``, a ``BlobProto``, as
``compute_image_mean`` writes them), trained weights (``.caffemodel``, a ``NetParameter`` whose
layers carry blobs) and solver states (``.solverstate``: iteration, step, momentum history).

Arrays follow Caffe's layouts: mean images float32 C x H x W, parameter blobs float32 in the
shape Caffe gives them (convolution weights out x in x kh x kw, inner-product weights out x in,
biases and batch-norm statistics 1-D, the batch-norm moving-average factor shape (1,)).
"""

import os
from collections import OrderedDict

import numpy as np

from deepyeast.caffe import caffe_pb2
from deepyeast.utils.io import InputError, atomic_write_bytes, read_input_bytes

__all__ = ["blob_to_array", "array_to_blob", "compute_mean", "check_mean_shape",
           "write_mean_binaryproto", "read_mean_binaryproto",
           "read_caffemodel", "write_caffemodel", "read_solverstate", "write_solverstate"]


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


def write_mean_binaryproto(path, mean):
    """Write a C x H x W float mean image as a 1 x C x H x W ``BlobProto`` (like ``compute_image_mean``)."""
    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim != 3:
        raise InputError(f"{path}: a mean image is C x H x W, got shape {mean.shape}")
    atomic_write_bytes(path, array_to_blob(mean, legacy_4d=True).SerializeToString())


def read_mean_binaryproto(path):
    """Read a mean ``.binaryproto`` as float32 C x H x W."""
    path = os.fspath(path)
    blob = _read_message(path, caffe_pb2.BlobProto, "mean image (.binaryproto)")
    arr = blob_to_array(blob, source=path)
    if arr.size == 0:
        raise InputError(f"{path}: holds no values; not a mean image")
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise InputError(f"{path}: a mean image has num 1, got shape {arr.shape}")
        arr = arr[0]
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"{path}: the mean image holds {int(bad.sum())} NaN or infinite value(s) (first at "
                         f"channel, y, x = {first}: {arr[first]}); every crop minus it would be NaN: recompute it "
                         "(data_prep/make_lmdb.py)")
    return arr


# --------------------------------------------------------------------------- caffemodel

def _read_message(path, message_cls, what):
    """Parse the binary protobuf file ``path`` as ``message_cls``; InputError naming the file when it
    cannot be read, is empty (an empty file parses as an empty message), or does not parse."""
    path = os.fspath(path)
    msg = message_cls()
    data = read_input_bytes(path)
    if not data:
        raise InputError(f"{path}: empty file (0 bytes), not a {what}")
    try:
        msg.ParseFromString(data)
    except Exception as err:  # protobuf DecodeError, or a RuntimeWarning-style error of the C parser
        raise InputError(f"{path}: not a {what} (binary {message_cls.__name__}: {err})") from None
    return msg


def read_caffemodel(path, with_types=False):
    """Read trained weights: an ordered dict layer name -> list of float32 arrays.

    Layers without blobs are left out.  With ``with_types`` also return a
    dict layer name -> layer type.
    """
    net = _read_message(path, caffe_pb2.NetParameter, "Caffe weights file (.caffemodel)")
    params, types = OrderedDict(), {}
    for layer in net.layer:
        if layer.blobs:
            params[layer.name] = [blob_to_array(b, source=f"{path} layer {layer.name}") for b in layer.blobs]
            types[layer.name] = layer.type
    if not params:
        raise InputError(f"{path}: holds no weights (no layer with blobs); not a trained .caffemodel")
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
    state = _read_message(path, caffe_pb2.SolverState, "Caffe solver state (.solverstate)")
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
