"""Vision layers: ``Convolution`` (2-D) and ``Pooling`` (MAX, AVE) with Caffe's output sizes."""

import math

import torch
import torch.nn.functional as F

from deepyeast.engine.layers.base import FLT_MAX, Layer, compute_blobs, in_weight_dtype, register_layer, shape_str


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
                             f"bottom has shape {shape_str(shape)}")
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
                                 f"{shape_str(shape)} (pad {pd})")
            out.append(o)
        self.filled_blob((p.num_output, c // self.group) + self.kernel, p.weight_filler, 0)
        self.bias_term = bool(p.bias_term)
        if self.bias_term:
            self.filled_blob((p.num_output,), p.bias_filler, 1)
        return [(n, int(p.num_output), out[0], out[1])]

    def spatial_window(self):
        """(dilated kernel extent, stride, pad) along H."""
        return (self.dilation[0] * (self.kernel[0] - 1) + 1, self.stride[0], self.pad[0])

    def forward(self, bottoms):
        w, b = compute_blobs(self, self.blob0, self.blob1 if self.bias_term else None)
        x = in_weight_dtype(bottoms[0], w)
        return [F.conv2d(x, w, b, self.stride, self.pad, self.dilation, self.group)]

    def forward_relu(self, bottoms):
        """``relu(forward(bottoms))``: the top, rectified.

        Where nothing needs a gradient, on a CPU with oneDNN, the ReLU runs as the convolution's
        post-op in one oneDNN call (``mkldnn._convolution_pointwise``, the kernel torch's own
        compiler uses): the same numbers, one pass less over the output (the bf16 deploy net's
        CPU time against convolution then ``relu_``: bench/bench_screen.py, bench/RESULTS.md).
        """
        w, b = compute_blobs(self, self.blob0, self.blob1 if self.bias_term else None)
        x = in_weight_dtype(bottoms[0], w)
        if _pointwise_applies(x, w, b):
            return [torch.ops.mkldnn._convolution_pointwise(
                x, w, b, list(self.pad), list(self.stride), list(self.dilation), self.group, "relu", [], "")]
        return [torch.relu_(F.conv2d(x, w, b, self.stride, self.pad, self.dilation, self.group))]


def _pointwise_applies(x, weight, bias):
    """Can oneDNN's fused convolution + ReLU run here: CPU float32/bfloat16 tensors of one dtype, no autocast,
    nothing that needs a gradient, and the op present in this torch build."""
    if x.device.type != "cpu" or weight.device.type != "cpu" or x.dtype != weight.dtype:
        return False
    if x.dtype not in (torch.float32, torch.bfloat16) or (bias is not None and bias.dtype != x.dtype):
        return False
    if torch.is_autocast_enabled("cpu") or not torch.backends.mkldnn.is_available() \
            or not torch.backends.mkldnn.enabled:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return False
    return hasattr(torch.ops.mkldnn, "_convolution_pointwise")


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
            raise self.error(f"pooling needs an N x C x H x W bottom, got {shape_str(shape)}")
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
                raise self.error(f"kernel {self.kernel} does not fit the input {shape_str(shape)}")
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

    def spatial_window(self):
        """(kernel, stride, pad) along H."""
        return (self.kernel[0], self.stride[0], self.pad[0])

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

