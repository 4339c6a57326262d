"""Our solver alone (no Caffe needed): update rule, snapshots, test schedule, resume, bad input."""

import os

import numpy as np
import pytest
import torch

from deepyeast.engine.solver import Solver, TrainingDiverged
from deepyeast.caffe.blobs import read_caffemodel, read_solverstate
from deepyeast.utils.io import InputError

from _solver_nets import (CONVEX_NET, SMALL_CONV_NET, LogCapture, make_init_weights, make_lmdb, solver_param,
                          write_net)


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("solver")
    lmdb = make_lmdb(str(d / "lmdb"))
    convex = write_net(str(d / "convex.prototxt"), CONVEX_NET, lmdb)
    conv = write_net(str(d / "conv.prototxt"), SMALL_CONV_NET, lmdb)
    init = make_init_weights(str(d / "init.caffemodel"))
    return d, convex, conv, init


def test_one_update_is_caffes_rule(nets):
    """w1 = w0 - (momentum*h0 + lr*lr_mult*(g + wd*decay_mult*w0)), h1 = that bracket."""
    d, convex, _, init = nets
    p = solver_param(convex, str(d / "rule" / "m"), base_lr=0.3, momentum=0.8, weight_decay=0.05, max_iter=1,
                     test_interval=0, snapshot=0, snapshot_after_train=False)
    s = Solver(p, progress=False)
    s.copy_trained_layers(init)
    rng = np.random.default_rng(5)
    h0 = [torch.from_numpy(rng.normal(0, 0.01, tuple(h.shape)).astype(np.float32)) for h in s.history]
    for h, v in zip(s.history, h0):
        h.copy_(v)
    s._history_live = [True] * len(s.history)
    w0 = [info.tensor.detach().clone() for info in s.params]
    state = s.net.data_state()
    s.net.forward()
    s.net.loss.backward()
    g = [info.tensor.grad.detach().clone() for info in s.params]
    s.net.set_data_state(state)
    s.step(1)
    for k, (info, w, gi, h) in enumerate(zip(s.params, w0, g, h0)):
        expect_h = 0.8 * h + 0.3 * info.lr_mult * (gi + 0.05 * info.decay_mult * w)
        assert torch.allclose(s.history[k], expect_h, rtol=1e-5, atol=1e-8)
        assert torch.allclose(info.tensor.detach(), w - expect_h, rtol=1e-5, atol=1e-8)
    assert [i.lr_mult for i in s.params] == [1.0, 2.0] and [i.decay_mult for i in s.params] == [1.0, 0.5]


def test_snapshots_test_schedule_and_logs(nets):
    d, convex, _, init = nets
    prefix = str(d / "snap" / "convex")
    p = solver_param(convex, prefix, max_iter=20, snapshot=8, test_interval=5, display=4, average_loss=3)
    with LogCapture() as logs:
        s = Solver(p, progress=False)
        s.copy_trained_layers(init)
        s.solve()
    names = sorted(os.listdir(os.path.dirname(prefix)))
    for it in (8, 16, 20):  # every `snapshot` iterations, plus the final one after max_iter
        for ext in (".caffemodel", ".solverstate", ".dystate.npz"):
            assert f"convex_iter_{it}{ext}" in names
    assert not any(n.endswith(".partial") for n in names)
    st = read_solverstate(prefix + "_iter_16.solverstate")
    assert st["iter"] == 16 and st["learned_net"] == prefix + "_iter_16.caffemodel"
    assert len(st["history"]) == 2 and st["history"][0].shape == (3, 32)
    assert [t[0] for t in s.test_results] == [0, 5, 10, 15, 20]  # test_initialization, every 5, and at the end
    text = logs.text
    assert "Iteration 4, lr = 0.5" in text
    assert "Test net output #0: accuracy = " in text and "Test net output #1: loss = " in text
    assert "Train net output #0: loss = " in text and "(* 1 = " in text
    assert "Optimization Done." in text
    # smoothed loss is the mean of the last average_loss losses: finite and positive
    assert all(np.isfinite(v) and v > 0 for _, v in s.train_outputs)


def test_exact_resume_from_own_snapshot(nets):
    """Conv net with BatchNorm and Dropout: resuming our snapshot (with .dystate.npz) continues bit-exactly."""
    d, _, conv, _ = nets
    common = dict(max_iter=24, snapshot=12, test_interval=8, base_lr=0.05, random_seed=11)
    full = Solver(solver_param(conv, str(d / "res_full" / "m"), **common), progress=False)
    full.solve()
    resumed = Solver(solver_param(conv, str(d / "res_part" / "m"), **common), progress=False)
    resumed.solve(resume_file=str(d / "res_full" / "m_iter_12.solverstate"))
    a = read_caffemodel(str(d / "res_full" / "m_iter_24.caffemodel"))
    b = read_caffemodel(str(d / "res_part" / "m_iter_24.caffemodel"))
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_array_equal(x, y)
    # BatchNorm statistics are in the snapshot and were updated by training (not by the solver)
    assert a["conv1_bn"][2][0] > 0


def test_nan_loss_stops_with_iteration_and_last_snapshot(nets):
    d, convex, _, init = nets
    prefix = str(d / "nan" / "m")
    p = solver_param(convex, prefix, max_iter=50, snapshot=1, test_interval=0)
    s = Solver(p, progress=False)
    s.copy_trained_layers(init)
    s.step(3)  # three good iterations, a snapshot after each
    with torch.no_grad():
        s.params[0].tensor[0, 0] = float("nan")  # a blown-up weight poisons the next loss
    # the snapshot at iteration 3 holds the weights whose loss is NaN: the last good one is iteration 2's
    with pytest.raises(TrainingDiverged, match=r"TRAIN loss is nan at iteration 3: training stopped \(diverged\)\. "
                                               r"Last snapshot with finite losses: .*m_iter_2\.solverstate"):
        s.step(5)
    assert s.iter == 3 and not os.path.exists(prefix + "_iter_4.solverstate")


def test_bad_solver_input_is_named(nets, tmp_path):
    d, convex, _, _ = nets
    p = solver_param(convex, str(tmp_path / "m"))
    p.type = "Adam"
    with pytest.raises(InputError, match='type "Adam"'):
        Solver(p)
    p = solver_param(str(tmp_path / "missing.prototxt"), str(tmp_path / "m"))
    with pytest.raises(InputError, match="missing.prototxt"):
        Solver(p)
    p = solver_param(convex, str(tmp_path / "m"), lr_policy="warmup")
    with pytest.raises(InputError, match='unknown lr_policy "warmup"'):
        Solver(p)
    p = solver_param(convex, str(tmp_path / "m"))
    s = Solver(p, progress=False)
    s.snapshot()
    other = solver_param(write_net(str(tmp_path / "conv.prototxt"), SMALL_CONV_NET, str(d / "lmdb")),
                         str(tmp_path / "o"))
    with pytest.raises(InputError, match="history blobs"):
        Solver(other, progress=False).restore(str(tmp_path / "m_iter_0.solverstate"))


def test_lr_mult_zero_blobs_stay_put(nets):
    """BatchNorm's statistics (lr_mult 0) change only through the forward pass, never by the update."""
    d, _, conv, _ = nets
    s = Solver(solver_param(conv, str(d / "lr0" / "m"), max_iter=3, snapshot=0, test_interval=0,
                            snapshot_after_train=False), progress=False)
    zero = [i for i, info in enumerate(s.params) if info.lr_mult == 0]
    assert len(zero) == 3
    s.step(3)
    for i in zero:
        assert float(s.history[i].abs().sum()) == 0.0


def _bf16_run(conv, prefix, keep, iters=8, iter_size=1):
    p = solver_param(conv, prefix, max_iter=iters, snapshot=0, test_interval=3, snapshot_after_train=False,
                     iter_size=iter_size, average_loss=1)
    s = Solver(p, progress=False, precision="bf16")
    for n in [s.net] + s.test_nets:
        n.keep_casts = keep
    losses = []
    for _ in range(iters):
        s.step(1)
        losses.append(s._smoothed_loss())
    return s, losses


@pytest.mark.parametrize("iter_size", [1, 2])
def test_bf16_weights_kept_in_bf16_give_bit_identical_training(nets, iter_size):
    """Issue 24: under bf16 autocast the Convolution / InnerProduct weights are kept as bf16 copies between
    iterations (refreshed after each SGD update) instead of cast at every forward; 8 iterations (tests
    at 0, 3, 6; dropout; BatchNorm) give the same weights, history, losses and test outputs bit for bit."""
    d, _, conv, _ = nets
    kept, kept_losses = _bf16_run(conv, str(d / f"keep{iter_size}" / "m"), True, iter_size=iter_size)
    cast, cast_losses = _bf16_run(conv, str(d / f"cast{iter_size}" / "m"), False, iter_size=iter_size)
    assert kept_losses == cast_losses and len(set(kept_losses)) > 1
    assert kept.test_results == cast.test_results and len(kept.test_results) == 3
    for a, b, ha, hb in zip(kept.params, cast.params, kept.history, cast.history):
        assert torch.equal(a.tensor, b.tensor), a.layer_name
        assert torch.equal(ha, hb), a.layer_name
    # the copies were used; the next forward refreshes them from the updated weights; none without keep_casts
    with torch.no_grad():
        kept.net.forward()
    for name in ("conv1", "ip"):
        layer = kept.net.layer(name)
        for i, blob in enumerate(layer.blobs):
            copy = layer._kept_casts[i][2]
            assert copy.dtype == torch.bfloat16 and torch.equal(copy, blob.detach().to(torch.bfloat16))
        assert "_kept_casts" not in cast.net.layer(name).__dict__
    assert float((kept.params[0].tensor.detach() - kept.params[0].tensor.detach().to(torch.bfloat16).float())
                 .abs().max()) > 0  # master weights stay float32, finer than their bf16 copies


def test_kept_bf16_weights_follow_weights_loaded_into_the_net(nets):
    """A weight written outside the solver (loaded weights) replaces the kept bf16 copy at the next forward."""
    d, _, conv, _ = nets
    s, _ = _bf16_run(conv, str(d / "load" / "m"), True, iters=2)
    net = s.test_nets[0]
    state = net.data_state()
    with torch.no_grad():
        net.forward()
    before = net.blobs["ip"].clone()
    s.net.save_caffemodel(str(d / "load" / "w.caffemodel"))
    with torch.no_grad():
        for info in s.params:
            if info.lr_mult:
                info.tensor.mul_(0.5)
    net.set_data_state(state)
    with torch.no_grad():
        net.forward()
    halved = net.blobs["ip"].clone()
    net.load_caffemodel(str(d / "load" / "w.caffemodel"))
    net.set_data_state(state)
    with torch.no_grad():
        net.forward()
    assert not torch.equal(halved, before) and torch.equal(net.blobs["ip"], before)
    # copies first made under inference_mode (prediction) are normal tensors that training can save for backward
    fresh, _ = _bf16_run(conv, str(d / "load" / "f"), True, iters=0)
    with torch.inference_mode():
        fresh.net.forward()
    fresh.step(1)
    assert fresh.iter == 1 and fresh.net.layer("conv1")._kept_casts[0][2].dtype == torch.bfloat16
