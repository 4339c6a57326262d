"""Fold BatchNorm (+ Scale) into the preceding Convolution / InnerProduct, for deploy.

In the TEST phase a BatchNorm with global statistics and the Scale after it
are one affine map per channel,

    y = ((x - mean) / sqrt(var + eps)) * gamma + beta  =  a * x + c,
    a = gamma / sqrt(var + eps),   c = beta - a * mean,

and ``x`` is the output of a Convolution or InnerProduct ``x = W * in + b``.
So ``y = (a W) * in + (a b + c)``: the weights of each output channel are
scaled by ``a`` and the bias becomes ``a (b - mean) + beta``.  The folded
net has no BatchNorm or Scale layers and computes the same function with two
fewer passes over every activation.  The folded parameters are computed in
float64 (``b - mean`` is a difference of two large numbers when the
statistics are large) and rounded to float32 once.

``mean`` and ``var`` are Caffe's: ``blob0 / blob2`` and ``blob1 / blob2``
(0 when ``blob2`` is 0), ``eps`` from ``batch_norm_param`` (default 1e-5).

The folded net is a TEST-phase net: layers that are not active in the TEST
phase are left out.  It is an ordinary prototxt + ``.caffemodel`` pair that
our engine and real Caffe both run (:func:`write_folded`).

A chain is folded only when it is exactly Caffe's pattern: the BatchNorm is the
next layer after the Convolution / InnerProduct and reads its top, the Scale
(optional) is the next layer after the BatchNorm and reads its top, has its
own scale blob on the channel axis (axis 1, one axis), and no other layer
reads an intermediate blob (in-place chains, as in DeepYeast, qualify; their
blob names are unchanged).  Blobs named in ``keep`` are never folded away.
"""

import os
from collections import OrderedDict

import numpy as np

from deepyeast.caffe import caffe_pb2
from deepyeast.caffe.blobs import blob_to_array, read_caffemodel, write_caffemodel
from deepyeast.caffe.prototxt import read_prototxt, write_prototxt
from deepyeast.constants import INFERENCE_PRECISIONS
from deepyeast.engine.net import filter_layers
from deepyeast.utils.io import InputError

__all__ = ["fold_batchnorm", "fold_files", "write_folded", "deploy_net", "PRECISIONS"]

_FOLD_INTO = ("Convolution", "InnerProduct")


def _as_vector(array, n, what):
    v = np.asarray(array, dtype=np.float64).reshape(-1)
    if v.size != n:
        raise InputError(f"{what}: {v.size} values, the layer it folds into has {n} output channels")
    return v


def _readers(layers, blob, start):
    """Indices of the layers from ``start`` on that read the value ``blob`` has before layer ``start``."""
    out = []
    for k in range(start, len(layers)):
        if blob in layers[k].bottom:
            out.append(k)
        if blob in layers[k].top:
            break  # a new value from here on
    return out


def _weights_of(lp, weights, n_blobs=None):
    arrays = weights.get(lp.name)
    if arrays is None and lp.blobs:
        arrays = [blob_to_array(b, source=f'layer "{lp.name}" blob {j}') for j, b in enumerate(lp.blobs)]
    if arrays is None:
        raise InputError(f'layer "{lp.name}" ({lp.type}): no weights given for it; cannot fold')
    if n_blobs is not None and len(arrays) != n_blobs:
        raise InputError(f'layer "{lp.name}" ({lp.type}): {len(arrays)} blobs, expected {n_blobs}')
    return [np.asarray(a) for a in arrays]


def _chain_at(layers, i, keep):
    """(BatchNorm index, Scale index or None) of a foldable chain starting at layer ``i``, or None."""
    lp = layers[i]
    if lp.type not in _FOLD_INTO or len(lp.top) != 1 or i + 1 >= len(layers):
        return None
    axis = lp.inner_product_param.axis if lp.type == "InnerProduct" else lp.convolution_param.axis
    if axis != 1:
        return None  # BatchNorm normalizes axis 1; the outputs would be on another axis
    top = lp.top[0]
    bn = layers[i + 1]
    if (bn.type != "BatchNorm" or list(bn.bottom) != [top] or len(bn.top) != 1 or bn.loss_weight
            or bn.propagate_down or _readers(layers, top, i + 1) != [i + 1]):
        return None
    if bn.top[0] != top and top in keep:
        return None  # the product's own output must stay readable
    if bn.batch_norm_param.HasField("use_global_stats") and not bn.batch_norm_param.use_global_stats:
        return None  # batch statistics even in TEST: not an affine map
    cur = bn.top[0]
    if i + 2 < len(layers):
        sc = layers[i + 2]
        p = sc.scale_param
        if (sc.type == "Scale" and list(sc.bottom) == [cur] and len(sc.top) == 1 and not sc.loss_weight
                and not sc.propagate_down and p.axis == 1 and p.num_axes == 1
                and _readers(layers, cur, i + 2) == [i + 2] and (sc.top[0] == cur or cur not in keep)):
            return i + 1, i + 2
    return i + 1, None


def fold_batchnorm(net_param, weights, keep=()):
    """Fold every foldable BatchNorm (+ Scale) chain of ``net_param``'s TEST phase.

    Parameters
    ----------
    net_param : caffe_pb2.NetParameter
        The net (deploy or train_val); only its TEST-phase layers are kept.
    weights : dict
        Layer name -> list of float32 arrays (what :func:`deepyeast.caffe.blobs.read_caffemodel`
        returns); blobs inside the prototxt (``layer.blobs``) are used for layers it lacks.
    keep : iterable of str
        Blob names that must stay readable with their unfolded values (feature
        blobs); a chain whose intermediate blob is named here is not folded.

    Returns
    -------
    (folded NetParameter, OrderedDict layer name -> list of float32 arrays, list of folded chains)
        Each chain is a tuple of the layer names merged (product, BatchNorm[, Scale]).
    """
    keep = set(keep)
    layers = filter_layers(net_param, "TEST")
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    del out.layer[:]
    new_weights = OrderedDict()
    chains = []
    i = 0
    while i < len(layers):
        found = _chain_at(layers, i, keep)
        lp = layers[i]
        if found is None:
            out.layer.add().CopyFrom(lp)
            if lp.name in weights:  # (blobs inside the prototxt travel with the layer)
                new_weights[lp.name] = [np.asarray(a, np.float32) for a in weights[lp.name]]
            i += 1
            continue
        bn_i, scale_i = found
        bn = layers[bn_i]
        sc = layers[scale_i] if scale_i is not None else None
        w_arrays = _weights_of(lp, weights)
        w = np.asarray(w_arrays[0], dtype=np.float64)
        if lp.type == "Convolution":
            n_out = int(lp.convolution_param.num_output)
            has_bias = lp.convolution_param.bias_term
        else:
            n_out = int(lp.inner_product_param.num_output)
            has_bias = lp.inner_product_param.bias_term
        transpose = lp.type == "InnerProduct" and lp.inner_product_param.transpose
        while lp.type == "InnerProduct" and w.ndim > 2 and w.shape[0] == 1:
            w = w[0]  # a legacy 4-D blob (1, 1, out, in)
        out_axis = 1 if transpose else 0
        if w.ndim < 2 or w.shape[out_axis] != n_out:
            raise InputError(f'layer "{lp.name}" ({lp.type}): weight blob of shape {w.shape} does not have '
                             f"num_output {n_out} on axis {out_axis}")
        b = _as_vector(w_arrays[1], n_out, f'layer "{lp.name}" bias') if has_bias else np.zeros(n_out)
        s0, s1, s2 = _weights_of(bn, weights, 3)
        factor = float(np.asarray(s2, np.float64).reshape(-1)[0])
        factor = 0.0 if factor == 0 else 1.0 / factor
        mean = _as_vector(s0, n_out, f'layer "{bn.name}" mean') * factor
        var = _as_vector(s1, n_out, f'layer "{bn.name}" variance') * factor
        a = 1.0 / np.sqrt(var + float(bn.batch_norm_param.eps))
        beta = np.zeros(n_out)
        if sc is not None:
            sw = _weights_of(sc, weights)
            gamma = _as_vector(sw[0], n_out, f'layer "{sc.name}" scale')
            if sc.scale_param.bias_term:
                if len(sw) != 2:
                    raise InputError(f'layer "{sc.name}" (Scale): bias_term needs 2 blobs, got {len(sw)}')
                beta = _as_vector(sw[1], n_out, f'layer "{sc.name}" bias')
            a = a * gamma
        bias = a * (b - mean) + beta
        view = [1] * w.ndim
        view[out_axis] = n_out
        folded = lp.__class__()
        folded.CopyFrom(lp)
        folded.top[0] = (sc if sc is not None else bn).top[0]
        if lp.type == "Convolution":
            folded.convolution_param.bias_term = True
        else:
            folded.inner_product_param.bias_term = True
        del folded.blobs[:]
        out.layer.add().CopyFrom(folded)
        new_weights[lp.name] = [(w * a.reshape(view)).astype(np.float32), bias.astype(np.float32)]
        chains.append(tuple(x.name for x in (lp, bn, sc) if x is not None))
        i = (scale_i if scale_i is not None else bn_i) + 1
    return out, new_weights, chains


def write_folded(model_out, weights_out, net_param, weights):
    """Write a folded net as ``model_out`` (prototxt) and ``weights_out`` (.caffemodel), each atomically."""
    types = {lp.name: lp.type for lp in net_param.layer}
    write_caffemodel(weights_out, weights, net_name=net_param.name, layer_types=types)
    write_prototxt(model_out, net_param)


def fold_files(model, weights, model_out, weights_out, keep=()):
    """Fold ``model`` (prototxt path) with ``weights`` (.caffemodel path) into two new files.

    Returns the list of folded chains (see :func:`fold_batchnorm`).
    """
    net_param = read_prototxt(model, caffe_pb2.NetParameter)
    folded, new_weights, chains = fold_batchnorm(net_param, read_caffemodel(weights), keep=keep)
    write_folded(model_out, weights_out, folded, new_weights)
    return chains


PRECISIONS = INFERENCE_PRECISIONS


def deploy_net(model, weights, precision="fp32", fold=True, keep=(), device="cpu", seed=0):
    """A TEST-phase :class:`~deepyeast.engine.Net` set up for inference only.

    Parameters
    ----------
    model, weights
        Prototxt path or NetParameter; .caffemodel path or dict layer name -> arrays.
    precision : {"fp32", "bf16"}
        ``bf16``: the weights of every Convolution but the first are stored in
        bfloat16 and those layers compute in bfloat16 (float32 accumulation in
        oneDNN / cuDNN); the first convolution (raw mean-subtracted pixels),
        the fully connected layers and the softmax stay float32, so the
        probabilities are float32 numbers.  About 2x the float32 speed on a
        CPU with AVX512-BF16; a few class calls near a tie change.
    fold : bool
        Fold BatchNorm + Scale into the preceding layer (:func:`fold_batchnorm`);
        equal to the unfolded net within float32 rounding (~1e-6 relative).
    keep
        Blob names that must keep their unfolded values (see :func:`fold_batchnorm`).

    Parameters do not require gradients; run it under ``torch.inference_mode()``.
    """
    import torch
    from deepyeast.engine.net import Net
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not isinstance(model, caffe_pb2.NetParameter):
        model = read_prototxt(model, caffe_pb2.NetParameter)
    where = "weights"
    if not isinstance(weights, dict):
        where = os.fspath(weights)
        weights = read_caffemodel(weights)
    if fold:
        model, weights, _ = fold_batchnorm(model, weights, keep=keep)
    net = Net(model, phase="TEST", device=device, seed=seed)
    net.load_weights(weights, where=where)
    net.requires_grad_(False)
    if precision == "bf16":
        convs = [layer for layer in net.layers if layer.caffe_type == "Convolution"]
        for layer in convs[1:]:
            for t in layer.blobs:
                t.data = t.data.to(torch.bfloat16)
    return net
