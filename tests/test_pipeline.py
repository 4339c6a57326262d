"""End-to-end: the Makefile pipeline behind `make demo` and `make reproduce`, at a tiny size.

These run the real chain (synthetic micrographs -> crops -> LMDB -> our engine's
training -> predictions -> CellProfiler features -> R randomForest -> quality
filter -> protein calls -> transfer -> interpretation -> report), with only the
sizes and the schedule made small.
"""

import json
import os
import shutil
import subprocess

import pytest

from _data_helpers import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.r, pytest.mark.usefixtures("r_present")]

TINY_SCHEDULE = ("max_iter=6 stepsize=3 test_interval=3 test_iter=1 snapshot=3 display=1 average_loss=1")


def _make(*args, timeout=900):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(["make", "--no-print-directory", *args], cwd=REPO_ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return proc


def _check_lowest_validation_loss_was_chosen(train_dir):
    """The weights the analyses used are the snapshot whose iteration had the lowest TEST loss in the
    training log (read here with its own parser, not the pipeline's), and not another snapshot."""
    import re

    with open(os.path.join(train_dir, "train.log"), encoding="utf-8") as f:
        log = f.read()
    losses, current = {}, None
    for line in log.splitlines():
        m = re.search(r"Iteration (\d+), Testing net \(#0\)", line)
        if m:
            current = int(m.group(1))
        m = re.search(r"Test net output #\d+: loss = (\S+)", line)
        if m and current is not None:
            losses[current] = float(m.group(1))
    snapshots = {int(m.group(1)): os.path.join(train_dir, "snapshots", name)
                 for name in os.listdir(os.path.join(train_dir, "snapshots"))
                 for m in [re.fullmatch(r"deepyeast_iter_(\d+)\.caffemodel", name)] if m}
    candidates = {it: loss for it, loss in losses.items() if it in snapshots}
    assert len(candidates) >= 2, (losses, sorted(snapshots))  # a real choice between snapshots
    best = min(candidates, key=candidates.get)
    with open(os.path.join(train_dir, "chosen.caffemodel"), "rb") as f:
        chosen = f.read()
    contents = {}
    for it, path in snapshots.items():
        with open(path, "rb") as f:
            contents[it] = f.read()
    assert chosen == contents[best], f"chosen.caffemodel is not the iteration-{best} snapshot (losses {candidates})"
    assert sum(chosen == c for c in contents.values()) == 1  # the snapshots differ: the check tells them apart


def _check_report(run):
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    for key in ("cell_accuracy", "cell_kappa", "cell_accuracy_filtered", "protein_accuracy",
                "protein_accuracy_min10", "rf_cell_accuracy", "rf_protein_accuracy", "transfer_accuracy"):
        assert key in metrics, key
    acc = metrics["cell_accuracy"]
    assert acc["total"] > 0 and 0 <= acc["correct"] <= acc["total"]
    html = open(os.path.join(run, "report.html"), encoding="utf-8").read()
    assert html.count("data:image/png;base64,") >= 8
    commands = open(os.path.join(run, "commands.txt")).read()
    assert "deepyeast train" in commands or "bin/caffe train" in commands
    return metrics


def test_demo_pipeline_tiny_and_rerun_skips(tmp_path):
    run = os.path.relpath(tmp_path / "demo", REPO_ROOT)
    proc = _make("pipeline", f"RUN={run}", "SCREEN=synthetic", "SIZE=tiny", f"SCHEDULE={TINY_SCHEDULE}",
                 "GRID=small", "PRECISION=bf16")
    assert proc.returncode == 0, proc.stdout[-4000:]
    _check_report(os.path.join(REPO_ROOT, run))
    assert "==> [" in proc.stdout  # one step line per stage
    # every step is a file target: nothing is left to do on a re-run
    again = _make("-q", "pipeline", f"RUN={run}", "SCREEN=synthetic", "SIZE=tiny",
                  f"SCHEDULE={TINY_SCHEDULE}", "GRID=small", "PRECISION=bf16")
    assert again.returncode == 0, "make -q says a finished pipeline is out of date:\n" + again.stdout[-2000:]
    # removing one analysis output re-runs that step alone
    os.remove(os.path.join(REPO_ROOT, run, "proteins", "result.json"))
    dry = _make("-n", "pipeline", f"RUN={run}", "SCREEN=synthetic", "SIZE=tiny",
                f"SCHEDULE={TINY_SCHEDULE}", "GRID=small", "PRECISION=bf16")
    assert "protein_level.py" in dry.stdout and "deepyeast train" not in dry.stdout, dry.stdout


def test_reproduce_pipeline_on_small_archive_in_real_layout(tmp_path, tmp_path_factory):
    from _data_helpers import tiny_screen
    screen = tiny_screen(tmp_path_factory)
    # the published layout: lists at the top, images under main/ and transfer/
    archive = tmp_path / "archive"
    for part in ("main", "transfer"):
        shutil.copytree(screen / part, archive / part)
        for name in os.listdir(archive / part):
            if name.startswith("HOwt_") and name.endswith(".txt"):
                os.replace(archive / part / name, archive / name)
    run = os.path.relpath(tmp_path / "reproduce", REPO_ROOT)
    proc = _make("reproduce", f"REPRO_RUN={run}", f"ARCHIVE_SRC={archive}", "REPRO_GPU=", "REPRO_GRID=small",
                 f"REPRO_SCHEDULE={TINY_SCHEDULE}")
    assert proc.returncode == 0, proc.stdout[-4000:]
    run_dir = os.path.join(REPO_ROOT, run)
    _check_report(run_dir)
    # the paper's solver with only the schedule changed, and the snapshot chosen by validation loss
    solver = open(os.path.join(run_dir, "train", "solver.prototxt")).read()
    assert "base_lr: 0.1" in solver and "momentum: 0.9" in solver and "max_iter: 6" in solver
    _check_lowest_validation_loss_was_chosen(os.path.join(run_dir, "train"))
    splits = json.load(open(os.path.join(run_dir, "data", "screen.json")))
    assert splits  # check_splits' report of the archive
