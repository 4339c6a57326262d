"""Tests of deepyeast.analysis.transfer: subsampling, intervals, the accuracy curve, the whole run."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deepyeast.analysis.features import read_label_lists
from deepyeast.utils.io import InputError
from deepyeast.analysis.transfer import (CELLPROFILER, RESULT_COLUMNS, TransferFeatures, TransferSettings,
                                         bootstrap_accuracy_interval, class_orders, run_transfer, subsample_per_class,
                                         transfer_curve)
from deepyeast.utils.run_context import RunContext

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = RunContext(log=lambda *_: None)


def _blobs(labels, dims, signal, rng):
    """Features with class k shifted by ``signal`` on dimensions k, k + 4, k + 8; unit Gaussian noise."""
    x = rng.normal(size=(len(labels), dims)).astype(np.float32)
    for offset in (0, 4, 8):
        x[np.arange(len(labels)), labels + offset] += signal
    return x


def test_subsamples_are_nested_capped_and_per_class():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    orders = class_orders(labels, 3, seed=4)
    small, large = subsample_per_class(orders, 2), subsample_per_class(orders, 5)
    assert set(small) <= set(large)
    assert list(np.bincount(labels[small])) == [2, 2, 2]
    assert list(np.bincount(labels[large])) == [5, 3, 5]            # class 1 capped at its 3 cells
    assert list(np.bincount(labels[subsample_per_class(orders, 500)])) == [10, 3, 7]


def test_bootstrap_interval_matches_resampling_cells():
    correct = np.zeros(200, dtype=bool)
    correct[:150] = True
    lo, hi = bootstrap_accuracy_interval(150, 200, n_resamples=20000, seed=1)
    rng = np.random.default_rng(2)
    resampled = correct[rng.integers(0, 200, size=(20000, 200))].mean(axis=1)
    ref_lo, ref_hi = np.percentile(resampled, [2.5, 97.5])
    assert lo == pytest.approx(ref_lo, abs=0.011) and hi == pytest.approx(ref_hi, abs=0.011)
    assert lo < 0.75 < hi
    assert bootstrap_accuracy_interval(200, 200) == (1.0, 1.0)


def test_accuracy_rises_with_examples_on_separable_data():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 200)
    split = np.array((["train"] * 120 + ["val"] * 30 + ["test"] * 50) * 4, dtype=object)
    x = _blobs(y, 12, 1.2, rng)
    rows = transfer_curve("layer", x, y, split, 4, TransferSettings(n_per_class=(1, 5, 25, 100, 250, 500), n_trees=50,
                                                                n_resamples=500))
    assert [r["n_per_class"] for r in rows] == [1, 5, 25, 100, 250]   # stops once every train cell is used
    assert rows[-1]["n_train"] == 480 and rows[0]["n_train"] == 4
    acc = [r["accuracy"] for r in rows]
    assert acc[-1] > acc[0] + 0.15 and acc[-1] > 0.7
    for r in rows:
        assert r["total"] == 200 and r["correct"] == round(r["accuracy"] * 200)
        assert r["lo"] <= r["accuracy"] <= r["hi"]


def _transfer_screen(root, seed=0):
    """Two feature dirs (train+val, test), list files, CellProfiler CSV for 4 classes.

    fc2 is informative, fc1 is noise, CellProfiler is weakly informative."""
    rng = np.random.default_rng(seed)
    root.mkdir(exist_ok=True)
    counts = {"train": 30, "val": 10, "test": 25}
    all_paths, dirs = [], {}
    for split, n in counts.items():
        y = np.repeat(np.arange(4), n)
        paths = [f"plate0{1 + i % 3}/{split}{i}-1-1-1.png" for i in range(len(y))]
        with open(root / f"HOwt_transfer_{split}.txt", "w") as f:
            f.writelines(f"{p} {l}\n" for p, l in zip(paths, y))
        dirs[split] = (paths, y)
        all_paths += [(p, l) for p, l in zip(paths, y)]
    feature_dirs = []
    for name, splits in (("trainval", ("train", "val")), ("test", ("test",))):
        d = root / f"features_{name}"
        d.mkdir()
        paths = sum((dirs[s][0] for s in splits), [])
        y = np.concatenate([dirs[s][1] for s in splits])
        (d / "paths.txt").write_text("\n".join(paths) + "\n")
        np.save(d / "fc1.npy", rng.normal(size=(len(y), 512)).astype(np.float32))
        np.save(d / "fc2.npy", _blobs(y, 512, 3.0, rng))
        feature_dirs.append(str(d))
    with open(root / "cp.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path"] + [f"f{i}" for i in range(6)])
        for p, l in reversed(all_paths):
            v = rng.normal(size=6)
            v[l] += 1.0
            w.writerow([p] + list(v))
    return feature_dirs


def test_run_transfer_end_to_end(tmp_path):
    dirs = _transfer_screen(tmp_path / "screen")
    labels = read_label_lists(tmp_path / "screen", "HOwt_transfer", n_classes=4)
    out = tmp_path / "out"
    result = run_transfer(TransferFeatures(dirs, labels, cp_csv=tmp_path / "screen" / "cp.csv"), str(out),
                          settings=TransferSettings(n_trees=25, n_resamples=300), context=QUIET)
    assert result["cells"] == {"train": 120, "val": 40, "test": 100}
    assert result["best_layer"] == "fc2"
    for name in ("transfer.csv", "transfer.json", "transfer_layers.png", "transfer_layers.pdf",
                 "transfer_accuracy.png", "transfer_accuracy.pdf", "transfer_tsne.png", "transfer_tsne.csv"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "transfer.csv") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == RESULT_COLUMNS
        rows = list(reader)
    sets = [r["feature_set"] for r in rows]
    assert set(sets) == {"fc1", "fc2", CELLPROFILER}
    assert [int(r["n_per_class"]) for r in rows if r["feature_set"] == "fc2"] == [1, 3, 5, 10, 25, 50]
    acc = {(r["feature_set"], int(r["n_per_class"])): float(r["accuracy"]) for r in rows}
    assert acc["fc2", 25] > 0.9 > acc["fc1", 25]
    saved = json.loads((out / "transfer.json").read_text())
    entry = saved["transfer_accuracy"]["fc2"]["10"]
    assert entry["total"] == 100 and entry["accuracy"] == entry["correct"] / 100
    assert saved["feature_dims"] == {"fc1": 512, "fc2": 512, CELLPROFILER: 6}


def test_empty_class_and_unknown_cell_are_clear_errors(tmp_path):
    dirs = _transfer_screen(tmp_path / "screen")
    labels = read_label_lists(tmp_path / "screen", "HOwt_transfer", n_classes=4)
    no_val_actin = {p: (s, l) for p, (s, l) in labels.items() if not (s == "val" and l == 0)}
    no_val_actin.update({p: ("test", l) for p, (s, l) in labels.items() if s == "val" and l == 0})
    with pytest.raises(InputError, match="no val cells of class.*actin"):
        run_transfer(TransferFeatures(dirs, no_val_actin, blobs=["fc2"]), str(tmp_path / "o"),
                     settings=TransferSettings(headline_layer="fc2"), context=QUIET)
    assert not (tmp_path / "o" / "transfer.csv").exists()
    missing = dict(list(labels.items())[1:])
    with pytest.raises(InputError, match="not found"):
        run_transfer(TransferFeatures(dirs, missing, blobs=["fc2"]), str(tmp_path / "o"), context=QUIET)


def test_script_writes_outputs_and_help(tmp_path):
    dirs = _transfer_screen(tmp_path / "screen")
    script = os.path.join(REPO, "analysis", "transfer.py")
    help_text = subprocess.run([sys.executable, script, "--help"], check=True, capture_output=True, text=True).stdout
    assert "transfer.csv" in help_text and "--cellprofiler" in help_text
    out = tmp_path / "o"
    subprocess.run([sys.executable, script, "--features", *dirs, "--lists", str(tmp_path / "screen"), "--blobs", "fc1,fc2",
                    "--n-per-class", "1,5", "--trees", "10", "--boot", "100", "--out", str(out)],
                   check=True, capture_output=True)
    with open(out / "transfer.csv") as f:
        assert [r["n_per_class"] for r in csv.DictReader(f) if r["feature_set"] == "fc2"] == ["1", "5"]
    res = subprocess.run([sys.executable, script, "--features", *dirs, "--lists", str(tmp_path / "screen"),
                          "--blobs", "fc2", "--out", str(tmp_path / "p")], capture_output=True, text=True)
    assert res.returncode == 2 and "no fc1 features, the headline layer" in res.stderr, res.stderr


def test_headline_is_fc1_with_20000_resamples_even_when_another_layer_is_best(tmp_path):
    """A case checkable by hand: fc2 separates all 4 classes; fc1 gives class 3's cells class 2's
    features, so a forest on fc1 calls every class-3 test cell class 2 (or 3 at random between two
    identical points) -- fc1 scores at most 3/4, fc2 1.  The headline must be fc1's curve, with
    intervals from 20,000 Binomial resamples; fc2 is only named best on validation (Figure S6)."""
    root = tmp_path / "screen"
    root.mkdir()
    counts = {"train": 20, "val": 10, "test": 25}
    dirs = []
    for split, n in counts.items():
        y = np.repeat(np.arange(4), n)
        paths = [f"plate01/{split}{i}-1-1-1.png" for i in range(len(y))]
        (root / f"HOwt_transfer_{split}.txt").write_text("".join(f"{p} {l}\n" for p, l in zip(paths, y)))
        d = root / f"features_{split}"
        d.mkdir()
        (d / "paths.txt").write_text("\n".join(paths) + "\n")
        np.save(d / "fc2.npy", np.eye(4, 512, dtype=np.float32)[y])
        np.save(d / "fc1.npy", np.eye(4, 512, dtype=np.float32)[np.minimum(y, 2)])
        dirs.append(str(d))
    labels = read_label_lists(root, "HOwt_transfer", n_classes=4)
    out = tmp_path / "out"
    result = run_transfer(TransferFeatures(dirs, labels), str(out),
                          settings=TransferSettings(n_per_class=(5, 20), n_trees=10, n_resamples=200, n_tsne=60),
                          context=QUIET.with_(seed=3))
    assert result["best_layer"] == "fc2" and result["headline_layer"] == "fc1"
    assert result["headline_resamples"] == 20000
    manifest = json.loads((out / "result.json").read_text())
    head = manifest["metrics"]["transfer_network_accuracy"]
    fc1_20 = result["transfer_accuracy"]["fc1"]["20"]
    assert head["correct"] == fc1_20["correct"] and head["total"] == 100
    assert 50 <= head["correct"] <= 75                       # classes 0-2 right, class 3 at best a coin flip
    assert "after its BatchNorm, Scale and ReLU" in manifest["summary"] and "ip1" in manifest["summary"]
    assert result["transfer_accuracy"]["fc2"]["20"]["correct"] == 100
    assert (head["lo"], head["hi"]) == pytest.approx(bootstrap_accuracy_interval(head["correct"], 100, 20000, seed=3))
    fc2 = result["transfer_accuracy"]["fc2"]["20"]           # Figure S6's curves keep --resamples
    assert (fc2["lo"], fc2["hi"]) == pytest.approx(bootstrap_accuracy_interval(100, 100, 200, seed=3))
    assert manifest["metrics"]["transfer_accuracy"]["headline_layer"] == "fc1"
    assert manifest["metrics"]["transfer_accuracy"]["best_layer"] == "fc2"
    assert [h["metric"] for h in manifest["headline"]] == ["transfer_network_accuracy"]
    s6 = next(t for t in manifest["tables"] if t["title"].startswith("Figure S6"))
    assert s6["rows"][[r[0].split()[0] for r in s6["rows"]].index("fc2")][0] == "fc2 (best on validation)"
    captions = " ".join(f["caption"] for f in manifest["figures"])
    assert "Figure 4B" in captions and "Figure 4C" in captions and "Figure S6" in captions
