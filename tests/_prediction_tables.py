"""Builders of small, realistic predictions tables for the analysis tests."""

import numpy as np

from deepyeast.constants import N_CLASSES
from deepyeast.analysis.prediction_table import make_predictions, write_predictions


def simulated_table(n_proteins=60, cells_range=(3, 30), accuracy=0.8, n_classes=N_CLASSES, seed=0,
                    split="test", concentration=6.0):
    """A predictions table: proteins with one true class each, cells whose probabilities
    favour the true class with probability ``accuracy`` (else a random other class)."""
    rng = np.random.default_rng(seed)
    paths, proteins, splits, labels, probs = [], [], [], [], []
    for p in range(n_proteins):
        label = p % n_classes
        for c in range(int(rng.integers(*cells_range))):
            target = label if rng.random() < accuracy else int(rng.integers(0, n_classes))
            alpha = np.ones(n_classes)
            alpha[target] += concentration
            probs.append(rng.dirichlet(alpha))
            paths.append(f"plate{p % 7 + 1:02d}/{p}-{c}-1-1.png")
            proteins.append(f"plate{p % 7 + 1:02d}/{p}")
            splits.append(split)
            labels.append(label)
    return make_predictions(paths, proteins, splits, labels, np.array(probs), source="simulated",
                            require_all_classes=False)


def write_table(path, table):
    write_predictions(path, table)
    return str(path)
