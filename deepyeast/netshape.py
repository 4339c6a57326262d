"""Shape inference for Caffe nets: blob shapes and parameter counts from a prototxt alone.

Used by the model readme's architecture table and by the tests that check
the DeepYeast prototxts have Caffe's parameter shapes (10.99 M learnable
parameters), independently of any engine.  Follows Caffe 1.0's shape rules
(pooling rounds up, ``BatchNorm`` holds mean C, variance C and the
moving-average factor 1, ``Scale`` with ``bias_term`` holds C and C).
Only the layer types of the DeepYeast nets and a few simple ones are known.
"""

import dataclasses
import math

from deepyeast.caffe import caffe_pb2
from deepyeast.utils.io import InputError

_PHASES = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST}


@dataclasses.dataclass
class LayerShape:
    """One layer of a net after shape inference.

    ``top_shapes``: list of tuples (N x C x H x W or N x D); ``param_shapes``:
    list of tuples, the layer's blobs in Caffe's order; ``learnable``: number
    of parameters with a non-zero ``lr_mult``.
    """
    name: str
    type: str
    bottoms: list
    tops: list
    top_shapes: list
    param_shapes: list
    learnable: int

    @property
    def n_params(self):
        return sum(math.prod(s) for s in self.param_shapes)


def layer_in_phase(layer, phase):
    """Does ``layer`` take part in ``phase`` (caffe_pb2.TRAIN/TEST), by its include/exclude phase rules?"""
    if layer.include:
        return any((not r.HasField("phase")) or r.phase == phase for r in layer.include)
    if layer.exclude:
        return not any(r.HasField("phase") and r.phase == phase for r in layer.exclude)
    return True


def _one(values, default, what, layer):
    values = list(values)
    if not values:
        if default is None:
            raise InputError(f'layer "{layer.name}": {what} is required')
        return default
    if len(set(values)) != 1:
        raise InputError(f'layer "{layer.name}": only equal {what} in both dimensions is supported, got {values}')
    return int(values[0])


def _conv(layer, shape):
    p = layer.convolution_param
    k = p.kernel_h if p.HasField("kernel_h") else _one(p.kernel_size, None, "kernel_size", layer)
    s = p.stride_h if p.HasField("stride_h") else _one(p.stride, 1, "stride", layer)
    pad = p.pad_h if p.HasField("pad_h") else _one(p.pad, 0, "pad", layer)
    d = _one(p.dilation, 1, "dilation", layer)
    n, c, h, w = shape
    ke = d * (k - 1) + 1
    out = (n, p.num_output, (h + 2 * pad - ke) // s + 1, (w + 2 * pad - ke) // s + 1)
    params = [(p.num_output, c // p.group, k, k)] + ([(p.num_output,)] if p.bias_term else [])
    return out, params


def _pool(layer, shape):
    p = layer.pooling_param
    n, c, h, w = shape
    if p.global_pooling:
        return (n, c, 1, 1), []
    k = p.kernel_h if p.HasField("kernel_h") else p.kernel_size
    s = p.stride_h if p.HasField("stride_h") else p.stride
    pad = p.pad_h if p.HasField("pad_h") else p.pad
    if not k:
        raise InputError(f'layer "{layer.name}": pooling needs kernel_size')

    def size(x):
        o = int(math.ceil((x + 2 * pad - k) / s)) + 1
        if pad and (o - 1) * s >= x + pad:
            o -= 1
        return o
    return (n, c, size(h), size(w)), []


def _inner_product(layer, shape):
    p = layer.inner_product_param
    axis = p.axis % len(shape)
    k = math.prod(shape[axis:])
    out = tuple(shape[:axis]) + (p.num_output,)
    params = [(k, p.num_output) if p.transpose else (p.num_output, k)] + ([(p.num_output,)] if p.bias_term else [])
    return out, params


def infer_shapes(net, phase="TEST", data_shape=None):
    """Walk ``net`` (a ``NetParameter``) in ``phase`` and return a list of :class:`LayerShape`.

    ``data_shape`` is the C x H x W of records a ``Data`` layer reads (the
    batch size comes from ``data_param``); ``Input`` layers carry their shape.
    """
    phase_id = _PHASES[phase] if isinstance(phase, str) else phase
    blobs = {}
    for name, dims in zip(net.input, net.input_shape):
        blobs[name] = tuple(int(d) for d in dims.dim)
    out = []
    for layer in net.layer:
        if not layer_in_phase(layer, phase_id):
            continue
        try:
            bottoms = [blobs[b] for b in layer.bottom]
        except KeyError as err:
            raise InputError(f'layer "{layer.name}": bottom blob {err.args[0]!r} is not produced earlier') from None
        t = layer.type
        params = []
        if t == "Input":
            tops = [tuple(int(d) for d in s.dim) for s in layer.input_param.shape]
            if len(tops) == 1 and len(layer.top) > 1:
                tops = tops * len(layer.top)
        elif t == "Data":
            if data_shape is None:
                raise InputError(f'layer "{layer.name}": a Data layer needs data_shape (C, H, W) for shape inference')
            n = layer.data_param.batch_size
            tops = [(n,) + tuple(data_shape), (n,)][:len(layer.top)]
        elif t == "Convolution":
            top, params = _conv(layer, bottoms[0])
            tops = [top]
        elif t == "Pooling":
            top, params = _pool(layer, bottoms[0])
            tops = [top]
        elif t == "InnerProduct":
            top, params = _inner_product(layer, bottoms[0])
            tops = [top]
        elif t == "BatchNorm":
            c = bottoms[0][1]
            params = [(c,), (c,), (1,)]
            tops = [bottoms[0]]
        elif t == "Scale":
            if len(bottoms) > 1:
                raise InputError(f'layer "{layer.name}": Scale with a second bottom is not supported here')
            p = layer.scale_param
            axis = p.axis % len(bottoms[0])
            n_axes = len(bottoms[0]) - axis if p.num_axes == -1 else p.num_axes
            sshape = tuple(bottoms[0][axis:axis + n_axes])
            params = [sshape] + ([sshape] if p.bias_term else [])
            tops = [bottoms[0]]
        elif t in ("ReLU", "Dropout", "Softmax", "Sigmoid", "TanH", "AbsVal", "Power", "Exp", "Log", "BNLL"):
            tops = [bottoms[0]]
        elif t == "Flatten":
            s = bottoms[0]
            tops = [(s[0], math.prod(s[1:]))]
        elif t in ("SoftmaxWithLoss", "EuclideanLoss", "Accuracy"):
            tops = [()] * len(layer.top)
        elif t == "Silence":
            tops = []
        else:
            raise InputError(f'layer "{layer.name}": shape inference does not know layer type {t!r}')
        for name, shape in zip(layer.top, tops):
            blobs[name] = shape
        learnable = 0
        for i, shape in enumerate(params):
            lr = layer.param[i].lr_mult if i < len(layer.param) else 1.0
            if lr != 0:
                learnable += math.prod(shape)
        out.append(LayerShape(layer.name, t, list(layer.bottom), list(layer.top), tops, params, learnable))
    return out


def count_learnable(net, phase="TEST", data_shape=None):
    """Total learnable parameters (blobs with non-zero ``lr_mult``) of ``net``."""
    return sum(ls.learnable for ls in infer_shapes(net, phase, data_shape))


def random_params(net, seed=0, data_shape=None, bn_factor=0.8, input_scale=1.0):
    """Random but well-scaled weights for every parameter layer of ``net``, in Caffe's shapes.

    Returns ``(params, types)``: an ordered dict layer name -> list of float32
    arrays, and layer name -> type, ready for :func:`deepyeast.formats.write_caffemodel`.
    Weights are He-normal, biases small; ``BatchNorm`` layers get non-trivial
    running statistics (mean around 0, variance in [0.5, 2], both stored
    multiplied by ``bn_factor``, which is the moving-average factor Caffe divides
    by) and ``Scale`` layers gammas around 1 and betas around 0.  Used to test
    that engines agree on weights whose every blob matters.
    """
    import numpy as np
    from collections import OrderedDict

    rng = np.random.default_rng(seed)
    params, types = OrderedDict(), {}
    first = True
    for ls in infer_shapes(net, "TEST", data_shape):
        if not ls.param_shapes:
            continue
        shapes = ls.param_shapes
        if ls.type == "BatchNorm":
            c = shapes[0][0]
            mean = rng.normal(0.0, 0.3, c) * bn_factor
            var = rng.uniform(0.5, 2.0, c) * bn_factor
            blobs = [mean, var, np.array([bn_factor])]
        elif ls.type == "Scale":
            blobs = [rng.normal(1.0, 0.1, shapes[0])] + [rng.normal(0.0, 0.1, s) for s in shapes[1:]]
        else:
            fan_in = math.prod(shapes[0][1:])
            std = math.sqrt(2.0 / fan_in) / (input_scale if first else 1.0)
            first = False
            blobs = [rng.normal(0.0, std, shapes[0])]
            blobs += [rng.normal(0.0, 0.05, s) for s in shapes[1:]]
        params[ls.name] = [np.asarray(b, dtype=np.float32) for b in blobs]
        types[ls.name] = ls.type
    return params, types
