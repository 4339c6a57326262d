"""The cell-quality filter as in the paper: the training-set rule, the CV grid, the choice, real R forests."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deepyeast.analysis.cp_features import write_feature_csv
from deepyeast.analysis.quality_filter import (
    filter_accuracy,
    pick_training_cells,
    quality_best,
    read_noncell_list,
    read_quality_labels,
)
from deepyeast.utils.manifest import read_result
from deepyeast.utils.io import InputError
from deepyeast.utils.run_context import RunContext

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


# --------------------------------------------------------------------------- training-set rule, by hand

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
NET = np.array([0, 0, 1, 0, 1, 1, 1, 2, 0, 2])
RF = np.array([0, 0, 0, 0, 1, 2, 1, 2, 2, 2])
EXCLUDE = np.zeros(10, bool)
EXCLUDE[3] = True  # a listed non-cell, correct by both, is never a training cell
CANDIDATES = {0: [0, 1], 1: [4, 6], 2: [7, 9]}  # label == net == rf, not excluded


def test_training_cells_are_those_correct_by_both_classifiers():
    idx, info = pick_training_cells(LABELS, NET, RF, EXCLUDE, per_class=2, seed=5)
    assert idx.tolist() == [0, 1, 4, 6, 7, 9]  # per class at most 2: all candidates
    assert info == [{"class": c, "available": 2, "picked": 2} for c in range(3)]
    idx, info = pick_training_cells(LABELS, NET, RF, EXCLUDE, per_class=5, seed=5, n_classes=4)
    assert idx.tolist() == [0, 1, 4, 6, 7, 9] and info[3] == {"class": 3, "available": 0, "picked": 0}


def test_training_cells_per_class_seeded_without_replacement():
    picks = {}
    for seed in range(40):
        idx, info = pick_training_cells(LABELS, NET, RF, EXCLUDE, per_class=1, seed=seed)
        assert [i["picked"] for i in info] == [1, 1, 1]
        assert [sum(i in CANDIDATES[c] for i in idx) for c in range(3)] == [1, 1, 1]  # one per class
        picks[seed] = idx.tolist()
        again, _ = pick_training_cells(LABELS, NET, RF, EXCLUDE, per_class=1, seed=seed)
        assert again.tolist() == picks[seed]  # seeded
    # over seeds every candidate is drawn, and nothing else ever is
    assert {i for p in picks.values() for i in p} == {0, 1, 4, 6, 7, 9}
    # a class's draw does not depend on the other classes: change class 2 entirely
    labels2, net2, rf2 = LABELS.copy(), NET.copy(), RF.copy()
    net2[7:] = 1
    for seed in range(10):
        idx, info = pick_training_cells(labels2, net2, rf2, EXCLUDE, per_class=1, seed=seed)
        assert idx.tolist() == picks[seed][:2] and info[2]["available"] == 0
    # 100 per class of 250 candidates: distinct cells (without replacement), all candidates
    lab = np.repeat([0, 1], 250)
    idx, _ = pick_training_cells(lab, lab, lab, None, per_class=100, seed=1)
    assert len(idx) == len(set(idx.tolist())) == 200 and (lab[idx] == 0).sum() == 100


def test_noncell_list_must_name_validation_cells(tmp_path):
    val = {"plate01/a-0-0-1.png", "plate01/b-0-0-2.png", "plate02/c-0-0-3.png"}
    f = tmp_path / "noncells.txt"
    f.write_text("# picked by eye\nplate01/b-0-0-2.png\n\nplate02/c-0-0-3.png\n")
    assert read_noncell_list(f, val) == ["plate01/b-0-0-2.png", "plate02/c-0-0-3.png"]
    f.write_text("plate01/b-0-0-2.png\nplate09/test-0-0-9.png\n")
    with pytest.raises(InputError, match=r"noncells.txt:2: 'plate09/test-0-0-9.png' is not a cell of the validation"):
        read_noncell_list(f, val)
    f.write_text("plate01/b-0-0-2.png\nplate01/b-0-0-2.png\n")
    with pytest.raises(InputError, match=r"noncells.txt:2: plate01/b-0-0-2.png is also on line 1"):
        read_noncell_list(f, val)
    f.write_text("plate01/b-0-0-2.png 0\n")
    with pytest.raises(InputError, match=r"noncells.txt:1: expected one crop path"):
        read_noncell_list(f, val)
    f.write_text("# nothing\n")
    with pytest.raises(InputError, match="names no crop"):
        read_noncell_list(f, val)
    with pytest.raises(InputError, match="cannot open non-cell list"):
        read_noncell_list(tmp_path / "absent.txt", val)



def test_noncell_list_errors_name_the_line(tmp_path):
    """Without the validation cells to check against (the list's format alone): comments after a path,
    a path twice, more than a path on a line, a list naming no crop."""
    lst = tmp_path / "noncells.txt"
    lst.write_text("# picked by eye\nplate01/1-1-1-1.png\n\nplate01/2-1-1-1.png  # debris\nplate01/1-1-1-1.png\n")
    with pytest.raises(InputError, match=r"noncells.txt:5: plate01/1-1-1-1.png is also on line 2"):
        read_noncell_list(lst)
    lst.write_text("plate01/1-1-1-1.png 0\n")
    with pytest.raises(InputError, match=r"noncells.txt:1: expected one crop path"):
        read_noncell_list(lst)
    lst.write_text("# none\n")
    with pytest.raises(InputError, match="names no crop"):
        read_noncell_list(lst)
    lst.write_text("plate01/1-1-1-1.png\nplate01/2-1-1-1.png # debris\n")
    assert read_noncell_list(lst) == ["plate01/1-1-1-1.png", "plate01/2-1-1-1.png"]

# --------------------------------------------------------------------------- CV grid and choice

CV_TABLE = [  # hand-made CV results: the best balanced accuracy is not the best accuracy
    {"mtry": 2, "sampling": "none", "cv_accuracy": 0.90, "cv_balanced_accuracy": 0.70},
    {"mtry": 8, "sampling": "none", "cv_accuracy": 0.92, "cv_balanced_accuracy": 0.72},
    {"mtry": 2, "sampling": "balanced", "cv_accuracy": 0.88, "cv_balanced_accuracy": 0.86},
    {"mtry": 8, "sampling": "balanced", "cv_accuracy": 0.92, "cv_balanced_accuracy": 0.80},
]


def test_choice_by_cv_accuracy_then_balanced_accuracy():
    assert quality_best(CV_TABLE) == CV_TABLE[3]  # 0.92 twice: the higher balanced accuracy
    assert quality_best(CV_TABLE[:3]) == CV_TABLE[1]  # not the 0.86 balanced accuracy
    tied = [dict(r, cv_accuracy=0.9, cv_balanced_accuracy=0.8) for r in CV_TABLE]
    assert quality_best(tied) == tied[0] and quality_best(tied[1:]) == tied[2]  # then smaller mtry, then 'none' first


@pytest.mark.r
def test_cv_grid_capped_at_feature_count_and_r_choice_agrees(r_present):
    from deepyeast.analysis import quality_filter, rbridge

    paper = (2, 110, 218, 326, 435)
    pts = quality_filter.quality_points(paper, ("none", "balanced"), 8)
    assert [(p["mtry"], p["sampling"]) for p in pts] == [(2, "none"), (8, "none"), (2, "balanced"), (8, "balanced")]
    assert [p["mtry"] for p in quality_filter.quality_points(paper, ("none",), 430)] == [2, 110, 218, 326, 430]
    assert [p["mtry"] for p in quality_filter.quality_points(paper, ("none",), 500)] == list(paper)
    with rbridge.session() as ro:
        df = ro.DataFrame({k: (ro.StrVector if k == "sampling" else ro.FloatVector)([r[k] for r in CV_TABLE])
                           for k in CV_TABLE[0]})
        for rows in (CV_TABLE, CV_TABLE[:3]):
            sub = df.rx(ro.IntVector(range(1, len(rows) + 1)), True)
            best = rbridge.data_frame_rows(ro.r["rf_quality_best"](sub, ro.StrVector(["none", "balanced"])))[0]
            assert (best["mtry"], best["sampling"]) == (quality_best(rows)["mtry"],
                                                        quality_best(rows)["sampling"])


@pytest.mark.r
def test_quality_cv_tasks_equal_r_rf_quality_cv(r_present):
    """One task per (point, fold) gives the numbers of R's rf_quality_cv (same folds and seeds)."""
    from deepyeast.analysis import quality_filter, rbridge

    rng = np.random.default_rng(4)
    is_cell = np.array([1] * 60 + [0] * 20)
    x = rng.normal(size=(80, 6))
    x[is_cell == 0, :2] += 1.5
    cv = quality_filter.QualityCV(mtry=(2, 110), folds=5, ntree=25)
    table, best, model = quality_filter.quality_cv(x, is_cell, cv, RunContext(seed=7))
    with rbridge.session() as ro:
        r = ro.r["rf_quality_cv"](rbridge.r_matrix(x), rbridge.r_ints(is_cell), mtry=ro.IntVector([2, 110]),
                                  # cores=1: mclapply would fork this multi-threaded pytest process (a
                                  # child can deadlock on a lock another thread held: seen in a random-order run)
                                  folds=5, ntree=25, cores=1, seed=7)
        r_table = rbridge.data_frame_rows(r.rx2("table"))
        r_best = rbridge.data_frame_rows(r.rx2("best"))[0]
        p_r = np.asarray(ro.r["rf_quality_predict"](r.rx2("model"), rbridge.r_matrix(x), 7).rx2("p_cell"))
    assert table == r_table and best == r_best
    assert [(row["mtry"], row["sampling"]) for row in table] == [(2, "none"), (6, "none"), (2, "balanced"),
                                                                 (6, "balanced")]
    assert all(row["n1"] == 60 and row["n0"] == 20 for row in table)  # every row scored once per point
    p_cell, cls = quality_filter.quality_predict(model, x, 7)
    np.testing.assert_array_equal(p_cell, p_r)
    assert set(cls.tolist()) <= {0, 1} and ((p_cell > 0.5) <= (cls == 1)).all()


# --------------------------------------------------------------------------- the script, end to end


def test_training_cells_defaults_messages_and_int_flags():
    """Seed 0 by default; differing lengths are refused naming the three shapes; exclusion flags given as 0/1
    integers (e.g. read from a table) exclude the same cells as booleans."""
    assert pick_training_cells(LABELS, NET, RF, EXCLUDE, per_class=1)[0].tolist() == \
        pick_training_cells(LABELS, NET, RF, EXCLUDE, per_class=1, seed=0)[0].tolist()
    with pytest.raises(ValueError, match=r"^shapes differ: labels \(10,\), net_pred \(9,\), rf_pred \(10,\)$"):
        pick_training_cells(LABELS, NET[:9], RF)
    for seed in range(5):
        as_bool = pick_training_cells(LABELS, NET, RF, EXCLUDE, per_class=1, seed=seed)
        as_int = pick_training_cells(LABELS, NET, RF, EXCLUDE.astype(int), per_class=1, seed=seed)
        assert as_int[0].tolist() == as_bool[0].tolist() and as_int[1] == as_bool[1]
    assert 3 not in pick_training_cells(LABELS, NET, RF, EXCLUDE.astype(int), per_class=5)[0]


def test_filter_accuracy_counts():
    from deepyeast.analysis.prediction_table import Predictions

    probs = np.eye(4)[[0, 1, 2, 3, 0, 1]]
    t = Predictions(path=np.array(list("abcdef"), dtype=object), protein=np.array(["p/1"] * 6, dtype=object),
                    split=np.array(["test"] * 6, dtype=object), label=np.array([0, 1, 2, 0, 1, 1]),
                    pred=probs.argmax(1), probs=probs, class_names=("a", "b", "c", "d"))
    acc = filter_accuracy(t, {"a", "b", "c", "f"})  # drop d (wrong) and e (wrong)
    assert acc["before"] == {"value": 4 / 6, "correct": 4, "total": 6}
    assert acc["after"] == {"value": 1.0, "correct": 4, "total": 4} and acc["removed"] == 2
    # a table without cells (an empty split): zero counts, no value, nothing removed
    none = np.array([], dtype=object)
    empty = Predictions(path=none, protein=none, split=none, label=np.zeros(0, np.int64), pred=np.zeros(0, np.int64),
                        probs=np.zeros((0, 4)), class_names=("a", "b", "c", "d"))
    nothing = {"value": None, "correct": 0, "total": 0}
    assert filter_accuracy(empty, {"a"}) == {"before": nothing, "after": nothing, "removed": 0}


def test_read_quality_labels_errors(tmp_path):
    f = tmp_path / "q.csv"
    f.write_text("path,is_cell,kind\na.png,1,cell\nb.png,2,debris\n")
    with pytest.raises(InputError, match=r"q.csv:3: column 'is_cell'"):
        read_quality_labels(f)
    f.write_text("path,quality\na.png,1\n")
    with pytest.raises(InputError, match=r"q.csv:1: header"):
        read_quality_labels(f)


def _write_table(path, paths, labels, pred, n_classes=4, split="val"):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "protein", "split", "label", "pred"] + [f"prob_{k}" for k in range(n_classes)])
        for p, lab, pr in zip(paths, labels, pred):
            w.writerow([p, p.rsplit("-", 3)[0], split, int(lab), int(pr)]
                       + [1.0 if k == pr else 0.0 for k in range(n_classes)])


def _screen(tmp_path, seed=0):
    """Validation and test cells: features where non-cells are shifted in 2 of 8 features;
    classifiers that are right on some cells and always wrong on non-cells."""
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(8)]

    def block(prefix, n_cell, n_non):
        is_cell = np.array([1] * n_cell + [0] * n_non)
        x = rng.normal(size=(len(is_cell), 8))
        x[is_cell == 0, :2] += 3.0
        paths = [f"plate01/{prefix}{i:03d}-0-0-{i}.png" for i in range(len(is_cell))]
        labels = rng.integers(0, 4, len(is_cell))
        net = np.where((is_cell == 1) & (rng.random(len(labels)) < 0.8), labels, (labels + 1) % 4)
        rf = np.where((is_cell == 1) & (rng.random(len(labels)) < 0.8), labels, (labels + 2) % 4)
        return paths, x, is_cell, labels, net, rf

    va = block("1", 240, 30)
    te = block("2", 50, 12)
    write_feature_csv(tmp_path / "val.csv", va[0], names, va[1])
    write_feature_csv(tmp_path / "test.csv", te[0], names, te[1])
    _write_table(tmp_path / "net_val.csv", va[0], va[3], va[4])
    _write_table(tmp_path / "rf_val.csv", va[0], va[3], va[5])
    _write_table(tmp_path / "net_test.csv", te[0], te[3], te[4], split="test")
    (tmp_path / "noncells.txt").write_text("".join(p + "\n" for p, c in zip(va[0], va[2]) if c == 0))
    with open(tmp_path / "truth.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "is_cell", "kind"])
        for p, c in list(zip(va[0], va[2])) + list(zip(te[0], te[2])):
            w.writerow([p, int(c), "cell" if c else "debris"])
    return va, te


def _summary(tmp_path, out="qf"):
    return json.loads((tmp_path / out / "quality_filter.json").read_text())


def _run(tmp_path, *extra, out="qf"):
    args = [sys.executable, os.path.join(REPO, "analysis", "quality_filter.py"),
            "--val", str(tmp_path / "val.csv"), "--net-val", str(tmp_path / "net_val.csv"),
            "--rf-val", str(tmp_path / "rf_val.csv"), "--noncells", str(tmp_path / "noncells.txt"),
            "--test", str(tmp_path / "test.csv"), "--out", str(tmp_path / out), "--scheduler", "none", "--seed", "1",
            *extra]
    return subprocess.run(args, capture_output=True, text=True)


@pytest.mark.r
def test_quality_filter_script_paper_procedure(tmp_path, r_present):
    va, te = _screen(tmp_path)
    r = _run(tmp_path, "--predictions", str(tmp_path / "net_test.csv"), "--truth", str(tmp_path / "truth.csv"),
             "--cells", str(tmp_path / "cells.csv"), "--training", str(tmp_path / "training.csv"),
             "--figure", str(tmp_path / "qf.png"), "--per-class", "20", "--ntree", "50")
    assert r.returncode == 0, r.stderr
    s = _summary(tmp_path)
    # the training set: the rule applied to the validation tables, plus all 30 listed non-cells
    both = (va[3] == va[4]) & (va[3] == va[5]) & (va[2] == 1)
    expect, info = pick_training_cells(va[3], va[4], va[5], va[2] == 0, per_class=20, seed=1)
    assert both[expect].all()
    with open(tmp_path / "training.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["path"] for row in rows if row["is_cell"] == "1"] == [va[0][i] for i in expect]
    assert [row["path"] for row in rows if row["is_cell"] == "0"] == [p for p, c in zip(va[0], va[2]) if c == 0]
    ts = s["training_set"]
    assert ts["cells"] == len(expect) == sum(min(20, i["available"]) for i in info) and ts["noncells"] == 30
    assert [c["available"] for c in ts["classes"]] == [int((both & (va[3] == k)).sum()) for k in range(4)]
    # CV grid: the paper's mtry capped at 8 features x 2 samplings; every training row scored once
    assert [(row["mtry"], row["sampling"]) for row in s["cv_table"]] == [(2, "none"), (8, "none"), (2, "balanced"),
                                                                         (8, "balanced")]
    assert all(row["n1"] == ts["cells"] and row["n0"] == 30 for row in s["cv_table"])
    assert s["best"] == quality_best(s["cv_table"])
    assert s["best"]["cv_accuracy"] == max(row["cv_accuracy"] for row in s["cv_table"])
    assert 0.5 < s["best"]["cv_balanced_accuracy"] <= 1
    # applied to the test cells: an independent tally from the per-cell file
    with open(tmp_path / "cells.csv") as f:
        cells = list(csv.DictReader(f))
    assert [row["path"] for row in cells] == te[0]
    kept = np.array([int(row["is_cell_pred"]) for row in cells], dtype=bool)
    ok = te[3] == te[4]
    net = s["classifiers"]["network"]
    assert net["before"] == {"value": ok.mean(), "correct": int(ok.sum()), "total": len(ok)}
    assert net["after"]["correct"] == int(ok[kept].sum()) and net["after"]["total"] == int(kept.sum())
    assert net["removed"] == s["test"]["n_removed"] == int((~kept).sum())
    assert net["after"]["value"] > net["before"]["value"]  # removing non-cells helps
    assert s["cell_accuracy"] == net["before"] and s["cell_accuracy_filtered"] == net["after"]
    assert "rf_cell_accuracy" not in s  # no forest test predictions given
    fl = s["test"]["filter_vs_truth"]
    assert fl["noncells_removed"]["total"] == 12 and fl["cells_kept"]["total"] == 50
    assert fl["noncells_removed"]["correct"] == int(((te[2] == 0) & ~kept).sum())
    assert (tmp_path / "qf.png").stat().st_size > 1000 and (tmp_path / "qf.pdf").exists()
    # the manifest the report reads: the network's accuracy after filtering; the forest's named as missing
    m = read_result(tmp_path / "qf" / "result.json")
    assert m["name"] == "quality" and m["metrics"]["cell_accuracy_filtered"] == net["after"]
    assert m["metrics"]["rf_cell_accuracy_filtered"] is None
    assert [x["option"] for x in m["missing"]] == ["--rf-predictions CSV"]
    assert f"{ts['noncells']} non-cells of noncells.txt" in m["summary"]
    cv = next(t for t in m["tables"] if t["title"] == "Cross-validation of the filter")
    assert [r[:2] for r in cv["rows"]] == [[2, "none"], [8, "none"], [2, "balanced"], [8, "balanced"]]
    assert "mtry grid as run: 2, 8 (the paper's 2, 110, 218, 326, 435" in cv["caption"]  # the grid's top said

    # same seed, same everything (Dask LocalCluster of 2 processes)
    r = _run(tmp_path, "--predictions", str(tmp_path / "net_test.csv"), "--per-class", "20", "--ntree", "50",
             "--cells", str(tmp_path / "cells2.csv"), out="qf2")
    assert r.returncode == 0, r.stderr
    r = _run(tmp_path, "--predictions", str(tmp_path / "net_test.csv"), "--per-class", "20", "--ntree", "50",
             "--cells", str(tmp_path / "cells3.csv"), "--scheduler", "local", "--jobs", "2", out="qf3")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "qf2" / "quality_filter.json").read_text() == (tmp_path / "qf3" / "quality_filter.json").read_text()
    assert (tmp_path / "cells2.csv").read_text() == (tmp_path / "cells3.csv").read_text()
    assert _summary(tmp_path, "qf2")["cv_table"] == s["cv_table"]


@pytest.mark.r
def test_quality_filter_bad_lists_and_too_small_training_set(tmp_path, r_present):
    va, te = _screen(tmp_path, seed=1)
    # a listed non-cell that is a test cell: one clear line, exit 2, nothing written
    with open(tmp_path / "noncells.txt", "a") as f:
        f.write(te[0][0] + "\n")
    r = _run(tmp_path)
    n_lines = len((tmp_path / "noncells.txt").read_text().splitlines())
    assert r.returncode == 2 and f"noncells.txt:{n_lines}: '{te[0][0]}' is not a cell of the validation" in r.stderr
    assert not (tmp_path / "qf").exists()
    # the validation tables disagree on a label
    (tmp_path / "noncells.txt").write_text("".join(p + "\n" for p, c in zip(va[0], va[2]) if c == 0))
    _write_table(tmp_path / "rf_bad.csv", va[0], (va[3] + np.eye(len(va[3]), dtype=int)[5]) % 4, va[5])
    r = _run(tmp_path, "--rf-val", str(tmp_path / "rf_bad.csv"))
    assert r.returncode == 2 and va[0][5] in r.stderr and not (tmp_path / "qf").exists()
    # a test predictions row that is not a test cell: clear error, nothing written
    (tmp_path / "noncells.txt").write_text("".join(p + "\n" for p, c in zip(va[0], va[2]) if c == 0))
    with open(tmp_path / "net_test.csv", "a", newline="") as f:
        csv.writer(f).writerow(["plate09/zzz-0-0-0.png", "plate09/zzz", "test", 0, 0, 1.0, 0, 0, 0])
    r = _run(tmp_path, "--predictions", str(tmp_path / "net_test.csv"), "--mtry", "2", "--sampling", "none",
             "--ntree", "20")
    assert r.returncode == 2 and "plate09/zzz-0-0-0.png" in r.stderr and not (tmp_path / "qf").exists()
    # 5 non-cells cannot feed 10-fold CV: reported as not run, with the reason, no crash
    (tmp_path / "noncells.txt").write_text("".join(p + "\n" for p, c in list(zip(va[0], va[2]))[-5:]))
    r = _run(tmp_path, "--figure", str(tmp_path / "qf.png"))
    assert r.returncode == 0, r.stderr
    s = _summary(tmp_path)
    assert "needs at least 10 of each" in s["not_run"]["reason"] and "NONCELLS" in s["not_run"]["option"]
    assert s["training_set"]["noncells"] == 5 and "cell_accuracy_filtered" not in s
    assert not (tmp_path / "qf.png").exists()
    m = read_result(tmp_path / "qf" / "result.json")
    assert m["metrics"] == {"cell_accuracy_filtered": None, "rf_cell_accuracy_filtered": None}
    assert [(x["what"], x["reason"]) for x in m["missing"]] == [("non-cell filter", s["not_run"]["reason"])]


def test_quality_filter_without_a_noncell_list_is_reported_as_not_run(tmp_path):
    """The published archive has no non-cell list: the step succeeds with a result naming the
    filter as not run (null metrics, the option that would run it); half a set of inputs is an error."""
    out = tmp_path / "quality"
    script = os.path.join(REPO, "analysis", "quality_filter.py")
    r = subprocess.run([sys.executable, script, "--out", str(out), "--scheduler", "none"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = read_result(out / "result.json")
    assert m["metrics"] == {"cell_accuracy_filtered": None, "rf_cell_accuracy_filtered": None}
    assert len(m["missing"]) == 1 and m["missing"][0]["what"] == "non-cell filter"
    assert "NONCELLS=FILE" in m["missing"][0]["option"] and "--noncells" in m["missing"][0]["option"]
    assert m["missing"] == [{"what": "non-cell filter", "reason": "the published archive has no non-cell labels",
                             "option": "NONCELLS=FILE (make), --noncells FILE (analysis/quality_filter.py)"}]
    assert "not run" in m["summary"] and {h["metric"] for h in m["headline"]} == set(m["metrics"])
    assert os.listdir(out) == ["result.json"]  # nothing else: the manifest says it all
    # a list without the tables it needs: one line naming them, exit 2, nothing already written lost
    (tmp_path / "noncells.txt").write_text("plate01/a-0-0-1.png\n")
    r = subprocess.run([sys.executable, script, "--out", str(out), "--noncells", str(tmp_path / "noncells.txt"),
                        "--test", str(tmp_path / "noncells.txt")], capture_output=True, text=True)
    assert r.returncode == 2 and "--val, --net-val, --rf-val" in r.stderr and len(r.stderr.splitlines()) == 1
    assert read_result(out / "result.json") == m
