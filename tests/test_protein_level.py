"""Protein-level Dirichlet MAP calls: by hand, by brute-force search, and the script."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _prediction_tables import simulated_table, write_table
from deepyeast.constants import CLASS_NAMES, MIN_CELLS_PER_PROTEIN
from deepyeast.utils.io import InputError
from deepyeast.analysis.predictions import make_predictions
from deepyeast.analysis.protein_level import (dirichlet_map, protein_accuracy, protein_calls, read_mixtures,
                                              run_protein_level)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREE_CELLS = np.array([[0.6, 0.3, 0.1],
                        [0.2, 0.5, 0.3],
                        [0.7, 0.2, 0.1]])


def test_dirichlet_map_three_cells_by_hand():
    # Soft counts (1.5, 1.0, 0.5); posterior alpha = 1 + counts = (2.5, 2.0, 1.5), sum 6.
    # Mode (alpha_k - 1) / (sum alpha - K) = (1.5, 1.0, 0.5) / 3 = (1/2, 1/3, 1/6).
    ids, n, alpha, theta = dirichlet_map(THREE_CELLS, ["p", "p", "p"])
    assert list(ids) == ["p"] and list(n) == [3]
    np.testing.assert_allclose(alpha, [[2.5, 2.0, 1.5]])
    np.testing.assert_allclose(theta, [[1 / 2, 1 / 3, 1 / 6]])


def test_dirichlet_map_is_the_density_maximum():
    """Brute force: maximise the Dirichlet log density on a fine grid of the 3-simplex."""
    _, _, alpha, theta = dirichlet_map(THREE_CELLS, ["p"] * 3)
    step = 1 / 600
    a, b = np.meshgrid(np.arange(step, 1, step), np.arange(step, 1, step), indexing="ij")
    c = 1 - a - b
    ok = c > step / 2
    pts = np.stack([a[ok], b[ok], c[ok]], axis=1)
    logpdf = (np.log(pts) * (alpha[0] - 1)).sum(axis=1)
    np.testing.assert_allclose(pts[np.argmax(logpdf)], theta[0], atol=2 * step)


def test_soft_counts_differ_from_majority_vote():
    # Two cells lean to class 1, one is sure of class 0: majority vote says 1, the posterior says 0.
    probs = np.array([[0.45, 0.55, 0.0], [0.45, 0.55, 0.0], [0.9, 0.05, 0.05]])
    _, _, _, theta = dirichlet_map(probs, ["q"] * 3)
    assert np.argmax(np.bincount(probs.argmax(axis=1))) == 1
    assert theta[0].argmax() == 0
    np.testing.assert_allclose(theta[0], [1.8 / 3, 1.15 / 3, 0.05 / 3])


def test_several_proteins_and_prior_check():
    ids, n, _, theta = dirichlet_map(np.vstack([THREE_CELLS, [[0, 0, 1]]]), ["b", "b", "b", "a"])
    assert list(ids) == ["a", "b"] and list(n) == [1, 3]
    np.testing.assert_allclose(theta[0], [0, 0, 1])
    with pytest.raises(ValueError, match="prior"):
        dirichlet_map(THREE_CELLS, ["p"] * 3, prior=0.5)


def _table(proteins, labels, probs):
    paths = [f"plate01/{i}-1-1-1.png" for i in range(len(proteins))]
    return make_predictions(paths, proteins, ["test"] * len(proteins), labels, probs, source="t.csv",
                            require_all_classes=False)


def test_protein_accuracy_all_and_min_cells():
    # protein A: 12 cells of class 3, called right; protein B: 4 cells of class 5, called as class 6.
    probs = np.full((16, 12), 0.01)
    probs[:12, 3] = 0.89
    probs[12:, 6] = 0.89
    probs /= probs.sum(axis=1, keepdims=True)
    table = _table(["A"] * 12 + ["B"] * 4, [3] * 12 + [5] * 4, probs)
    calls = protein_calls(table)
    assert list(calls.pred) == [3, 6] and list(calls.label) == [3, 5]
    assert protein_accuracy(calls) == {"value": 0.5, "correct": 1, "total": 2}
    assert protein_accuracy(calls, MIN_CELLS_PER_PROTEIN) == {"value": 1.0, "correct": 1, "total": 1}


def test_protein_with_cells_of_different_labels():
    probs = np.full((3, 12), 1 / 12)
    table = _table(["A", "A", "A"], [2, 2, 7], probs)
    with pytest.raises(InputError, match=r"t.csv: column 'label': protein 'A' has cells of different classes "
                                         r"\(row 1: 2, row 3: 7\)"):
        protein_calls(table)
    assert protein_calls(table, allow_mixed_labels=True).label[0] == 2


def _mixture_case(tmp_path, mixture_field="nucleus;cytoplasm"):
    nuc, cyt, er = (CLASS_NAMES.index(c) for c in ("nucleus", "cytoplasm", "ER"))
    rng = np.random.default_rng(1)
    rows, probs, proteins, labels = [], [], [], []
    # M1: 60/40 nucleus/cytoplasm mixture -> top two are nucleus and cytoplasm.
    for i in range(10):
        target = nuc if i < 6 else cyt
        p = np.full(12, 0.02)
        p[target] = 0.78
        probs.append(p)
        proteins.append("plate01/M1")
        labels.append(nuc)
    # M2: labelled a mixture, but its cells look like nucleus and ER -> check fails.
    for i in range(10):
        p = np.full(12, 0.02)
        p[nuc if i < 6 else er] = 0.78
        probs.append(p)
        proteins.append("plate01/M2")
        labels.append(nuc)
    # P3: a plain ER protein.
    for i in range(5):
        probs.append(rng.dirichlet(np.ones(12) + 8 * (np.arange(12) == er)))
        proteins.append("plate02/P3")
        labels.append(er)
    table = make_predictions([f"{p}-{i}-1-1.png" for i, p in enumerate(proteins)], proteins, ["test"] * 25,
                             labels, np.array(probs), source="cells.csv", require_all_classes=False)
    pred_csv = write_table(tmp_path / "cells.csv", table)
    mix = tmp_path / "proteins.csv"
    mix.write_text("protein,split,label,mixture_classes,mixture_fraction,expression,n_cells\n"
                   f"plate01/M1,test,{nuc},{mixture_field},0.6,1.0,10\n"
                   f"plate01/M2,test,{nuc},{mixture_field},0.6,1.0,10\n"
                   f"plate02/P3,test,{er},,,1.0,5\n"
                   f"plate09/T1,train,{er},,,1.0,40\n")
    return pred_csv, str(mix)


@pytest.mark.parametrize("field", ["nucleus;cytoplasm", "8|1", "Cytoplasm"])
def test_mixtures_top_two(tmp_path, field):
    pred_csv, mix = _mixture_case(tmp_path, field)
    s = run_protein_level(pred_csv, tmp_path / "proteins_out.csv", mix)
    assert s["mixtures"] == {"value": 0.5, "correct": 1, "total": 2}
    with open(tmp_path / "proteins_out_mixtures.csv") as f:
        rows = {r["protein"]: r for r in csv.DictReader(f)}
    assert rows["plate01/M1"]["top_two_match"] == "True"
    assert {rows["plate01/M1"]["top1"], rows["plate01/M1"]["top2"]} == {"nucleus", "cytoplasm"}
    assert rows["plate01/M2"]["top_two_match"] == "False"
    assert float(rows["plate01/M1"]["post_top1"]) == pytest.approx((6 * 0.78 + 4 * 0.02) / 10)


def test_mixture_protein_without_cells_is_an_error(tmp_path):
    pred_csv, mix = _mixture_case(tmp_path)
    with open(mix, "a") as f:
        f.write("plate03/GONE,test,8,nucleus;cytoplasm,0.5,1.0,12\n")
    with pytest.raises(InputError, match=r"proteins.csv: row 5: protein 'plate03/GONE' of split 'test' has no cells"):
        run_protein_level(pred_csv, tmp_path / "p.csv", mix)
    assert not (tmp_path / "p.csv").exists()


def test_bad_mixture_table(tmp_path):
    (tmp_path / "m.csv").write_text("protein,mixture_classes\nA,nucleus;golgi apparatus\n")
    with pytest.raises(InputError, match=r"m.csv: row 1, column 'mixture_classes': 'golgi apparatus' is not a class"):
        read_mixtures(tmp_path / "m.csv", CLASS_NAMES)
    (tmp_path / "n.csv").write_text("name,mixture\nA,1;2\n")
    with pytest.raises(InputError, match="n.csv: missing column 'protein'"):
        read_mixtures(tmp_path / "n.csv", CLASS_NAMES)


def test_protein_level_script(tmp_path):
    table = simulated_table(n_proteins=40, cells_range=(2, 25), accuracy=0.7, seed=5)
    pred_csv = write_table(tmp_path / "cells.csv", table)
    out = tmp_path / "proteins" / "proteins.csv"
    res = subprocess.run([sys.executable, os.path.join(REPO, "analysis", "protein_level.py"), "--predictions",
                          pred_csv, "--out", str(out.parent)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["protein", "n_cells", "label", "pred"] + [f"post_{k}" for k in range(12)]
    assert len(rows) == 40 and sum(int(r["n_cells"]) for r in rows) == table.n_cells
    # independent: mean probability per protein, argmax
    for r in rows[:10]:
        mask = table.protein == r["protein"]
        mean = table.probs[mask].mean(axis=0)
        np.testing.assert_allclose([float(r[f"post_{k}"]) for k in range(12)], mean, atol=1e-7)
        assert int(r["pred"]) == int(mean.argmax())
    s = json.loads((tmp_path / "proteins" / "proteins.json").read_text())
    big = [r for r in rows if int(r["n_cells"]) >= MIN_CELLS_PER_PROTEIN]
    assert s["protein_accuracy_min10"]["total"] == len(big)
    assert s["protein_accuracy_min10"]["correct"] == sum(r["pred"] == r["label"] for r in big)
    cell_acc = np.mean(table.pred == table.label)
    assert s["protein_accuracy"]["value"] > cell_acc  # pooling cells helps
    res = subprocess.run([sys.executable, os.path.join(REPO, "analysis", "protein_level.py"), "--help"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "Dirichlet" in res.stdout


def test_synthetic_screen_proteins_table(tmp_path):
    """The generator's proteins.csv (nucleus+cytoplasm mixtures) works as --mixtures."""
    from deepyeast.data import synthetic
    synthetic.make_screen(tmp_path / "screen", size="tiny", seed=0, workers=2, progress=False)
    root = tmp_path / "screen" / "main"
    nuc, cyt = CLASS_NAMES.index("nucleus"), CLASS_NAMES.index("cytoplasm")
    with open(root / "proteins.csv") as f:
        mixed = {r["protein"]: float(r["mixture_fraction"]) for r in csv.DictReader(f)
                 if r["mixture_classes"] and r["split"] == "test"}
    assert mixed, "the tiny screen's test split should hold a mixed protein"
    paths, proteins, labels, probs = [], [], [], []
    for line in (root / "HOwt_test.txt").read_text().split("\n"):
        if not line.strip():
            continue
        rel, label = line.split()
        protein = rel.split("/")[0] + "/" + rel.split("/")[1].split("-")[0]
        p = np.full(12, 0.01)
        if protein in mixed:  # a perfect classifier of a mixture splits its mass by the nuclear share
            p[nuc] += 0.88 * mixed[protein]
            p[cyt] += 0.88 * (1 - mixed[protein])
        else:
            p[int(label)] += 0.88
        paths.append(rel)
        proteins.append(protein)
        labels.append(int(label))
        probs.append(p)
    table = make_predictions(paths, proteins, ["test"] * len(paths), labels, np.array(probs),
                             require_all_classes=False)
    pred_csv = write_table(tmp_path / "cells.csv", table)
    s = run_protein_level(pred_csv, tmp_path / "proteins_out.csv", str(root / "proteins.csv"))
    assert s["mixtures"]["total"] == len(mixed)
    assert s["mixtures"]["correct"] == len(mixed)
    assert s["n_proteins"] == len(set(proteins))
