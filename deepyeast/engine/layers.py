"""Caffe layers as torch modules, with Caffe's exact forward semantics.

Every layer is built from a ``caffe_pb2.LayerParameter`` and the shapes of its
bottom blobs (Caffe's ``LayerSetUp`` + ``Reshape``): it creates its parameter
blobs in Caffe's order and shapes, computes its top shapes (so a net whose
shapes do not chain fails at construction, naming the layer and the shapes),
and rejects any parameter field it does not implement.

Gradients are torch autograd of the forward pass.  Where Caffe's backward is
not the exact derivative of its forward (the clamp in SoftmaxWithLoss, the
tie rule of Eltwise MAX), the forward is written so that autograd gives
Caffe's gradient.

Blobs are float32 tensors in Caffe's N x C x H x W layout (a layer may hand
on channels-last strides; values and shapes are unchanged).
"""

import math

import torch
import torch.nn.functional as F

from ..io_utils import InputError
from .fillers import fill

__all__ = ["Layer", "LAYER_TYPES", "register_layer", "FLT_MIN", "FLT_MAX"]

FLT_MIN = 1.1754943508222875e-38
FLT_MAX = 3.4028234663852886e+38

# LayerParameter fields every layer type accepts
_COMMON_FIELDS = {"name", "type", "bottom", "top", "phase", "loss_weight", "param", "blobs",
                  "propagate_down", "include", "exclude"}

LAYER_TYPES = {}


def register_layer(cls):
    """Class decorator: make ``cls`` the implementation of Caffe type ``cls.caffe_type``."""
    LAYER_TYPES[cls.caffe_type] = cls
    return cls


def _shape_str(shape):
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _count(shape, start=0, end=None):
    n = 1
    for s in tuple(shape)[start:end]:
        n *= int(s)
    return n


class Layer(torch.nn.Module):
    """Base class: one Caffe layer.

    Subclasses set ``caffe_type``, ``param_fields`` (which ``*_param`` messages
    of the LayerParameter they read, each mapped to the set of its fields they
    implement), ``n_bottoms`` / ``n_tops`` ((min, max) counts), and implement
    ``setup(bottom_shapes) -> top_shapes`` and ``forward(bottoms) -> tops``.
    """

    caffe_type = None
    param_fields = {}
    n_bottoms = (1, 1)
    n_tops = (1, 1)
    is_loss = False          # default loss_weight 1 on top 0 (Caffe's LossLayer)
    has_data_source = False  # Data / Input / DummyData produce blobs without bottoms

    def __init__(self, lp, ctx, bottom_shapes):
        super().__init__()
        self.lp = lp
        self.name = lp.name
        self.ctx = ctx
        self.bottom_names = list(lp.bottom)
        self.top_names = list(lp.top)
        self._blob_names = []
        self._blob_learnable = []
        self._check_fields()
        self._check_counts()
        self.bottom_shapes = [tuple(s) for s in bottom_shapes]
        self.top_shapes = [tuple(int(d) for d in s) for s in self.setup(self.bottom_shapes)]

    # ------------------------------------------------------------------ helpers
    def where(self):
        """'layer "name" (Type)' for messages."""
        return f'layer "{self.name}" ({self.caffe_type})'

    def error(self, message):
        """An InputError naming this layer."""
        return InputError(f"{self.where()}: {message}")

    def _check_fields(self):
        allowed = _COMMON_FIELDS | set(self.param_fields)
        for field, value in self.lp.ListFields():
            if field.name not in allowed:
                raise self.error(f"field '{field.name}' is not supported for this layer type")
            if field.name in self.param_fields:
                implemented = self.param_fields[field.name]
                for sub, _ in value.ListFields():
                    if sub.name not in implemented:
                        raise self.error(f"field '{field.name}.{sub.name}' is not supported")

    def _check_counts(self):
        for what, names, (lo, hi) in (("bottom", self.bottom_names, self.n_bottoms),
                                      ("top", self.top_names, self.n_tops)):
            n = len(names)
            if n < lo or (hi is not None and n > hi):
                want = f"{lo}" if lo == hi else (f"{lo} to {hi}" if hi is not None else f"at least {lo}")
                raise self.error(f"needs {want} {what} blob(s), got {n}")

    def canonical_axis(self, axis, ndim, what="axis"):
        """Caffe's CanonicalAxisIndex: negative axes count from the end."""
        if not -ndim <= axis < ndim:
            raise self.error(f"{what} {axis} is out of range for a blob with {ndim} axes")
        return axis + ndim if axis < 0 else axis

    def add_blob(self, tensor, learnable=True):
        """Register a parameter blob (Caffe order = call order); returns the tensor on the device."""
        idx = len(self._blob_names)
        name = f"blob{idx}"
        tensor = tensor.to(device=self.ctx.device, dtype=torch.float32)
        if learnable:
            self.register_parameter(name, torch.nn.Parameter(tensor))
        else:
            self.register_buffer(name, tensor)
        self._blob_names.append(name)
        self._blob_learnable.append(learnable)
        return getattr(self, name)

    def filled_blob(self, shape, filler, index, learnable=True):
        """Add a blob of ``shape`` filled by ``filler`` (a FillerParameter)."""
        t = fill(shape, filler, self.ctx.filler_generator, where=f"{self.where()} blob {index}")
        return self.add_blob(t, learnable)

    @property
    def blobs(self):
        """Parameter blobs in Caffe's order (tensors in Caffe's shapes)."""
        return [getattr(self, n) for n in self._blob_names]

    def set_blob(self, index, tensor):
        """Replace blob ``index`` by ``tensor`` itself (used for weight sharing)."""
        name = self._blob_names[index]
        if self._blob_learnable[index]:
            if not isinstance(tensor, torch.nn.Parameter):
                raise TypeError("a learnable blob must be shared as a torch.nn.Parameter")
            self.register_parameter(name, tensor)
        else:
            self.register_buffer(name, tensor)

    def blob_is_parameter(self, index):
        return self._blob_learnable[index]

    # ------------------------------------------------------------------ interface
    def setup(self, bottom_shapes):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, bottoms):  # pragma: no cover - abstract
        raise NotImplementedError


def _blob_shape_list(shape_msg):
    return tuple(int(d) for d in shape_msg.dim)


# ====================================================================== inputs

@register_layer
class InputLayer(Layer):
    """``Input``: tops are fed by the caller (``Net.forward(name=array)``), zeros until then."""

    caffe_type = "Input"
    param_fields = {"input_param": {"shape"}}
    n_bottoms = (0, 0)
    n_tops = (1, None)
    has_data_source = True

    def setup(self, bottom_shapes):
        shapes = [_blob_shape_list(s) for s in self.lp.input_param.shape]
        n = len(self.top_names)
        if len(shapes) == 1:
            shapes = shapes * n
        if len(shapes) != n:
            raise self.error(f"input_param has {len(shapes)} shapes for {n} tops; give one shape or one per top")
        self.values = [None] * n
        return shapes

    def set_input(self, index, value):
        """Store the value of top ``index`` (array-like, shape checked beyond axis 0)."""
        name = self.top_names[index]
        want = self.top_shapes[index]
        t = torch.as_tensor(value)
        if t.dim() != len(want) or tuple(t.shape[1:]) != tuple(want[1:]):
            raise InputError(f'input "{name}": got shape {_shape_str(t.shape)}, the net expects '
                             f"{_shape_str(want)} (axis 0, the batch size, may differ)")
        self.values[index] = t.to(device=self.ctx.device, dtype=torch.float32)

    def forward(self, bottoms):
        out = []
        for i, v in enumerate(self.values):
            if v is None:
                v = torch.zeros(self.top_shapes[i], device=self.ctx.device)
                self.values[i] = v
            out.append(v)
        return out


@register_layer
class DummyDataLayer(Layer):
    """``DummyData``: tops filled by fillers; constant fillers once, others at every forward."""

    caffe_type = "DummyData"
    param_fields = {"dummy_data_param": {"data_filler", "shape", "num", "channels", "height", "width"}}
    n_bottoms = (0, 0)
    n_tops = (1, None)
    has_data_source = True

    def setup(self, bottom_shapes):
        p = self.lp.dummy_data_param
        n = len(self.top_names)
        legacy = len(p.num) + len(p.channels) + len(p.height) + len(p.width)
        if p.shape and legacy:
            raise self.error("give dummy_data_param.shape or num/channels/height/width, not both")
        if p.shape:
            shapes = [_blob_shape_list(s) for s in p.shape]
        else:
            lens = {len(p.num), len(p.channels), len(p.height), len(p.width)}
            if len(lens) != 1:
                raise self.error("num, channels, height and width must be given equally often")
            shapes = [(a, b, c, d) for a, b, c, d in zip(p.num, p.channels, p.height, p.width)]
        if len(shapes) == 1:
            shapes = shapes * n
        if len(shapes) != n:
            raise self.error(f"{len(shapes)} shapes for {n} tops; give one shape or one per top")
        fillers = list(p.data_filler)
        if not fillers:
            from .. import caffe_pb2
            fillers = [caffe_pb2.FillerParameter()]
        if len(fillers) == 1:
            fillers = fillers * n
        if len(fillers) != n:
            raise self.error(f"{len(fillers)} data_fillers for {n} tops; give 0, 1 or one per top")
        self.fillers = fillers
        self.values = [None] * n
        return shapes

    def forward(self, bottoms):
        out = []
        for i, f in enumerate(self.fillers):
            if self.values[i] is None or f.type != "constant":
                t = fill(self.top_shapes[i], f, self.ctx.filler_generator, where=f"{self.where()} top {i}")
                self.values[i] = t.to(self.ctx.device)
            out.append(self.values[i])
        return out


# ====================================================================== vision

def _spatial_pair(layer, msg, name, default, allow_repeated=True):
    """Caffe's (h, w) from field ``name`` (repeated in Convolution) or ``<base>_h``/``<base>_w``."""
    base = "kernel" if name == "kernel_size" else name
    fh, fw = base + "_h", base + "_w"
    has_hw = msg.HasField(fh) or msg.HasField(fw)
    if allow_repeated:
        values = list(getattr(msg, name))
    else:
        values = [getattr(msg, name)] if msg.HasField(name) else []
    if has_hw:
        if values:
            raise layer.error(f"give either {name} or {fh}/{fw}, not both")
        if not (msg.HasField(fh) and msg.HasField(fw)):
            if base == "pad":  # Caffe defaults an unset pad_h / pad_w to 0
                return int(getattr(msg, fh)), int(getattr(msg, fw))
            raise layer.error(f"{fh} and {fw} must be given together")
        return int(getattr(msg, fh)), int(getattr(msg, fw))
    if not values:
        if default is None:
            raise layer.error(f"{name} (or {fh} and {fw}) is required")
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise layer.error(f"{name} has {len(values)} values; 2-D layers take 1 or 2")


def _in_weight_dtype(x, weight):
    """``x`` in the dtype of ``weight``: a net whose weights were cast (bf16 inference,
    engine/fold.py deploy_net) computes in that dtype.  Under autocast, autocast decides."""
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        return x.to(weight.dtype)
    return x


@register_layer
class ConvolutionLayer(Layer):
    """``Convolution`` (2-D): blobs weight (out, in/group, kh, kw) and bias (out,)."""

    caffe_type = "Convolution"
    param_fields = {"convolution_param": {
        "num_output", "bias_term", "pad", "kernel_size", "stride", "dilation", "pad_h", "pad_w",
        "kernel_h", "kernel_w", "stride_h", "stride_w", "group", "weight_filler", "bias_filler",
        "engine", "axis", "force_nd_im2col"}}

    def setup(self, bottom_shapes):
        p = self.lp.convolution_param
        (shape,) = bottom_shapes
        if len(shape) != 4:
            raise self.error(f"this engine implements 2-D convolution of N x C x H x W blobs; "
                             f"bottom has shape {_shape_str(shape)}")
        if self.canonical_axis(p.axis, 4, "convolution_param.axis") != 1:
            raise self.error("convolution_param.axis must be 1 (channels) in this engine")
        if not p.HasField("num_output") or p.num_output == 0:
            raise self.error("convolution_param.num_output must be set and > 0")
        self.kernel = _spatial_pair(self, p, "kernel_size", None)
        self.pad = _spatial_pair(self, p, "pad", 0)
        self.stride = _spatial_pair(self, p, "stride", 1)
        if p.dilation:
            if len(p.dilation) > 2:
                raise self.error(f"dilation has {len(p.dilation)} values; 2-D layers take 1 or 2")
            d = list(p.dilation)
            self.dilation = (int(d[0]), int(d[-1]))
        else:
            self.dilation = (1, 1)
        if min(self.kernel) <= 0 or min(self.stride) <= 0 or min(self.dilation) <= 0:
            raise self.error("kernel, stride and dilation must be > 0")
        n, c, h, w = shape
        self.group = int(p.group)
        if self.group <= 0 or c % self.group or p.num_output % self.group:
            raise self.error(f"group {self.group} must divide the input channels ({c}) and num_output "
                             f"({p.num_output})")
        out = []
        for size, k, pd, s, d in zip((h, w), self.kernel, self.pad, self.stride, self.dilation):
            extent = d * (k - 1) + 1
            o = (size + 2 * pd - extent) // s + 1
            if o <= 0:
                raise self.error(f"kernel extent {extent} does not fit the padded input "
                                 f"{_shape_str(shape)} (pad {pd})")
            out.append(o)
        self.filled_blob((p.num_output, c // self.group) + self.kernel, p.weight_filler, 0)
        self.bias_term = bool(p.bias_term)
        if self.bias_term:
            self.filled_blob((p.num_output,), p.bias_filler, 1)
        return [(n, int(p.num_output), out[0], out[1])]

    def forward(self, bottoms):
        b = self.blob1 if self.bias_term else None
        x = _in_weight_dtype(bottoms[0], self.blob0)
        return [F.conv2d(x, self.blob0, b, self.stride, self.pad, self.dilation, self.group)]


@register_layer
class PoolingLayer(Layer):
    """``Pooling`` MAX / AVE with Caffe's output size and AVE divisor."""

    caffe_type = "Pooling"
    param_fields = {"pooling_param": {
        "pool", "pad", "pad_h", "pad_w", "kernel_size", "kernel_h", "kernel_w", "stride",
        "stride_h", "stride_w", "engine", "global_pooling", "round_mode"}}
    n_tops = (1, 1)

    def setup(self, bottom_shapes):
        p = self.lp.pooling_param
        (shape,) = bottom_shapes
        if len(shape) != 4:
            raise self.error(f"pooling needs an N x C x H x W bottom, got {_shape_str(shape)}")
        n, c, h, w = shape
        if p.pool not in (0, 1):
            raise self.error("pooling_param.pool: only MAX and AVE are supported (not STOCHASTIC)")
        self.method = "max" if p.pool == 0 else "ave"
        if p.global_pooling:
            if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
                raise self.error("with global_pooling the kernel size cannot be given")
            self.kernel = (h, w)
        else:
            self.kernel = _spatial_pair(self, p, "kernel_size", None, allow_repeated=False)
        self.pad = _spatial_pair(self, p, "pad", 0, allow_repeated=False)
        self.stride = _spatial_pair(self, p, "stride", 1, allow_repeated=False)
        if p.global_pooling and (self.pad != (0, 0) or self.stride != (1, 1)):
            raise self.error("with global_pooling pad must be 0 and stride 1")
        if min(self.kernel) <= 0 or min(self.stride) <= 0:
            raise self.error("kernel and stride must be > 0")
        if (self.pad[0] or self.pad[1]) and (self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]):
            raise self.error(f"pad {self.pad} must be smaller than the kernel {self.kernel}")
        ceil = p.round_mode == 0
        out = []
        for size, k, pd, s in zip((h, w), self.kernel, self.pad, self.stride):
            if ceil:
                o = int(math.ceil((size + 2 * pd - k) / s)) + 1
            else:
                o = (size + 2 * pd - k) // s + 1
            if pd and (o - 1) * s >= size + pd:
                o -= 1  # the last window must start inside the image
            if o <= 0:
                raise self.error(f"kernel {self.kernel} does not fit the input {_shape_str(shape)}")
            out.append(o)
        self.out_hw = tuple(out)
        # explicit padding so that a floor-mode torch pooling covers exactly Caffe's windows
        self.pads = []  # (left, right) per spatial axis; right may be negative (crop)
        for size, k, pd, s, o in zip((h, w), self.kernel, self.pad, self.stride, out):
            self.pads.append((pd, (o - 1) * s + k - size - pd))
        self.plain = all(l == 0 and r <= 0 for l, r in self.pads) and all(
            (size - k) // s + 1 == o for size, k, s, o in zip((h, w), self.kernel, self.stride, out))
        if self.method == "ave":
            self.register_buffer("divisor", self._ave_divisor(h, w), persistent=False)
        return [(n, c) + self.out_hw]

    def _ave_divisor(self, h, w):
        """Caffe's AVE pool size per output: the window clipped to the padded image (H + pad)."""
        divs = []
        for size, k, pd, s, o in zip((h, w), self.kernel, self.pad, self.stride, self.out_hw):
            start = torch.arange(o) * s - pd
            end = torch.clamp(start + k, max=size + pd)
            divs.append((end - start).to(torch.float32))
        return (divs[0][:, None] * divs[1][None, :]).to(self.ctx.device)

    def forward(self, bottoms):
        x = bottoms[0]
        if self.method == "max":
            if not self.plain:
                (lh, rh), (lw, rw) = self.pads
                x = F.pad(x, (lw, rw, lh, rh), value=-math.inf)
            y = F.max_pool2d(x, self.kernel, self.stride)
            if not self.plain:
                y = torch.clamp(y, min=-FLT_MAX)  # an empty window gives -FLT_MAX as in Caffe
            return [y]
        (lh, rh), (lw, rw) = self.pads
        if lh or rh or lw or rw:
            x = F.pad(x, (lw, rw, lh, rh), value=0.0)
        # the window sums themselves (divisor 1), then Caffe's divisor: one rounding, not avg * k / divisor
        s = F.avg_pool2d(x, self.kernel, self.stride, divisor_override=1)
        return [s / self.divisor]


@register_layer
class InnerProductLayer(Layer):
    """``InnerProduct``: blobs weight (out, K) (or (K, out) with transpose) and bias (out,)."""

    caffe_type = "InnerProduct"
    param_fields = {"inner_product_param": {"num_output", "bias_term", "weight_filler", "bias_filler",
                                            "axis", "transpose"}}

    def setup(self, bottom_shapes):
        p = self.lp.inner_product_param
        (shape,) = bottom_shapes
        if not p.HasField("num_output") or p.num_output == 0:
            raise self.error("inner_product_param.num_output must be set and > 0")
        self.axis = self.canonical_axis(p.axis, len(shape), "inner_product_param.axis")
        k = _count(shape, self.axis)
        self.transpose = bool(p.transpose)
        wshape = (k, p.num_output) if self.transpose else (p.num_output, k)
        self.filled_blob(wshape, p.weight_filler, 0)
        self.bias_term = bool(p.bias_term)
        if self.bias_term:
            self.filled_blob((p.num_output,), p.bias_filler, 1)
        self.in_features = k
        return [tuple(shape[:self.axis]) + (int(p.num_output),)]

    def forward(self, bottoms):
        x = bottoms[0]
        lead = x.shape[:self.axis]
        x = x.reshape(lead + (-1,)) if x.dim() != self.axis + 1 else x
        if x.shape[-1] != self.in_features:
            raise self.error(f"input has {x.shape[-1]} features per item (shape {_shape_str(bottoms[0].shape)}), "
                             f"the weights expect {self.in_features}")
        w = self.blob0.t() if self.transpose else self.blob0
        b = self.blob1 if self.bias_term else None
        return [F.linear(_in_weight_dtype(x, w), w, b)]


# ====================================================================== normalisation

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
            raise self.error(f"needs a bottom with a channel axis, got {_shape_str(shape)}")
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
                          f"{len(shape)} axes {_shape_str(shape)}")
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
        from .. import caffe_pb2
        p = self.lp.scale_param
        shape = bottom_shapes[0]
        if len(bottom_shapes) == 2:
            sshape = tuple(bottom_shapes[1])
            self.axis = self.canonical_axis(p.axis, max(len(shape), 1), "scale_param.axis") if sshape else 0
            if tuple(shape[self.axis:self.axis + len(sshape)]) != sshape:
                raise self.error(f"scale bottom shape {_shape_str(sshape)} does not match bottom 0 "
                                 f"{_shape_str(shape)} from axis {self.axis}")
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
                raise self.error(f"bias bottom shape {_shape_str(bshape)} does not match bottom 0 "
                                 f"{_shape_str(shape)} from axis {self.axis}")
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


# ====================================================================== activations

@register_layer
class ReLULayer(Layer):
    """``ReLU``: x > 0 ? x : negative_slope * x."""

    caffe_type = "ReLU"
    param_fields = {"relu_param": {"negative_slope", "engine"}}

    def setup(self, bottom_shapes):
        self.slope = float(self.lp.relu_param.negative_slope)
        return [tuple(bottom_shapes[0])]

    def forward(self, bottoms):
        x = bottoms[0]
        if self.slope == 0.0:
            return [F.relu(x)]
        return [F.leaky_relu(x, self.slope)]


@register_layer
class SigmoidLayer(Layer):
    caffe_type = "Sigmoid"
    param_fields = {"sigmoid_param": {"engine"}}

    def setup(self, bottom_shapes):
        return [tuple(bottom_shapes[0])]

    def forward(self, bottoms):
        return [torch.sigmoid(bottoms[0])]


@register_layer
class TanHLayer(Layer):
    caffe_type = "TanH"
    param_fields = {"tanh_param": {"engine"}}

    def setup(self, bottom_shapes):
        return [tuple(bottom_shapes[0])]

    def forward(self, bottoms):
        return [torch.tanh(bottoms[0])]


@register_layer
class DropoutLayer(Layer):
    """``Dropout``: TRAIN keeps each value with probability 1-p and scales it by 1/(1-p); TEST is identity."""

    caffe_type = "Dropout"
    param_fields = {"dropout_param": {"dropout_ratio"}}

    def setup(self, bottom_shapes):
        self.ratio = float(self.lp.dropout_param.dropout_ratio)
        if not 0.0 <= self.ratio < 1.0:
            raise self.error(f"dropout_ratio must be in [0, 1), got {self.ratio}")
        return [tuple(bottom_shapes[0])]

    def forward(self, bottoms):
        x = bottoms[0]
        if self.ctx.phase != "TRAIN" or self.ratio == 0.0:
            return [x]
        keep = torch.rand(x.shape, device=x.device, generator=self.ctx.generator(x.device)) >= self.ratio
        return [x * (keep.to(x.dtype) * (1.0 / (1.0 - self.ratio)))]


# ====================================================================== softmax, losses

@register_layer
class SoftmaxLayer(Layer):
    caffe_type = "Softmax"
    param_fields = {"softmax_param": {"axis", "engine"}}

    def setup(self, bottom_shapes):
        self.axis = self.canonical_axis(self.lp.softmax_param.axis, len(bottom_shapes[0]), "softmax_param.axis")
        return [tuple(bottom_shapes[0])]

    def forward(self, bottoms):
        return [F.softmax(bottoms[0], dim=self.axis)]


def _labels_view(layer, labels, outer, inner):
    """Labels (float or int blob with outer*inner values) as int64 outer x inner."""
    if labels.numel() != outer * inner:
        raise layer.error(f"the label blob has {labels.numel()} values (shape {_shape_str(labels.shape)}) "
                          f"but the predictions need {outer * inner} (outer {outer} x inner {inner})")
    return labels.reshape(outer, inner).to(torch.int64)


@register_layer
class SoftmaxWithLossLayer(Layer):
    """``SoftmaxWithLoss``: mean of -log(max(p_label, FLT_MIN)) under Caffe's normalization modes.

    Tops: the loss (scalar) and optionally the probabilities.  The gradient is
    Caffe's (p - onehot) * weight / normalizer, also where the clamp binds.
    """

    caffe_type = "SoftmaxWithLoss"
    param_fields = {"softmax_param": {"axis", "engine"}, "loss_param": {"ignore_label", "normalization",
                                                                        "normalize"}}
    n_bottoms = (2, 2)
    n_tops = (1, 2)
    is_loss = True

    def setup(self, bottom_shapes):
        shape = bottom_shapes[0]
        self.axis = self.canonical_axis(self.lp.softmax_param.axis, len(shape), "softmax_param.axis")
        self.outer = _count(shape, 0, self.axis)
        self.inner = _count(shape, self.axis + 1)
        if _count(bottom_shapes[1]) != self.outer * self.inner:
            raise self.error(f"label shape {_shape_str(bottom_shapes[1])} has {_count(bottom_shapes[1])} values; "
                             f"predictions {_shape_str(shape)} with softmax axis {self.axis} need "
                             f"{self.outer * self.inner}")
        lp = self.lp.loss_param
        self.ignore_label = int(lp.ignore_label) if lp.HasField("ignore_label") else None
        if lp.HasField("normalize"):
            self.normalization = 1 if lp.normalize else 2  # VALID or BATCH_SIZE
        else:
            self.normalization = int(lp.normalization)      # FULL 0, VALID 1, BATCH_SIZE 2, NONE 3
        tops = [()]
        if len(self.top_names) == 2:
            tops.append(tuple(shape))
        return tops

    def forward(self, bottoms):
        x, labels = bottoms
        n_classes = x.shape[self.axis]
        outer = _count(x.shape, 0, self.axis)
        inner = _count(x.shape, self.axis + 1)
        lab = _labels_view(self, labels, outer, inner)
        if self.ignore_label is not None:
            valid = lab != self.ignore_label
            safe = torch.where(valid, lab, torch.zeros_like(lab))
        else:
            valid = None
            safe = lab
        if not torch.jit.is_tracing() and x.device.type == "cpu":
            bad = (safe < 0) | (safe >= n_classes)
            if bool(bad.any()):
                raise self.error(f"label value {int(lab[bad][0])} is outside 0..{n_classes - 1}")
        x3 = (x if x.dtype == torch.float64 else x.float()).reshape(outer, n_classes, inner)
        picked, prob = _ClampedLogProb.apply(x3, safe)
        if valid is not None:
            picked = torch.where(valid, picked, torch.zeros_like(picked))
        total = -picked.sum()
        if self.normalization == 0:
            norm = float(outer * inner)
        elif self.normalization == 1:
            norm = valid.sum().to(total.dtype) if valid is not None else float(outer * inner)
        elif self.normalization == 2:
            norm = float(outer)
        else:
            norm = 1.0
        if isinstance(norm, torch.Tensor):
            norm = torch.clamp(norm, min=1.0)
        else:
            norm = max(1.0, norm)
        tops = [total / norm]
        if len(self.top_names) == 2:
            # Caffe's backward ignores the gradient of this top
            tops.append(prob.detach().reshape(x.shape))
        return tops


class _ClampedLogProb(torch.autograd.Function):
    """Caffe's picked log-probability ``log(max(softmax(x)[label], FLT_MIN))`` and its gradient.

    Forward: x (outer, C, inner) float32, labels (outer, inner) int64 ->
    (picked (outer, inner), softmax (outer, C, inner)).  The value is Caffe's
    expression itself (softmax, then the clamp, then the log), so a clamped
    entry is exactly log(FLT_MIN) whatever the logits.  Backward gives Caffe's
    gradient ``(onehot - softmax) * g`` also where the clamp binds (Caffe's
    backward does not see the clamp).  Written as a Function rather than as
    ``v + (clamp(v) - v).detach()``, which cancels in float32 when v is large.
    """

    @staticmethod
    def forward(ctx, x, labels):
        prob = torch.softmax(x, dim=1)
        p = torch.gather(prob, 1, labels.unsqueeze(1)).squeeze(1)
        picked = torch.log(torch.clamp(p, min=FLT_MIN))
        ctx.save_for_backward(prob, labels)
        ctx.mark_non_differentiable(prob)
        return picked, prob

    @staticmethod
    def backward(ctx, grad_picked, grad_prob):
        prob, labels = ctx.saved_tensors
        g = grad_picked.unsqueeze(1)
        grad = -prob * g
        grad.scatter_add_(1, labels.unsqueeze(1), g)
        return grad, None


@register_layer
class AccuracyLayer(Layer):
    """``Accuracy``: fraction of items with fewer than top_k other classes scoring >= the label's score.

    Optional second top: per-class accuracy (num_labels,).  No gradient.
    """

    caffe_type = "Accuracy"
    param_fields = {"accuracy_param": {"top_k", "axis", "ignore_label"}}
    n_bottoms = (2, 2)
    n_tops = (1, 2)

    def setup(self, bottom_shapes):
        p = self.lp.accuracy_param
        shape = bottom_shapes[0]
        self.axis = self.canonical_axis(p.axis, len(shape), "accuracy_param.axis")
        self.top_k = int(p.top_k)
        n_classes = int(shape[self.axis])
        if self.top_k < 1 or self.top_k > n_classes:
            raise self.error(f"top_k {self.top_k} must be in 1..{n_classes} (the number of classes)")
        outer = _count(shape, 0, self.axis)
        inner = _count(shape, self.axis + 1)
        if _count(bottom_shapes[1]) != outer * inner:
            raise self.error(f"label shape {_shape_str(bottom_shapes[1])} does not give one label per "
                             f"prediction of {_shape_str(shape)} (need {outer * inner})")
        self.ignore_label = int(p.ignore_label) if p.HasField("ignore_label") else None
        tops = [()]
        if len(self.top_names) == 2:
            tops.append((n_classes,))
        return tops

    @torch.no_grad()
    def forward(self, bottoms):
        x, labels = bottoms
        n_classes = x.shape[self.axis]
        outer = _count(x.shape, 0, self.axis)
        inner = _count(x.shape, self.axis + 1)
        scores = x.detach().reshape(outer, n_classes, inner)
        lab = _labels_view(self, labels, outer, inner)
        valid = torch.ones_like(lab, dtype=torch.bool) if self.ignore_label is None else lab != self.ignore_label
        safe = torch.where(valid, lab, torch.zeros_like(lab)).clamp(0, n_classes - 1)
        true_score = torch.gather(scores, 1, safe.unsqueeze(1))
        # Caffe counts the other classes scoring >= the true class: a tie counts against the label
        idx = torch.arange(n_classes, device=x.device).view(1, -1, 1)
        better = (scores >= true_score) & (idx != safe.unsqueeze(1))
        correct = (better.sum(1) < self.top_k) & valid
        count = valid.sum()
        acc = correct.sum().to(torch.float32) / torch.clamp(count, min=1).to(torch.float32)
        if self.ignore_label is None:
            acc = correct.sum().to(torch.float32) / float(outer * inner)
        tops = [acc]
        if len(self.top_names) == 2:
            per_n = torch.zeros(n_classes, device=x.device).index_add_(
                0, safe[valid], torch.ones_like(safe[valid], dtype=torch.float32))
            per_c = torch.zeros(n_classes, device=x.device).index_add_(
                0, safe[valid], correct[valid].to(torch.float32))
            tops.append(torch.where(per_n > 0, per_c / torch.clamp(per_n, min=1), torch.zeros_like(per_n)))
        return tops


# ====================================================================== shape plumbing

@register_layer
class FlattenLayer(Layer):
    caffe_type = "Flatten"
    param_fields = {"flatten_param": {"axis", "end_axis"}}

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        p = self.lp.flatten_param
        self.start = self.canonical_axis(p.axis, len(shape), "flatten_param.axis")
        self.end = self.canonical_axis(p.end_axis, len(shape), "flatten_param.end_axis")
        if self.end < self.start:
            raise self.error(f"end_axis {self.end} is before axis {self.start}")
        return [shape[:self.start] + (_count(shape, self.start, self.end + 1),) + shape[self.end + 1:]]

    def forward(self, bottoms):
        return [torch.flatten(bottoms[0], self.start, self.end)]


@register_layer
class ConcatLayer(Layer):
    caffe_type = "Concat"
    param_fields = {"concat_param": {"axis", "concat_dim"}}
    n_bottoms = (1, None)

    def setup(self, bottom_shapes):
        p = self.lp.concat_param
        if p.HasField("axis") and p.HasField("concat_dim"):
            raise self.error("give concat_param.axis or concat_dim, not both")
        shape0 = tuple(bottom_shapes[0])
        axis = int(p.concat_dim) if p.HasField("concat_dim") else int(p.axis)
        self.axis = self.canonical_axis(axis, len(shape0), "concat_param.axis")
        total = 0
        for i, s in enumerate(bottom_shapes):
            s = tuple(s)
            if len(s) != len(shape0) or s[:self.axis] != shape0[:self.axis] or s[self.axis + 1:] != shape0[self.axis + 1:]:
                raise self.error(f"bottom {i} shape {_shape_str(s)} does not match bottom 0 {_shape_str(shape0)} "
                                 f"outside the concat axis {self.axis}")
            total += s[self.axis]
        return [shape0[:self.axis] + (total,) + shape0[self.axis + 1:]]

    def forward(self, bottoms):
        if len(bottoms) == 1:
            return [bottoms[0]]
        return [torch.cat(bottoms, dim=self.axis)]


@register_layer
class EltwiseLayer(Layer):
    """``Eltwise`` SUM (with coeff), PROD, MAX (gradient to Caffe's arg-max bottom)."""

    caffe_type = "Eltwise"
    param_fields = {"eltwise_param": {"operation", "coeff", "stable_prod_grad"}}
    n_bottoms = (2, None)

    def setup(self, bottom_shapes):
        p = self.lp.eltwise_param
        shape0 = tuple(bottom_shapes[0])
        for i, s in enumerate(bottom_shapes):
            if tuple(s) != shape0:
                raise self.error(f"bottom {i} shape {_shape_str(s)} differs from bottom 0 {_shape_str(shape0)}")
        self.op = int(p.operation)  # PROD 0, SUM 1, MAX 2
        if p.coeff and self.op != 1:
            raise self.error("eltwise_param.coeff is only allowed with operation SUM")
        if p.coeff and len(p.coeff) != len(bottom_shapes):
            raise self.error(f"eltwise_param.coeff has {len(p.coeff)} values for {len(bottom_shapes)} bottoms")
        self.coeff = [float(c) for c in p.coeff] if p.coeff else [1.0] * len(bottom_shapes)
        return [shape0]

    def forward(self, bottoms):
        if self.op == 1:
            y = bottoms[0] * self.coeff[0] if self.coeff[0] != 1.0 else bottoms[0]
            for c, b in zip(self.coeff[1:], bottoms[1:]):
                y = y + b * c if c != 1.0 else y + b
            return [y]
        if self.op == 0:
            y = bottoms[0]
            for b in bottoms[1:]:
                y = y * b
            return [y]
        # MAX: bottom 1 wins a tie with bottom 0; a later bottom must be strictly larger
        with torch.no_grad():
            a, b = bottoms[0], bottoms[1]
            idx = (a <= b).to(torch.int64)
            cur = torch.maximum(a, b)
            for i, c in enumerate(bottoms[2:], start=2):
                take = c > cur
                idx = torch.where(take, torch.full_like(idx, i), idx)
                cur = torch.where(take, c, cur)
        stacked = torch.stack(bottoms, 0)
        return [torch.gather(stacked, 0, idx.unsqueeze(0)).squeeze(0)]


@register_layer
class SplitLayer(Layer):
    """``Split``: every top is the bottom (gradients of the tops add up)."""

    caffe_type = "Split"
    n_tops = (1, None)

    def setup(self, bottom_shapes):
        return [tuple(bottom_shapes[0])] * len(self.top_names)

    def forward(self, bottoms):
        return [bottoms[0]] * len(self.top_names)
