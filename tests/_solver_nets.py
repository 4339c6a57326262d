"""Small nets, LMDBs and solvers shared by the solver, CLI, resume and DDP tests."""

import logging
import os

import numpy as np
from google.protobuf import text_format

from deepyeast.caffe import caffe_pb2
from deepyeast.caffe.blobs import read_caffemodel, write_caffemodel
from deepyeast.caffe.lmdb import write_datum_lmdb

N_RECORDS = 40
BATCH = 8
IMAGE_SHAPE = (2, 4, 4)
N_CLASSES = 3

# TRAIN and TEST Data layers reading the same LMDB (the nets below start with them)
_DATA_LAYERS = """
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{lmdb}" batch_size: {batch} backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{lmdb}" batch_size: {batch} backend: LMDB }} }}
"""

CONVEX_NET = """
name: "convex"
""" + _DATA_LAYERS + """layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0.5 }}
  inner_product_param {{ num_output: {classes}
    weight_filler {{ type: "gaussian" std: 0.1 }} bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
layer {{ name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include {{ phase: TEST }} }}
"""

# A small conv net with BatchNorm, Scale, ReLU and Dropout: exercises RNG and running statistics on resume.
SMALL_CONV_NET = """
name: "small_conv"
""" + _DATA_LAYERS + """layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 weight_filler {{ type: "gaussian" std: 0.2 }} }} }}
layer {{ name: "conv1_bn" type: "BatchNorm" bottom: "conv1" top: "conv1"
  param {{ lr_mult: 0 decay_mult: 0 }} param {{ lr_mult: 0 decay_mult: 0 }} param {{ lr_mult: 0 decay_mult: 0 }} }}
layer {{ name: "conv1_scale" type: "Scale" bottom: "conv1" top: "conv1" scale_param {{ bias_term: true }} }}
layer {{ name: "conv1_relu" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "drop" type: "Dropout" bottom: "conv1" top: "conv1" dropout_param {{ dropout_ratio: 0.3 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
  inner_product_param {{ num_output: {classes} weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
layer {{ name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include {{ phase: TEST }} }}
"""


def make_lmdb(path, n=N_RECORDS, seed=0):
    """A learnable but noisy 3-class LMDB of uint8 2x4x4 images (class y brightens row y of channel 0)."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        y = i % N_CLASSES
        img = rng.integers(0, 256, IMAGE_SHAPE).astype(np.int64)
        img[0, y, :] = np.minimum(255, img[0, y, :] + 100)
        items.append((f"plate01/c{i:03d}-1-1-1.png", img.astype(np.uint8), y))
    write_datum_lmdb(path, items, shuffle=False)
    return path


def make_init_weights(path, seed=1):
    """Initial .caffemodel of the convex net (layer "ip": W 3x32, b 3)."""
    rng = np.random.default_rng(seed)
    d = int(np.prod(IMAGE_SHAPE))
    write_caffemodel(path, {"ip": [rng.normal(0, 0.1, (N_CLASSES, d)).astype(np.float32),
                                   rng.normal(0.1, 0.05, N_CLASSES).astype(np.float32)]})
    return path


def write_net(path, template, lmdb, batch=BATCH):
    with open(path, "w") as f:
        f.write(template.format(lmdb=os.path.abspath(lmdb), batch=batch, classes=N_CLASSES))
    return path


def solver_param(net_path, prefix, **fields):
    """SolverParameter for the tests: 30 iterations, display 1, snapshot 15, base_lr 0.5, momentum 0.9."""
    p = caffe_pb2.SolverParameter()
    p.net = os.path.abspath(net_path)
    p.test_iter.append(2)
    p.test_interval = 10
    p.base_lr = 0.5
    p.lr_policy = "fixed"
    p.momentum = 0.9
    p.weight_decay = 0.01
    p.max_iter = 30
    p.display = 1
    p.snapshot = 15
    p.snapshot_prefix = os.path.abspath(prefix)
    p.random_seed = 1
    p.solver_mode = caffe_pb2.SolverParameter.CPU
    for k, v in fields.items():
        if k == "stepvalue":
            p.stepvalue.extend(v)
        else:
            setattr(p, k, v)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    return p


def write_solver(path, param):
    with open(path, "w") as f:
        f.write(text_format.MessageToString(param))
    return path


def max_rel_diff(model_a, model_b):
    """Largest max|a-b|/max|b| over every blob of two .caffemodel files (same layers required)."""
    a, b = read_caffemodel(model_a), read_caffemodel(model_b)
    assert list(a) == list(b), (list(a), list(b))
    worst = 0.0
    for name in a:
        for x, y in zip(a[name], b[name]):
            worst = max(worst, float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-30)))
    return worst


class LogCapture(logging.Handler):
    """Collects the messages of the ``deepyeast`` loggers."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        lg = logging.getLogger("deepyeast")
        self._old = lg.level
        lg.setLevel(logging.INFO)
        lg.addHandler(self)
        return self

    def __exit__(self, *exc):
        lg = logging.getLogger("deepyeast")
        lg.removeHandler(self)
        lg.setLevel(self._old)

    @property
    def text(self):
        return "\n".join(self.messages)
