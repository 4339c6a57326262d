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
(the bundle's ``threshold``), so about 1% of cells like the training data are flagged.

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

OOD_FILE = "ood.npz"
OOD_BLOB = "fc1"
LOGIT_BLOB = "fc3"
QUANTILE = 0.99
SHRINK = 0.05
ECE_BINS = 15


class OodScorer:
    """Mahalanobis scores of ``blob`` features against class means with a tied covariance.

    means : float64 K x D; precision : float64 D x D (inverse covariance); threshold : float.
    """

    def __init__(self, means, precision, threshold, blob=OOD_BLOB, temperature=1.0):
        self.means = np.asarray(means, np.float64)
        self.precision = np.asarray(precision, np.float64)
        self.threshold = float(threshold)
        self.blob = blob
        self.temperature = float(temperature)

    @classmethod
    def from_bundle(cls, bundle):
        """The scorer stored in a bundle, or None when the bundle has no OOD statistics."""
        import os

        meta = bundle.metadata.get("ood")
        path = os.path.join(bundle.path, OOD_FILE)
        if not meta or not os.path.exists(path):
            return None
        with np.load(path, allow_pickle=False) as z:
            return cls(z["means"], z["precision"], float(meta["threshold"]), meta.get("blob", OOD_BLOB),
                       float(meta.get("temperature", 1.0)))

    def score(self, features):
        """float32 N scores of float N x D features (the smallest squared Mahalanobis distance)."""
        f = np.asarray(features, np.float64)
        if len(f) == 0:
            return np.zeros(0, np.float32)
        best = np.full(len(f), np.inf)
        for mu in self.means:
            d = f - mu
            best = np.minimum(best, np.einsum("nd,de,ne->n", d, self.precision, d))
        return best.astype(np.float32)
