"""Common layers: ``InnerProduct``, ``Flatten``, ``Concat``, ``Eltwise``, ``Split``."""

import torch
import torch.nn.functional as F

from deepyeast.engine.layers.base import Layer, blob_count, compute_blobs, in_weight_dtype, register_layer, shape_str


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
        k = blob_count(shape, self.axis)
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
            raise self.error(f"input has {x.shape[-1]} features per item (shape {shape_str(bottoms[0].shape)}), "
                             f"the weights expect {self.in_features}")
        w, b = compute_blobs(self, self.blob0, self.blob1 if self.bias_term else None)
        w = w.t() if self.transpose else w
        return [F.linear(in_weight_dtype(x, w), w, b)]


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
        return [shape[:self.start] + (blob_count(shape, self.start, self.end + 1),) + shape[self.end + 1:]]

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
                raise self.error(f"bottom {i} shape {shape_str(s)} does not match bottom 0 {shape_str(shape0)} "
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
                raise self.error(f"bottom {i} shape {shape_str(s)} differs from bottom 0 {shape_str(shape0)}")
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

