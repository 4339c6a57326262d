"""End-to-end (issue 13's "done means"): a screen classified from its raw micrographs, labels withheld,
recovers the proteins' compartments about as well as the labelled pipeline does on the same micrographs.

One short training run on a small synthetic screen (our engine, bf16, batch 32, then the BatchNorm
statistics recomputed, as the demo does) is written as a model bundle.  Then, on the held-out
proteins (val + test; their fields saved by the generator):

* labelled pipeline: ``predict.py`` on the crops the generator cut around each cell (its split lists,
  with labels) and ``protein_level.py``;
* new-screen pipeline: ``classify_screen.py --model BUNDLE`` on the micrographs with only
  ``image,plate,protein`` (no labels, no masks: cells found by segmentation).

Both protein-level accuracies (and the per-cell ones) are printed; the test asserts that training
learned something (the labelled pipeline right on more proteins than a chance caller reaches with
probability 1e-6) and that classifying from raw micrographs loses no more proteins than chance explains
(at least the 1% quantile of a binomial with the labelled pipeline's rate): thresholds from the
binomial, not fitted to one seed.
"""

import csv
import json
import os
import subprocess
import sys

import pytest

from _data_helpers import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SIZE = "small"          # 2,100 / 400 / 400 cells; ~45 held-out proteins
DIFFICULTY = 0.0        # no dim proteins, defocus, non-cells or haze: a short run learns the patterns
BATCH = 32
SCHEDULE = {"max_iter": "200", "base_lr": "0.02", "stepsize": "1000", "snapshot": "200", "test_interval": "1000",
            "display": "20"}
BN_BATCHES = 30
ALPHA = 0.01            # one-sided error of each check below (binomial, over the ~45 held-out proteins)
SEEDS = [int(s) for s in os.environ.get("DEEPYEAST_E2E_SEEDS", "0").split(",")]
"""Seeds of the screen (the training run's random_seed is 1 + seed); CI runs 0, DEEPYEAST_E2E_SEEDS=0,1,2 more."""


def learned_threshold(n, chance=1 / 12, alpha=1e-6):
    """Fewest right proteins of ``n`` that a net calling at ``chance`` reaches with probability below ``alpha``."""
    from scipy.stats import binom

    return int(binom.isf(alpha, n, chance)) + 1


def trailing_threshold(n, right, alpha=ALPHA):
    """Fewest right proteins of ``n`` the new-screen pipeline may have when its per-protein success rate
    equals the labelled pipeline's (``right`` of ``n``): the ``alpha`` quantile of Binomial(n, right / n)."""
    from scipy.stats import binom

    return int(binom.ppf(alpha, n, right / n))


def _run(*cmd, timeout=1800):
    res = subprocess.run([str(c) for c in cmd], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))}\n{res.stderr[-3000:]}"
    return res


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("seed", SEEDS)
def test_classify_screen_recovers_compartments_like_the_labelled_pipeline(tmp_path, seed):
    from deepyeast.engine.run_config import write_run_config

    py = sys.executable
    deepyeast = os.path.join(os.path.dirname(py), "deepyeast")
    screen = tmp_path / "screen"
    # in its own process: its worker pool forks, which is safe only from a process without OpenCV/scipy threads
    _run(py, "data_prep/make_synthetic.py", "--out", screen, "--size", SIZE, "--seed", seed, "--jobs", 2,
         "--save-fields", 10_000, "--difficulty", DIFFICULTY)
    main = screen / "main"
    lmdb, train, model = tmp_path / "lmdb", tmp_path / "train", tmp_path / "model"
    _run(py, "data_prep/make_lmdb.py", main, "--out", lmdb)
    write_run_config(str(train), str(lmdb), os.path.join(REPO_ROOT, "models", "deepyeast", "solver_cpu.prototxt"),
                     dict(SCHEDULE, random_seed=str(1 + seed)), batch_sizes={"TRAIN": BATCH, "TEST": 50})
    _run(deepyeast, "train", "-solver", train / "solver.prototxt", "-precision", "bf16")
    final = train / "final.caffemodel"
    _run(deepyeast, "bnstats", "-model", train / "train_val.prototxt", "-weights",
         train / "snapshots" / f"deepyeast_iter_{SCHEDULE['max_iter']}.caffemodel", "-out", final,
         "-iterations", BN_BATCHES)
    _run(py, "analysis/make_bundle.py", "--model", "models/deepyeast/deploy.prototxt", "--weights", final,
         "--mean", lmdb / "mean.binaryproto", "--classes", main / "HOwt_doc.txt", "--solver",
         train / "solver.prototxt", "--examples", main / "HOwt_test.txt", "--out", model)

    # the labelled pipeline on the held-out proteins: the generator's crops, with labels
    labelled, lab_cells = {}, [0, 0]
    for split in ("val", "test"):
        cells = tmp_path / f"cells_{split}.csv"
        _run(py, "analysis/predict.py", "--model", model / "deploy.prototxt", "--weights",
             model / "weights.caffemodel", "--mean", model / "mean.binaryproto", "--archive", main, "--list",
             main / f"HOwt_{split}.txt", "--out", cells)
        rows = _csv(cells)
        lab_cells[0] += sum(r["pred"] == r["label"] for r in rows)
        lab_cells[1] += len(rows)
        _run(py, "analysis/protein_level.py", "--predictions", cells, "--out", tmp_path / f"proteins_{split}")
        for r in _csv(tmp_path / f"proteins_{split}" / "proteins.csv"):
            labelled[r["protein"]] = (int(r["pred"]), int(r["label"]), int(r["n_cells"]))

    # the same proteins' micrographs, as a lab would give them: no labels, no splits, no masks
    fields = main / "fields"
    rows = [r for r in _csv(fields / "images.csv") if r["split"] in ("val", "test")]
    truth = {f"plate{int(r['plate']):02d}/{r['protein']}": int(r["label"]) for r in rows}
    assert set(truth) == set(labelled)  # every held-out protein's fields were saved
    table = tmp_path / "new_screen.csv"
    table.write_text("image,plate,protein\n" + "".join(f"{fields / r['image']},{r['plate']},{r['protein']}\n"
                                                       for r in rows))
    out = tmp_path / "classified"
    _run(py, "analysis/classify_screen.py", "--model", model, "--images", table, "--out", out)
    calls = {f"plate{int(p['plate']):02d}/{p['protein']}": p for p in _csv(out / "proteins.csv")}
    assert set(calls) == set(truth)
    assert all(p["pred"] != "" for p in calls.values()), "a held-out protein got no cells"
    cls_right = sum(int(calls[k]["pred"]) == truth[k] for k in truth)
    lab_right = sum(pred == label for pred, label, _ in labelled.values())
    cls_cells = _csv(out / "cells.csv")
    cls_cell_right = sum(int(c["pred"]) == truth[f"plate{int(c['plate']):02d}/{c['protein']}"] for c in cls_cells)
    n = len(truth)
    result = {"seed": seed, "proteins": n, "classify_screen_proteins_right": cls_right,
              "labelled_proteins_right": lab_right, "classify_screen_cells": [cls_cell_right, len(cls_cells)],
              "labelled_cells": lab_cells, "learned_threshold": learned_threshold(n),
              "trailing_threshold": trailing_threshold(n, lab_right)}
    print(f"\nseed {seed}: held-out proteins called right: classify_screen.py (labels withheld, cells segmented) "
          f"{cls_right}/{n} = {cls_right / n:.3f}; labelled pipeline (generator's crops) {lab_right}/{n} = "
          f"{lab_right / n:.3f}.  Per cell: {cls_cell_right}/{len(cls_cells)} vs {lab_cells[0]}/{lab_cells[1]}. "
          f"{json.dumps(result)}")
    # segmentation found about the cells the generator cut
    assert abs(len(cls_cells) - lab_cells[1]) <= 0.05 * lab_cells[1], (len(cls_cells), lab_cells[1])
    assert lab_right >= learned_threshold(n), result  # the short run learned (chance: 1/12 per protein)
    assert cls_right >= trailing_threshold(n, lab_right), result  # no more lost than chance explains
