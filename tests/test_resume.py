"""Kill training for real (SIGKILL after a snapshot) and resume: the result equals an unbroken run.

Our engine writes ``{prefix}_iter_N.dystate`` (data cursors, random states) beside the
``.solverstate``, so the resumed run sees the same batches and the same dropout masks.
"""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from deepyeast.caffe.blobs import read_caffemodel
from deepyeast.caffe.lmdb import write_datum_lmdb

from _solver_nets import SMALL_CONV_NET, solver_param, write_net, write_solver

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_ITER = 1500
SNAPSHOT = 100


def _lmdb(path, n=300, seed=3):
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        y = i % 3
        img = rng.integers(0, 120, (2, 16, 16)).astype(np.uint8)
        img[y % 2, 4 * y:4 * y + 4, :] += 100
        items.append((f"plate01/r{i:03d}-1-1-1.png", img, y))
    write_datum_lmdb(path, items, shuffle=True, seed=0)
    return path


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _train(solver, *extra):
    return subprocess.Popen([sys.executable, "-m", "deepyeast", "train", "-solver", solver, *extra],
                            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_sigkill_and_resume_matches_unbroken_run(tmp_path):
    lmdb = _lmdb(str(tmp_path / "lmdb"))
    net = write_net(str(tmp_path / "net.prototxt"), SMALL_CONV_NET, lmdb, batch=16)
    common = dict(lr_policy="step", gamma=0.5, stepsize=400, base_lr=0.05, max_iter=MAX_ITER,
                  snapshot=SNAPSHOT, display=100, test_interval=500, random_seed=7)

    full = write_solver(str(tmp_path / "full.prototxt"),
                        solver_param(net, str(tmp_path / "full" / "m"), **common))
    proc = _train(full)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]

    killed = write_solver(str(tmp_path / "killed.prototxt"),
                          solver_param(net, str(tmp_path / "killed" / "m"), **common))
    proc = _train(killed)
    first = str(tmp_path / "killed" / f"m_iter_{SNAPSHOT}.solverstate")
    deadline = time.time() + 300
    while not os.path.exists(first) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    final = str(tmp_path / "killed" / f"m_iter_{MAX_ITER}.caffemodel")
    assert not os.path.exists(final), "the run finished before it was killed; the test proves nothing"

    states = glob.glob(str(tmp_path / "killed" / "m_iter_*.solverstate"))
    last = max(states, key=lambda p: int(re.search(r"_iter_(\d+)\.solverstate$", p).group(1)))
    proc = _train(killed, "-snapshot", last)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert "Restored data cursors and random state" in out

    a = read_caffemodel(str(tmp_path / "full" / f"m_iter_{MAX_ITER}.caffemodel"))
    b = read_caffemodel(final)
    assert list(a) == list(b)
    for name in a:
        for x, y in zip(a[name], b[name]):
            assert np.abs(x - y).max() <= 1e-6 * max(1.0, np.abs(x).max()), name
    # the weights really moved from their start (a no-op run would match trivially)
    early = read_caffemodel(str(tmp_path / "full" / f"m_iter_{SNAPSHOT}.caffemodel"))
    assert any(np.abs(x - y).max() > 1e-3 for n in a for x, y in zip(a[n], early[n]))


def test_auto_snapshot_picks_latest(tmp_path):
    from deepyeast.engine.cli import latest_solverstate
    prefix = str(tmp_path / "snap" / "m")
    os.makedirs(os.path.dirname(prefix))
    assert latest_solverstate(prefix) is None
    for n in (100, 1000, 200):
        open(f"{prefix}_iter_{n}.solverstate", "wb").close()
    open(f"{prefix}_iter_5000.solverstate.partial", "wb").close()
    assert latest_solverstate(prefix) == f"{prefix}_iter_1000.solverstate"
