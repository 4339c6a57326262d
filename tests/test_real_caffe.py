"""Our formats and model files against real Caffe 1.0 (Debian bullseye, CPU) and OpenCV's dnn.

Real peers, no mocks: the ``caffe`` tool trains our train_val.prototxt on
LMDBs and a mean file written by our code; ``compute_image_mean`` and
``convert_imageset`` are compared with our mean and our LMDB reader; pycaffe
loads a ``.caffemodel`` we wrote and writes one we read; OpenCV's Caffe
importer gives the same class probabilities as pycaffe.  About 1 minute on
2 cores.  Skipped (with the reason) when the Caffe root is missing; failed instead in CI.
"""

import os
import re
import subprocess

import numpy as np
import pytest

from deepyeast.caffe import caffe_pb2, root as caffe_root
from deepyeast.caffe.blobs import (compute_mean, read_caffemodel, read_mean_binaryproto, read_solverstate,
                                   write_caffemodel, write_mean_binaryproto)
from deepyeast.caffe.lmdb import read_datum_lmdb, write_datum_lmdb
from deepyeast.caffe.prototxt import CAFFE_LAYER_TYPES, read_prototxt, write_prototxt
from deepyeast.engine import Net
from deepyeast.data.crop_png import encode_crop

from _requirements import need

pytestmark = pytest.mark.caffe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "models", "deepyeast")
FORWARD = os.path.join(REPO, "deepyeast", "caffe", "pycaffe_forward.py")
N_CLASSES_USED = 4
TRAIN_ITERS = 20
BATCH = 8


@pytest.fixture(scope="module", autouse=True)
def need_caffe(caffe_root_present):
    pass


def synthetic_cells(n, seed):
    """uint8 n x 2 x 64 x 64 crops whose class (0..3) is the quadrant where the green protein glows."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % N_CLASSES_USED
    yy, xx = np.mgrid[:64, :64]
    cell = np.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / (2 * 14.0 ** 2))
    images = np.empty((n, 2, 64, 64), np.uint8)
    for i, lab in enumerate(labels):
        cy, cx = 22 + 20 * (lab // 2), 22 + 20 * (lab % 2)
        spot = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 5.0 ** 2))
        images[i, 0] = np.clip(120 * cell + rng.normal(20, 8, (64, 64)), 0, 255)
        images[i, 1] = np.clip(200 * spot + 30 * cell + rng.normal(15, 8, (64, 64)), 0, 255)
    return images, labels


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("caffe_data")
    train_x, train_y = synthetic_cells(80, seed=1)
    val_x, val_y = synthetic_cells(20, seed=2)
    names = [f"plate01/{i}-1-1-1.png" for i in range(len(train_x))]
    write_datum_lmdb(d / "train_lmdb", zip(names, train_x, train_y), shuffle=True, seed=0)
    write_datum_lmdb(d / "val_lmdb", zip(names, val_x, val_y), shuffle=False)
    mean = compute_mean(train_x)
    write_mean_binaryproto(d / "mean.binaryproto", mean)
    return {"dir": d, "train_x": train_x, "train_y": train_y, "mean": mean}


def small_train_val(data_dir, batch_size=BATCH):
    """Our train_val.prototxt with batch size ``batch_size`` and data paths moved to ``data_dir``."""
    net = read_prototxt(os.path.join(MODELS, "train_val.prototxt"), caffe_pb2.NetParameter)
    n_data = 0
    for layer in net.layer:
        if layer.type == "Data":
            n_data += 1
            split = "train" if layer.include[0].phase == caffe_pb2.TRAIN else "val"
            layer.data_param.source = str(data_dir / f"{split}_lmdb")
            layer.data_param.batch_size = batch_size
            layer.transform_param.mean_file = str(data_dir / "mean.binaryproto")
    assert n_data == 2
    return net


@pytest.fixture(scope="module")
def trained(data):
    d = data["dir"]
    write_prototxt(d / "train_val.prototxt", small_train_val(d))
    solver = read_prototxt(os.path.join(MODELS, "solver_cpu.prototxt"), caffe_pb2.SolverParameter)
    solver.net = str(d / "train_val.prototxt")
    solver.base_lr = 0.01
    solver.lr_policy = "fixed"
    solver.max_iter = TRAIN_ITERS
    solver.display = 1
    solver.average_loss = 1
    solver.test_interval = TRAIN_ITERS
    del solver.test_iter[:]
    solver.test_iter.append(2)
    solver.snapshot = 0
    solver.snapshot_prefix = str(d / "snap" / "small")
    solver.solver_mode = caffe_pb2.SolverParameter.CPU
    os.makedirs(d / "snap")
    write_prototxt(d / "solver.prototxt", solver)
    # through bin/caffe, as a user would run it
    proc = subprocess.run([os.path.join(REPO, "bin", "caffe"), "train", "-solver", str(d / "solver.prototxt")],
                          cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    log = proc.stdout
    assert proc.returncode == 0, log[-3000:]
    losses = [float(x) for x in re.findall(r"Iteration \d+ .*?, loss = ([-0-9.eE+na]+)", log)]
    return {"log": log, "losses": losses,
            "caffemodel": d / "snap" / f"small_iter_{TRAIN_ITERS}.caffemodel",
            "solverstate": d / "snap" / f"small_iter_{TRAIN_ITERS}.solverstate"}


def pycaffe(args, **kw):
    return caffe_root.run_pycaffe(FORWARD, [str(a) for a in args], **kw)


# ---------------------------------------------------------------- caffe train

def test_real_caffe_trains_our_net_on_our_lmdb_and_loss_falls(trained):
    losses = trained["losses"]
    assert len(losses) >= TRAIN_ITERS - 1, trained["log"][-2000:]
    assert all(np.isfinite(losses))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.7 * first, f"loss did not fall: first {losses[:5]}, last {losses[-5:]}"
    assert re.search(r"Test net output #\d+: accuracy = ", trained["log"])
    # the Data layers read our records with our shape
    assert f"output data size: {BATCH},2,64,64" in trained["log"]


def test_our_reader_loads_caffemodel_and_solverstate_written_by_real_caffe(trained, data, tmp_path):
    ours, types = read_caffemodel(trained["caffemodel"], with_types=True)
    pycaffe(["--model", os.path.join(MODELS, "deploy.prototxt"), "--weights", trained["caffemodel"],
             "--dump-params", tmp_path / "p.npz"])
    real = np.load(tmp_path / "p.npz")
    assert sorted(ours) == sorted({k.split("/")[0] for k in real.files})
    for layer, blobs in ours.items():
        assert len(blobs) == len([k for k in real.files if k.split("/")[0] == layer])
        for i, arr in enumerate(blobs):
            ref = real[f"{layer}/{i}"]
            assert arr.shape == ref.shape, (layer, i)
            np.testing.assert_array_equal(arr, ref)
    assert types["conv1_bn"] == "BatchNorm" and types["fc3"] == "InnerProduct"
    # training moved the BN statistics away from their zero start
    assert ours["conv1_bn"][2][0] > 0 and np.abs(ours["conv1_bn"][0]).max() > 0

    state = read_solverstate(trained["solverstate"])
    assert state["iter"] == TRAIN_ITERS
    assert os.path.basename(state["learned_net"]) == os.path.basename(str(trained["caffemodel"]))
    shapes = [a.shape for blobs in ours.values() for a in blobs]
    assert [h.shape for h in state["history"]] == shapes


# ---------------------------------------------------------------- tools

def test_compute_image_mean_equals_our_mean(data):
    d = data["dir"]
    caffe_root.run_in_root(["compute_image_mean", "-backend", "lmdb", str(d / "train_lmdb"),
                            str(d / "real_mean.binaryproto")])
    real = read_mean_binaryproto(d / "real_mean.binaryproto")
    ours = read_mean_binaryproto(d / "mean.binaryproto")
    assert real.shape == ours.shape == (2, 64, 64)
    np.testing.assert_allclose(ours, real, rtol=1e-6, atol=1e-5)


def test_convert_imageset_lmdb_is_read_by_our_reader(data, tmp_path):
    images, labels = data["train_x"][:12], data["train_y"][:12]
    root = tmp_path / "archive"
    (root / "plate01").mkdir(parents=True)
    lines = []
    for i, (img, lab) in enumerate(zip(images, labels)):
        rel = f"plate01/{i}-2-3-4.png"
        (root / rel).write_bytes(encode_crop(img))
        lines.append(f"{rel} {lab}\n")
    (root / "list.txt").write_text("".join(lines))
    caffe_root.run_in_root(["convert_imageset", "-backend", "lmdb", "-shuffle", str(root) + "/",
                            str(root / "list.txt"), str(tmp_path / "db")])
    got, got_labels, keys = read_datum_lmdb(tmp_path / "db")
    assert len(keys) == 12
    assert all(re.fullmatch(r"\d{8}_plate01/\d+-2-3-4\.png", k) for k in keys)
    for img, lab, key in zip(got, got_labels, keys):
        i = int(key.split("/")[1].split("-")[0])
        # convert_imageset stores OpenCV's colour order: B (empty), G (protein), R (marker)
        assert img.shape == (3, 64, 64)
        np.testing.assert_array_equal(img[0], 0)
        np.testing.assert_array_equal(img[1], images[i][1])
        np.testing.assert_array_equal(img[2], images[i][0])
        assert lab == labels[i]


def test_our_layer_type_table_is_real_caffes():
    out = caffe_root.run_in_root(["python3", "-c", "import caffe; print(','.join(sorted(caffe.layer_type_list())))"],
                                 env={"GLOG_minloglevel": "2"})
    real = set(out.stdout.strip().splitlines()[-1].split(","))
    assert real == set(CAFFE_LAYER_TYPES)


def test_bin_caffe_runs_system_caffe_directly_when_root_is_slash():
    """DEEPYEAST_CAFFE_ROOT=/ (Caffe installed on the system itself): bin/caffe runs it directly.

    Inside the Caffe root Caffe is such a system install, so run bin/caffe there (chroot
    only: in the loader mode the root's `env` would start this system's python3).
    """
    if caffe_root.exec_mode() != "chroot":
        need("namespaces", "the chroot mode (root with CAP_SYS_ADMIN) runs bin/caffe inside the root")
    out = caffe_root.run_in_root(["env", "DEEPYEAST_CAFFE_ROOT=/", "python3", os.path.join(REPO, "bin", "caffe"),
                                  "--version"])
    assert "caffe version 1.0.0" in out.stdout


# ---------------------------------------------------------------- pycaffe and OpenCV on our caffemodel

@pytest.fixture(scope="module")
def random_model(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("random_model")
    net = read_prototxt(os.path.join(MODELS, "deploy.prototxt"), caffe_pb2.NetParameter)
    x = data["train_x"][:8].astype(np.float32) - data["mean"]
    params, types = Net.for_shapes(net).random_weights(seed=7, bn_factor=0.8, input_scale=float(x.std()))
    write_caffemodel(d / "random.caffemodel", params, net_name="DeepYeast", layer_types=types)
    np.save(d / "x.npy", x)
    pycaffe(["--model", os.path.join(MODELS, "deploy.prototxt"), "--weights", d / "random.caffemodel",
             "--images", d / "x.npy", "--out", d / "out", "--blobs", "prob,fc3,conv1", "--batch", "5",
             "--dump-params", d / "p.npz", "--save-weights", d / "saved_by_caffe.caffemodel"])
    return {"dir": d, "params": params, "x": x, "prob": np.load(d / "out" / "prob.npy"),
            "fc3": np.load(d / "out" / "fc3.npy")}


def test_pycaffe_loads_our_caffemodel_blob_for_blob(random_model):
    real = np.load(random_model["dir"] / "p.npz")
    params = random_model["params"]
    assert len(real.files) == sum(len(b) for b in params.values())
    for layer, blobs in params.items():
        for i, arr in enumerate(blobs):
            ref = real[f"{layer}/{i}"]
            assert ref.shape == arr.shape, (layer, i)
            np.testing.assert_array_equal(ref, arr)


def test_our_reader_loads_caffemodel_saved_by_pycaffe(random_model):
    back = read_caffemodel(random_model["dir"] / "saved_by_caffe.caffemodel")
    params = random_model["params"]
    assert list(back) == list(params)
    for layer in params:
        for a, b in zip(params[layer], back[layer]):
            np.testing.assert_array_equal(a, b)


def test_opencv_dnn_gives_pycaffes_probabilities(random_model):
    import cv2

    prob = random_model["prob"]
    assert prob.shape == (8, 12)
    np.testing.assert_allclose(prob.sum(axis=1), 1, atol=1e-5)
    # the weights make a non-trivial prediction (not all mass on one class, varying by cell)
    assert prob.max() < 0.99 and prob.std(axis=0).max() > 1e-3
    net = cv2.dnn.readNetFromCaffe(os.path.join(MODELS, "deploy.prototxt"),
                                   str(random_model["dir"] / "random.caffemodel"))
    net.setInput(random_model["x"])
    cv_prob = net.forward("prob").reshape(8, 12)
    assert np.abs(cv_prob - prob).max() <= 1e-5
