"""Checks of a finished pipeline run shared by the pipeline tests and the Docker image's (not a test module)."""

import json
import os

import pytest

TINY_SCHEDULE = ("max_iter=6 stepsize=3 test_interval=3 test_iter=1 snapshot=3 display=1 average_loss=1")
"""A schedule of a few iterations: the pipeline's steps all run, in minutes."""


def check_report(run):
    """Assert that the run folder ``run`` holds a report whose metrics are real values; returns metrics.json."""
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    # metrics.json lists every expected key (null until a step reports it): check the values, not the keys
    for key in ("cell_accuracy", "protein_accuracy", "protein_accuracy_min10", "rf_cell_accuracy",
                "rf_protein_accuracy", "cell_accuracy_filtered"):
        acc = metrics[key]
        if acc is None and key == "cell_accuracy_filtered":  # the non-cell filter may say why it did not run
            assert metrics["results"]["quality"]["missing"], "cell_accuracy_filtered is null and no reason given"
            continue
        assert acc is not None, key
        assert acc["total"] > 0 and 0 <= acc["correct"] <= acc["total"], (key, acc)
        assert acc["value"] == pytest.approx(acc["correct"] / acc["total"]), (key, acc)
    kappa = metrics["cell_kappa"]
    assert kappa is not None and -1 <= kappa["value"] <= 1 and kappa["total"] == metrics["cell_accuracy"]["total"]
    transfer = metrics["transfer_accuracy"]
    assert transfer is not None and transfer["network"], transfer
    for n, t in transfer["network"].items():
        assert t["total"] > 0 and 0 <= t["correct"] <= t["total"], (n, t)
    html = open(os.path.join(run, "report.html"), encoding="utf-8").read()
    assert html.count("data:image/png;base64,") >= 8
    commands = open(os.path.join(run, "commands.txt")).read()
    assert "deepyeast train" in commands or "bin/caffe train" in commands
    return metrics
