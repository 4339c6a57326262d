"""The caffe-like command: train, test, time, extract; Caffe's log lines; errors."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from deepyeast.caffe.lmdb import path_of_key as key_to_path
from deepyeast.commands import main
from deepyeast.caffe.blobs import read_caffemodel
from deepyeast.caffe.lmdb import read_datum_lmdb

from _solver_nets import CONVEX_NET, N_RECORDS, LogCapture, make_init_weights, make_lmdb, solver_param, \
    write_net, write_solver

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    lmdb = make_lmdb(str(d / "lmdb"))
    net = write_net(str(d / "convex.prototxt"), CONVEX_NET, lmdb)
    init = make_init_weights(str(d / "init.caffemodel"))
    solver = write_solver(str(d / "solver.prototxt"),
                          solver_param(net, str(d / "snap" / "convex"), max_iter=20, snapshot=10, display=5))
    return d, lmdb, net, init, solver


def test_train_then_test_time_extract(setup):
    d, lmdb, net, init, solver = setup
    with LogCapture() as logs:
        assert main(["train", "-solver", solver, "-weights", init, "-progress", "off"]) == 0
    text = logs.text
    assert "Iteration 5, lr = 0.5" in text and "Iteration 15, lr = 0.5" in text
    assert "Test net output #0: accuracy" in text and "Optimization Done." in text
    model = str(d / "snap" / "convex_iter_20.caffemodel")
    assert os.path.exists(model)
    trained = read_caffemodel(model)["ip"][0]
    assert np.abs(trained - read_caffemodel(init)["ip"][0]).max() > 1e-3

    # resume from the iteration-10 snapshot: reaches 20 again
    with LogCapture() as logs:
        assert main(["train", "-solver", solver, "-snapshot", str(d / "snap" / "convex_iter_10.solverstate"),
                     "-progress", "off"]) == 0
    assert "SGDSolver: restoring history" in logs.text

    with LogCapture() as logs:
        assert main(["test", "-model", net, "-weights", model, "-iterations", "5"]) == 0
    assert "Batch 4, accuracy = " in logs.text
    acc = [float(l.split("= ")[1]) for l in logs.messages if l.startswith("accuracy = ")]
    assert len(acc) == 1 and acc[0] > 0.7  # the trained model beats chance (1/3) on its training set

    with LogCapture() as logs:
        assert main(["time", "-model", net, "-iterations", "3"]) == 0
    for line in ("Average Forward pass: ", "Average Backward pass: ", "Average Forward-Backward: ", "Total Time: "):
        assert any(m.startswith(line) and m.endswith(" ms.") for m in logs.messages), line

    out = str(d / "features")
    assert main(["extract", "-model", net, "-weights", model, "-blobs", "ip,data", "-out", out]) == 0
    ip = np.load(os.path.join(out, "ip.npy"))
    data = np.load(os.path.join(out, "data.npy"))
    paths = open(os.path.join(out, "paths.txt")).read().split()
    assert ip.shape == (N_RECORDS, 3) and data.shape == (N_RECORDS, 32) and ip.dtype == np.float32
    images, _, keys = read_datum_lmdb(lmdb)
    assert paths == [key_to_path(k) for k in keys]
    # rows are in the cells' order: the data blob is the scaled image of the named cell
    np.testing.assert_allclose(data, images.reshape(N_RECORDS, -1) / 256.0, rtol=1e-6)


def test_errors_are_clear(setup, capsys):
    d, _, net, init, solver = setup
    code = main(["train", "-solver", solver, "-weights", init, "-snapshot", "x.solverstate"])
    assert code == 2 and "not both" in capsys.readouterr().err
    code = main(["train", "-solver", str(d / "nope.prototxt")])
    assert code == 2 and "nope.prototxt" in capsys.readouterr().err
    code = main(["extract", "-model", net, "-weights", init, "-blobs", "fc9", "-out", str(d / "f2")])
    assert code == 2 and 'no blob "fc9"' in capsys.readouterr().err


def test_module_entry_point_and_help():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-m", "deepyeast", "train", "--help"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    for flag in ("-solver", "-weights", "-snapshot", "-gpu"):
        assert flag in res.stdout


def test_key_to_path():
    assert key_to_path("00000012_plate01/a-b-c-d.png") == "plate01/a-b-c-d.png"
    assert key_to_path("plate01/x.png") == "plate01/x.png"
