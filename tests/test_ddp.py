"""Multi-process training (torchrun + gloo on CPU, the analogue of ``caffe train -gpu all``).

Two processes with batch 4 each see, per step, the same 8 records as one process with batch 8, and
gradients are averaged, so after 20 iterations the weights agree with the single-process run.
"""

import os
import subprocess
import sys

import pytest

from _requirements import reason
import torch

from _solver_nets import CONVEX_NET, make_init_weights, make_lmdb, max_rel_diff, solver_param, write_net, \
    write_solver

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason=reason("gloo"))
def test_two_process_training_matches_one_process_double_batch(tmp_path):
    lmdb = make_lmdb(str(tmp_path / "lmdb"))
    init = make_init_weights(str(tmp_path / "init.caffemodel"))
    common = dict(max_iter=20, snapshot=0, display=5, test_interval=10, lr_policy="step", gamma=0.5, stepsize=10)
    net8 = write_net(str(tmp_path / "net8.prototxt"), CONVEX_NET, lmdb, batch=8)
    net4 = write_net(str(tmp_path / "net4.prototxt"), CONVEX_NET, lmdb, batch=4)
    one = write_solver(str(tmp_path / "one.prototxt"), solver_param(net8, str(tmp_path / "one" / "m"), **common))
    two = write_solver(str(tmp_path / "two.prototxt"), solver_param(net4, str(tmp_path / "two" / "m"), **common))
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-m", "deepyeast", "train", "-solver", one, "-weights", init],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "deepyeast", "train", "-solver", two, "-weights", init],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    # only rank 0 logs and snapshots
    assert res.stderr.count("Optimization Done.") == 1
    assert sorted(os.listdir(tmp_path / "two")) == ["m_iter_20.caffemodel", "m_iter_20.dystate.npz",
                                                     "m_iter_20.solverstate"]
    assert max_rel_diff(str(tmp_path / "two" / "m_iter_20.caffemodel"),
                        str(tmp_path / "one" / "m_iter_20.caffemodel")) <= 1e-5
