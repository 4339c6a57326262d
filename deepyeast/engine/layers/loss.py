"""Softmax and loss layers: ``Softmax``, ``SoftmaxWithLoss``, ``Accuracy``."""

import torch
import torch.nn.functional as F

from deepyeast.engine.layers.base import FLT_MIN, Layer, blob_count, register_layer, shape_str


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
        raise layer.error(f"the label blob has {labels.numel()} values (shape {shape_str(labels.shape)}) "
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
        self.outer = blob_count(shape, 0, self.axis)
        self.inner = blob_count(shape, self.axis + 1)
        if blob_count(bottom_shapes[1]) != self.outer * self.inner:
            raise self.error(f"label shape {shape_str(bottom_shapes[1])} has {blob_count(bottom_shapes[1])} values; "
                             f"predictions {shape_str(shape)} with softmax axis {self.axis} need "
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
        outer = blob_count(x.shape, 0, self.axis)
        inner = blob_count(x.shape, self.axis + 1)
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
        outer = blob_count(shape, 0, self.axis)
        inner = blob_count(shape, self.axis + 1)
        if blob_count(bottom_shapes[1]) != outer * inner:
            raise self.error(f"label shape {shape_str(bottom_shapes[1])} does not give one label per "
                             f"prediction of {shape_str(shape)} (need {outer * inner})")
        self.ignore_label = int(p.ignore_label) if p.HasField("ignore_label") else None
        tops = [()]
        if len(self.top_names) == 2:
            tops.append((n_classes,))
        return tops

    @torch.no_grad()
    def forward(self, bottoms):
        x, labels = bottoms
        n_classes = x.shape[self.axis]
        outer = blob_count(x.shape, 0, self.axis)
        inner = blob_count(x.shape, self.axis + 1)
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

