"""Out-of-distribution scores and temperature calibration of a bundle's network.

Score: the Mahalanobis distance of a cell's ``fc1`` features (the 512 activations after the
first fully connected layer's ReLU) to the nearest class mean under one covariance shared by
all classes (Lee, Lee, Lee & Shin 2018, "A simple unified framework for detecting
out-of-distribution samples and adversarial attacks", NeurIPS; class-conditional Gaussians
with a tied covariance, without their input perturbation and layer ensemble):

    score(x) = min_k (f(x) - mu_k)^T Sigma^-1 (f(x) - mu_k)

``mu_k`` the mean of class k's training cells, ``Sigma`` the pooled within-class covariance
(shrunk towards its diagonal by ``SHRINK`` so it inverts with 512 features).  A cell is
flagged ``ood`` when its score exceeds the 99th percentile of the validation cells' scores
(the bundle's ``threshold``).  A second distance covers what the features of a briefly trained
net may miss: the Mahalanobis distance of simple input statistics of the crop (logarithms of the per
channel mean, standard deviation, 99th percentile and mean neighbour difference) to those of the training cells
(one Gaussian), with its own 99th-percentile threshold.  ``ood_score`` is the larger of the two
distances each divided by its threshold; a cell is flagged ``ood`` above 1, so about 1-2% of cells
like the training data are flagged (the validation share is stored as ``training_flagged_share``).

Temperature: one scalar T dividing the logits (``fc3``) before the softmax, fitted on the
validation cells by minimising the negative log-likelihood (Guo, Pleiss, Sun & Weinberger 2017,
"On calibration of modern neural networks", ICML).  T does not change any argmax, so calls stay
the same; probabilities become calibrated.  The expected calibration error (15 equal-width
confidence bins, as Guo et al.) before and after is stored with it.

The statistics live in the bundle as ``ood.npz`` (float arrays only, no pickle) with their
description in ``bundle.json`` under ``"ood"``; a bundle without them (converted Keras weights,
older bundles) classifies as before and reports the check as not available.
"""

import numpy as np

from deepyeast.utils.io import InputError

OOD_FILE = "ood.npz"
OOD_BLOB = "fc1"
LOGIT_BLOB = "fc3"
QUANTILE = 0.99
SHRINK = 0.05
ECE_BINS = 15
OOD_FLAG = 1.0
"""A cell is flagged out of distribution when its ``ood_score`` (each distance over its threshold) exceeds this."""


def crop_statistics(crops):
    """float64 N x 8 input statistics of uint8 N x 2 x H x W crops, ``log(1 + s)`` of: per channel the mean,
    the standard deviation, the 99th percentile and the mean absolute difference of neighbouring pixels
    (sharpness).  Logarithms: a set-up error scales them (bit depth, zoom, blur), and the training
    cells' spread is then about the same for every statistic."""
    x = np.asarray(crops, np.float64)
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    grad = (np.abs(np.diff(x, axis=2)).mean(axis=(2, 3)) + np.abs(np.diff(x, axis=3)).mean(axis=(2, 3))) / 2
    return np.log1p(np.concatenate([flat.mean(2), flat.std(2), np.percentile(flat, 99, axis=2), grad], axis=1))


class OodScorer:
    """Out-of-distribution scores of cells: two squared Mahalanobis distances, each divided by its
    threshold, the larger kept (a cell scoring above 1 is flagged):

    * ``blob`` features (fc1) to the nearest class mean, tied covariance (``means``, ``precision``,
      ``threshold``);
    * the crop's input statistics (:func:`crop_statistics`) to the training cells' mean, their
      covariance (``input_mean``, ``input_precision``, ``input_threshold``): channel order, bit
      depth, magnification and focus change them directly.
    """

    def __init__(self, means, precision, threshold, blob=OOD_BLOB, temperature=1.0, input_mean=None,
                 input_precision=None, input_threshold=np.inf):
        self.means = np.asarray(means, np.float64)
        self.precision = np.asarray(precision, np.float64)
        self.threshold = float(threshold)
        self.blob = blob
        self.temperature = float(temperature)
        self.input_mean = None if input_mean is None else np.asarray(input_mean, np.float64)
        self.input_precision = None if input_precision is None else np.asarray(input_precision, np.float64)
        self.input_threshold = float(input_threshold)
        self._whitened = None

    def _whitening(self):
        """``(L, means @ L)`` with ``precision = L L^T`` (Cholesky), made once: then
        ``(f - mu)^T precision (f - mu) = |f L - mu L|^2``, one matrix product for all cells and means."""
        if self._whitened is None:
            try:
                chol = np.linalg.cholesky((self.precision + self.precision.T) / 2)
            except np.linalg.LinAlgError:
                raise ValueError("the OOD precision matrix is not positive definite") from None
            self._whitened = (chol, self.means @ chol)
        return self._whitened

    @classmethod
    def from_bundle(cls, bundle):
        """The scorer stored in a bundle, or None when the bundle has no OOD statistics."""
        import os

        meta = bundle.metadata.get("ood")
        path = os.path.join(bundle.path, OOD_FILE)
        if not meta or not os.path.exists(path):
            return None
        with np.load(path, allow_pickle=False) as z:
            scorer = cls(z["means"], z["precision"], float(meta["threshold"]), meta.get("blob", OOD_BLOB),
                         float(meta.get("temperature", 1.0)), z["input_mean"], z["input_precision"],
                         float(meta["input_threshold"]))
        try:
            scorer._whitening()
        except ValueError as e:
            raise InputError(f"{path}: {e}") from None
        return scorer

    def feature_score(self, features):
        """float64 N smallest squared Mahalanobis distances of float N x D features to the class means."""
        chol, means = self._whitening()
        z = np.asarray(features, np.float64) @ chol  # BLAS; the former einsum per mean was ~40% of the network's time
        best = np.full(len(z), np.inf)
        for m in means:
            best = np.minimum(best, np.square(z - m).sum(axis=1))
        return best

    def input_score(self, crops):
        """float64 N squared Mahalanobis distances of the crops' input statistics to the training cells'."""
        d = crop_statistics(crops) - self.input_mean
        return np.einsum("nd,de,ne->n", d, self.input_precision, d)

    def score(self, features, crops=None):
        """float32 N scores: the feature distance over its threshold, or the larger of that and the
        input-statistics distance over its threshold when ``crops`` are given (flag: score > 1)."""
        if len(features) == 0:
            return np.zeros(0, np.float32)
        s = self.feature_score(features) / self.threshold
        if crops is not None and self.input_mean is not None:
            s = np.maximum(s, self.input_score(crops) / self.input_threshold)
        return s.astype(np.float32)


# --------------------------------------------------------------------------- fitting

def class_statistics(features, labels, n_classes, shrink=SHRINK):
    """Class means and the inverse of the shrunk tied covariance of float N x D ``features``.

    Returns ``(means float64 K' x D, precision float64 D x D, classes int K')`` over the K'
    classes present.  ``Sigma = (1 - shrink) S + shrink * mean(diag S) * I``, S the pooled
    within-class covariance (divided by N).
    """
    f = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    present = [k for k in range(n_classes) if np.any(labels == k)]
    if not present:
        raise ValueError("no labelled cells to fit the class statistics on")
    means = np.stack([f[labels == k].mean(axis=0) for k in present])
    centred = f - means[np.searchsorted(present, labels)]
    cov = centred.T @ centred / len(f)
    cov = (1 - shrink) * cov + shrink * max(float(np.mean(np.diag(cov))), 1e-12) * np.eye(cov.shape[0])
    return means, np.linalg.inv(cov), np.asarray(present, np.int64)


def scale_probabilities(probs, temperature):
    """Softmax probabilities at ``temperature`` from float N x K probabilities at 1:
    ``softmax(log p / T)`` (equal to ``softmax(logits / T)``: the log-sum-exp shift cancels)."""
    logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-30, None)) / float(temperature)
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(probs, labels):
    """The temperature T > 0 minimising the negative log-likelihood of ``labels`` (Guo et al. 2017)."""
    from scipy.optimize import minimize_scalar

    labels = np.asarray(labels, np.int64)
    rows = np.arange(len(labels))

    def nll(log_t):
        return -np.mean(np.log(np.clip(scale_probabilities(probs, np.exp(log_t))[rows, labels], 1e-30, None)))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def expected_calibration_error(probs, labels, bins=ECE_BINS):
    """ECE: sum over equal-width confidence bins of (share of cells) x |accuracy - mean confidence|."""
    probs = np.asarray(probs, np.float64)
    conf = probs.max(axis=1)
    right = probs.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.mean() * abs(right[sel].mean() - conf[sel].mean())
    return float(total)


def fit_bundle_statistics(predictor, train_crops, train_labels, val_crops, val_labels, n_classes,
                          quantile=QUANTILE):
    """What a bundle stores to score cells and calibrate: ``(arrays, meta)``.

    ``predictor``: a :class:`deepyeast.engine.inference.Predictor` keeping the probabilities first and ``fc1``;
    crops uint8 N x C x H x W with int labels.  Class statistics come from the training cells,
    the threshold (the ``quantile`` of the validation cells' scores) and the temperature from the
    validation cells.  ``arrays``: means, precision, classes; ``meta``: the JSON description
    (``network_precision``: the predictor's arithmetic, fp32 or bf16).
    """
    train = predictor.outputs(train_crops)
    val = predictor.outputs(val_crops)
    out_blob = predictor.keep[0]
    means, precision, present = class_statistics(train[OOD_BLOB], train_labels, n_classes)
    in_mean, in_precision, _ = class_statistics(crop_statistics(train_crops), np.zeros(len(train_crops), int), 1)
    scorer = OodScorer(means, precision, 1.0, input_mean=in_mean[0], input_precision=in_precision)
    threshold = float(np.quantile(scorer.feature_score(val[OOD_BLOB]), quantile))
    input_threshold = float(np.quantile(scorer.input_score(val_crops), quantile))
    scorer.threshold, scorer.input_threshold = threshold, input_threshold
    val_scores = scorer.score(val[OOD_BLOB], val_crops)
    probs = val[out_blob]
    t = fit_temperature(probs, val_labels)
    meta = {
        "score": "Mahalanobis distance of fc1 features to the nearest class mean, tied covariance "
                 "(Lee et al. 2018); squared, smaller = more like the training cells",
        "input_score": "Mahalanobis distance of the crop's input statistics (log of per channel mean, sd, 99th "
                       "percentile, mean neighbour difference) to the training cells' mean, squared",
        "blob": OOD_BLOB, "shrinkage": SHRINK, "quantile": quantile, "threshold": threshold,
        "input_threshold": input_threshold,
        "flag": "ood_score = max(feature distance / threshold, input distance / input_threshold); ood when > 1",
        "training_flagged_share": float(np.mean(val_scores > 1)),
        "training_cells": int(len(train_labels)), "validation_cells": int(len(val_labels)),
        "classes_with_statistics": [int(k) for k in present],
        "temperature": t,
        "ece_before": expected_calibration_error(probs, val_labels),
        "ece_after": expected_calibration_error(scale_probabilities(probs, t), val_labels),
        "ece_bins": ECE_BINS,
        "validation_accuracy": float(np.mean(probs.argmax(axis=1) == np.asarray(val_labels))),
        "network_precision": predictor.settings.precision,
    }
    return {"means": means, "precision": precision, "classes": present, "input_mean": in_mean[0],
            "input_precision": in_precision}, meta
