"""DeepYeast deploy weights and cells for the folding, bf16 and device tests."""

import os

import numpy as np
import torch

from deepyeast.caffe import caffe_pb2
from deepyeast.caffe.prototxt import read_prototxt
from deepyeast.engine import Net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "models", "deepyeast")
DEPLOY = os.path.join(MODELS, "deploy.prototxt")


def deploy_weights(seed=7):
    """DeepYeast deploy weights with BatchNorm statistics far from 0 / 1 (so folding matters):
    means up to ~3 and variances 0.05 .. 3, kept as Caffe keeps them (sums times a factor 2.5)."""
    net = Net(DEPLOY, phase="TEST", seed=3)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in net.layers:
            b = layer.blobs
            if layer.caffe_type == "BatchNorm":
                b[0].copy_(torch.randn(b[0].shape, generator=g) * 2.5)
                b[1].copy_((0.05 + 3 * torch.rand(b[1].shape, generator=g)) * 2.5)
                b[2].fill_(2.5)
            elif layer.caffe_type == "Scale":
                b[0].copy_(1 + 0.3 * torch.randn(b[0].shape, generator=g))
                b[1].copy_(0.2 * torch.randn(b[1].shape, generator=g))
            elif len(b) > 1:
                b[1].copy_(0.1 * torch.randn(b[1].shape, generator=g))
    return {name: [t.detach().numpy().copy() for t in blobs] for name, blobs in net.layer_params().items()}


def cells(n=6, seed=0):
    """Mean-subtracted-looking cells: float32 n x 2 x 64 x 64, values of a few tens."""
    return (np.random.default_rng(seed).normal(0, 40, size=(n, 2, 64, 64))).astype(np.float32)


def rel_err(a, ref):
    """Largest absolute difference relative to the reference's largest magnitude."""
    a = np.asarray(a, np.float64)
    ref = np.asarray(ref, np.float64)
    return float(np.abs(a - ref).max() / max(np.abs(ref).max(), 1e-30))


def input_train_val(batch, drop_dropout=True):
    """train_val.prototxt with its Data layers replaced by an Input layer (data, label)."""
    src = read_prototxt(os.path.join(MODELS, "train_val.prototxt"), caffe_pb2.NetParameter)
    net = caffe_pb2.NetParameter(name=src.name)
    inp = net.layer.add(name="data", type="Input")
    inp.top.extend(["data", "label"])
    inp.input_param.shape.add().dim.extend([batch, 2, 64, 64])
    inp.input_param.shape.add().dim.extend([batch])
    for lp in src.layer:
        if lp.type == "Data" or (drop_dropout and lp.type == "Dropout"):
            continue
        net.layer.add().CopyFrom(lp)
    return net
