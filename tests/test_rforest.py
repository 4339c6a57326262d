"""The random-forest baseline: real R randomForest through rpy2 (not mocked)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deepyeast.analysis import random_forest as rforest, rbridge
from deepyeast.utils.run_context import RunContext

pytestmark = pytest.mark.r

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


@pytest.fixture(scope="module", autouse=True)
def _need_r(r_present):
    pass


def _blobs(n_per_class, n_classes, n_features=12, seed=0):
    """Gaussian classes separated along the first 3 features; the rest is noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = rng.normal(size=(len(y), n_features))
    centres = rng.normal(scale=2.0, size=(n_classes, 3))
    x[:, :3] += centres[y]
    return x, y


def test_impute_uses_training_medians():
    tr = np.array([[1.0, np.nan], [3.0, np.nan], [np.inf, np.nan], [2.0, np.nan]])
    te = np.array([[np.nan, 5.0]])
    a, b, med = rbridge.impute_features(tr, te)
    np.testing.assert_array_equal(med, [2.0, 0.0])  # median of 1,3,2; all-missing column -> 0
    assert a[2, 0] == 2.0 and (a[:, 1] == 0).all() and b[0, 0] == 2.0 and b[0, 1] == 5.0


def _val_test_like(x, n_classes, n_per_class, seed):
    """Validation/test cells with the class centres of training blobs ``x`` (40 per class)."""
    rng = np.random.default_rng(seed)
    centres = x[:, :3].reshape(n_classes, -1, 3).mean(axis=1)
    xv, yv = _blobs(n_per_class, n_classes, seed=seed)
    xv[:, :3] = rng.normal(size=(len(yv), 3)) + centres[yv]
    return xv, yv


def test_grid_search_scores_every_point_and_best_forest_is_reproducible():
    x, y = _blobs(40, 12, seed=1)
    xv, yv = _val_test_like(x, 12, 15, 2)
    xt, yt = _val_test_like(x, 12, 10, 3)
    grid = {"ntree": [20, 60], "mtry": [2, 6], "nodesize": [1, 5]}
    res = rforest.grid_search(x, y, xv, yv, grid=grid, x_test=xt, n_classes=12, context=RunContext(seed=11))
    table, best = res["table"], res["best"]
    assert len(table) == 8
    assert [(r["mtry"], r["nodesize"], r["ntree"]) for r in table] == [
        (m, n, t) for n in (1, 5) for m in (2, 6) for t in (20, 60)]  # grid_pairs order, mtry fastest
    assert [r["seed"] for r in table] == [11, 11, 12, 12, 13, 13, 14, 14]
    assert best["val_accuracy"] == max(r["val_accuracy"] for r in table)
    assert best["val_correct"] == round(best["val_accuracy"] * len(yv))
    # the forest scored in the grid is the one a fresh fit with the same seed grows, and its
    # classes are randomForest's predict() with the point's seed (ties at random, as R does)
    model = rbridge.fit(x, y, best)
    prob = model.predict_proba(xt, 12)
    np.testing.assert_allclose(res["test_prob"], prob, atol=1e-12)
    np.testing.assert_array_equal(res["test_pred"], model.predict(xt, best["seed"]))
    np.testing.assert_array_equal(res["val_pred"], model.predict(xv, best["seed"]))
    assert prob.shape == (len(yt), 12) and prob.dtype == np.float64
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-9)
    assert int((res["val_pred"] == yv).sum()) == best["val_correct"]
    assert (res["test_pred"] == yt).mean() > 0.5  # 12 classes, chance is 0.08
    # every prefix: the first k trees are the k-tree forest (scored with the same rule)
    for row in table:
        if row["ntree"] == 20:
            m20 = rbridge.fit(x, y, row)
            assert int((m20.predict(xv, row["seed"]) == yv).sum()) == row["val_correct"]


def test_python_grid_equals_r_grid_search():
    """The task-per-forest search (Python) and R's rf_grid_search (mclapply) give the same numbers."""
    x, y = _blobs(30, 4, seed=5)
    xv, yv = _val_test_like(x, 4, 12, 6)
    xt, _ = _val_test_like(x, 4, 6, 7)
    grid = {"ntree": [3, 8], "mtry": [2, 30], "nodesize": [1, 3]}  # mtry 30 capped at 12 features
    res = rforest.grid_search(x, y, xv, yv, grid=grid, x_test=xt, n_classes=4, context=RunContext(seed=3))
    with rbridge.session() as ro:
        r_grid = ro.ListVector({k: ro.IntVector(v) for k, v in grid.items()})
        r = ro.r["rf_grid_search"](rbridge.r_matrix(x), rbridge.r_ints(y), rbridge.r_matrix(xv), rbridge.r_ints(yv),
                                   # cores=1: mclapply would fork this pytest process with its threads (a
                                   # child can deadlock on a lock another thread held); R alone with cores=2
                                   # is checked by the Rscript test below
                                   grid=r_grid, cores=1, seed=3, x_test=rbridge.r_matrix(xt))
        r_table = rbridge.data_frame_rows(r.rx2("table"))
        r_best = rbridge.data_frame_rows(r.rx2("best"))[0]
        r_prob = np.asarray(r.rx2("test_prob")).reshape(len(xt), 4, order="F")
        r_class = [int(c) for c in r.rx2("test_class")]
    assert res["table"] == r_table and res["best"] == r_best
    assert {row["mtry"] for row in r_table} == {2, 12}
    np.testing.assert_array_equal(res["test_prob"], r_prob)
    np.testing.assert_array_equal(res["test_pred"], r_class)


def test_vote_class_breaks_ties_as_randomforest_predict():
    """rf_vote_class on vote counts == randomForest's predict() (same seed), ties included."""
    with rbridge.session() as ro:
        mismatches, ties = ro.r("""function() {
          mism <- 0; ties <- 0
          for (trial in 1:12) {
            set.seed(trial); K <- 2 + trial %% 4
            x <- matrix(rnorm(150 * 3), 150); y <- factor(sample(0:(K - 1), 150, TRUE))
            m <- randomForest(x, y, ntree = c(2, 3, 4, 6)[1 + trial %% 4])
            cnt <- predict(m, x, type = "vote", norm.votes = FALSE)
            ties <- ties + sum(apply(cnt, 1, function(r) sum(r == max(r)) > 1))
            for (s in 1:3) { set.seed(s); mism <- mism + sum(as.integer(predict(m, x)) != rf_vote_class(cnt, s)) }
          }
          c(mism, ties)
        }""")()
        assert ties > 100 and mismatches == 0
        # randomForest's rule: of two tied classes, the later one wins with probability 1/3
        later = np.asarray(ro.r("function() mean(rf_vote_class(matrix(c(2, 2), 30000, 2, byrow = TRUE), 7) == 2)")())
    assert abs(float(later[0]) - 1 / 3) < 0.01


def test_first_trees_of_a_forest_are_the_smaller_forest():
    x, y = _blobs(20, 3, seed=4)
    big = rbridge.fit(x, y, {"ntree": 40, "mtry": 3, "nodesize": 1, "seed": 5})
    small = rbridge.fit(x, y, {"ntree": 10, "mtry": 3, "nodesize": 1, "seed": 5})
    with rbridge.session() as ro:
        counts = rbridge.r_array(ro.r[".prefix_counts"](big.r_model, rbridge.r_matrix(x), ro.IntVector([10, 40])),
                                np.int32)
    assert counts.shape == (len(y), 3, 2) and (counts.sum(axis=1) == [10, 40]).all()
    np.testing.assert_allclose(counts[:, :, 0] / 10, small.predict_proba(x, 3), atol=1e-12)
    np.testing.assert_allclose(counts[:, :, 1] / 40, big.predict_proba(x, 3), atol=1e-12)


def test_absent_class_gets_zero_probability():
    x, y = _blobs(20, 4, seed=6)
    y = np.where(y == 2, 3, y)  # class 2 never seen in training
    model = rbridge.fit(x, y, {"ntree": 10, "mtry": 2, "nodesize": 1, "seed": 1})
    p = model.predict_proba(x[:5], 4)
    assert (p[:, 2] == 0).all() and model.classes == [0, 1, 3]


def test_named_grids():
    paper = rforest.resolve_grid("paper")
    assert paper == {"ntree": [50, 100, 250, 500, 1000],
                     "mtry": [10, 25, 50, 75, 100, 125, 150, 175, 200, 250, 300],
                     "nodesize": [1, 2, 5, 10, 50]}
    small = rforest.resolve_grid("small")
    assert 1 <= len(small["ntree"]) * len(small["mtry"]) * len(small["nodesize"]) <= 8
    with pytest.raises(ValueError, match="unknown grid"):
        rforest.resolve_grid("huge")


def test_r_code_is_usable_from_r_directly(tmp_path):
    script = tmp_path / "use.R"
    script.write_text(
        f'source("{os.path.join(REPO, "deepyeast", "analysis", "random_forest.R")}")\n'
        "set.seed(3); x <- matrix(rnorm(300 * 5), 300); y <- factor(rep(0:2, 100)); x[, 1] <- x[, 1] + 3 * as.integer(y)\n"
        "s <- rf_grid_search(x[1:200, ], y[1:200], x[201:300, ], y[201:300], grid = list(ntree = c(20, 40), mtry = 2, nodesize = 1), cores = 2)\n"
        "q <- rf_quality_cv(x, as.integer(y == 0), mtry = c(2, 435), ntree = 20, cores = 2)\n"
        "stopifnot(identical(sort(unique(q$table$mtry)), c(2L, 5L)), nrow(q$table) == 4)\n"
        "m <- rf_fit(x[1:200, ], y[1:200], s$best)\n"
        "p <- rf_predict_proba(m, x[201:300, ])\n"
        "cat(nrow(s$table), ncol(p), max(abs(rowSums(p) - 1)), mean(colnames(p)[max.col(p, 'first')] == y[201:300]), '\\n')\n")
    r = subprocess.run(["Rscript", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    n_rows, n_cols, err, acc = r.stdout.split()
    assert int(n_rows) == 2 and int(n_cols) == 3 and float(err) < 1e-9 and float(acc) > 0.8


def test_baseline_script_from_crops_to_predictions_table(tmp_path):
    """Crops -> features (analysis/cp_features.py) -> forest (analysis/random_forest.py) -> table."""
    from _cell_crops import write_archive
    from deepyeast.analysis.prediction_table import read_predictions

    root = tmp_path / "arch"
    lists = write_archive(str(root), {"train": 12, "val": 6, "test": 6}, n_classes=4, seed=0)
    feats = {}
    for split in ("train", "val", "test"):
        feats[split] = tmp_path / f"feats_{split}.csv"
        r = subprocess.run([sys.executable, os.path.join(REPO, "analysis", "cp_features.py"), "--archive", str(root),
                            "--list", f"HOwt_transfer_{split}.txt", "--out", str(feats[split]), "--jobs", "2"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    out = tmp_path / "rf_predictions.csv"
    summary = tmp_path / "rf_grid.json"
    r = subprocess.run([sys.executable, os.path.join(REPO, "analysis", "random_forest.py"),
                        "--train", str(feats["train"]), "--val", str(feats["val"]), "--test", str(feats["test"]),
                        "--labels-from"] + [str(root / f"HOwt_transfer_{s}.txt") for s in ("train", "val", "test")]
                       + ["--grid", "small", "--out", str(out), "--val-out", str(tmp_path / "rf_val.csv"),
                          "--summary", str(summary), "--scheduler", "none"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    table = read_predictions(str(out))
    assert table.n_classes == 4 and table.n_cells == 24
    assert list(table.path) == [rel for rel, _ in lists["test"]]
    assert list(table.label) == [lab for _, lab in lists["test"]]
    assert table.protein[0] == table.path[0].split("/")[0] + "/" + table.path[0].split("/")[1].split("-")[0]
    assert set(table.split) == {"test"}
    s = json.loads(summary.read_text())
    acc = float((table.pred == table.label).mean())
    assert s["test_accuracy"]["correct"] == int((table.pred == table.label).sum())
    assert acc >= 0.75, acc  # 4 easy patterns, chance 0.25
    assert len(s["table"]) == 4 and s["best"] in s["table"]
    val = read_predictions(str(tmp_path / "rf_val.csv"))
    assert list(val.path) == [rel for rel, _ in lists["val"]] and set(val.split) == {"val"}
    assert int((val.pred == val.label).sum()) == s["best"]["val_correct"]

    # a test cell missing from every label list is an error naming it, and no table is written
    bad = tmp_path / "bad_lists.txt"
    bad.write_text("".join(f"{rel} {lab}\n" for rel, lab in lists["train"] + lists["val"]))
    out2 = tmp_path / "rf2.csv"
    r = subprocess.run([sys.executable, os.path.join(REPO, "analysis", "random_forest.py"),
                        "--train", str(feats["train"]), "--val", str(feats["val"]), "--test", str(feats["test"]),
                        "--labels-from", str(bad), "--out", str(out2), "--scheduler", "none"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and lists["test"][0][0] in r.stderr and not out2.exists()
