"""Neuron (element-wise) layers: ``ReLU``, ``Sigmoid``, ``TanH``, ``Dropout``."""

import torch
import torch.nn.functional as F

from deepyeast.engine.layers.base import Layer, register_layer


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

