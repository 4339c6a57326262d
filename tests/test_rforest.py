"""The random-forest baseline: real R randomForest through rpy2 (not mocked)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deepyeast.analysis import rforest

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
    a, b, med = rforest.impute_features(tr, te)
    np.testing.assert_array_equal(med, [2.0, 0.0])  # median of 1,3,2; all-missing column -> 0
    assert a[2, 0] == 2.0 and (a[:, 1] == 0).all() and b[0, 0] == 2.0 and b[0, 1] == 5.0


def test_grid_search_scores_every_point_and_best_forest_is_reproducible():
    x, y = _blobs(40, 12, seed=1)
    xv, yv = _blobs(15, 12, seed=2)
    xt, yt = _blobs(10, 12, seed=3)
    # same class centres: regenerate val/test with the train centres
    rng = np.random.default_rng(7)
    centres = x[:, :3].reshape(12, 40, 3).mean(axis=1)
    for arr, lab in ((xv, yv), (xt, yt)):
        arr[:, :3] = rng.normal(size=(len(lab), 3)) + centres[lab]
    grid = {"ntree": [20, 60], "mtry": [2, 6], "nodesize": [1, 5]}
    table, best, test_prob = rforest.grid_search(x, y, xv, yv, grid=grid, n_jobs=2, seed=11, x_test=xt,
                                                 n_classes=12)
    assert len(table) == 8
    assert {(r["ntree"], r["mtry"], r["nodesize"]) for r in table} == {
        (t, m, n) for t in (20, 60) for m in (2, 6) for n in (1, 5)}
    assert best["val_accuracy"] == max(r["val_accuracy"] for r in table)
    assert best["val_correct"] == round(best["val_accuracy"] * len(yv))
    # the forest scored in the grid is the one a fresh fit with the same seed grows
    model = rforest.fit(x, y, best)
    prob = model.predict_proba(xt, 12)
    np.testing.assert_allclose(test_prob, prob, atol=1e-12)
    assert prob.shape == (len(yt), 12) and prob.dtype == np.float64
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-9)
    val_pred = model.predict_proba(xv, 12).argmax(axis=1)
    assert int((val_pred == yv).sum()) == best["val_correct"]
    assert (prob.argmax(axis=1) == yt).mean() > 0.5  # 12 classes, chance is 0.08


def test_first_trees_of_a_forest_are_the_smaller_forest():
    x, y = _blobs(20, 3, seed=4)
    big = rforest.fit(x, y, {"ntree": 40, "mtry": 3, "nodesize": 1, "seed": 5})
    small = rforest.fit(x, y, {"ntree": 10, "mtry": 3, "nodesize": 1, "seed": 5})
    votes = rforest._r().r[".votes_by_ntree"](big.r_model, rforest._matrix(x), rforest._r().IntVector([10]))[0]
    np.testing.assert_allclose(np.asarray(votes).reshape(len(y), 3, order="F"), small.predict_proba(x, 3),
                               atol=1e-12)


def test_absent_class_gets_zero_probability():
    x, y = _blobs(20, 4, seed=6)
    y = np.where(y == 2, 3, y)  # class 2 never seen in training
    model = rforest.fit(x, y, {"ntree": 10, "mtry": 2, "nodesize": 1, "seed": 1})
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
    from deepyeast.analysis.predictions import read_predictions

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
                       + ["--grid", "small", "--out", str(out), "--summary", str(summary), "--jobs", "2"],
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

    # a test cell missing from every label list is an error naming it, and no table is written
    bad = tmp_path / "bad_lists.txt"
    bad.write_text("".join(f"{rel} {lab}\n" for rel, lab in lists["train"] + lists["val"]))
    out2 = tmp_path / "rf2.csv"
    r = subprocess.run([sys.executable, os.path.join(REPO, "analysis", "random_forest.py"),
                        "--train", str(feats["train"]), "--val", str(feats["val"]), "--test", str(feats["test"]),
                        "--labels-from", str(bad), "--out", str(out2), "--jobs", "1"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and lists["test"][0][0] in r.stderr and not out2.exists()
