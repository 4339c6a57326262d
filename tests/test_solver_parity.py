"""Solver parity with real Caffe 1.0 (run in the Caffe root): update rule, lr policies, snapshots, resume.

Convex net (InnerProduct + SoftmaxWithLoss, weight lr_mult 1 / decay_mult 1, bias lr_mult 2 /
decay_mult 0.5) on a 40-record LMDB with batch 8: 30 iterations from the same .caffemodel, display 1,
snapshot 15.  15 iterations consume a whole number of epochs, so a resumed run (whose data cursor
restarts at the first record in Caffe) sees the same batches as the unbroken run.
"""

import os
import re

import numpy as np
import pytest

from deepyeast.caffe import root as caffe_root
from deepyeast.caffe.blobs import read_solverstate

from _solver_nets import (CONVEX_NET, LogCapture, make_init_weights, make_lmdb, max_rel_diff, solver_param,
                          write_net, write_solver)

pytestmark = [pytest.mark.caffe,
              pytest.mark.skipif(not caffe_root.have_caffe_root(), reason=caffe_root.missing_reason() or "no caffe")]

TOL = 1e-5

CONFIGS = {
    "fixed": dict(lr_policy="fixed"),
    "step": dict(lr_policy="step", gamma=0.5, stepsize=10),
    "multistep": dict(lr_policy="multistep", gamma=0.5, stepvalue=[7, 16, 24]),
    "exp": dict(lr_policy="exp", gamma=0.95),
    "inv": dict(lr_policy="inv", gamma=0.1, power=0.75),
    "poly": dict(lr_policy="poly", power=1.5),
    "sigmoid": dict(lr_policy="sigmoid", gamma=0.3, stepsize=15),
    # L1 regularization, gradient clipping and gradient accumulation over 2 batches
    "l1_clip_itersize2": dict(lr_policy="step", gamma=0.5, stepsize=10, regularization_type="L1",
                              clip_gradients=0.4, iter_size=2),
}

LR_LINE = re.compile(r"Iteration (\d+), lr = (\S+)")


@pytest.fixture(scope="module")
def convex(tmp_path_factory):
    d = tmp_path_factory.mktemp("convex")
    lmdb = make_lmdb(str(d / "train_lmdb"))
    net = write_net(str(d / "net.prototxt"), CONVEX_NET, lmdb)
    init = make_init_weights(str(d / "init.caffemodel"))
    return d, net, init


def run_real_caffe(d, param, name, extra, timeout=300):
    path = write_solver(str(d / f"{name}.solver.prototxt"), param)
    res = caffe_root.run_caffe(["train", "-solver", path] + extra, cwd=str(d), check=False, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:]
    return res.stdout


def run_ours(param, init=None, resume=None):
    from deepyeast.engine.solver import Solver
    with LogCapture() as logs:
        s = Solver(param, progress=False)
        if init:
            s.copy_trained_layers(init)
        s.solve(resume_file=resume)
    return s, logs.text


def lr_table(text):
    return {int(it): rate for it, rate in LR_LINE.findall(text)}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_convex_run_matches_real_caffe(convex, name):
    d, net, init = convex
    cfg = CONFIGS[name]
    p_caffe = solver_param(net, str(d / name / "caffe" / "convex"), **cfg)
    caffe_log = run_real_caffe(d, p_caffe, f"{name}_caffe", ["-weights", init])
    p_ours = solver_param(net, str(d / name / "ours" / "convex"), **cfg)
    _, our_log = run_ours(p_ours, init=init)

    # the same learning rate logged at every iteration
    lr_c, lr_o = lr_table(caffe_log), lr_table(our_log)
    assert sorted(lr_c) == list(range(30))
    assert lr_o == lr_c
    if name in ("step", "multistep", "sigmoid", "poly", "exp", "inv"):
        assert len(set(lr_c.values())) >= 3  # the schedule really changes the rate (>= 2 steps)

    # weights after 15 and 30 updates agree
    for it in (15, 30):
        ours = str(d / name / "ours" / f"convex_iter_{it}.caffemodel")
        theirs = str(d / name / "caffe" / f"convex_iter_{it}.caffemodel")
        assert max_rel_diff(ours, theirs) <= TOL, (name, it)
    # the momentum history agrees too (it is what a resumed run continues from)
    h_o = read_solverstate(str(d / name / "ours" / "convex_iter_30.solverstate"))
    h_c = read_solverstate(str(d / name / "caffe" / "convex_iter_30.solverstate"))
    assert h_o["iter"] == h_c["iter"] == 30 and h_o["current_step"] == h_c["current_step"]
    for a, b in zip(h_o["history"], h_c["history"]):
        assert np.abs(a - b).max() <= TOL * max(np.abs(b).max(), 1e-12) + 1e-12

    # test outputs logged in Caffe's format, same values to the printed precision (loose: 1e-4)
    tests_c = re.findall(r"Test net output #(\d+): (\w+) = (\S+)", caffe_log)
    tests_o = re.findall(r"Test net output #(\d+): (\w+) = (\S+)", our_log)
    assert [(k, n) for k, n, _ in tests_o] == [(k, n) for k, n, _ in tests_c]
    for (_, _, a), (_, _, b) in zip(tests_o, tests_c):
        assert float(a) == pytest.approx(float(b), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", ["multistep", "inv", "l1_clip_itersize2"])
def test_solverstates_resume_across_engines(convex, name):
    d, net, init = convex
    cfg = CONFIGS[name]
    base = d / f"resume_{name}"
    p_caffe = solver_param(net, str(base / "caffe" / "convex"), **cfg)
    run_real_caffe(d, p_caffe, f"resume_{name}_caffe", ["-weights", init])
    p_ours = solver_param(net, str(base / "ours" / "convex"), **cfg)
    run_ours(p_ours, init=init)
    caffe_30 = str(base / "caffe" / "convex_iter_30.caffemodel")

    # real Caffe resumes our iteration-15 solverstate
    p_c2 = solver_param(net, str(base / "caffe_from_ours" / "convex"), **cfg)
    log_c2 = run_real_caffe(d, p_c2, f"resume_{name}_c2",
                            ["-snapshot", str(base / "ours" / "convex_iter_15.solverstate")])
    assert "SGDSolver: restoring history" in log_c2
    assert max_rel_diff(str(base / "caffe_from_ours" / "convex_iter_30.caffemodel"), caffe_30) <= TOL

    # we resume real Caffe's iteration-15 solverstate (no .dystate: cursors restart, as in Caffe)
    p_o2 = solver_param(net, str(base / "ours_from_caffe" / "convex"), **cfg)
    s, _ = run_ours(p_o2, resume=str(base / "caffe" / "convex_iter_15.solverstate"))
    assert s.iter == 30
    assert max_rel_diff(str(base / "ours_from_caffe" / "convex_iter_30.caffemodel"), caffe_30) <= TOL


# --------------------------------------------------------------------------- DeepYeast itself (slow)

def _easy_cells(n, seed):
    """n uint8 2x64x64 cells of 4 easy classes: centre blob, ring, whole cell, a few dots (green channel)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    items = []
    for i in range(n):
        y = i % 4
        cy, cx = 32 + rng.uniform(-4, 4, 2)
        r = np.hypot(yy - cy, xx - cx)
        cell = (r < 22).astype(np.float32)
        red = 120 * cell + rng.normal(0, 12, (64, 64))
        if y == 0:
            green = 200 * np.exp(-(r / 5) ** 2)
        elif y == 1:
            green = 180 * np.exp(-((r - 15) / 2.5) ** 2)
        elif y == 2:
            green = 110 * cell
        else:
            green = np.zeros((64, 64), np.float32)
            for _ in range(4):
                py, px = rng.uniform(-14, 14, 2)
                green += 220 * np.exp(-((yy - cy - py) ** 2 + (xx - cx - px) ** 2) / 4)
        green = green + rng.normal(0, 12, (64, 64))
        img = np.clip(np.stack([red, green]), 0, 255).astype(np.uint8)
        items.append((f"plate01/e{i:04d}-1-1-1.png", img, y))
    return items


@pytest.mark.slow
def test_deepyeast_small_run_matches_real_caffe(tmp_path):
    from deepyeast.caffe import caffe_pb2
    from deepyeast.engine import Net
    from deepyeast.caffe.blobs import compute_mean, write_mean_binaryproto
    from deepyeast.caffe.lmdb import write_datum_lmdb
    from deepyeast.caffe.prototxt import read_prototxt
    from deepyeast.caffe.prototxt import write_prototxt

    train = _easy_cells(400, 1)
    val = _easy_cells(80, 2)
    write_datum_lmdb(str(tmp_path / "train_lmdb"), train, shuffle=True, seed=0)
    write_datum_lmdb(str(tmp_path / "val_lmdb"), val, shuffle=False)
    write_mean_binaryproto(str(tmp_path / "mean.binaryproto"), compute_mean(img for _, img, _ in train))
    net = read_prototxt(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "deepyeast",
                                     "train_val.prototxt"), caffe_pb2.NetParameter)
    for layer in net.layer:
        if layer.type == "Data":
            train_phase = layer.include[0].phase == caffe_pb2.TRAIN
            layer.data_param.source = str(tmp_path / ("train_lmdb" if train_phase else "val_lmdb"))
            layer.data_param.batch_size = 8
            layer.transform_param.mean_file = str(tmp_path / "mean.binaryproto")
    net_path = str(tmp_path / "train_val_small.prototxt")
    write_prototxt(net_path, net)
    init = str(tmp_path / "init.caffemodel")
    Net(net_path, phase="TRAIN", seed=3).save_caffemodel(init)

    iters = int(os.environ.get("DEEPYEAST_PARITY_ITERS", "100"))
    cfg = dict(base_lr=0.02, lr_policy="fixed", momentum=0.9, weight_decay=0.0005, max_iter=iters,
               display=50, test_iter=[], test_interval=iters, test_initialization=False, snapshot=0)
    results = {}
    for engine in ("ours", "caffe"):
        p = solver_param(net_path, str(tmp_path / engine / "dy"), **{k: v for k, v in cfg.items()
                                                                      if k != "test_iter"})
        del p.test_iter[:]
        p.test_iter.append(10)
        if engine == "caffe":
            out = run_real_caffe(tmp_path, p, "dy_caffe", ["-weights", init], timeout=1200)
        else:
            _, out = run_ours(p, init=init)
        acc = [float(v) for v in re.findall(r"Test net output #\d+: accuracy = (\S+)", out)]
        assert len(acc) == 1, out[-2000:]
        results[engine] = acc[-1]
        print(f"{engine}: TEST accuracy {acc[-1]:.3f}", flush=True)
    print(f"DeepYeast small run ({iters} iterations, batch 8), TEST accuracy:", results)
    assert results["caffe"] >= 0.6 and results["ours"] >= 0.6  # chance is 0.25
    assert abs(results["caffe"] - results["ours"]) <= 0.05
