"""Normalization layers: ``BatchNorm`` (Caffe 1.0, no affine part), ``Scale``, ``Bias``."""

import math

import torch
import torch.nn.functional as F

from deepyeast.caffe import caffe_pb2
from deepyeast.engine.layers.base import Layer, register_layer, shape_str


@register_layer
class BatchNormLayer(Layer):
    """``BatchNorm`` as in Caffe 1.0 (no affine part; a Scale layer follows).

    Blobs (buffers, never learned): 0 = running sum of means (C,), 1 = running
    sum of (m/(m-1)-corrected) variances (C,), 2 = the scale factor (1,).  The
    statistics are ``blob / blob2`` (0 when blob2 is 0).  In a TRAIN forward
    with batch statistics, with f = moving_average_fraction and m = N*H*W:
    ``blob2 = f*blob2 + 1``, ``blob0 = f*blob0 + mean``,
    ``blob1 = f*blob1 + m/(m-1) * var`` (var biased); output
    ``(x - mean) / sqrt(var + eps)``.
    """

    caffe_type = "BatchNorm"
    param_fields = {"batch_norm_param": {"use_global_stats", "moving_average_fraction", "eps"}}

    def setup(self, bottom_shapes):
        p = self.lp.batch_norm_param
        (shape,) = bottom_shapes
        if len(shape) < 2:
            raise self.error(f"needs a bottom with a channel axis, got {shape_str(shape)}")
        if p.HasField("use_global_stats"):
            self.use_global_stats = bool(p.use_global_stats)
        else:
            self.use_global_stats = self.ctx.phase == "TEST"
        self.fraction = float(p.moving_average_fraction)
        self.eps = float(p.eps)
        c = int(shape[1])
        for spec in self.lp.param:
            if spec.lr_mult != 0:
                raise self.error("BatchNorm statistics cannot be learned: its param lr_mult must be 0")
        self.add_blob(torch.zeros(c), learnable=False)
        self.add_blob(torch.zeros(c), learnable=False)
        self.add_blob(torch.zeros(1), learnable=False)
        self.channels = c
        return [tuple(shape)]

    def global_stats(self):
        """(mean, var) from the running blobs, float32 (C,)."""
        s = self.blob2[0]
        factor = torch.where(s == 0, torch.zeros_like(s), 1.0 / s)
        return self.blob0 * factor, self.blob1 * factor

    def tmp_stats(self, x):
        """Fresh (C,) buffers that torch's batch_norm fills with the batch mean and the
        m/(m-1)-corrected batch variance (momentum 1), m = count / channels."""
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # float64: reference runs in tests
        return (torch.zeros(self.channels, device=x.device, dtype=dtype),
                torch.zeros(self.channels, device=x.device, dtype=dtype))

    @torch.no_grad()
    def update_running(self, batch_mean, batch_var_corrected):
        """Caffe's moving-average update of the three blobs from one batch."""
        f = self.fraction
        self.blob2.mul_(f).add_(1.0)
        self.blob0.mul_(f).add_(batch_mean)
        self.blob1.mul_(f).add_(batch_var_corrected)

    def normalize(self, x, weight=None, bias=None):
        """BatchNorm of ``x`` (optionally followed by Scale's weight/bias, fused), updating blobs in TRAIN."""
        if self.use_global_stats:
            mean, var = self.global_stats()
            return F.batch_norm(x, mean, var, weight, bias, training=False, momentum=0.0, eps=self.eps)
        if x.numel() // x.shape[1] <= 1:
            # torch refuses a single value per channel; Caffe gives (x - x) / sqrt(eps) = 0
            dims = [0] + list(range(2, x.dim()))
            mean = x.mean(dim=dims, keepdim=True)
            self.update_running(mean.detach().flatten(), torch.zeros(self.channels, device=x.device))
            y = (x - mean) * (1.0 / math.sqrt(self.eps))
            view = (1, -1) + (1,) * (x.dim() - 2)
            if weight is not None:
                y = y * weight.view(view)
            if bias is not None:
                y = y + bias.view(view)
            return y
        tm, tv = self.tmp_stats(x)
        y = F.batch_norm(x, tm, tv, weight, bias, training=True, momentum=1.0, eps=self.eps)
        self.update_running(tm, tv)
        return y

    def forward(self, bottoms):
        return [self.normalize(bottoms[0])]


def _axes_shape(layer, shape, axis, num_axes, what):
    """Parameter shape bottom.shape[axis : axis+num_axes] (num_axes -1 = to the end)."""
    axis = layer.canonical_axis(axis, max(len(shape), 1), f"{what}.axis")
    if num_axes < -1:
        raise layer.error(f"{what}.num_axes must be >= -1")
    end = len(shape) if num_axes == -1 else axis + num_axes
    if end > len(shape):
        raise layer.error(f"{what}: axis {axis} + num_axes {num_axes} exceeds the bottom's "
                          f"{len(shape)} axes {shape_str(shape)}")
    return axis, tuple(shape[axis:end])


def _broadcast_view(t, axis, ndim):
    """View a parameter of shape bottom.shape[axis:axis+k] for broadcasting over an ndim blob."""
    k = t.dim()
    return t.reshape((1,) * axis + tuple(t.shape) + (1,) * (ndim - axis - k))


@register_layer
class ScaleLayer(Layer):
    """``Scale``: y = x * scale (+ bias); scale is a blob, or bottom 1 when given."""

    caffe_type = "Scale"
    param_fields = {"scale_param": {"axis", "num_axes", "filler", "bias_term", "bias_filler"}}
    n_bottoms = (1, 2)

    def setup(self, bottom_shapes):
        p = self.lp.scale_param
        shape = bottom_shapes[0]
        if len(bottom_shapes) == 2:
            sshape = tuple(bottom_shapes[1])
            self.axis = self.canonical_axis(p.axis, max(len(shape), 1), "scale_param.axis") if sshape else 0
            if tuple(shape[self.axis:self.axis + len(sshape)]) != sshape:
                raise self.error(f"scale bottom shape {shape_str(sshape)} does not match bottom 0 "
                                 f"{shape_str(shape)} from axis {self.axis}")
            if p.HasField("filler"):
                raise self.error("scale_param.filler is unused when the scale is bottom 1")
            self.own_scale = False
            pshape = sshape
        else:
            self.axis, pshape = _axes_shape(self, shape, p.axis, p.num_axes, "scale_param")
            filler = p.filler
            if not p.HasField("filler"):
                filler = caffe_pb2.FillerParameter(type="constant", value=1.0)
            self.filled_blob(pshape, filler, 0)
            self.own_scale = True
        self.bias_term = bool(p.bias_term)
        if self.bias_term:
            self.bias_index = len(self._blob_names)
            self.filled_blob(pshape, p.bias_filler, self.bias_index)
        elif p.HasField("bias_filler"):
            raise self.error("scale_param.bias_filler is set but bias_term is false")
        self.ndim = len(shape)
        return [tuple(shape)]

    def scale_bias(self, bottoms):
        scale = self.blob0 if self.own_scale else bottoms[1]
        bias = self.blobs[self.bias_index] if self.bias_term else None
        return scale, bias

    def forward(self, bottoms):
        x = bottoms[0]
        scale, bias = self.scale_bias(bottoms)
        y = x * _broadcast_view(scale, self.axis, x.dim())
        if bias is not None:
            y = y + _broadcast_view(bias, self.axis, x.dim())
        return [y]


@register_layer
class BiasLayer(Layer):
    """``Bias``: y = x + bias; bias is a blob, or bottom 1 when given."""

    caffe_type = "Bias"
    param_fields = {"bias_param": {"axis", "num_axes", "filler"}}
    n_bottoms = (1, 2)

    def setup(self, bottom_shapes):
        p = self.lp.bias_param
        shape = bottom_shapes[0]
        if len(bottom_shapes) == 2:
            bshape = tuple(bottom_shapes[1])
            self.axis = self.canonical_axis(p.axis, max(len(shape), 1), "bias_param.axis") if bshape else 0
            if tuple(shape[self.axis:self.axis + len(bshape)]) != bshape:
                raise self.error(f"bias bottom shape {shape_str(bshape)} does not match bottom 0 "
                                 f"{shape_str(shape)} from axis {self.axis}")
            self.own_bias = False
        else:
            self.axis, pshape = _axes_shape(self, shape, p.axis, p.num_axes, "bias_param")
            self.filled_blob(pshape, p.filler, 0)
            self.own_bias = True
        return [tuple(shape)]

    def forward(self, bottoms):
        x = bottoms[0]
        b = self.blob0 if self.own_bias else bottoms[1]
        return [x + _broadcast_view(b, self.axis, x.dim())]

