"""Caffe's protobuf text format (prototxt) for nets and solvers: read, parse with errors that
name the file, line, column and layer, write.
"""

import os
import re

from google.protobuf import text_format

from deepyeast.caffe import caffe_pb2
from deepyeast.utils.io import InputError, atomic_write_text, read_input_bytes

__all__ = ["read_prototxt", "parse_prototxt", "write_prototxt", "CAFFE_LAYER_TYPES", "check_layer_types"]


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
    data = read_input_bytes(path)
    what = "solver" if message_cls is caffe_pb2.SolverParameter else "net" \
        if message_cls is caffe_pb2.NetParameter else message_cls.__name__
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not a text {what} prototxt (byte {err.start} is not UTF-8 text; "
                         "a binary file?)") from None
    if "\x00" in text:
        raise InputError(f"{path}: not a text {what} prototxt (it holds NUL bytes; a binary file?)")
    if not text.strip() and message_cls is caffe_pb2.SolverParameter:
        raise InputError(f"{path}: empty file, not a solver prototxt")
    return parse_prototxt(text, message_cls, source=path)


def write_prototxt(path, message):
    """Write ``message`` in protobuf text format to ``path`` (atomically)."""
    atomic_write_text(path, text_format.MessageToString(message))
