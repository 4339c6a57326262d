"""Per-cell statistics against hand calculations and independent implementations."""

import json
import os
import subprocess
import warnings
import sys
from fractions import Fraction

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, precision_score, recall_score

from _prediction_tables import simulated_table, write_table
from deepyeast.analysis import evaluate_cells as m

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A 3-class confusion C[true, pred] small enough to work by hand.
HAND = np.array([[20, 5, 0],
                 [10, 15, 5],
                 [0, 5, 40]])


def _cells_from_confusion(conf):
    labels, preds = [], []
    for t in range(conf.shape[0]):
        for p in range(conf.shape[1]):
            labels += [t] * conf[t, p]
            preds += [p] * conf[t, p]
    order = np.random.default_rng(0).permutation(len(labels))
    return np.array(labels)[order], np.array(preds)[order]


def test_kappa_by_hand():
    # N = 100; p_o = (20+15+40)/100 = 3/4.  Row totals 25, 30, 45; column totals 30, 25, 45:
    # p_e = (25*30 + 30*25 + 45*45) / 100^2 = 3525/10000.  kappa = (7500-3525)/(10000-3525) = 3975/6475 = 159/259.
    p_o = Fraction(75, 100)
    p_e = Fraction(25 * 30 + 30 * 25 + 45 * 45, 100 * 100)
    by_hand = (p_o - p_e) / (1 - p_e)
    assert by_hand == Fraction(159, 259)
    labels, preds = _cells_from_confusion(HAND)
    assert m.cohen_kappa(labels, preds, 3) == pytest.approx(float(by_hand), abs=1e-12)
    assert m.kappa_from_confusion(HAND) == pytest.approx(cohen_kappa_score(labels, preds), abs=1e-12)


def test_accuracy_confusion_precision_recall_by_hand():
    labels, preds = _cells_from_confusion(HAND)
    assert m.accuracy(labels, preds) == {"value": 0.75, "correct": 75, "total": 100}
    cm = m.confusion_counts(labels, preds, 3)
    np.testing.assert_array_equal(cm, HAND)
    rates = m.confusion_rates(cm)
    np.testing.assert_allclose(rates[0], [20 / 25, 5 / 25, 0])
    np.testing.assert_allclose(rates.sum(axis=1), 1)
    precision, recall = m.precision_recall(cm)
    np.testing.assert_allclose(precision, [20 / 30, 15 / 25, 40 / 45])
    np.testing.assert_allclose(recall, [20 / 25, 15 / 30, 40 / 45])
    np.testing.assert_allclose(precision, precision_score(labels, preds, average=None))
    np.testing.assert_allclose(recall, recall_score(labels, preds, average=None))


def test_kappa_undefined_and_perfect():
    assert np.isnan(m.cohen_kappa([1, 1, 1], [1, 1, 1], 3))
    assert m.cohen_kappa([0, 1, 2, 2], [0, 1, 2, 2], 3) == 1.0


def test_resample_indices_keep_class_counts():
    labels, _ = _cells_from_confusion(HAND)
    idx = m.stratified_resample_indices(labels, 500, seed=4)
    assert idx.shape == (500, labels.size)
    want = np.bincount(labels)
    for row in idx:
        np.testing.assert_array_equal(np.bincount(labels[row], minlength=3), want)
    assert len({tuple(r) for r in idx[:50]}) == 50  # they do differ


@pytest.mark.parametrize("method", ["multinomial", "indices"])
def test_bootstrap_confusions_keep_class_counts(method):
    labels, preds = _cells_from_confusion(HAND)
    boots = m.stratified_bootstrap_confusions(labels, preds, 3, n_resamples=2000, seed=1, method=method)
    assert boots.shape == (2000, 3, 3)
    np.testing.assert_array_equal(boots.sum(axis=2), np.broadcast_to(HAND.sum(axis=1), (2000, 3)))
    # a class never predicted from true class 0 (column 2 of row 0 is 0) stays 0 in every resample
    assert np.all(boots[:, 0, 2] == 0)
    # the mean resample is the observed confusion
    np.testing.assert_allclose(boots.mean(axis=0), HAND, atol=0.35)


def test_bootstrap_index_method_matches_resampling_cells():
    """The index method's confusions equal those of explicitly resampled cells with the same draws."""
    labels, preds = _cells_from_confusion(HAND)
    boots = m.stratified_bootstrap_confusions(labels, preds, 3, n_resamples=7, seed=5, method="indices",
                                              chunk_size=3)
    rng = np.random.default_rng(5)
    explicit = np.zeros_like(boots)
    for t in range(3):
        preds_t = preds[labels == t]
        for start in range(0, 7, 3):
            b = min(3, 7 - start)
            draws = rng.integers(0, preds_t.size, size=(b, preds_t.size))
            for i in range(b):
                explicit[start + i, t] = np.bincount(preds_t[draws[i]], minlength=3)
    np.testing.assert_array_equal(boots, explicit)


def test_bootstrap_intervals_methods_agree_and_match_binomial():
    table = simulated_table(n_proteins=240, cells_range=(20, 21), accuracy=0.8, seed=2)
    y, p = table.label, table.pred
    a = m.bootstrap_precision_recall(y, p, 12, n_resamples=20000, seed=0, method="multinomial")
    b = m.bootstrap_precision_recall(y, p, 12, n_resamples=4000, seed=1, method="indices")
    for key in ("recall_lo", "recall_hi", "precision_lo", "precision_hi"):
        np.testing.assert_allclose(a[key], b[key], atol=0.012)
    # Within a class the recall is a binomial proportion: 95% interval ~ r +- 1.96 sqrt(r (1 - r) / n).
    n = np.bincount(y, minlength=12)
    r = a["recall"]
    half = 1.96 * np.sqrt(r * (1 - r) / n)
    np.testing.assert_allclose(a["recall_lo"], r - half, atol=0.012)
    np.testing.assert_allclose(a["recall_hi"], r + half, atol=0.012)
    assert np.all(a["recall_lo"] <= r) and np.all(r <= a["recall_hi"])
    assert np.all(a["precision_lo"] <= a["precision"]) and np.all(a["precision"] <= a["precision_hi"])


def test_bootstrap_perfect_and_never_predicted():
    y = np.repeat(np.arange(3), 10)
    res = m.bootstrap_precision_recall(y, y, 3, n_resamples=200)
    np.testing.assert_array_equal(res["recall_lo"], 1.0)
    np.testing.assert_array_equal(res["precision_hi"], 1.0)
    p = y.copy()
    p[p == 2] = 1  # class 2 never predicted
    res = m.bootstrap_precision_recall(y, p, 3, n_resamples=200)
    assert np.isnan(res["precision"][2]) and np.isnan(res["precision_lo"][2])
    assert res["precision_undefined"][2] == 200
    assert res["recall_hi"][2] == 0.0


def test_bootstrap_full_size_12500_cells():
    # The speed target (<= 10 s on 2 cores) is measured by bench/bench_stats.py, not here.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 12, 12500)
    p = np.where(rng.random(12500) < 0.87, y, rng.integers(0, 12, 12500))
    res = m.bootstrap_precision_recall(y, p, 12, n_resamples=20000)
    assert res["n_resamples"] == 20000 and np.all(np.isfinite(res["precision_lo"]))
    assert np.all(res["recall_lo"] <= res["recall"]) and np.all(res["recall"] <= res["recall_hi"])


def test_bad_labels_rejected():
    with pytest.raises(ValueError, match="outside 0..2"):
        m.confusion_counts([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="differ in length"):
        m.confusion_counts([0, 1], [0], 3)


def test_evaluate_cells_script(tmp_path):
    from deepyeast.analysis.prediction_table import make_predictions
    base = simulated_table(n_proteins=48, cells_range=(5, 9), accuracy=0.85)
    net = write_table(tmp_path / "net.csv", base)
    # the forest: the same cells, with a third of the network's probability rows shuffled among cells
    rng = np.random.default_rng(9)
    probs = base.probs.copy()
    rows = rng.choice(base.n_cells, base.n_cells // 3, replace=False)
    probs[rows] = probs[rng.permutation(rows)]
    rf = write_table(tmp_path / "rf.csv", make_predictions(base.path, base.protein, base.split, base.label, probs,
                                                           require_all_classes=False))
    out = tmp_path / "cells"
    res = subprocess.run([sys.executable, os.path.join(REPO, "analysis", "evaluate_cells.py"), "--predictions", net,
                          "--rf-predictions", rf, "--out", str(out), "--resamples", "500"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "network: accuracy" in res.stdout
    js = json.loads((out / "cell_metrics.json").read_text())
    table = simulated_table(n_proteins=48, cells_range=(5, 9), accuracy=0.85)
    want = m.accuracy(table.label, table.pred)
    assert js["cell_accuracy"]["correct"] == want["correct"] and js["cell_accuracy"]["total"] == want["total"]
    assert js["cell_kappa"]["value"] == pytest.approx(cohen_kappa_score(table.label, table.pred))
    assert js["rf_cell_accuracy"]["value"] < js["cell_accuracy"]["value"]
    lead = js["network_minus_forest"]
    assert lead["value"] == pytest.approx(js["cell_accuracy"]["value"] - js["rf_cell_accuracy"]["value"])
    assert lead["n_proteins"] == 48 and lead["n_cells"] == js["cell_accuracy"]["total"]
    assert lead["cells_ci"][0] < lead["value"] < lead["cells_ci"][1]
    assert lead["proteins_ci"][0] < lead["value"] < lead["proteins_ci"][1]
    assert "evaluate_cells.py" in js["command"]
    for name in ("fig2a_recall", "fig2b_precision", "fig2d_confusion", "fig2d_confusion_rf"):
        assert (out / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    lines = (out / "per_class.csv").read_text().splitlines()
    assert len(lines) == 1 + 24 and lines[0].startswith("classifier,class,class_name")
    rates = np.genfromtxt(out / "confusion_rates.csv", delimiter=",", skip_header=1)[:, 1:]
    np.testing.assert_allclose(rates.sum(axis=1), 1, atol=1e-4)


def test_evaluate_cells_script_bad_input_writes_nothing(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,protein,split,label,prob_0\n")
    out = tmp_path / "cells"
    res = subprocess.run([sys.executable, os.path.join(REPO, "analysis", "evaluate_cells.py"), "--predictions",
                          str(bad), "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "bad.csv: missing column 'pred'" in res.stderr
    assert not out.exists()


def test_paired_accuracy_difference_matches_literal_resampling():
    """The multinomial / cluster shortcuts give the same intervals as resampling cell and
    protein indices literally (up to Monte Carlo error), and the paired interval is narrower
    than what two independent accuracies would suggest when the classifiers share errors."""
    from deepyeast.analysis.evaluate_cells import paired_accuracy_difference
    rng = np.random.default_rng(4)
    n = 600
    groups = rng.integers(0, 30, n)
    hard = rng.random(30)[groups]                        # per-protein difficulty: clustered errors
    a = rng.random(n) > hard * 0.6
    b = a & (rng.random(n) > 0.15)                       # B errs wherever A does, and on 15% more
    got = paired_accuracy_difference(a, b, groups=groups, n_resamples=20000, seed=1)
    d = a.astype(int) - b.astype(int)
    assert got["value"] == pytest.approx(d.mean()) and got["n_groups"] == 30
    idx = rng.integers(0, n, (20000, n))
    ref_cells = np.percentile(d[idx].mean(axis=1), (2.5, 97.5))
    np.testing.assert_allclose(got["cells"], ref_cells, atol=0.004)
    members = [np.flatnonzero(groups == g) for g in range(30)]
    picks = rng.integers(0, 30, (20000, 30))
    sums = np.array([d[m].sum() for m in members])
    sizes = np.array([len(m) for m in members])
    ref_groups = np.percentile(sums[picks].sum(1) / sizes[picks].sum(1), (2.5, 97.5))
    np.testing.assert_allclose(got["groups"], ref_groups, atol=0.006)
    assert got["cells"][0] > 0 and got["groups"][1] - got["groups"][0] > got["cells"][1] - got["cells"][0]
    same = paired_accuracy_difference(a, a)
    assert same["value"] == 0 and same["cells"] == [0.0, 0.0] and "groups" not in same
    with pytest.raises(ValueError, match="equally long"):
        paired_accuracy_difference(a, b[:-1])


# ---------------------------------------------------------------- edges found by mutation testing (make mutation)

def test_labels_given_as_whole_floats_are_classes_and_bad_ones_are_named():
    """Labels or predictions read as floats (1.0) count as class indices; a class outside 0..K-1 is refused
    naming which of the two holds it; accuracy's length check has its own message."""
    labels, preds = _cells_from_confusion(HAND)
    for y, p in ((labels.astype(float), preds), (labels, preds.astype(float))):
        np.testing.assert_array_equal(m.confusion_counts(y, p, 3), HAND)
    with pytest.raises(ValueError, match=r"^labels hold a class outside 0\.\.2$"):
        m.confusion_counts([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match=r"^preds hold a class outside 0\.\.2$"):
        m.confusion_counts([0, 1], [0, -1], 3)
    with pytest.raises(ValueError, match=r"^labels \(2\) and preds \(1\) differ in length$"):
        m.confusion_counts([0, 1], [0], 3)
    with pytest.raises(ValueError, match=r"^labels and preds differ in length$"):
        m.accuracy([0, 1], [0])


def test_undefined_statistics_are_nan_without_warnings():
    """An absent class, a class never predicted, no cells, one class only: NaN where the ratio is undefined, and
    no RuntimeWarning (the report's log stays clean); a class of one cell has rate 1, not NaN."""
    y = np.array([0, 0, 0, 2])
    p = np.array([0, 0, 2, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cm = m.confusion_counts(y, p, 3)
        rates = m.confusion_rates(cm)
        np.testing.assert_allclose(rates[[0, 2]], [[2 / 3, 0, 1 / 3], [0, 0, 1]])
        assert np.isnan(rates[1]).all()
        precision, recall = m.precision_recall(cm)
        assert np.isnan(precision[1]) and np.isnan(recall[1]) and recall[2] == 1.0
        assert np.isnan(m.kappa_from_confusion(np.zeros((3, 3), np.int64)))
        assert np.isnan(m.cohen_kappa([1, 1, 1], [1, 1, 1], 3))
        res = m.bootstrap_precision_recall(y, p, 3, n_resamples=300, seed=2)
        assert np.isnan(res["precision_lo"][1]) and np.isnan(res["recall_hi"][1])
        assert res["precision_undefined"][1] == 300 and res["recall_lo"][2] == res["recall_hi"][2] == 1.0


@pytest.mark.parametrize("method", ["multinomial", "indices"])
def test_bootstrap_with_an_absent_class_and_a_one_cell_class(method):
    """An absent class between present ones and a class of one cell: every resample keeps the counts (0 and 1)."""
    y = np.array([0] * 5 + [2] + [3] * 4)
    p = np.array([0, 0, 0, 1, 3, 2, 3, 3, 0, 3])
    boots = m.stratified_bootstrap_confusions(y, p, 4, n_resamples=300, seed=1, method=method)
    assert boots.dtype == np.int64
    np.testing.assert_array_equal(boots.sum(axis=2), np.broadcast_to([5, 0, 1, 4], (300, 4)))
    assert np.all(boots[:, 2, 2] == 1)
    with pytest.raises(ValueError, match=r"^unknown bootstrap method 'bca' \(use 'multinomial' or 'indices'\)$"):
        m.stratified_bootstrap_confusions(y, p, 4, n_resamples=3, method="bca")


def test_bootstrap_defaults_and_seeds():
    """The documented defaults (seed 0, multinomial rows, index draws in chunks of 256); the same seed gives the
    same resamples and another seed others."""
    labels, preds = _cells_from_confusion(HAND)
    sbc = m.stratified_bootstrap_confusions
    np.testing.assert_array_equal(sbc(labels, preds, 3, 50), sbc(labels, preds, 3, 50, seed=0, method="multinomial"))
    np.testing.assert_array_equal(sbc(labels, preds, 3, 300, method="indices"),
                                  sbc(labels, preds, 3, 300, seed=0, method="indices", chunk_size=256))
    assert not np.array_equal(sbc(labels, preds, 3, 50, seed=1), sbc(labels, preds, 3, 50, seed=0))
    idx = m.stratified_resample_indices(labels, 40)
    np.testing.assert_array_equal(idx, m.stratified_resample_indices(labels, 40, seed=0))
    assert not np.array_equal(idx, m.stratified_resample_indices(labels, 40, seed=1))
    bpr = m.bootstrap_precision_recall
    for key in ("recall_lo", "precision_hi"):
        np.testing.assert_array_equal(bpr(labels, preds, 3, 200)[key], bpr(labels, preds, 3, 200, seed=0)[key])
        np.testing.assert_array_equal(bpr(labels, preds, 3, 200, seed=7)[key], bpr(labels, preds, 3, 200, seed=7)[key])
    a, b = labels == preds, labels == np.roll(preds, 1)
    pad = m.paired_accuracy_difference
    assert pad(a, b, n_resamples=200) == pad(a, b, n_resamples=200, seed=0)
    assert pad(a, b, n_resamples=200, seed=3) == pad(a, b, n_resamples=200, seed=3)
    assert pad(a, b, n_resamples=200, seed=3) != pad(a, b, n_resamples=200, seed=4)


def test_resample_indices_draw_every_cell():
    """Each cell of each class can be drawn (first and last index included)."""
    labels, _ = _cells_from_confusion(HAND)
    idx = m.stratified_resample_indices(labels, 500, seed=4)
    assert set(np.unique(idx)) == set(range(labels.size))


def test_bootstrap_precision_recall_is_the_percentiles_of_its_resamples():
    """Every interval is the percentile of the resampled statistic itself (recomputed here from the confusions
    of the same seed and method), the accuracy's too; the settings are reported under their names."""
    table = simulated_table(n_proteins=36, cells_range=(4, 9), accuracy=0.7, seed=3)
    y, p = table.label, table.pred
    for method in ("indices", "multinomial"):
        res = m.bootstrap_precision_recall(y, p, 12, n_resamples=400, seed=5, ci=(5.0, 90.0), method=method)
        boots = m.stratified_bootstrap_confusions(y, p, 12, 400, seed=5, method=method)
        prec, rec = m.precision_recall(boots)
        np.testing.assert_array_equal(res["recall_lo"], np.percentile(rec, 5.0, axis=0))
        np.testing.assert_array_equal(res["recall_hi"], np.percentile(rec, 90.0, axis=0))
        np.testing.assert_array_equal(res["precision_hi"], np.nanpercentile(prec, 90.0, axis=0))
        np.testing.assert_array_equal(res["precision_undefined"], np.isnan(prec).sum(axis=0))
        assert res["precision_undefined"].dtype == np.int64
        acc = np.trace(boots, axis1=1, axis2=2) / y.size
        assert res["accuracy_lo"] == np.percentile(acc, 5.0) and res["accuracy_hi"] == np.percentile(acc, 90.0)
        assert res["accuracy_lo"] <= np.mean(y == p) <= res["accuracy_hi"]
        assert {k: res[k] for k in ("n_resamples", "seed", "ci_percentiles", "method")} == {
            "n_resamples": 400, "seed": 5, "ci_percentiles": [5.0, 90.0], "method": method}
    one = m.bootstrap_precision_recall([1], [1], 3, n_resamples=20)
    assert one["accuracy_lo"] == one["accuracy_hi"] == 1.0


def test_paired_difference_when_each_classifier_wins_some_cells():
    """A right on 30 cells where B is wrong, B right on 10 where A is wrong, 60 ties: the difference 0.2 with
    the normal interval 0.2 +- 1.96 * 0.6 / sqrt(100); one cell is enough; groups must match the cells."""
    a = np.array([True] * 30 + [False] * 10 + [True] * 30 + [False] * 30)
    b = np.array([False] * 30 + [True] * 10 + [True] * 30 + [False] * 30)
    got = m.paired_accuracy_difference(a, b, n_resamples=20000, seed=2)
    assert got["value"] == pytest.approx(0.2)
    np.testing.assert_allclose(got["cells"], [0.2 - 1.96 * 0.06, 0.2 + 1.96 * 0.06], atol=0.012)
    assert m.paired_accuracy_difference([True], [False], n_resamples=10) == {"value": 1.0, "cells": [1.0, 1.0]}
    with pytest.raises(ValueError, match=r"^groups has 3 entries for 100 cells$"):
        m.paired_accuracy_difference(a, b, groups=[1, 2, 3])


def test_evaluate_cells_in_process():
    """evaluate_cells assembles its parts exactly (the script test runs it in a subprocess, which mutation
    testing cannot see): counts, kappa, confusions, per-class intervals and the bootstrap settings."""
    table = simulated_table(n_proteins=36, cells_range=(4, 9), accuracy=0.7, seed=3)
    y, p = table.label, table.pred
    for method in ("multinomial", "indices"):
        res = m.evaluate_cells(table, n_resamples=300, seed=4, method=method)
        boot = m.bootstrap_precision_recall(y, p, 12, 300, seed=4, method=method)
        assert res["accuracy"] == {**m.accuracy(y, p), "lo": boot["accuracy_lo"], "hi": boot["accuracy_hi"]}
        assert res["kappa"] == pytest.approx(cohen_kappa_score(y, p), abs=1e-12)
        np.testing.assert_array_equal(res["confusion_counts"], m.confusion_counts(y, p, 12))
        np.testing.assert_array_equal(res["confusion_rates"], m.confusion_rates(res["confusion_counts"]))
        np.testing.assert_array_equal(res["class_counts"], np.bincount(y, minlength=12))
        np.testing.assert_array_equal(res["predicted_counts"], np.bincount(p, minlength=12))
        assert res["class_names"] == tuple(table.class_names) and len(res["class_names"]) == 12
        for key in ("recall_lo", "recall_hi", "precision", "precision_undefined"):
            np.testing.assert_array_equal(res["per_class"][key], boot[key])
        assert res["per_class"]["method"] == method and res["per_class"]["seed"] == 4
    assert m.evaluate_cells(table, n_resamples=300)["per_class"]["seed"] == 0


def test_statistics_of_float32_counts_are_computed_in_float64():
    """Counts handed over as float32 (a torch or image-library sum) give the same float64 rates, kappa and
    precision/recall as integer counts, not float32 roundings of them (75 / 105 differs in float32)."""
    c32 = HAND.astype(np.float32)
    rates = m.confusion_rates(c32)
    assert rates.dtype == np.float64
    np.testing.assert_array_equal(rates, m.confusion_rates(HAND))
    assert m.kappa_from_confusion(c32) == m.kappa_from_confusion(HAND) == m.cohen_kappa(*_cells_from_confusion(HAND), 3)
    for got, want in zip(m.precision_recall(c32), m.precision_recall(HAND)):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want)


def test_paired_difference_flags_as_numbers_one_sided_and_its_exact_draws():
    """Right/wrong flags given as 0.0/1.0 (a CSV column read as float) are the same as bools; when B wins every
    cell it differs the difference is -1 with interval [-1, -1]; and the cells' interval is the percentile of
    Multinomial(N, shares of -1/0/+1) draws of the seed's generator (the same seed, the same interval)."""
    a = np.array([True] * 30 + [False] * 10 + [True] * 30 + [False] * 30)
    b = np.array([False] * 30 + [True] * 10 + [True] * 30 + [False] * 30)
    groups = np.arange(a.size) % 7
    want = m.paired_accuracy_difference(a, b, groups=groups, n_resamples=300, seed=6)
    assert m.paired_accuracy_difference(a.astype(float), b.astype(float), groups=groups, n_resamples=300,
                                        seed=6) == want
    assert m.paired_accuracy_difference([False, True], [True, True], n_resamples=50) == {"value": -0.5,
                                                                                         "cells": [-1.0, 0.0]}
    assert m.paired_accuracy_difference([False], [True], n_resamples=10) == {"value": -1.0, "cells": [-1.0, -1.0]}
    draws = np.random.default_rng(6).multinomial(a.size, [0.1, 0.6, 0.3], size=300)
    np.testing.assert_allclose(want["cells"], np.percentile((draws[:, 2] - draws[:, 0]) / a.size, (2.5, 97.5)),
                               rtol=0, atol=1e-15)
