"""Recompute BatchNorm population statistics for a trained net ("precise BN").

Caffe's BatchNorm keeps exponentially weighted sums of batch means and
variances (``moving_average_fraction`` f, 0.999 in DeepYeast): after T
iterations they average the last ~1/(1-f) = 1,000 batches, each seen with the
weights of its own iteration.  After the paper's 195,000 iterations that is the
converged net's statistics; after a short CPU schedule of a few hundred
iterations it is an average over the whole run, early random weights included,
and the TEST-phase network is badly calibrated.

This module re-collects the statistics with the final weights: every BatchNorm
layer's three blobs are zeroed, ``N`` TRAIN-phase forward passes (batch
statistics, dropout active, exactly as Caffe collects them) are run with f = 1
so that each batch counts equally, and the result is saved as a new
``.caffemodel``.  The learned weights are not changed.  Real Caffe reads the
result like any other snapshot.
"""

import torch

from deepyeast.constants import TRAINING_PRECISIONS
from deepyeast.engine.layers.normalization import BatchNormLayer
from deepyeast.engine.net import Net
from deepyeast.utils.io import InputError


def batchnorm_layers(net):
    """All :class:`BatchNormLayer` modules of ``net``, in layer order."""
    return [m for m in net.modules() if isinstance(m, BatchNormLayer)]


@torch.no_grad()
def recompute_bn_statistics(net, iterations):
    """Replace every BatchNorm layer's statistics by their equal-weight average over
    ``iterations`` TRAIN forward passes of ``net`` (a TRAIN-phase :class:`Net`).

    Returns the number of BatchNorm layers updated.
    """
    if int(iterations) < 1:
        raise InputError(f"BatchNorm statistics need at least 1 batch, got iterations={iterations} "
                         "(0 would write all-zero statistics)")
    layers = batchnorm_layers(net)
    if not layers:
        return 0
    if any(layer.use_global_stats for layer in layers):
        raise ValueError("recompute_bn_statistics needs a TRAIN-phase net (BatchNorm with batch statistics)")
    saved = [layer.fraction for layer in layers]
    for layer in layers:
        for blob in (layer.blob0, layer.blob1, layer.blob2):
            blob.zero_()
        layer.fraction = 1.0
    try:
        for _ in range(int(iterations)):
            net.forward()
    finally:
        for layer, fraction in zip(layers, saved):
            layer.fraction = fraction
    return len(layers)


def recompute_bn_caffemodel(model, weights, out, iterations=100, device="cpu", seed=0, precision="fp32"):
    """Load ``weights`` into the TRAIN net of ``model`` (a train_val prototxt whose
    TRAIN Data layer reads the training LMDB), recompute the BatchNorm
    statistics over ``iterations`` batches, and write ``out`` (.caffemodel).

    ``precision``: the forward passes' arithmetic, one of
    :data:`deepyeast.constants.TRAINING_PRECISIONS` (``bf16``: autocast, as the Solver trains with it;
    the statistics are stored in float32 either way)."""
    if precision not in TRAINING_PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(TRAINING_PRECISIONS)}, got {precision!r}")
    net = Net(model, phase="TRAIN", device=device, seed=seed, autocast=precision)  # Net maps fp32 to no autocast
    net.load_caffemodel(weights)
    n = recompute_bn_statistics(net, iterations)
    net.save_caffemodel(out)
    return n
