"""Solver parity with real Caffe 1.0 (run in the Caffe root): update rule, lr policies, snapshots, resume.

Convex net (InnerProduct + SoftmaxWithLoss, weight lr_mult 1 / decay_mult 1, bias lr_mult 2 /
decay_mult 0.5) on a 40-record LMDB with batch 8: 30 iterations from the same .caffemodel, display 1,
snapshot 15.  15 iterations consume a whole number of epochs, so a resumed run (whose data cursor
restarts at the first record in Caffe) sees the same batches as the unbroken run.
"""

import json
import os
import re
import textwrap

import numpy as np
import pytest

from deepyeast.caffe import root as caffe_root
from deepyeast.caffe.blobs import read_solverstate

from _solver_nets import (CONVEX_NET, LogCapture, make_init_weights, make_lmdb, max_rel_diff, solver_param,
                          write_net, write_solver)

pytestmark = [pytest.mark.caffe, pytest.mark.usefixtures("caffe_root_present")]

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


PYCAFFE_STEPS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import caffe
    caffe.set_mode_cpu()
    cfg = json.load(open(sys.argv[1]))
    solver = caffe.SGDSolver(cfg["solver"])
    solver.net.copy_from(cfg["init"])
    out = {}
    for t in range(1, cfg["iters"] + 1):
        solver.step(1)
        out["loss/%d" % t] = np.array(float(solver.net.blobs["loss"].data))
        for lname, blobs in solver.net.params.items():
            for i, b in enumerate(blobs):
                out["%d/%s/%d" % (t, lname, i)] = b.data.copy()
    np.savez(cfg["out"], **out)
""")

TRAJECTORY_ITERS = 4
ULP = 2.0 ** -23
"""Relative size of the perturbation of our own reference trajectory: one float32 rounding step."""


@pytest.mark.slow
def test_deepyeast_small_run_matches_real_caffe(tmp_path):
    """The whole DeepYeast train_val (LMDB, mean file, BatchNorm, momentum, weight decay) trained by
    both engines from the same weights: the first updates agree; later ones drift no more than
    float32 rounding alone makes them drift.

    Made comparable: ``random_seed`` is set and the Dropout layers are removed (real Caffe draws
    its masks from its own generator, which ours cannot reproduce, so with dropout two runs of the
    same engine differ from the first iteration; the earlier version of this test compared final
    accuracies within 0.05 and failed whenever Caffe's unseeded dropout drew an unlucky run).

    Where the comparison stops being meaningful: training amplifies any difference.  One float32
    rounding step (2^-23 relative) on the initial weights of *our own* engine changes the updates
    by ~1e-4 after 1 iteration, ~1e-2 after 2 and ~1e-1 after 3-4 (measured); the two engines
    differ by ~1e-5 after iteration 1 (rounding in the gradient sums and BatchNorm) and that
    grows the same way.  So: iteration 1's update is compared to a fixed tolerance, and each later
    iteration against that perturbed run of ours: Caffe must stay at least as close to our run as
    our own run started one rounding step away.  Beyond a few iterations weights can no longer
    be compared one by one at all; only statistics of training (loss curves, accuracy over many
    runs) could be, and those need far more than a test's minute.
    """
    import torch

    from deepyeast.caffe import caffe_pb2
    from deepyeast.engine import Net
    from deepyeast.engine.solver import Solver
    from deepyeast.caffe.blobs import compute_mean, write_mean_binaryproto
    from deepyeast.caffe.lmdb import write_datum_lmdb
    from deepyeast.caffe.prototxt import read_prototxt, write_prototxt

    train = _easy_cells(400, 1)
    write_datum_lmdb(str(tmp_path / "train_lmdb"), train, shuffle=True, seed=0)
    write_datum_lmdb(str(tmp_path / "val_lmdb"), _easy_cells(80, 2), shuffle=False)
    write_mean_binaryproto(str(tmp_path / "mean.binaryproto"), compute_mean(img for _, img, _ in train))
    src = read_prototxt(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models",
                                     "deepyeast", "train_val.prototxt"), caffe_pb2.NetParameter)
    net = caffe_pb2.NetParameter(name=src.name)
    for layer in src.layer:
        if layer.type == "Dropout":
            continue
        copy = net.layer.add()
        copy.CopyFrom(layer)
        if layer.type == "Data":
            train_phase = layer.include[0].phase == caffe_pb2.TRAIN
            copy.data_param.source = str(tmp_path / ("train_lmdb" if train_phase else "val_lmdb"))
            copy.data_param.batch_size = 8
            copy.transform_param.mean_file = str(tmp_path / "mean.binaryproto")
    assert len(net.layer) == len(src.layer) - 2  # fc1_drop, fc2_drop
    net_path = str(tmp_path / "train_val_small.prototxt")
    write_prototxt(net_path, net)
    init = str(tmp_path / "init.caffemodel")
    Net(net_path, phase="TRAIN", seed=3).save_caffemodel(init)
    p = solver_param(net_path, str(tmp_path / "snap" / "dy"), base_lr=0.02, lr_policy="fixed", momentum=0.9,
                     weight_decay=0.0005, max_iter=TRAJECTORY_ITERS, display=1, test_interval=0, snapshot=0,
                     random_seed=5, snapshot_after_train=False)
    del p.test_iter[:]
    solver_path = write_solver(str(tmp_path / "solver.prototxt"), p)

    script = tmp_path / "steps.py"
    script.write_text(PYCAFFE_STEPS)
    (tmp_path / "steps.json").write_text(json.dumps({"solver": solver_path, "init": init, "iters": TRAJECTORY_ITERS,
                                                     "out": str(tmp_path / "caffe.npz")}))
    r = caffe_root.run_pycaffe(str(script), [str(tmp_path / "steps.json")], cwd=str(tmp_path), check=False,
                               timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:]
    caffe = dict(np.load(tmp_path / "caffe.npz"))

    skip = {f"{a}/{b}" for a, b in _bias_into_batchnorm(net)}  # true gradient 0: rounding noise only

    def trajectory(perturb=0.0):
        s = Solver(p, progress=False)
        s.copy_trained_layers(init)
        if perturb:
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for q in s.params:
                    if q.lr_mult != 0:
                        q.tensor.mul_(1 + perturb * torch.randn(q.tensor.shape, generator=g))
        out = []
        for _ in range(TRAJECTORY_ITERS):
            s.step(1)
            out.append({f"{q.layer_name}/{q.index}": q.tensor.detach().numpy().astype(np.float64).copy()
                        for q in s.params})
        return s, out

    start = {name: arrays for name, arrays in _read_params(init).items()}
    solver, ours = trajectory()
    _, shaken = trajectory(ULP)
    rows, failures = [], []
    for t in range(1, TRAJECTORY_ITERS + 1):
        vs_caffe, vs_shaken, bn = [], [], []
        for key, w in ours[t - 1].items():
            layer, i = key.rsplit("/", 1)
            w0 = start[layer][int(i)].astype(np.float64)
            c = caffe[f"{t}/{key}"].astype(np.float64)
            if layer.endswith("_bn"):  # running statistics: forward quantities of each batch
                bn.append(float(np.abs(w - c).max() / max(np.abs(c).max(), 1e-30)))
                continue
            if key in skip:
                continue
            update = c - w0
            vs_caffe.append(np.linalg.norm((w - w0) - update) / np.linalg.norm(update))
            vs_shaken.append(np.linalg.norm((w - w0) - (shaken[t - 1][key] - w0)) / np.linalg.norm(w - w0))
        rows.append(f"iteration {t}: update vs Caffe's: median {np.median(vs_caffe):.1e}, max {max(vs_caffe):.1e}; "
                    f"vs ours from weights one rounding away: median {np.median(vs_shaken):.1e}, "
                    f"max {max(vs_shaken):.1e}; BatchNorm statistics max {max(bn):.1e}")
        assert len(vs_caffe) == 32 and len(bn) == 30, (len(vs_caffe), len(bn))
        if t == 1:
            if max(vs_caffe) > 2e-4 or max(bn) > 1e-4:
                failures.append(f"iteration 1: updates differ by up to {max(vs_caffe):.1e} (tolerance 2e-4), "
                                f"BatchNorm statistics by {max(bn):.1e} (1e-4)")
        elif np.median(vs_caffe) > np.median(vs_shaken):
            failures.append(f"iteration {t}: Caffe's updates are farther from ours (median {np.median(vs_caffe):.1e}) "
                            f"than ours from one rounding step away ({np.median(vs_shaken):.1e})")
    losses = [float(caffe[f"loss/{t}"]) for t in range(1, TRAJECTORY_ITERS + 1)]
    print("\n".join(rows + [f"Caffe's losses: {losses}"]))
    assert not failures, "\n".join(failures + rows)
    assert solver.iter == TRAJECTORY_ITERS and all(np.isfinite(losses))


def _read_params(path):
    from deepyeast.caffe.blobs import read_caffemodel
    return read_caffemodel(path)


def _bias_into_batchnorm(net_param):
    """(layer, 1) for Convolution/InnerProduct biases whose top goes straight into a BatchNorm."""
    layers = list(net_param.layer)
    return {(lp.name, 1) for lp, nxt in zip(layers, layers[1:])
            if lp.type in ("Convolution", "InnerProduct") and nxt.type == "BatchNorm" and list(nxt.bottom) == [lp.top[0]]}
