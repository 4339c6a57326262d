"""Shape questions a :class:`~deepyeast.engine.Net` answers from its own layers: the blobs the
analyses use, each blob's receptive field in input pixels, random weights in Caffe's shapes, the
FLOPs of its products.

The shapes and receptive fields come from the layers' ``setup`` (top and parameter shapes) and
``spatial_window`` (kernel, stride, pad), so a new layer type is understood there as soon as the
engine runs it; the FLOP count knows the two product types (Convolution, InnerProduct), whose
arithmetic is nearly all of a net's.  Build the net with :meth:`deepyeast.engine.Net.for_shapes` when
only shapes are needed.
"""

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from deepyeast.engine.layers.base import blob_count

__all__ = ["BlobGeometry", "blob_geometry", "learned_blobs", "random_weights", "flop_counts"]


@dataclass(frozen=True)
class BlobGeometry:
    """Per-cell shape and receptive field of one blob (see :meth:`Net.geometry`).

    ``channels, height, width``: the blob per cell (1 x 1 for an inner product's).
    ``receptive_field``: side, in input pixels, of the square one unit sees (the whole input
    for ``kind == "fc"``).  ``jump``: input pixels between neighbouring units.  ``start``:
    input-pixel coordinate of the centre of unit (0, 0) (x.5 for an even receptive field).
    ``kind``: "input", "conv", "pool", "fc" or "map" (another spatial layer).
    """

    name: str
    kind: str
    channels: int
    height: int
    width: int
    receptive_field: int
    jump: int
    start: float

    @property
    def size(self):
        """Values per cell (C * H * W)."""
        return self.channels * self.height * self.width



def learned_blobs(net):
    """Blobs produced (not in place) by layers with learnable parameters, input side first:
    for DeepYeast conv1 .. conv8, fc1, fc2, fc3 -- the features the analyses use."""
    out = []
    for layer in net.layers:
        specs = net._param_specs[layer.name]
        if any(lr != 0 for lr, _ in specs):
            for i, t in enumerate(layer.top_names):
                if not (i < len(layer.bottom_names) and layer.bottom_names[i] == t) and t not in out:
                    out.append(t)
    return out

def blob_geometry(net):
    """OrderedDict blob name -> :class:`BlobGeometry` (per-cell shape and receptive field in input pixels).

    Follows every layer's :meth:`~deepyeast.engine.layers.base.Layer.spatial_window` from the
    input blobs (receptive field 1, jump 1, centre 0) with the usual recurrences, on the H axis
    (square inputs): ``r_out = r_in + (k - 1) * j_in``, ``s_out = s_in + ((k - 1) / 2 - pad) * j_in``,
    ``j_out = j_in * stride``.  A blob without spatial axes (an inner product's) sees the whole input.
    In-place layers keep their blob's geometry.
    """
    geo = OrderedDict()
    image = None
    for layer in net.layers:
        window = layer.spatial_window() if layer.bottom_names else None
        for i, (top, shape) in enumerate(zip(layer.top_names, layer.top_shapes)):
            if i < len(layer.bottom_names) and layer.bottom_names[i] == top and top in geo:
                continue  # in place: same blob, same geometry
            shape = tuple(shape)
            channels = int(shape[1]) if len(shape) > 1 else 1
            height = int(shape[2]) if len(shape) > 2 else 1
            width = int(shape[3]) if len(shape) > 3 else 1
            kind = {"Convolution": "conv", "Pooling": "pool"}.get(layer.caffe_type)
            if not layer.bottom_names:  # an input blob
                if image is None and len(shape) == 4:
                    image = height
                geo[top] = BlobGeometry(top, "input", channels, height, width, 1, 1, 0.0)
                continue
            src = geo.get(layer.bottom_names[0])
            if len(shape) < 4 or window is None or src is None or src.kind == "fc":
                side = image or height
                geo[top] = BlobGeometry(top, "fc" if len(shape) < 4 else (kind or "map"), channels, height,
                                        width, side, side, (side - 1) / 2)
                continue
            k, s, pad = window
            kind = kind or (src.kind if src.kind != "input" else "map")
            geo[top] = BlobGeometry(top, kind, channels, height, width, src.receptive_field + (k - 1) * src.jump,
                                    src.jump * s, src.start + ((k - 1) / 2 - pad) * src.jump)
    return geo

def random_weights(net, seed=0, bn_factor=0.8, input_scale=1.0):
    """Random but well-scaled values for every parameter blob, in Caffe's shapes.

    Returns ``(params, types)``: an ordered dict layer name -> list of float32 arrays and
    layer name -> type, ready for :func:`deepyeast.caffe.blobs.write_caffemodel`.  Weights are
    He-normal (the first layer's divided by ``input_scale``), biases small; ``BatchNorm`` gets
    non-trivial running statistics (mean around 0, variance in [0.5, 2], both multiplied by
    ``bn_factor``, the moving-average factor Caffe divides by), ``Scale`` gammas around 1 and
    betas around 0.  For tests that engines agree on weights whose every blob matters.
    """
    rng = np.random.default_rng(seed)
    params, types = OrderedDict(), {}
    first = True
    for name, shapes in net.param_shapes().items():
        caffe_type = net._by_name[name].caffe_type
        if caffe_type == "BatchNorm":
            c = shapes[0][0]
            blobs = [rng.normal(0.0, 0.3, c) * bn_factor, rng.uniform(0.5, 2.0, c) * bn_factor,
                     np.array([bn_factor])]
        elif caffe_type == "Scale":
            blobs = [rng.normal(1.0, 0.1, shapes[0])] + [rng.normal(0.0, 0.1, s) for s in shapes[1:]]
        else:
            fan_in = math.prod(shapes[0][1:])
            std = math.sqrt(2.0 / fan_in) / (input_scale if first else 1.0)
            first = False
            blobs = [rng.normal(0.0, std, shapes[0])] + [rng.normal(0.0, 0.05, s) for s in shapes[1:]]
        params[name] = [np.asarray(b, dtype=np.float32) for b in blobs]
        types[name] = caffe_type
    return params, types


def flop_counts(net):
    """Arithmetic of every Convolution and InnerProduct of ``net`` at its blob shapes.

    Returns an OrderedDict layer name -> (forward, weight gradient, input
    gradient) in FLOPs, a multiply-add counting 2.  Each of the three is
    one product of the same size (forward ``y = W x``, ``dW = dy x^T``,
    ``dx = W^T dy``), so a training iteration is up to 3x the forward.  The
    input gradient is 0 where Caffe computes no bottom diff: the bottom
    needs no backward (it comes from data through layers without learned
    parameters, like ``conv1``'s) or ``propagate_down`` is false.  The
    weight gradient is 0 for lr_mult 0.  Bias additions, BatchNorm, Scale,
    ReLU, pooling and softmax (elementwise, well under 1% here) are not
    counted.
    """
    out = OrderedDict()
    needs_backward = set()
    for step in net._steps:
        for k, layer in enumerate(step.layers):
            specs = net._param_specs[layer.name]
            learned = any(lr != 0.0 and layer.blob_is_parameter(i) for i, (lr, _) in enumerate(specs))
            propagate = step.propagate if k == 0 and step.propagate is not None else [True] * len(
                layer.bottom_names)
            into = [b in needs_backward and p for b, p in zip(layer.bottom_names, propagate)]
            if layer.caffe_type == "Convolution":
                n, c_out, h, w = layer.top_shapes[0]
                per_output = blob_count(layer.blob0.shape, 1)  # (in / group) x kh x kw
                fwd = 2 * n * c_out * h * w * per_output
            elif layer.caffe_type == "InnerProduct":
                rows = blob_count(layer.bottom_shapes[0], 0, layer.axis)
                fwd = 2 * rows * layer.in_features * layer.top_shapes[0][-1]
            else:
                fwd = None
            if fwd is not None:
                out[layer.name] = (fwd, fwd if specs[0][0] != 0.0 else 0, fwd if any(into) else 0)
            if learned or any(into):
                needs_backward.update(layer.top_names)
    return out
