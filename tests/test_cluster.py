"""Tasks on a real Dask cluster: `dask scheduler` + 2 `dask worker` processes on 127.0.0.1.

The forest grid, the quality filter's cross-validation and the CellProfiler features
give identical outputs with --scheduler none (one process), local (a LocalCluster)
and tcp://127.0.0.1:PORT (the cluster); shared inputs reach each worker once.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _dask_cluster import CountingPayload, dask_cluster, payload_task, unpickled
from deepyeast.analysis.cluster import SCHEDULER_ENV, TaskRunner, resolve_scheduler
from deepyeast.utils.io import InputError

pytestmark = [pytest.mark.slow]

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


@pytest.fixture(scope="module")
def cluster():
    with dask_cluster(n_workers=2) as address:
        yield address


def test_resolve_scheduler():
    assert resolve_scheduler("none", {}) == "none"
    assert resolve_scheduler(None, {}) == "local"
    assert resolve_scheduler(None, {SCHEDULER_ENV: "tcp://10.0.0.5:8786"}) == "tcp://10.0.0.5:8786"
    assert resolve_scheduler("local", {SCHEDULER_ENV: "tcp://10.0.0.5:8786"}) == "local"  # the flag wins
    with pytest.raises(InputError, match="--scheduler: 'lokal' is neither"):
        resolve_scheduler("lokal", {})
    with pytest.raises(InputError, match=f"{SCHEDULER_ENV}: '10.0.0.5:8786' is neither"):
        resolve_scheduler(None, {SCHEDULER_ENV: "10.0.0.5:8786"})


def test_shared_inputs_reach_each_worker_once(cluster):
    payload = CountingPayload(np.arange(100_000, dtype=np.float64))
    with TaskRunner(cluster) as run:
        assert run.n_workers == 2
        before = run.client.run(unpickled)
        data = run.share(payload)
        results = list(run.imap(payload_task, range(16), data, window=4))
        after = run.client.run(unpickled)
        worker_pids = run.client.run(os.getpid)  # {worker address: its process id}
    assert [r[0] for r in results] == list(range(16))  # in item order
    assert all(r[2] == payload.data.sum() for r in results)
    # the tasks ran in the cluster's worker processes, not in a silent in-process fallback
    ran_in = {r[1] for r in results}
    assert os.getpid() not in ran_in and ran_in <= set(worker_pids.values()), (ran_in, worker_pids)
    # each worker that ran a task unpickled the shared data exactly once (not once per task, not never)
    by_pid = {pid: w for w, pid in worker_pids.items()}
    for pid in ran_in:
        w = by_pid[pid]
        assert after[w] - before[w] == 1, (w, before, after)


def _malloc_trim_threshold():
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_cluster_workers_keep_glibcs_trim_threshold():
    """Dask's nanny would set MALLOC_TRIM_THRESHOLD_=65536 in each worker, which halved the speed of
    the CellProfiler features; the LocalCluster's workers (and this process) keep the environment's."""
    before = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    with TaskRunner("local", jobs=1) as run:
        (seen,) = run.client.run(_malloc_trim_threshold).values()
    assert seen == before and os.environ.get("MALLOC_TRIM_THRESHOLD_") == before


def test_unreachable_scheduler_is_an_input_error():
    with pytest.raises(InputError, match="cannot reach the Dask scheduler"):
        with TaskRunner("tcp://127.0.0.1:9", timeout=3):
            pass


# --------------------------------------------------------------------------- the forest grid


def _feature_files(tmp_path, n_features=60, seed=0):
    """Feature CSVs and split lists of 4 classes (train/val/test), class signal in 3 features."""
    from deepyeast.analysis.cp_features import write_feature_csv

    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1.2, size=(4, 3))
    lists = []
    for split, per_class in (("train", 30), ("val", 12), ("test", 10)):
        y = np.repeat(np.arange(4), per_class)
        x = rng.normal(size=(len(y), n_features))
        x[:, :3] += centres[y]
        x[rng.random(x.shape) < 0.01] = np.nan  # imputed with the training medians
        paths = [f"plate0{1 + k}/{split}{i:03d}-0-0-{i}.png" for i, k in enumerate(y)]
        write_feature_csv(tmp_path / f"{split}.csv", paths, [f"f{j}" for j in range(n_features)], x)
        (tmp_path / f"HOwt_transfer_{split}.txt").write_text("".join(f"{p} {k}\n" for p, k in zip(paths, y)))
        lists.append(str(tmp_path / f"HOwt_transfer_{split}.txt"))
    return lists


def _random_forest(tmp_path, lists, tag, *cluster_args):
    out = {k: tmp_path / f"{tag}_{k}" for k in ("test.csv", "val.csv", "summary.json")}
    r = subprocess.run([sys.executable, os.path.join(REPO, "analysis", "random_forest.py"),
                        "--train", str(tmp_path / "train.csv"), "--val", str(tmp_path / "val.csv"),
                        "--test", str(tmp_path / "test.csv"), "--labels-from", *lists, "--grid", "small",
                        "--out", str(out["test.csv"]), "--val-out", str(out["val.csv"]),
                        "--summary", str(out["summary.json"]), *cluster_args],
                       capture_output=True, text=True, env=dict(os.environ, **{SCHEDULER_ENV: ""}))
    assert r.returncode == 0, r.stderr
    return {k: v.read_bytes() for k, v in out.items()}


@pytest.mark.r
def test_forest_grid_identical_whatever_the_scheduler(tmp_path, cluster, r_present):
    """The CLI with --scheduler none, local (LocalCluster, 2 processes) and the tcp cluster:
    the same chosen grid point and byte-identical test/val predictions and summary."""
    lists = _feature_files(tmp_path)
    none = _random_forest(tmp_path, lists, "none", "--scheduler", "none")
    local = _random_forest(tmp_path, lists, "local", "--scheduler", "local", "--jobs", "2")
    tcp = _random_forest(tmp_path, lists, "tcp", "--scheduler", cluster)
    assert none == local == tcp
    s = json.loads(none["summary.json"])
    assert len(s["table"]) == 4 and s["best"] in s["table"]
    # DASK_SCHEDULER is used when --scheduler is not given
    env = dict(os.environ, **{SCHEDULER_ENV: cluster})
    r = subprocess.run([sys.executable, os.path.join(REPO, "analysis", "random_forest.py"),
                        "--train", str(tmp_path / "train.csv"), "--val", str(tmp_path / "val.csv"),
                        "--test", str(tmp_path / "test.csv"), "--labels-from", *lists,
                        "--out", str(tmp_path / "env.csv")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "2 worker(s) at " + cluster in r.stderr
    assert (tmp_path / "env.csv").read_bytes() == none["test.csv"]


@pytest.mark.r
def test_grid_and_quality_cv_api_identical_on_the_cluster(cluster, r_present):
    """A larger grid (4 forests, 3 prefixes) and the quality CV (4 points x 5 folds) as tasks."""
    from deepyeast.analysis import quality_filter, random_forest as rforest
    from deepyeast.utils.run_context import RunContext

    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(3), 25)
    x = rng.normal(size=(75, 10))
    x[:, 0] += y
    xv, yv = x[::3] + rng.normal(scale=0.5, size=(25, 10)), y[::3]
    grid = {"ntree": [4, 9, 15], "mtry": [2, 5], "nodesize": [1, 4]}
    a = rforest.grid_search(x, y, xv, yv, grid=grid, x_test=xv[:7], context=RunContext(seed=2, scheduler="none"))
    b = rforest.grid_search(x, y, xv, yv, grid=grid, x_test=xv[:7], context=RunContext(seed=2, scheduler=cluster))
    assert a["table"] == b["table"] and a["best"] == b["best"] and len(a["table"]) == 12
    for k in ("val_prob", "val_pred", "test_prob", "test_pred"):
        np.testing.assert_array_equal(a[k], b[k])
    is_cell = (rng.random(75) < 0.7).astype(int)
    cv = quality_filter.QualityCV(mtry=(1, 3), folds=5, ntree=20)
    qa = quality_filter.quality_cv(x, is_cell, cv, RunContext(seed=4, scheduler="none"))
    qb = quality_filter.quality_cv(x, is_cell, cv, RunContext(seed=4, scheduler=cluster))
    assert qa[0] == qb[0] and qa[1] == qb[1]
    np.testing.assert_array_equal(quality_filter.quality_predict(qa[2], x, 4)[0],
                                  quality_filter.quality_predict(qb[2], x, 4)[0])


# --------------------------------------------------------------------------- CellProfiler features


def test_cp_features_identical_on_the_cluster_and_errors_come_back(tmp_path, cluster):
    from _cell_crops import write_archive

    root = tmp_path / "arch"
    write_archive(str(root), {"test": 5}, n_classes=4, seed=3)
    outs = {}
    for tag, args in (("none", ["--scheduler", "none"]), ("tcp", ["--scheduler", cluster])):
        outs[tag] = tmp_path / f"{tag}.csv"
        r = subprocess.run([sys.executable, os.path.join(REPO, "analysis", "cp_features.py"), "--archive", str(root),
                            "--list", "HOwt_transfer_test.txt", "--out", str(outs[tag]), "--batch", "6", *args],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert outs["none"].read_bytes() == outs["tcp"].read_bytes()
    assert len(outs["none"].read_text().splitlines()) == 21  # header + 20 cells in 4 chunks
    # a corrupt crop fails inside a worker: one line naming it, exit 2, no output file
    first = (root / "HOwt_transfer_test.txt").read_text().split()[0]
    (root / first).write_bytes(b"\x89PNG not really")
    r = subprocess.run([sys.executable, os.path.join(REPO, "analysis", "cp_features.py"), "--archive", str(root),
                        "--list", "HOwt_transfer_test.txt", "--out", str(tmp_path / "bad.csv"), "--batch", "6",
                        "--scheduler", cluster], capture_output=True, text=True)
    assert r.returncode == 2 and first in r.stderr and "corrupt" in r.stderr, r.stderr
    assert not (tmp_path / "bad.csv").exists()
