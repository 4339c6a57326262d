"""The paper's Results beside ours: per-class counts and the paper's claims checked, confusions and their
galleries, Figure S2, the nucleus + cytoplasm subset of the proteins with two compartments, Figure 3C, the
chosen snapshot; and features that are the same whichever CPU kernels computed them."""

import csv
import html
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _prediction_tables import simulated_table, write_table
from deepyeast.analysis import paper_results as pr
from deepyeast.analysis.prediction_table import make_predictions
from deepyeast.constants import CLASS_NAMES, PAPER_CLASS_RECALL, PAPER_MIXED_NUCLEUS_CYTOPLASM
from deepyeast.utils.manifest import read_result

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = len(CLASS_NAMES)
NUCLEOLUS = CLASS_NAMES.index("nucleolus")


def _table(labels, preds, prefix="c"):
    probs = np.full((len(labels), K), 0.01)
    probs[np.arange(len(labels)), preds] = 1 - 0.01 * (K - 1)
    return make_predictions([f"plate01/{prefix}{i}-0-0-{i}.png" for i in range(len(labels))],
                            [f"plate01/{prefix}{i}" for i in range(len(labels))], ["test"] * len(labels),
                            labels, probs, require_all_classes=False)


def _pair(net_wrong_nucleolus_precision=True, forest_wins_recall_in=None):
    """Network and forest tables on the same 10 cells per class.  The network calls 9 of 10 right in
    every class; the forest 7 of 10, its mistakes spread so that the network's precision is higher
    everywhere except (if asked) the nucleolus, where the network also takes in 3 cells of other classes."""
    labels = np.repeat(np.arange(K), 10)
    net = labels.copy()
    rf = labels.copy()
    for k in range(K):
        net[k * 10] = (k + 1) % K                       # one mistake per class, to the next class
        rf[k * 10 + 1: k * 10 + 4] = (k + 2) % K         # three, two classes on
    if net_wrong_nucleolus_precision:                    # three more network calls of nucleolus, wrong
        for j, k in enumerate(c for c in range(K) if c not in (NUCLEOLUS, NUCLEOLUS - 1, NUCLEOLUS - 2)):
            if j < 3:
                net[k * 10 + 5] = NUCLEOLUS
    if forest_wins_recall_in is not None:
        k = CLASS_NAMES.index(forest_wins_recall_in)
        rf[k * 10: k * 10 + 10] = k
        net[k * 10: k * 10 + 5] = (k + 1) % K
    return _table(labels, net), _table(labels, rf)


def test_per_class_counts_and_the_paper_claims_hold_when_the_run_agrees():
    net, rf = _pair()
    cmp = pr.per_class_comparison(net, rf)
    c = cmp["classifiers"]["network"]["confusion"]
    assert c.sum() == 120 and int(np.trace(c)) == 120 - 12 - 3
    claims = pr.paper_claims(cmp)
    assert claims["network_wins_recall_every_class"]["holds"] is True
    assert claims["network_wins_recall_every_class"]["ours"] == []
    assert claims["network_wins_precision_all_but_nucleolus"]["ours"] == ["nucleolus"]
    assert claims["network_wins_precision_all_but_nucleolus"]["holds"] is True
    metrics = pr.per_class_metrics(cmp)
    assert metrics["recall_per_class"]["Golgi"]["correct"] == 9
    assert metrics["recall_per_class"]["endosome"]["correct"] == 8  # also called nucleolus once
    assert metrics["rf_recall_per_class"]["endosome"] == {"value": 0.7, "correct": 7, "total": 10}
    # the table sets the paper's count beside ours where the paper gives one, and leaves it empty elsewhere
    rows = {r[0]: r for r in pr.per_class_rows(cmp)}
    right, total = PAPER_CLASS_RECALL["endosome"]
    assert rows["endosome"][4] == f"{right / total:.3f} ({right:,}/{total:,})"
    assert rows["ER"][2] == "" and rows["ER"][4] == ""


def test_the_paper_claims_are_false_when_the_forest_wins_a_class():
    net, rf = _pair(net_wrong_nucleolus_precision=False, forest_wins_recall_in="Golgi")
    claims = pr.paper_claims(pr.per_class_comparison(net, rf))
    assert claims["network_wins_recall_every_class"]["holds"] is False
    assert claims["network_wins_recall_every_class"]["ours"] == ["Golgi"]
    # without the nucleolus exception the precision claim (all but nucleolus) does not hold either
    assert claims["network_wins_precision_all_but_nucleolus"]["holds"] is False
    assert "nucleolus" not in claims["network_wins_precision_all_but_nucleolus"]["ours"]


def test_claims_are_not_evaluated_without_a_forest_or_with_an_undefined_precision():
    net, rf = _pair()
    assert all(c["holds"] is None for c in pr.paper_claims(pr.per_class_comparison(net)).values())
    labels = np.repeat(np.arange(K), 10)
    never_golgi = np.where(labels == CLASS_NAMES.index("Golgi"), CLASS_NAMES.index("ER"), labels)
    claims = pr.paper_claims(pr.per_class_comparison(_table(labels, never_golgi), rf))
    assert claims["network_wins_precision_all_but_nucleolus"]["holds"] is None
    assert claims["network_wins_precision_all_but_nucleolus"]["undefined"] == ["Golgi"]


def test_top_confusions_are_counted_and_ordered():
    c = np.zeros((K, K), np.int64)
    np.fill_diagonal(c, 50)
    c[9, 10] = 18   # peroxisome -> spindle pole
    c[2, 11] = 25   # endosome -> vacuole
    c[7, 8] = 18    # nucleolus -> nucleus
    top = pr.top_confusions(c, CLASS_NAMES, 2)
    assert top[0] == {"true": "endosome", "called": "vacuole", "cells": 25, "of": 75}
    assert (top[1]["true"], top[1]["called"]) == ("nucleolus", "nucleus")  # ties: the earlier true class first
    assert len(pr.top_confusions(c, CLASS_NAMES, 100)) == 3


def test_accuracy_by_cells_per_bin_and_at_least_n():
    calls = [{"n_cells": n, "label": 0, "pred": 0 if ok else 1} for n, ok in
             [(1, False), (1, True), (3, True), (12, True), (12, False), (60, True)]]
    res = pr.accuracy_by_cells(calls)
    bins = {b["cells"]: (b["right"], b["proteins"]) for b in res["bins"]}
    assert bins["1"] == (1, 2) and bins["2-4"] == (1, 1) and bins["10-19"] == (1, 2) and bins["50-99"] == (1, 1)
    at = {a["n"]: (a["right"], a["proteins"]) for a in res["at_least"]}
    assert at[1] == (4, 6) and at[10] == (2, 3) and at[60] == (1, 1) and 100 not in at


def test_mixed_subset_is_the_papers_metric_and_other_pairs_apart(tmp_path):
    """From the protein-level step's own proteins_mixed.csv (real Dirichlet calls)."""
    from deepyeast.analysis.protein_level import run_protein_level

    nuc, cyt, vac = (CLASS_NAMES.index(n) for n in ("nucleus", "cytoplasm", "vacuole"))
    table = tmp_path / "mixed_proteins.csv"
    rows = [("plate09/A", nuc, cyt), ("plate09/B", nuc, cyt), ("plate09/C", nuc, vac)]
    table.write_text("protein,compartment_a,compartment_b\n" + "".join(
        f"{p},{CLASS_NAMES[a]},{CLASS_NAMES[b]}\n" for p, a, b in rows))
    paths, prots, probs = [], [], []
    for p, a, b in rows:
        for i in range(4):
            q = np.full(K, 0.01)
            q[[a, b]] = 0.45
            if p == "plate09/B":  # B: nucleus first, vacuole second, cytoplasm third
                q[[nuc, vac, cyt]] = (0.5, 0.3, 0.08)
            q /= q.sum()
            paths.append(f"{p}-{i}-0-0.png")
            prots.append(p)
            probs.append(q)
    mixed_pred = write_table(tmp_path / "mixed.csv", make_predictions(
        paths, prots, ["mixed"] * len(paths), [r[1] for r in rows for _ in range(4)], np.array(probs),
        require_all_classes=False))
    net = write_table(tmp_path / "net.csv", simulated_table(n_proteins=24, seed=2))
    run_protein_level(net, tmp_path / "proteins" / "proteins.csv", (str(table), mixed_pred))
    by_pair = pr.mixed_pair_summary(pr.read_mixed_results(tmp_path / "proteins" / "proteins_mixed.csv"))
    assert by_pair[("cytoplasm", "nucleus")]["top_two"] == {"value": 0.5, "correct": 1, "total": 2}
    assert by_pair[("cytoplasm", "nucleus")]["top_three_rest"]["correct"] == 1
    assert by_pair[("nucleus", "vacuole")]["top_two"]["correct"] == 1
    result = pr.run_paper_results(tmp_path / "paper", pr.PaperInputs(
        predictions=net, archive=str(tmp_path), proteins=str(tmp_path / "proteins" / "proteins.csv"),
        mixed=str(tmp_path / "proteins" / "proteins_mixed.csv")), make_figures=False)
    assert result["metrics"]["mixed_nucleus_cytoplasm_top_two"]["total"] == 2
    assert result["metrics"]["mixed_other_pairs_top_two"] == {"value": 1.0, "correct": 1, "total": 1}
    mixed_table = next(t for t in result["tables"] if t["title"].startswith("Proteins with two compartments"))
    first = mixed_table["rows"][0]
    t2, _ = PAPER_MIXED_NUCLEUS_CYTOPLASM["top_two"]
    assert first[0].startswith("cytoplasm + nucleus") and f"{t2}/24" in first[2]
    assert read_result(tmp_path / "paper" / "result.json")["name"] == "paper"


def test_metrics_json_holds_the_papers_items_and_the_claims(tmp_path):
    from deepyeast.report.make_report import build_report

    net, rf = _pair()
    run = tmp_path / "run"
    from deepyeast.analysis.evaluate_cells import run_cell_evaluation
    run_cell_evaluation(write_table(tmp_path / "n.csv", net), run / "cells", write_table(tmp_path / "r.csv", rf),
                        n_resamples=50, make_figures=False)
    pr.run_paper_results(run / "paper", pr.PaperInputs(predictions=str(tmp_path / "n.csv"), archive=str(tmp_path),
                                                       rf_predictions=str(tmp_path / "r.csv")), make_figures=False)
    m = build_report(run, tmp_path / "r.html", tmp_path / "m.json")
    assert m["paper_claims"]["network_wins_recall_every_class"]["holds"] is True
    assert m["paper_items"]["class_recall"]["endosome"] == {"correct": 447, "total": 689}
    assert m["paper_items"]["forest"]["kappa"] == 0.72 and m["paper_items"]["chosen_iteration"] == 130000
    assert m["recall_per_class"]["Golgi"]["correct"] == 9 and m["rf_recall_per_class"]["Golgi"]["correct"] == 7
    assert json.loads((tmp_path / "m.json").read_text())["paper_claims"] == m["paper_claims"]
    page = html.unescape((tmp_path / "r.html").read_text())  # the report's comparison table holds the claims
    assert "the paper's claim: the network's recall is higher than the forest's in every compartment" in page


def test_forest_filter_and_snapshot_rows_from_their_steps_outputs(tmp_path):
    """The forest's grid summary and the non-cell filter's manifest (written by its own writer) beside the paper's."""
    from deepyeast.analysis.quality_filter import write_quality_result

    net = write_table(tmp_path / "net.csv", simulated_table(n_proteins=24, seed=5))
    (tmp_path / "rf_grid.json").write_text(json.dumps({"best": {"ntree": 150, "mtry": 50, "nodesize": 1},
                                                       "grid_name": "small", "n_features": 430}))
    acc = {"value": 0.8, "correct": 80, "total": 100}
    write_quality_result(tmp_path / "quality", {
        "folds": 10, "ntree": 100, "seed": 1, "mtry_grid": [2, 110, 218, 326, 435], "n_features": 430,
        "training_set": {"cells": 600, "cells_per_class": 100, "noncells": 86, "noncell_list": "noncells.txt",
                         "classes": []},
        "cv_table": [{"mtry": 2, "sampling": "none", "cv_accuracy": 0.955, "cv_balanced_accuracy": 0.807}],
        "best": {"mtry": 2, "sampling": "none", "cv_accuracy": 0.955, "cv_balanced_accuracy": 0.807},
        "test": {"n_cells": 1000, "n_removed": 49, "n_kept": 951},
        "classifiers": {"network": {"before": acc, "after": acc, "removed": 49}}})
    r = pr.run_paper_results(tmp_path / "paper", pr.PaperInputs(
        predictions=net, archive=str(tmp_path), forest_summary=str(tmp_path / "rf_grid.json"),
        quality=str(tmp_path / "quality" / "result.json")), make_figures=False)
    m = r["metrics"]
    assert (m["rf_chosen_ntree"], m["rf_chosen_mtry"], m["rf_chosen_nodesize"], m["rf_n_features"]) == (150, 50, 1, 430)
    assert m["noncell_filter_mtry"] == 2 and m["noncell_filter_cv_accuracy"] == 0.955
    assert m["noncell_filter_removed"] == {"value": 0.049, "correct": 49, "total": 1000}
    rows = {row[0]: row for row in next(t for t in r["tables"] if t["title"].startswith("The forest"))["rows"]}
    assert rows["non-cell filter: chosen mtry"][1:3] == [2, 110] and "tops out at 430" in rows[
        "non-cell filter: chosen mtry"][3]
    assert rows["non-cell filter: test cells removed"][2] == "0.115 (1,440/12,500)"
    assert rows["forest: features per cell"][1:3] == [430, 435]
    quality = read_result(tmp_path / "quality" / "result.json")
    cv = next(t for t in quality["tables"] if t["title"] == "Cross-validation of the filter")
    assert "tops out at 430" in cv["caption"]


def test_missing_inputs_are_named_with_their_option(tmp_path):
    net = write_table(tmp_path / "net.csv", simulated_table(n_proteins=24, seed=4))
    r = pr.run_paper_results(tmp_path / "out", pr.PaperInputs(predictions=net, archive=str(tmp_path)),
                             make_figures=False)
    what = " ".join(m["what"] for m in r["missing"])
    assert "Figure S2" in what and "nucleus + cytoplasm" in what and "Figure 3C" in what
    assert "Gabor" in r["summary"] and "Gabor" in r["details"]["our_reading"][0]
    assert r["details"]["not_reproduced"] == []
    assert r["metrics"]["mixed_nucleus_cytoplasm_top_two"] is None
    assert r["details"]["claims_holding"]["network_wins_recall_every_class"] is None


def test_galleries_and_figures_from_real_crops(tmp_path):
    """Figure 2C, S2 and 3C drawn from crops in the archive's PNG form; a pair without cells has no row."""
    from deepyeast.data.crop_png import write_crop

    net_t, rf_t = _pair()
    rng = np.random.default_rng(0)
    for p in net_t.path:
        write_crop(str(tmp_path / "arch"), p, rng.integers(0, 255, (2, 64, 64), dtype=np.uint8))
    net, rf = write_table(tmp_path / "net.csv", net_t), write_table(tmp_path / "rf.csv", rf_t)
    out = tmp_path / "paper"
    assert pr.misclassified_gallery(net_t, str(tmp_path / "arch"), out / "none",
                                    [{"true": "ER", "called": "vacuole", "cells": 0, "of": 10}]) is None
    with open(tmp_path / "tsne.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "fc3_x", "fc3_y"])
        for i, (p, y) in enumerate(zip(net_t.path, net_t.label)):
            w.writerow([p, int(y), float(y) + 0.01 * i, float(-y)])
    from deepyeast.analysis.protein_level import run_protein_level
    run_protein_level(net, tmp_path / "proteins" / "proteins.csv")
    r = pr.run_paper_results(out, pr.PaperInputs(predictions=net, archive=str(tmp_path / "arch"), rf_predictions=rf,
                                                 proteins=str(tmp_path / "proteins" / "proteins.csv"),
                                                 tsne=str(tmp_path / "tsne.csv")))
    files = {f["file"] for f in r["figures"]}
    assert files == {"fig2c_misclassified.png", "files_s4_s5_all_pairs.png", "figS2_protein_accuracy_by_cells.png",
                     "fig3c_tsne_neighbours.png"}
    # Figure 3C's neighbours: with each class a tight cluster, every point's nearest cells are of its class
    for point in r["details"]["tsne_neighbours"]["points"]:
        k = CLASS_NAMES.index(point["compartment"])
        assert all(net_t.label[list(net_t.path).index(p)] == k for p in point["cells"])
    assert r["details"]["claims_holding"] == {"network_wins_recall_every_class": True,
                                              "network_wins_precision_all_but_nucleolus": True}
    js = json.load(open(out / "paper_results.json"))
    assert js["metrics"]["top_confusions"]


def test_chosen_iteration_is_the_snapshot_with_the_same_bytes(tmp_path):
    snaps = tmp_path / "snapshots"
    snaps.mkdir()
    for it in (3, 6):
        (snaps / f"deepyeast_iter_{it}.caffemodel").write_bytes(b"w%d" % it)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "x.prototxt"\nbase_lr: 0.01\nmax_iter: 6\nsnapshot_prefix: "{snaps}/deepyeast"\n')
    chosen = tmp_path / "chosen.caffemodel"
    chosen.write_bytes(b"w3")
    assert pr.chosen_iteration(str(solver), str(chosen)) == (3, 6)
    chosen.write_bytes(b"other")
    assert pr.chosen_iteration(str(solver), str(chosen)) == (None, 6)


def test_round_features_is_exact_and_keeps_special_values():
    from deepyeast.analysis.cp_features import FEATURE_BITS, round_features

    x = np.array([1.0, 1 / 3, -2.5e-9, 0.0, np.nan, np.inf, 123456789.123])
    r = round_features(x)
    assert r[0] == 1.0 and r[3] == 0.0 and np.isnan(r[4]) and r[5] == np.inf
    assert r[1] == float(np.float32(1 / 3))  # 24 bits: float32's nearest value
    assert np.all(np.abs(r[np.isfinite(x)] - x[np.isfinite(x)]) <= np.abs(x[np.isfinite(x)]) * 2.0 ** -FEATURE_BITS)
    assert np.array_equal(round_features(r), r, equal_nan=True)


def test_features_are_identical_under_another_cpus_kernels(tmp_path):
    """The features of real crops computed with numpy and OpenBLAS restricted to an AVX2 CPU's kernels (a
    fresh process) equal those computed here, value for value, as analysis/cp_features.py writes them."""
    from deepyeast.analysis.cp_features import extract_features
    from deepyeast.data.crop_png import write_crop
    from deepyeast.data.make_synthetic import example_crops

    sys.path.insert(0, REPO)
    from bench.bench_cpu_dependence import OTHER_CPU

    crops = np.concatenate([example_crops("main", k, n=2, seed=3) for k in range(K)])
    paths = []
    for i, crop in enumerate(crops):
        paths.append(f"plate01/x{i}-0-0-{i}.png")
        write_crop(str(tmp_path), paths[-1], crop)
    _, here, _ = extract_features(paths, str(tmp_path), progress=False)
    code = ("import sys, numpy as np\nfrom deepyeast.analysis.cp_features import extract_features\n"
            "paths = sys.argv[2:]\n_, v, _ = extract_features(paths, sys.argv[1], progress=False)\n"
            "np.save(sys.argv[1] + '/other.npy', v)\n")
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", **OTHER_CPU)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), *paths], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    other = np.load(tmp_path / "other.npy")
    assert here.shape == other.shape == (len(paths), 430)
    same = (here == other) | (np.isnan(here) & np.isnan(other))
    assert same.all(), f"{(~same).sum()} feature values differ between the kernels"
