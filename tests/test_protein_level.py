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
from deepyeast.analysis.prediction_table import make_predictions
from deepyeast.analysis.protein_level import dirichlet_map, protein_accuracy, protein_calls, run_protein_level
from deepyeast.data.lists import mixed_protein_cells, protein_of, read_mixed_table

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


def _mixed_case(tmp_path, compartments=("nucleus", "cytoplasm")):
    """Three proteins with two compartments, each 10 cells, probabilities chosen so the posterior
    (the mean of its cells' probabilities) is known by hand:

    M1: 6 cells nucleus 0.78, 4 cells cytoplasm 0.78 (0.02 elsewhere) -> nucleus 0.476, cytoplasm
        0.324, the rest 0.02: top two = {nucleus, cytoplasm} -> top two yes.
    M2: 5 cells nucleus, 3 ER, 2 cytoplasm (0.78 each) -> nucleus 0.4, ER 0.246, cytoplasm 0.168:
        top two = {nucleus, ER} -> no; top three holds both -> yes.
    M3: 5 nucleus, 3 ER, 2 Golgi -> cytoplasm 0.02, outside the top three -> no, no.
    """
    a, b = compartments
    nuc, cyt, er, golgi = (CLASS_NAMES.index(c) for c in ("nucleus", "cytoplasm", "ER", "Golgi"))
    plan = {"plate01/M1": [nuc] * 6 + [cyt] * 4, "plate01/M2": [nuc] * 5 + [er] * 3 + [cyt] * 2,
            "plate02/M3": [nuc] * 5 + [er] * 3 + [golgi] * 2}
    paths, proteins, probs = [], [], []
    for protein, targets in plan.items():
        for i, t in enumerate(targets):
            p = np.full(12, 0.02)
            p[t] = 0.78
            probs.append(p)
            proteins.append(protein)
            paths.append(f"{protein}-0-{i}-{i}.png")
    table = make_predictions(paths, proteins, ["mixed"] * len(paths), [nuc] * len(paths), np.array(probs),
                             source="mixed.csv", require_all_classes=False)
    mixed_csv = write_table(tmp_path / "mixed_cells.csv", table)
    mix = tmp_path / "mixed_proteins.csv"
    mix.write_text("protein,compartment_a,compartment_b\n" + "".join(f"{p},{a},{b}\n" for p in plan))
    test_csv = write_table(tmp_path / "cells.csv", simulated_table(n_proteins=6, seed=2))
    return test_csv, str(mix), mixed_csv


@pytest.mark.parametrize("compartments", [("nucleus", "cytoplasm"), ("8", "1"), ("Cytoplasm", "NUCLEUS")])
def test_mixed_proteins_top_two_then_top_three(tmp_path, compartments):
    test_csv, mix, mixed_csv = _mixed_case(tmp_path, compartments)
    s = run_protein_level(test_csv, tmp_path / "out" / "proteins.csv", (mix, mixed_csv))
    assert s["mixed"]["top_two"] == {"value": 1 / 3, "correct": 1, "total": 3}
    assert s["mixed"]["top_three_rest"] == {"value": 0.5, "correct": 1, "total": 2}
    assert s["mixed"]["top_three"] == {"value": 2 / 3, "correct": 2, "total": 3}
    with open(tmp_path / "out" / "proteins_mixed.csv") as f:
        rows = {r["protein"]: r for r in csv.DictReader(f)}
    assert [rows[p]["top_two"] for p in ("plate01/M1", "plate01/M2", "plate02/M3")] == ["True", "False", "False"]
    assert [rows[p]["top_three"] for p in ("plate01/M1", "plate01/M2", "plate02/M3")] == ["True", "True", "False"]
    assert (rows["plate01/M2"]["top1"], rows["plate01/M2"]["top2"], rows["plate01/M2"]["top3"]) == \
        ("nucleus", "ER", "cytoplasm")
    assert float(rows["plate01/M1"]["post_top1"]) == pytest.approx((6 * 0.78 + 4 * 0.02) / 10)
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["metrics"]["mixed_proteins_top_two"]["correct"] == 1
    assert result["missing"] == []


def test_without_mixed_table_the_check_is_named_missing_and_null(tmp_path):
    test_csv, _, _ = _mixed_case(tmp_path)
    run_protein_level(test_csv, tmp_path / "out" / "proteins.csv")
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["metrics"]["mixed_proteins_top_two"] is None
    assert result["metrics"]["mixed_proteins_top_three_rest"] is None
    (entry,) = result["missing"]
    assert "two compartments" in entry["what"] and "MIXED=FILE" in entry["option"]
    assert "archive has none" in entry["reason"]


def test_mixed_protein_without_cells_is_an_error(tmp_path):
    test_csv, mix, mixed_csv = _mixed_case(tmp_path)
    with open(mix, "a") as f:
        f.write("plate03/GONE,nucleus,cytoplasm\n")
    with pytest.raises(InputError, match=r"mixed_proteins.csv: row 4: protein plate03/GONE has no cells"):
        run_protein_level(test_csv, tmp_path / "p.csv", (mix, mixed_csv))
    assert not (tmp_path / "p.csv").exists()


def test_bad_mixed_table(tmp_path):
    (tmp_path / "m.csv").write_text("protein,compartment_a,compartment_b\nplate01/A,nucleus,golgi apparatus\n")
    with pytest.raises(InputError, match=r"m.csv: row 1, column 'compartment_b': 'golgi apparatus' is not a "
                                         r"compartment"):
        read_mixed_table(tmp_path / "m.csv", CLASS_NAMES)
    (tmp_path / "n.csv").write_text("name,compartment_a,compartment_b\nA,1,2\n")
    with pytest.raises(InputError, match="n.csv: missing column\\(s\\) protein"):
        read_mixed_table(tmp_path / "n.csv", CLASS_NAMES)
    (tmp_path / "o.csv").write_text("protein,compartment_a,compartment_b\nplate01/A,ER,er\n")
    with pytest.raises(InputError, match="o.csv: row 1: compartment_a and compartment_b are both 'ER'"):
        read_mixed_table(tmp_path / "o.csv", CLASS_NAMES)


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


def test_synthetic_screen_mixed_proteins_are_held_out(tmp_path):
    """The generator keeps its proteins with two compartments out of every split list, writes them
    with both compartments to main/mixed_proteins.csv, and their crops are found next to it."""
    from deepyeast.data import make_synthetic as synthetic
    # jobs=1: a worker pool forked from this test process (which has run OpenCV's threads) can hang
    synthetic.make_screen(tmp_path / "screen", size="tiny", seed=0, jobs=1, progress=False)
    root = tmp_path / "screen" / "main"
    mixed = read_mixed_table(root / "mixed_proteins.csv", CLASS_NAMES)
    assert len(mixed) == synthetic.SIZES["tiny"]["mixed"]
    lists = [str(root / f"HOwt_{s}.txt") for s in ("train", "val", "test")]
    cells = mixed_protein_cells(root / "mixed_proteins.csv", not_in=lists)
    assert {protein_of(rel) for rel, _ in cells} == {m["protein"] for m in mixed}
    # a perfect classifier of a mixture splits each cell's mass by the protein's shares
    by_protein = {m["protein"]: m for m in mixed}
    paths, proteins, probs = [], [], []
    for rel, _ in cells:
        m = by_protein[protein_of(rel)]
        p = np.full(12, 0.01)
        p[m["classes"][0]] += 0.88 * m["fraction"]
        p[m["classes"][1]] += 0.88 * (1 - m["fraction"])
        paths.append(rel)
        proteins.append(protein_of(rel))
        probs.append(p)
    table = make_predictions(paths, proteins, ["mixed"] * len(paths), [by_protein[p]["classes"][0] for p in proteins],
                             np.array(probs), require_all_classes=False)
    test_csv = write_table(tmp_path / "cells.csv", simulated_table(n_proteins=6, seed=2))
    s = run_protein_level(test_csv, tmp_path / "out" / "proteins.csv", (str(root / "mixed_proteins.csv"),
                                                                         write_table(tmp_path / "mixed.csv", table)))
    assert s["mixed"]["top_two"] == {"value": 1.0, "correct": len(mixed), "total": len(mixed)}
    # a mixed protein put into a split list is refused
    with open(lists[2], "a") as f:
        f.write(f"{paths[0]} 1\n")
    with pytest.raises(InputError, match=r"mixed_proteins.csv: row \d+: protein plate\d+/\d+ has cells in .*HOwt_test.txt"):
        mixed_protein_cells(root / "mixed_proteins.csv", not_in=lists)


def test_classify_and_protein_level_call_the_same_cells_identically():
    """One way to call a protein: a new screen's calls (classify) are protein_level's calls extended with
    plate, micrographs and flags; on the same cells both give identical posteriors, alphas and calls."""
    from deepyeast.analysis.classify_screen import ScreenCells, call_proteins

    table = simulated_table(n_proteins=30, seed=4)
    ref = protein_calls(table)
    n = len(table.path)
    shuffled = np.random.default_rng(1).permutation(n)  # a screen lists its cells in its own order
    key = table.protein[shuffled]
    plate = np.asarray([int(k[5:7]) for k in key], np.int64)
    images = [dict(where=f"images.csv:{i + 2}", image=f"{k}.tif", plate=int(k[5:7]), protein=k.split("/")[1], key=k,
                   label=int(table.label[table.protein == k][0]), source="given", n_cells=0, first=0)
              for i, k in enumerate(dict.fromkeys(key))]
    images.append(dict(where="images.csv:99", image="empty.tif", plate=9, protein="none", key="plate09/none",
                       label=None, source="given", n_cells=0, first=n))
    cells = ScreenCells(image=np.asarray([f"{k}.tif" for k in key], object), protein=key, plate=plate, key=key,
                        cell=np.arange(n, dtype=np.int64), x=np.zeros(n), y=np.zeros(n), area=np.ones(n, np.int64),
                        padded=np.zeros(n, bool), label=table.label[shuffled], probs=table.probs[shuffled],
                        pred=table.pred[shuffled], probs_fp32=None, crops_path="", crop_shape=(2, 64, 64),
                        images=images)
    screen = call_proteins(cells, CLASS_NAMES)
    at = {k: i for i, k in enumerate(screen.key)}
    rows = [at[k] for k in ref.protein]
    assert len(screen.key) == len(ref.protein) + 1  # and the protein without cells, listed uncalled
    # identical up to the order in which the soft counts are summed (the cells are shuffled)
    np.testing.assert_allclose(screen.posterior[rows], ref.posterior, rtol=1e-12, atol=0)
    np.testing.assert_allclose(screen.alpha[rows], ref.alpha, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(screen.pred[rows], ref.pred)
    np.testing.assert_array_equal(screen.n_cells[rows], ref.n_cells)
    np.testing.assert_array_equal(screen.label[rows], ref.label)
    empty = at["plate09/none"]
    assert screen.n_cells[empty] == 0 and screen.pred[empty] == -1 and np.isnan(screen.posterior[empty]).all()
    assert screen.flags["no_cells"][empty] and not screen.flags["no_cells"][rows].any()
    # in the same cell order the two entry points give bit-identical posteriors
    same = ScreenCells(**{**cells.__dict__, "key": table.protein, "probs": table.probs})
    np.testing.assert_array_equal(call_proteins(same, CLASS_NAMES).posterior[rows], ref.posterior)


def test_call_cells_lists_every_protein_of_the_order():
    """The one calling of proteins (labelled pipeline and new screens): calls, proteins without cells, labels and
    the checks, each pinned (mutation testing found them unchecked)."""
    from deepyeast.analysis.protein_level import call_cells

    names = ("a", "b", "c")
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    calls = call_cells(probs, ["P2", "P2", "P1"], names, order=["P1", "EMPTY", "P2"], labels=[2, -1, 1])
    assert calls.protein.tolist() == ["P1", "EMPTY", "P2"] and calls.class_names == names
    assert calls.n_cells.tolist() == [1, 0, 2] and calls.n_cells.dtype == np.int64
    assert calls.pred.tolist() == [2, -1, 0] and calls.pred.dtype == np.int64
    assert calls.label.tolist() == [2, -1, 1] and calls.label.dtype == np.int64
    assert np.isnan(calls.alpha[1]).all() and np.isnan(calls.posterior[1]).all()
    _, _, alpha, theta = dirichlet_map(probs[:2], ["P2", "P2"])
    np.testing.assert_allclose(calls.alpha[2], alpha[0])
    np.testing.assert_allclose(calls.posterior[2], theta[0])
    # default order: the cells' proteins sorted; default labels: all unknown (-1)
    default = call_cells(probs, ["P2", "P2", "P1"], names)
    assert default.protein.tolist() == ["P1", "P2"] and default.label.tolist() == [-1, -1]
    assert default.label.dtype == np.int64
    # a prior other than 1 reaches the Dirichlet posterior
    np.testing.assert_allclose(call_cells(probs, ["P2", "P2", "P1"], names, prior=3.0).alpha,
                               dirichlet_map(probs, ["P2", "P2", "P1"], prior=3.0)[2])
    # no cells at all: every listed protein without a call
    none = call_cells(np.zeros((0, 3)), [], names, order=["X", "Y"])
    assert none.n_cells.tolist() == [0, 0] and none.pred.tolist() == [-1, -1] and none.alpha.shape == (2, 3)
    assert call_cells(np.zeros((0, 3)), [], names).protein.shape == (0,)
    with pytest.raises(ValueError, match=r"^probs must be N x 3 \(one column per class\), got shape \(3, 2\)$"):
        call_cells(probs[:, :2], ["P2", "P2", "P1"], names)
    with pytest.raises(ValueError, match=r"^probs must be N x 3"):
        call_cells(probs[0], ["P2"], names)
    with pytest.raises(ValueError, match=r"^cells of protein 'P1', which the order does not list$"):
        call_cells(probs, ["P2", "P2", "P1"], names, order=["P2"])
    with pytest.raises(ValueError, match=r"^1 labels for 2 proteins$"):
        call_cells(probs, ["P2", "P2", "P1"], names, labels=[0])


# ---------------------------------------------------------------- edges found by mutation testing (make mutation)

def test_dirichlet_map_messages_and_id_type():
    """Bad shapes name both counts; the protein ids come back as an object array (any id type, no truncation)."""
    with pytest.raises(ValueError, match=r"^probs must be N x K, got shape \(3,\)$"):
        dirichlet_map(THREE_CELLS[0], ["p"] * 3)
    with pytest.raises(ValueError, match=r"^3 protein ids for 4 cells$"):
        dirichlet_map(np.vstack([THREE_CELLS, THREE_CELLS[:1]]), ["p"] * 3)
    ids, n, _, _ = dirichlet_map(THREE_CELLS, ["b", "a", "b"])
    assert ids.dtype == object and ids.tolist() == ["a", "b"] and n.tolist() == [1, 2]
    from deepyeast.analysis.protein_level import call_cells
    assert call_cells(THREE_CELLS, ["b", "a", "b"], ("x", "y", "z"), order=["b", "a"]).protein.dtype == object


def test_protein_calls_boundaries_prior_and_mixed_labels_of_a_later_protein():
    """min_cells counts a protein with exactly that many cells (default 1: every protein with cells); the prior
    reaches the calls; mixed labels on the second protein name that protein and its rows."""
    probs = np.full((5, 12), 0.01)
    probs[[0, 1, 2], 3] = 0.89
    probs[[3, 4], 5] = 0.89
    probs /= probs.sum(axis=1, keepdims=True)
    calls = protein_calls(_table(["A", "A", "A", "B", "B"], [3, 3, 3, 5, 5], probs))
    assert protein_accuracy(calls) == {"value": 1.0, "correct": 2, "total": 2}
    assert protein_accuracy(calls, 3) == {"value": 1.0, "correct": 1, "total": 1}
    one = protein_calls(_table(["A"], [3], probs[:1]))
    assert protein_accuracy(one) == {"value": 1.0, "correct": 1, "total": 1}
    flat = protein_calls(_table(["A", "A", "A", "B", "B"], [3, 3, 3, 5, 5], probs), prior=4.0)
    np.testing.assert_allclose(flat.alpha, dirichlet_map(probs, ["A"] * 3 + ["B"] * 2, prior=4.0)[2])
    with pytest.raises(InputError, match=r"protein 'B' has cells of different classes \(row 4: 5, row 5: 2\)"):
        protein_calls(_table(["A", "A", "A", "B", "B"], [3, 3, 3, 5, 2], probs))


def test_check_mixed_table_errors_and_class_names():
    """Proteins with cells that the table does not list: the first (sorted) is named with their count, under the
    default source name; 3 classes are enough for the top-three check, 2 are not; the two compartments are named
    in the table's order."""
    from deepyeast.analysis.protein_level import call_cells, check_mixed

    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.3, 0.3, 0.4]])
    calls = call_cells(probs, ["M1", "Z9", "M1", "Y8"], ("a", "b", "c"))
    mixed = [{"protein": "M1", "classes": (1, 0), "fraction": None, "row": 1}]
    with pytest.raises(InputError, match=r"^mixed-protein table: protein Y8 has cells in the mixed predictions but "
                                         r"is not listed \(2 such\)$"):
        check_mixed(calls, mixed)
    ok = call_cells(probs[[0, 2]], ["M1", "M1"], ("a", "b", "c"))
    rows, summary = check_mixed(ok, mixed, "m.csv")
    assert (rows[0]["class_a"], rows[0]["class_b"]) == ("b", "a") and rows[0]["top_two"]
    assert summary["top_two"] == {"value": 1.0, "correct": 1, "total": 1}
    two = call_cells(probs[[0, 2], :2] / probs[[0, 2], :2].sum(1, keepdims=True), ["M1", "M1"], ("a", "b"))
    with pytest.raises(InputError, match=r"^m.csv: the top-three check needs at least 3 classes, the table has 2$"):
        check_mixed(two, mixed, "m.csv")


def test_check_mixed_ties_go_to_the_lower_class():
    """A posterior with tied compartments ranks them by class index (the table's order), as the protein call's
    argmax does; the top three hold both compartments or not, one of them is not enough."""
    from deepyeast.analysis.protein_level import call_cells, check_mixed

    names = ("a", "b", "c", "d", "e")
    probs = np.array([[0, 0.375, 0.125, 0.25, 0.25], [0, 0.125, 0.375, 0.25, 0.25]])  # mean: b, c, d, e tied
    calls = call_cells(probs, ["M1", "M1"], names)
    mixed = [{"protein": "M1", "classes": classes, "fraction": None, "row": 1} for classes in ((3, 1), (4, 2), (4, 0))]
    rows, summary = check_mixed(calls, mixed, "m.csv")
    assert [(r["top1"], r["top2"], r["top3"]) for r in rows] == [("b", "c", "d")] * 3
    assert [(r["top_two"], r["top_three"]) for r in rows] == [(False, True), (False, False), (False, False)]
    assert summary["top_three"] == {"value": 1 / 3, "correct": 1, "total": 3}
