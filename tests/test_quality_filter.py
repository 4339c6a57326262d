"""The cell-quality filter: real R forests, counts checked against an independent tally."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deepyeast.analysis.cp_features import write_feature_csv
from deepyeast.utils.io import InputError
from deepyeast.analysis.quality_filter import filter_accuracy, read_quality_labels, stratified_subset

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


def test_stratified_subset_keeps_class_shares():
    y = np.array([1] * 900 + [0] * 100)
    idx = stratified_subset(y, 200, seed=3)
    assert len(idx) == 200 and (np.diff(idx) > 0).all()
    assert (y[idx] == 0).sum() == 20
    np.testing.assert_array_equal(stratified_subset(y[:50], 200), np.arange(50))


def test_filter_accuracy_counts():
    from deepyeast.analysis.predictions import Predictions

    probs = np.eye(4)[[0, 1, 2, 3, 0, 1]]
    t = Predictions(path=np.array(list("abcdef"), dtype=object), protein=np.array(["p/1"] * 6, dtype=object),
                    split=np.array(["test"] * 6, dtype=object), label=np.array([0, 1, 2, 0, 1, 1]),
                    pred=probs.argmax(1), probs=probs, class_names=("a", "b", "c", "d"))
    acc = filter_accuracy(t, {"a", "b", "c", "f"})  # drop d (wrong) and e (wrong)
    assert acc["before"] == {"value": 4 / 6, "correct": 4, "total": 6}
    assert acc["after"] == {"value": 1.0, "correct": 4, "total": 4} and acc["removed"] == 2


def test_read_quality_labels_errors(tmp_path):
    f = tmp_path / "q.csv"
    f.write_text("path,is_cell,kind\na.png,1,cell\nb.png,2,debris\n")
    with pytest.raises(InputError, match=r"q.csv:3: column 'is_cell'"):
        read_quality_labels(f)
    f.write_text("path,quality\na.png,1\n")
    with pytest.raises(InputError, match=r"q.csv:1: header"):
        read_quality_labels(f)


def _screen(tmp_path, seed=0):
    """Features where non-cells are shifted in 2 of 8 features; predictions that fail on non-cells."""
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(8)]

    def block(prefix, n_cell, n_non):
        is_cell = np.array([1] * n_cell + [0] * n_non)
        x = rng.normal(size=(len(is_cell), 8))
        x[is_cell == 0, :2] += 3.0
        paths = [f"plate01/{prefix}{i:03d}-0-0-{i}.png" for i in range(len(is_cell))]
        return paths, x, is_cell

    tr = block("1", 240, 60)
    te = block("2", 50, 12)
    write_feature_csv(tmp_path / "train.csv", tr[0], names, tr[1])
    write_feature_csv(tmp_path / "test.csv", te[0], names, te[1])
    with open(tmp_path / "quality.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "is_cell", "kind"])
        for p, c in list(zip(tr[0], tr[2])) + list(zip(te[0], te[2])):
            w.writerow([p, int(c), "cell" if c else "debris"])
    labels = rng.integers(0, 4, len(te[0]))
    right = np.where(te[2] == 1, rng.random(len(labels)) < 0.7, False)  # non-cells always wrong
    pred = np.where(right, labels, (labels + 1) % 4)
    with open(tmp_path / "net.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "protein", "split", "label", "pred"] + [f"prob_{k}" for k in range(4)])
        for p, lab, pr in zip(te[0], labels, pred):
            w.writerow([p, "plate01/x", "test", int(lab), int(pr)] + [1.0 if k == pr else 0.0 for k in range(4)])
    return te, labels, pred


@pytest.mark.r
def test_quality_filter_script_removes_noncells_and_reports_accuracy(tmp_path, r_present):
    te, labels, pred = _screen(tmp_path)
    out, cells = tmp_path / "qf", tmp_path / "qf_cells.csv"
    r = subprocess.run([sys.executable, os.path.join(REPO, "analysis", "quality_filter.py"),
                        "--train", str(tmp_path / "train.csv"), "--quality", str(tmp_path / "quality.csv"),
                        "--test", str(tmp_path / "test.csv"), "--predictions", str(tmp_path / "net.csv"),
                        "--out", str(out), "--cells", str(cells), "--figure", str(tmp_path / "qf.png"),
                        "--mtry", "2", "4", "--ntree", "50",
                        "--jobs", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "quality_filter.json").read_text())
    # CV grid: 2 mtry x 2 samplings, every fold's cells counted once
    assert len(s["cv_table"]) == 4
    assert {(row["mtry"], row["sampling"]) for row in s["cv_table"]} == {(2, "none"), (4, "none"), (2, "balanced"),
                                                                          (4, "balanced")}
    assert all(row["n1"] == 240 and row["n0"] == 60 for row in s["cv_table"])
    assert s["best"]["cv_balanced_accuracy"] == max(row["cv_balanced_accuracy"] for row in s["cv_table"])
    assert s["best"]["cv_balanced_accuracy"] > 0.85
    # independent tally from the per-cell file
    with open(cells) as f:
        rows = list(csv.DictReader(f))
    assert [row["path"] for row in rows] == te[0]
    kept = np.array([int(row["is_cell_pred"]) for row in rows], dtype=bool)
    assert ((np.array([float(row["p_cell"]) for row in rows]) >= 0.5) == kept).all()
    ok = labels == pred
    net = s["classifiers"]["network"]
    assert net["before"] == {"value": ok.mean(), "correct": int(ok.sum()), "total": len(ok)}
    assert net["after"]["correct"] == int(ok[kept].sum()) and net["after"]["total"] == int(kept.sum())
    assert net["removed"] == s["test"]["n_removed"] == int((~kept).sum())
    assert net["after"]["value"] > net["before"]["value"]  # removing non-cells helps
    assert s["cell_accuracy"] == net["before"] and s["cell_accuracy_filtered"] == net["after"]
    assert "rf_cell_accuracy" not in s  # no forest predictions given
    assert (tmp_path / "qf.png").stat().st_size > 1000 and (tmp_path / "qf.pdf").exists()
    fl = s["test"]["filter_vs_labels"]
    assert fl["noncells_removed"]["total"] == 12 and fl["cells_kept"]["total"] == 50
    assert fl["noncells_removed"]["correct"] == int(((te[2] == 0) & ~kept).sum())

    # a predictions row that is not a test cell: clear error, no JSON written
    with open(tmp_path / "net.csv", "a", newline="") as f:
        csv.writer(f).writerow(["plate09/zzz-0-0-0.png", "plate09/zzz", "test", 0, 0, 1.0, 0, 0, 0])
    out2 = tmp_path / "qf2"
    r = subprocess.run([sys.executable, os.path.join(REPO, "analysis", "quality_filter.py"),
                        "--train", str(tmp_path / "train.csv"), "--quality", str(tmp_path / "quality.csv"),
                        "--test", str(tmp_path / "test.csv"), "--predictions", str(tmp_path / "net.csv"),
                        "--out", str(out2), "--mtry", "2", "--sampling", "none", "--ntree", "20", "--jobs", "1"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "plate09/zzz-0-0-0.png" in r.stderr and not out2.exists()


def test_without_a_noncell_list_the_filter_reports_itself_not_run(tmp_path):
    """The published archive has no non-cell labels: the step writes only its result manifest, naming
    the filter as not done with the option that supplies the list, its metrics null; exit 0."""
    script = os.path.join(os.path.dirname(__file__), os.pardir, "analysis", "quality_filter.py")
    out = tmp_path / "quality"
    res = subprocess.run([sys.executable, script, "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert os.listdir(out) == ["result.json"]
    result = json.loads((out / "result.json").read_text())
    assert result["name"] == "quality"
    assert result["metrics"] == {"cell_accuracy_filtered": None, "rf_cell_accuracy_filtered": None}
    assert result["missing"] == [{"what": "non-cell filter", "reason": "the published archive has no non-cell labels",
                                  "option": "NONCELLS=FILE (make), --noncells FILE (analysis/quality_filter.py)"}]


def test_noncell_list_errors_name_the_line(tmp_path):
    from deepyeast.analysis.quality_filter import read_noncell_list

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
