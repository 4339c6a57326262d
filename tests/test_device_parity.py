"""Our engine's fast path on a device against its plain CPU path (run on a GPU by bench/gpu_check.sh).

``DEEPYEAST_TEST_DEVICE`` names the device under test (default ``cpu``).  The
reference is the engine on the CPU with contiguous (N x C x H x W) activations
and no fused BatchNorm/Scale/ReLU steps -- the path the real-Caffe parity tests
(tests/test_parity_net.py) hold to Caffe.  The candidate is the engine on the
device with its defaults (channels-last activations, fused steps, cuDNN /
oneDNN kernels).  On the CPU in CI this checks the fast CPU path; on a GPU,
the CUDA path (``-gpu 0``).  TF32 stays off: fp32 is the parity mode.
"""

import os

import numpy as np
import pytest
import torch

from deepyeast.caffe import caffe_pb2
from deepyeast.caffe.blobs import compute_mean, write_mean_binaryproto
from deepyeast.caffe.lmdb import write_datum_lmdb
from deepyeast.caffe.prototxt import read_prototxt, write_prototxt
from deepyeast.engine import Net
from deepyeast.engine.fold import deploy_net
from deepyeast.engine.solver import Solver

from _deploy import DEPLOY, MODELS, cells, deploy_weights, input_train_val, rel_err

DEVICE = os.environ.get("DEEPYEAST_TEST_DEVICE", "cpu")
if DEVICE.startswith("cuda") and not torch.cuda.is_available():
    pytest.fail(f"DEEPYEAST_TEST_DEVICE={DEVICE} but CUDA is not available", pytrace=False)


def plain(net, phase, **kw):
    return Net(net, phase=phase, device="cpu", channels_last=False, fuse=False, **kw)


def fast(net, phase, **kw):
    return Net(net, phase=phase, device=DEVICE, **kw)


def numpy_blobs(blobs):
    return {k: v.detach().float().cpu().numpy() for k, v in blobs.items()}


@pytest.fixture(scope="module")
def weights():
    return deploy_weights()


def test_deploy_forward_matches_the_plain_path(weights):
    x = cells(4)
    ref = plain(DEPLOY, "TEST")
    ref.load_weights(weights)
    net = fast(DEPLOY, "TEST")
    net.load_weights(weights)
    with torch.no_grad():
        want = numpy_blobs(ref(data=x))
        got = numpy_blobs(net(data=x))
    errs = {b: rel_err(got[b], want[b]) for b in want}
    assert max(errs.values()) <= 1e-5, errs
    assert np.abs(got["prob"] - want["prob"]).max() <= 1e-5


def _train_pass(net, weights, x, label, double=False):
    """(loss, {blob: value}, {blob: gradient}) of one TRAIN forward + backward of ``net``."""
    net.load_weights(weights)
    if double:  # the float64 reference: the whole module in float64, inputs given as float64
        net.double()
        net.layer("data").values = [torch.from_numpy(x).double(), torch.from_numpy(label).double()]
        net()
    else:
        net(data=x, label=label)
    net.loss.backward()
    values = {f"{p.layer_name}/{p.index}": p.tensor.detach().double().cpu().numpy() for p in net.learnable_params}
    grads = {f"{p.layer_name}/{p.index}": p.tensor.grad.double().cpu().numpy()
             for p in net.learnable_params if p.tensor.grad is not None}
    return float(net.loss.detach()), values, grads


def _biases_into_batchnorm(proto):
    """'layer/1' of the Convolution / InnerProduct biases that feed a BatchNorm (true gradient 0)."""
    layers = [lp for lp in proto.layer if lp.type != "Dropout"]
    return {f"{lp.name}/1" for lp, nxt in zip(layers, layers[1:])
            if lp.type in ("Convolution", "InnerProduct") and nxt.type == "BatchNorm"}


def _rel_l2(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def test_training_gradients_and_batchnorm_statistics_match_the_plain_path(weights):
    """Gradients of every learned blob and BatchNorm's running blobs after one TRAIN forward.

    Both float32 paths are held to a float64 run of the same net.  Their gradients below the
    last BatchNorm are only good to ~1e-2 relative (measured: both paths, batch 8): BatchNorm's
    backward, dy - mean(dy) - x_hat * mean(dy * x_hat), cancels, and Caffe computes the same
    expression in float32.  So the device path must be as accurate as the plain path (which the
    real-Caffe tests hold to Caffe): its error against float64 at most 3x the plain path's, or
    1e-4.  Biases feeding a BatchNorm have a true gradient of 0 and are left out.
    """
    proto = input_train_val(8)
    x = cells(8, seed=1)
    label = np.arange(8, dtype=np.float32) % 12
    loss64, values64, grads64 = _train_pass(plain(proto, "TRAIN", seed=0), weights, x, label, double=True)
    loss_ref, values_ref, grads_ref = _train_pass(plain(proto, "TRAIN", seed=0), weights, x, label)
    loss, values, grads = _train_pass(fast(proto, "TRAIN", seed=0), weights, x, label)
    assert loss_ref == pytest.approx(loss64, rel=1e-5) and loss == pytest.approx(loss64, rel=1e-5)
    into_bn = _biases_into_batchnorm(proto)
    errs = {k: (_rel_l2(grads[k], g), _rel_l2(grads_ref[k], g)) for k, g in grads64.items() if k not in into_bn}
    stats = {k: rel_err(values[k], v) for k, v in values64.items() if k not in grads64}
    assert len(errs) == 32 and len(stats) == 30
    assert max(stats.values()) <= 1e-5, stats
    assert max(e[1] for e in errs.values()) < 0.05, errs  # the plain path's own float32 error
    bad = {k: e for k, e in errs.items() if e[0] > max(3 * e[1], 1e-4)}
    assert not bad, bad


@pytest.fixture(scope="module")
def lmdb_bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("device_lmdb")
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(40, 2, 64, 64), dtype=np.uint8)
    for split in ("train", "val"):
        write_datum_lmdb(d / f"{split}_lmdb", [(f"c{i:03d}", images[i], i % 12) for i in range(40)],
                                 shuffle=False)
    write_mean_binaryproto(d / "mean.binaryproto", compute_mean(images))
    proto = read_prototxt(os.path.join(MODELS, "train_val.prototxt"), caffe_pb2.NetParameter)
    for lp in proto.layer:
        if lp.type == "Data":
            train = lp.include[0].phase == caffe_pb2.TRAIN
            lp.data_param.source = str(d / ("train_lmdb" if train else "val_lmdb"))
            lp.data_param.batch_size = 8
            lp.transform_param.mean_file = str(d / "mean.binaryproto")
    write_prototxt(d / "train_val.prototxt", proto)
    return d


def test_data_layer_batches_are_identical(lmdb_bundle):
    """The whole LMDB on the device, mean subtracted there: the same batches, bit for bit."""
    proto = read_prototxt(lmdb_bundle / "train_val.prototxt", caffe_pb2.NetParameter)
    for phase in ("TRAIN", "TEST"):
        ref, net = plain(proto, phase, seed=0), fast(proto, phase, seed=0)
        assert net.layers[0].images.device.type == torch.device(DEVICE).type  # resident on the device
        for _ in range(6):  # 48 records from 40: wraps around
            a, b = ref.layers[0].forward([]), net.layers[0].forward([])
            for t_ref, t in zip(a, b):
                np.testing.assert_array_equal(t.cpu().numpy(), t_ref.numpy())


def test_solver_iterations_match_the_plain_path(lmdb_bundle):
    """The paper's solver (lr 0.1, momentum 0.9, weight decay) on the device: the same first loss, the
    same first update up to the gradients' float32 error (direction and size of every blob's change),
    and finite losses for the next iterations (the two float32 trajectories then drift apart)."""
    param = read_prototxt(os.path.join(MODELS, "solver.prototxt"), caffe_pb2.SolverParameter)
    param.net = str(lmdb_bundle / "train_val.prototxt")
    param.test_interval = 0
    param.display = 0
    param.snapshot = 0
    param.snapshot_after_train = False
    runs = []
    for device, channels_last in (("cpu", False), (DEVICE, None)):
        s = Solver(param, device=device, channels_last=channels_last, progress=False)
        skip = _biases_into_batchnorm(s.net.net_param)  # moved by weight decay and rounding noise only
        before = [p.tensor.detach().double().cpu().numpy().copy() for p in s.params]
        s.step(1)
        steps = [p.tensor.detach().double().cpu().numpy() - b for p, b in zip(s.params, before)
                 if f"{p.layer_name}/{p.index}" not in skip]
        loss0 = float(s._losses[0])
        s.step(2)
        later = [float(v) for v in s._losses]
        runs.append((loss0, steps, later))
    (ref_loss, ref_steps, _), (loss, steps, later) = runs
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert len(later) == 2 and all(np.isfinite(later))
    moved = [(a.ravel(), b.ravel()) for a, b in zip(steps, ref_steps) if np.any(b != 0)]
    assert len(moved) >= 30
    for a, b in moved:
        cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert cos > 0.999 and abs(np.linalg.norm(a) / np.linalg.norm(b) - 1) < 0.02, (cos, len(a))


def test_bf16_deploy_inference_runs_on_the_device(weights):
    x = cells(8, seed=3)
    ref = deploy_net(DEPLOY, weights)
    net = deploy_net(DEPLOY, weights, precision="bf16", device=DEVICE)
    with torch.inference_mode():
        want = ref(data=x)["prob"].numpy()
        got = net(data=torch.from_numpy(x).to(DEVICE))["prob"]
    assert got.dtype == torch.float32
    got = got.cpu().numpy()
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)
    assert np.abs(got - want).max() < 0.05
