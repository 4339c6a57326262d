"""Model bundles for the tests: a DeepYeast net with BatchNorm statistics measured on real-looking crops.

Weights come from the model zoo's fillers (seeded); the BatchNorm statistics are then
gathered by our engine in a TRAIN-phase forward over synthetic cells (Caffe's moving
averages), the way a short training run leaves them, so activations are in range and
the softmax spreads over classes.  The mean image is the crops' per-pixel mean.
"""

import os

import numpy as np
import torch

from deepyeast.caffe.blobs import compute_mean
from deepyeast.constants import CLASS_NAMES
from deepyeast.engine import Net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(REPO, "models", "deepyeast", "deploy.prototxt")


def synthetic_crops(per_class=2, seed=0):
    """uint8 (12 * per_class) x 2 x 64 x 64 rendered cells, ``per_class`` of each compartment, and their labels."""
    from deepyeast.data.make_synthetic import example_crops
    crops = np.concatenate([example_crops("main", k, per_class, seed=seed) for k in range(len(CLASS_NAMES))])
    return crops, np.repeat(np.arange(len(CLASS_NAMES)), per_class)


def make_weights(path, crops, mean, seed=0, input_scale=1.0):
    """Write a .caffemodel for DEPLOY: seeded fillers, BatchNorm statistics from a TRAIN pass over ``crops``."""
    net = Net(DEPLOY, phase="TRAIN", seed=seed)
    x = torch.from_numpy((crops.astype(np.float32) - mean) * np.float32(input_scale))
    with torch.no_grad():
        net.forward(data=x)
    net.save_caffemodel(path)
    return path


def make_bundle(out_dir, work_dir, seed=0, input_scale=1.0, examples=True, **kwargs):
    """A complete bundle at ``out_dir`` (scratch files in ``work_dir``); returns (path, crops, labels)."""
    from deepyeast.model import write_bundle
    from deepyeast.model.bundle import BundleInfo

    crops, labels = synthetic_crops(seed=seed)
    mean = compute_mean(crops)
    weights = make_weights(os.path.join(work_dir, f"w{seed}.caffemodel"), crops, mean, seed, input_scale)
    kwargs.setdefault("metrics", {"cell_accuracy": {"value": 0.5, "correct": 12, "total": 24}})
    kwargs.setdefault("training", {"data": "synthetic cells (tests)", "max_iter": 0})
    write_bundle(out_dir, DEPLOY, weights, mean, CLASS_NAMES, BundleInfo(input_scale=input_scale, **kwargs),
                 examples=crops[::2] if examples else None)
    return out_dir, crops, labels
