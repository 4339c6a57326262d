"""Paper scale (issue 15 item 1): crops held on disk while predicting (CropFile), and training
snapshots pruned to the ones the snapshot rules need."""

import os
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

from _data_helpers import REPO_ROOT
from deepyeast.analysis.predict import CropFile
from deepyeast.caffe import caffe_pb2
from deepyeast.engine.run_config import prune_snapshots, snapshots_on_disk
from deepyeast.utils.io import InputError


def test_crop_file_reads_back_what_was_written():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(37, 2, 8, 8), dtype=np.uint8)
    store = CropFile.from_iter(iter(crops), "crops.txt")
    assert store.shape == crops.shape and store.dtype == np.uint8 and len(store) == 37
    np.testing.assert_array_equal(store[5:30], crops[5:30])
    np.testing.assert_array_equal(store[30:100], crops[30:])   # a slice past the end stops at N
    np.testing.assert_array_equal(store[-1], crops[-1])
    np.testing.assert_array_equal(np.asarray(store), crops)
    assert store[40:50].shape == (0, 2, 8, 8)
    assert CropFile.from_iter(iter(()), "none.txt") is None
    bad = list(crops[:3]) + [np.zeros((2, 8, 9), np.uint8)]
    with pytest.raises(InputError, match=r"odd.txt: crop 3 is uint8 \(2, 8, 9\), crop 0 is uint8 \(2, 8, 8\)"):
        CropFile.from_iter(iter(bad), "odd.txt")


def _solver_with_snapshots(tmp_path, iterations, losses=None):
    snaps = tmp_path / "snapshots"
    snaps.mkdir()
    solver = caffe_pb2.SolverParameter(net="net.prototxt", base_lr=0.1, max_iter=max(iterations),
                                       snapshot_prefix=str(snaps / "deepyeast"))
    path = tmp_path / "solver.prototxt"
    path.write_text(text_format.MessageToString(solver))
    for it in iterations:
        for suffix in (".caffemodel", ".solverstate", ".dystate.npz"):
            (snaps / f"deepyeast_iter_{it}{suffix}").write_bytes(f"{it}{suffix}".encode() * 100)
    if losses:
        log = "".join(f"I1 solver.cpp] Iteration {it}, Testing net (#0)\n"
                      f"I1 solver.cpp]     Test net output #0: loss = {loss}\n" for it, loss in losses.items())
        (tmp_path / "train.log").write_text("I1 solver.cpp] Solving DeepYeast\n" + log)
    return path, snaps


def test_prune_keeps_the_chosen_and_the_newest_snapshot(tmp_path):
    path, snaps = _solver_with_snapshots(tmp_path, [100, 200, 300, 400])
    (snaps / "deepyeast_iter_500.caffemodel.diverged").write_bytes(b"x")   # renamed: not a snapshot
    (snaps / "notes.txt").write_text("kept")
    removed, freed = prune_snapshots(str(path), keep=[200])
    assert sorted(os.path.basename(f) for f in removed) == sorted(
        f"deepyeast_iter_{it}{s}" for it in (100, 300) for s in (".caffemodel", ".solverstate", ".dystate.npz"))
    assert freed == sum(len(f"{it}{s}".encode()) * 100 for it in (100, 300)
                        for s in (".caffemodel", ".solverstate", ".dystate.npz"))
    solver = text_format.Parse(path.read_text(), caffe_pb2.SolverParameter())
    assert sorted(snapshots_on_disk(solver)) == [200, 400]
    assert (snaps / "deepyeast_iter_500.caffemodel.diverged").exists() and (snaps / "notes.txt").exists()


def test_choose_with_prune_from_the_command_line(tmp_path):
    """The pipeline's step: the lowest validation loss is copied out, then every other snapshot but
    the newest is removed; choosing again afterwards gives the same snapshot."""
    path, snaps = _solver_with_snapshots(tmp_path, [100, 200, 300], losses={100: 2.0, 200: 1.5, 300: 1.7})
    out = tmp_path / "chosen.caffemodel"
    cmd = [sys.executable, "data_prep/choose_snapshot.py", str(path), str(out), "--rule", "val_loss",
           "--log", str(tmp_path / "train.log"), "--prune"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == (snaps / "deepyeast_iter_200.caffemodel").read_bytes()
    assert "pruned 3 snapshot files" in proc.stdout
    assert sorted(os.listdir(snaps)) == sorted(f"deepyeast_iter_{it}{s}" for it in (200, 300)
                                               for s in (".caffemodel", ".solverstate", ".dystate.npz"))
    out.unlink()
    again = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and out.read_bytes() == (snaps / "deepyeast_iter_200.caffemodel").read_bytes()
    assert "pruned 0 snapshot files" in again.stdout
