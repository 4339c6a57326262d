"""Knowing when the model does not know: the Mahalanobis score and the temperature against their
definitions, a bundle that stores them (and one without them), and classify_screen flagging the
cells of a wrongly set-up screen (a wrong bit depth) and leaving them out of the protein calls.
"""

import csv
import json
import os
import shutil

import numpy as np
import pytest
import tifffile

from _bundles import DEPLOY, make_weights
from _data_helpers import tiny_screen
from deepyeast.analysis.classify_screen import ClassifySettings, classify_screen
from deepyeast.analysis.ood import (OodScorer, class_statistics, expected_calibration_error, fit_bundle_statistics,
                                    fit_temperature, scale_probabilities)
from deepyeast.caffe.blobs import compute_mean
from deepyeast.model.make_bundle import list_crops
from deepyeast.constants import CLASS_NAMES
from deepyeast.model import read_bundle, write_bundle
from deepyeast.utils.io import InputError
from deepyeast.utils.run_context import RunContext


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_mahalanobis_score_is_the_distance_to_the_nearest_class_mean():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (400, 3)) * [1, 2, 0.5]
    b = rng.normal(0, 1, (400, 3)) * [1, 2, 0.5] + [5, 0, 0]
    f, labels = np.concatenate([a, b]), np.repeat([0, 1], 400)
    means, precision, present = class_statistics(f, labels, 3, shrink=0.0)
    assert list(present) == [0, 1]
    np.testing.assert_allclose(means, [a.mean(0), b.mean(0)])
    centred = np.concatenate([a - a.mean(0), b - b.mean(0)])
    np.testing.assert_allclose(np.linalg.inv(precision), centred.T @ centred / 800, rtol=1e-10)
    s = OodScorer(means, precision, threshold=2.0)
    x = np.array([[0.0, 4.0, 0.0], [5.0, 0.0, 1.0]])
    want = [min((x[i] - m) @ precision @ (x[i] - m) for m in means) for i in range(2)]
    np.testing.assert_allclose(s.score(x), np.array(want) / 2.0, rtol=1e-5)
    # a point 4 sd away along the narrow axis scores far higher than one 1 sd along the wide axis
    assert s.score([[0, 0, 2.0]])[0] > 10 * s.score([[0, 2.0, 0]])[0]


def test_temperature_minimises_the_nll_and_lowers_the_calibration_error():
    rng = np.random.default_rng(1)
    n, k = 4000, 5
    logits = rng.normal(0, 1.5, (n, k))
    calibrated = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(k, p=p) for p in calibrated])  # labels drawn from the probabilities: T = 1 fits
    over = scale_probabilities(calibrated, 1 / 3.0)  # logits x 3: overconfident
    t = fit_temperature(over, labels)
    assert t == pytest.approx(3.0, rel=0.1)  # undoes the overconfidence
    nll = [-np.mean(np.log(scale_probabilities(over, tt)[np.arange(n), labels])) for tt in (t * 0.9, t, t * 1.1)]
    assert nll[1] < nll[0] and nll[1] < nll[2]
    before, after = expected_calibration_error(over, labels), expected_calibration_error(
        scale_probabilities(over, t), labels)
    assert after < 0.03 < 0.1 < before
    np.testing.assert_array_equal(scale_probabilities(over, t).argmax(1), over.argmax(1))


@pytest.fixture(scope="module")
def ood_bundle(tmp_path_factory):
    """A bundle (seeded weights, BatchNorm statistics from the tiny screen's training crops) with OOD
    statistics fitted on its 300 training and 100 validation crops (PNG files of the archive layout, as
    make_bundle.py reads them), and the same bundle without them."""
    main = tiny_screen(tmp_path_factory, jobs=1) / "main"
    tmp = tmp_path_factory.mktemp("ood")
    crops, labels = list_crops(str(main / "HOwt_train.txt"), CLASS_NAMES)
    val, val_labels = list_crops(str(main / "HOwt_val.txt"), CLASS_NAMES)
    mean = compute_mean(crops)
    weights = make_weights(str(tmp / "w.caffemodel"), crops[:100], mean, seed=0)
    plain = write_bundle(str(tmp / "plain"), DEPLOY, weights, mean, CLASS_NAMES)
    predictor = read_bundle(plain).predictor(extra_blobs=("fc1",))
    ood = fit_bundle_statistics(predictor, crops, labels, val, val_labels, len(CLASS_NAMES))
    path = write_bundle(str(tmp / "model"), DEPLOY, weights, mean, CLASS_NAMES, ood=ood)
    return path, plain, ood


def test_a_bundle_stores_the_statistics_and_says_when_it_has_none(ood_bundle, tmp_path):
    path, plain, (arrays, meta) = ood_bundle
    b = read_bundle(path)
    assert "ood.npz" in b.metadata["files"] and b.metadata["ood"]["threshold"] == pytest.approx(meta["threshold"])
    assert meta["temperature"] > 0 and 0 <= meta["ece_after"] <= 1 and meta["validation_cells"] == 100
    assert 0.01 <= meta["training_flagged_share"] <= 0.02  # above either 99th percentile of 100 scores
    scorer = OodScorer.from_bundle(b)
    np.testing.assert_array_equal(scorer.means, arrays["means"])
    readme = open(os.path.join(path, "readme.md"), encoding="utf-8").read()
    assert "## Out-of-distribution check and calibration" in readme and "expected calibration error" in readme
    assert b.metadata["ood"]["network_precision"] == "fp32" and "(the network computing in fp32)" in readme
    assert OodScorer.from_bundle(read_bundle(plain)) is None
    assert "Not available" in open(os.path.join(plain, "readme.md"), encoding="utf-8").read()
    damaged = shutil.copytree(path, tmp_path / "damaged")
    with open(damaged / "ood.npz", "r+b") as f:  # the checksum covers the statistics
        f.seek(200)
        f.write(b"\x00" * 8)
    with pytest.raises(InputError, match="ood.npz: sha256"):
        read_bundle(str(damaged))


def test_statistics_fitted_in_bf16_say_so_and_flag_the_cells_fp32_ones_flag(ood_bundle, tmp_path_factory):
    """make_bundle.py --precision bf16 (the demo's): the features computed in bf16 give statistics close to
    fp32's, the bundle records the arithmetic, and the validation cells' flags agree but for a cell or two."""
    path, plain, (arrays, meta) = ood_bundle
    main = tiny_screen(tmp_path_factory, jobs=1) / "main"
    crops, labels = list_crops(str(main / "HOwt_train.txt"), CLASS_NAMES)
    val, val_labels = list_crops(str(main / "HOwt_val.txt"), CLASS_NAMES)
    plain_bundle = read_bundle(plain)
    bf16 = fit_bundle_statistics(plain_bundle.predictor(precision="bf16", extra_blobs=("fc1",)), crops, labels, val,
                                 val_labels, len(CLASS_NAMES))
    assert bf16[1]["network_precision"] == "bf16"
    assert bf16[1]["threshold"] == pytest.approx(meta["threshold"], rel=0.05)
    assert bf16[1]["input_threshold"] == meta["input_threshold"]  # the crops' statistics: no network in them
    assert bf16[1]["temperature"] == pytest.approx(meta["temperature"], rel=0.05)
    feats = plain_bundle.predictor(extra_blobs=("fc1",)).outputs(val)["fc1"]
    flags = [OodScorer(a["means"], a["precision"], m["threshold"]).score(feats) > 1
             for a, m in ((arrays, meta), bf16)]
    assert flags[0].sum() >= 1 and np.sum(flags[0] != flags[1]) <= 2


@pytest.fixture(scope="module")
def dark_screen(tmp_path_factory):
    """The tiny screen's 3 fields as they are and 16 times darker (12-bit data declared as 16-bit: a wrong --bits)."""
    src = tiny_screen(tmp_path_factory, jobs=1) / "main" / "fields"
    rows = _csv(src / "images.csv")
    d = tmp_path_factory.mktemp("swap")
    good, bad = ["image,plate,protein"], ["image,plate,protein"]
    for i, r in enumerate(rows):
        image = tifffile.imread(src / r["image"])
        tifffile.imwrite(d / f"good{i}.tif", image)
        tifffile.imwrite(d / f"swapped{i}.tif", (image // 16).astype(np.uint8))
        good.append(f"good{i}.tif,1,00{i}000000")
        bad.append(f"swapped{i}.tif,1,00{i}000000")
    (d / "good.csv").write_text("\n".join(good) + "\n")
    (d / "swapped.csv").write_text("\n".join(bad) + "\n")
    return d


def test_classify_flags_cells_unlike_the_training_cells_and_leaves_them_out(tmp_path_factory, ood_bundle,
                                                                               dark_screen):
    path, plain, (arrays, meta) = ood_bundle
    tmp = tmp_path_factory.mktemp("ood2")
    out = {}
    for name in ("good", "swapped"):
        out[name] = tmp / name
        classify_screen(path, str(dark_screen / f"{name}.csv"), str(out[name]), ClassifySettings(n_resamples=50),
                        RunContext(progress=False))
    good, bad = (json.loads((out[n] / "summary.json").read_text())["ood"] for n in ("good", "swapped"))
    assert good["available"] and bad["available"]
    assert bad["share"] > max(0.5, 5 * good["share"]) and good["share"] < 0.2, (good["share"], bad["share"])
    assert bad["warning"] and bad["likely_causes"] and "bit depth" in bad["likely_causes"][1]
    page = (out["swapped"] / "report.html").read_text(encoding="utf-8")
    assert 'id="ood-warning"' in page and 'id="ood-warning"' not in (out["good"] / "report.html").read_text()
    cells = _csv(out["swapped"] / "cells.csv")
    for c in cells:
        assert c["ood"] == str(int(float(c["ood_score"]) > 1))
    # flagged cells are counted per protein and left out of its call
    for p in _csv(out["swapped"] / "proteins.csv"):
        mine = [c for c in cells if c["protein"] == p["protein"]]
        assert int(p["n_ood"]) == sum(c["ood"] == "1" for c in mine)
        assert int(p["n_cells"]) == sum(c["ood"] == "0" for c in mine)
    # a bundle without statistics classifies and says the check is not available
    s = classify_screen(plain, str(dark_screen / "good.csv"), str(tmp / "plain_out"), ClassifySettings(n_resamples=50),
                        RunContext(progress=False))
    assert s["ood"]["available"] is False and "not checked" in s["ood"]["note"]
    assert {c["ood_score"] for c in _csv(tmp / "plain_out" / "cells.csv")} == {""}


def test_feature_score_equals_the_quadratic_form_at_screen_size():
    """The whitened form (one matrix product, Cholesky of the precision) gives the defining quadratic form
    (f - mu)^T P (f - mu), minimised over the means, at fc1's 512 features and 12 classes."""
    rng = np.random.default_rng(3)
    f = rng.normal(0, 1, (3000, 512)) @ rng.normal(0, 0.2, (512, 512))
    labels = rng.integers(0, 12, 3000)
    f += labels[:, None] * 0.3
    means, precision, _ = class_statistics(f, labels, 12)
    x = rng.normal(0, 1, (50, 512)) @ rng.normal(0, 0.2, (512, 512))
    want = np.min([np.einsum("nd,de,ne->n", x - m, precision, x - m) for m in means], axis=0)
    np.testing.assert_allclose(OodScorer(means, precision, 1.0).feature_score(x), want, rtol=1e-9)


def test_a_precision_that_is_not_positive_definite_is_refused_naming_the_file(ood_bundle, tmp_path):
    """A bundle's ood.npz whose precision matrix cannot be a precision (not positive definite) is one error
    naming the file, not a silent nonsense score."""
    path, plain, (arrays, meta) = ood_bundle
    bad = dict(arrays, precision=-np.eye(len(arrays["precision"])))
    bundle = write_bundle(str(tmp_path / "bad"), DEPLOY, os.path.join(plain, "weights.caffemodel"),
                          os.path.join(plain, "mean.binaryproto"), CLASS_NAMES, ood=(bad, meta))
    with pytest.raises(InputError, match="ood.npz: the OOD precision matrix is not positive definite"):
        OodScorer.from_bundle(read_bundle(bundle))
    assert OodScorer.from_bundle(read_bundle(path)) is not None
