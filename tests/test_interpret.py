"""Tests of deepyeast.analysis.interpret and features: layer geometry, MI, correlations, patches, the whole Figure 3 run."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from deepyeast import constants
from deepyeast.analysis.features import (GEOMETRY, layer_features, load_blob, match_paths, read_label_lists,
                                         read_label_table)
from deepyeast.analysis.interpret import InterpretInputs, InterpretSettings, run_interpretation
from deepyeast.analysis.interpret.neurons import (class_entropy, mutual_information_per_neuron, neuron_outputs,
                                                  quantile_bins, strongest_correlations)
from deepyeast.analysis.interpret.patches import cut_patch, receptive_field_box, top_activating_units
from deepyeast.engine import Net
from deepyeast.utils.io import InputError
from deepyeast.utils.run_context import RunContext

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- geometry

def test_blob_shapes_follow_the_architecture():
    assert (GEOMETRY["conv1"].channels, GEOMETRY["conv1"].height) == (64, 64)
    assert GEOMETRY["conv1"].size == 64 * 64 * 64 == 262144
    assert (GEOMETRY["conv3"].channels, GEOMETRY["conv3"].height) == (128, 32)
    assert (GEOMETRY["conv8"].channels, GEOMETRY["conv8"].height) == (256, 16)
    assert GEOMETRY["pool3"].height == 8
    assert GEOMETRY["fc1"].size == 512 and GEOMETRY["fc3"].size == constants.N_CLASSES


def _spatial_layers(deploy=os.path.join(REPO, "models", "deepyeast", "deploy.prototxt")):
    """(name, kind, kernel, stride, pad) of the deploy net's spatial layers, from the engine's layers."""
    out = []
    for layer in Net.for_shapes(deploy).layers:
        if layer.caffe_type in ("Convolution", "Pooling"):
            out.append((layer.name, "conv" if layer.caffe_type == "Convolution" else "pool", layer.kernel[0],
                        layer.stride[0], layer.pad[0]))
        elif layer.caffe_type == "InnerProduct":
            break
    return out


def test_layer_table_matches_the_deploy_prototxt():
    from deepyeast.caffe import caffe_pb2
    from deepyeast.caffe.prototxt import read_prototxt
    deploy = os.path.join(REPO, "models", "deepyeast", "deploy.prototxt")
    table = []
    for layer in read_prototxt(deploy, caffe_pb2.NetParameter).layer:
        if layer.type == "Convolution":
            p = layer.convolution_param
            table.append((layer.name, "conv", p.kernel_size[0], p.stride[0] if p.stride else 1, p.pad[0] if p.pad else 0))
        elif layer.type == "Pooling":
            p = layer.pooling_param
            table.append((layer.name, "pool", p.kernel_size, p.stride, p.pad))
    assert _spatial_layers(deploy) == table
    assert {b: GEOMETRY[b].kind for b, *_ in table} == {b: k for b, k, *_ in table}


def test_receptive_fields_by_hand():
    # conv 3x3 adds 2*jump, pool 2x2 adds 1*jump and doubles the jump
    expected = {"conv1": 3, "conv2": 5, "pool1": 6, "conv3": 10, "conv4": 14, "pool2": 16,
                "conv5": 24, "conv6": 32, "conv7": 40, "conv8": 48, "pool3": 52}
    assert {k: GEOMETRY[k].receptive_field for k in expected} == expected
    assert receptive_field_box(GEOMETRY["conv1"], 0, 0) == (-1, -1, 3)
    assert receptive_field_box(GEOMETRY["conv2"], 10, 20) == (8, 18, 5)
    # conv4 unit 0 <- conv3 -1..1 <- pool1 -2..2 <- conv2 -4..5 <- input -6..7
    assert receptive_field_box(GEOMETRY["conv4"], 0, 0) == (-6, -6, 14)
    assert receptive_field_box(GEOMETRY["conv4"], 5, 7) == (-6 + 10, -6 + 14, 14)
    assert receptive_field_box(GEOMETRY["fc3"], 0, 0) == (0, 0, 64)


def test_receptive_fields_match_gradients_of_a_real_net():
    """Input pixels that influence a unit (gradient support) == the computed box, clipped."""
    import torch
    layers, modules = [], []
    for name, kind, k, stride, pad in _spatial_layers():
        if kind == "conv":
            conv = torch.nn.Conv2d(1, 1, k, stride, pad, bias=False)
            torch.nn.init.ones_(conv.weight)
            modules.append(conv)
        elif kind == "pool":
            modules.append(torch.nn.AvgPool2d(k, stride))  # same geometry as max pooling, dense gradient
        layers.append(name)
    for blob, (row, col) in {"conv1": (0, 5), "conv2": (30, 63), "conv4": (0, 0), "conv4 ": (17, 9),
                             "conv8": (3, 9), "conv8  ": (15, 15)}.items():
        blob = blob.strip()
        x = torch.ones(1, 1, 64, 64, requires_grad=True)
        h = x
        for name, module in zip(layers, modules):
            h = module(h)
            if name == blob:
                break
        h[0, 0, row, col].backward()
        support = (x.grad[0, 0] != 0).numpy()
        top, left, side = receptive_field_box(GEOMETRY[blob], row, col)
        box = np.zeros((64, 64), dtype=bool)
        box[max(top, 0):top + side, max(left, 0):left + side] = True
        assert np.array_equal(support, box), (blob, row, col)


def test_cut_patch_pads_with_zeros_outside_the_image():
    image = np.arange(1, 2 * 8 * 8 + 1, dtype=np.uint8).reshape(2, 8, 8)
    patch = cut_patch(image, -1, 6, 3)
    assert patch.shape == (2, 3, 3)
    assert np.all(patch[:, 0, :] == 0) and np.all(patch[:, :, 2] == 0)
    assert np.array_equal(patch[:, 1:, :2], image[:, 0:2, 6:8])


# ---------------------------------------------------------------- statistics

def test_quantile_bins_equal_counts_and_ties_share_a_bin():
    bins = quantile_bins(np.arange(100.0), 10)
    assert np.array_equal(np.bincount(bins), np.full(10, 10))
    tied = quantile_bins(np.array([0, 0, 0, 0, 1, 2, 3, 4]), 4)
    assert len(set(tied[:4])) == 1 and tied[4] != tied[0]


def test_neuron_equal_to_class_gets_maximal_mutual_information():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    outputs = np.column_stack([labels * 2.5 - 1.0,              # equals the class (affine)
                               rng.normal(size=200),            # noise
                               (labels >= 2) + 0.0])            # half the information
    mi = mutual_information_per_neuron(outputs, labels, n_bins=10)
    assert mi[0] == pytest.approx(math.log(4), abs=1e-12) == pytest.approx(class_entropy(labels))
    assert mi[2] == pytest.approx(math.log(2), abs=1e-12)
    assert mi[1] < 0.2


def test_mutual_information_equals_scikit_learn_per_column():
    """The vectorized estimate is scikit-learn's plug-in MI of (class, quantile bin), column by column,
    for continuous, tied, constant and non-contiguous-label columns."""
    from sklearn.metrics import mutual_info_score
    rng = np.random.default_rng(2)
    labels = rng.choice([0, 3, 7, 11], size=317)
    outputs = np.column_stack([labels + rng.normal(size=317), np.round(rng.normal(size=317)),
                               np.zeros(317), rng.exponential(size=317), (labels == 3) * 1.0])
    ours = mutual_information_per_neuron(outputs, labels, n_bins=7)
    ref = [mutual_info_score(labels, quantile_bins(outputs[:, m], 7)) for m in range(outputs.shape[1])]
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)
    assert ours[0] > 0.5 and ours[2] == pytest.approx(0.0, abs=1e-12)


def test_strongest_correlation_finds_planted_features():
    rng = np.random.default_rng(1)
    outputs = rng.normal(size=(300, 3))
    features = np.column_stack([rng.normal(size=300), 3 * outputs[:, 0] + 1, np.full(300, 7.0),
                                -outputs[:, 2] + 0.01 * rng.normal(size=300)])
    best, r = strongest_correlations(outputs, features)
    assert best[0] == 1 and r[0] == pytest.approx(1.0)
    assert best[2] == 3 and r[2] < -0.99
    assert abs(r[1]) < 0.3 and np.all(np.isfinite(r))  # the constant column gives r = 0, not NaN
    assert r[1] == pytest.approx(np.corrcoef(outputs[:, 1], features[:, best[1]])[0, 1])


def test_top_activating_units_and_pooled_features():
    act = np.zeros((5, 3, 4, 4), dtype=np.float32)
    act[3, 1, 2, 1] = 9.0
    act[0, 1, 0, 3] = 4.0
    act[4, 1, 1, 1] = 1.0
    top = top_activating_units(act, 1, k=2)
    assert top == [(3, 2, 1, 9.0), (0, 0, 3, 4.0)]
    pooled = layer_features(act, "pool", rows=np.array([4, 3]))
    assert pooled.shape == (2, 6)
    assert pooled[1, 3 + 1] == 9.0 and pooled[1, 1] == pytest.approx(9.0 / 16)
    assert pooled[0, 3 + 1] == 1.0
    assert np.array_equal(neuron_outputs(act, "max")[:, 1], [4, 0, 0, 9, 1])


def test_match_paths_by_trailing_components_and_error():
    known = ["plate01/1-2-3-4.png", "plate02/5-6-7-8.png"]
    assert list(match_paths(["/data/x/plate02/5-6-7-8.png", "./plate01/1-2-3-4.png"], known, "t")) == [1, 0]
    with pytest.raises(InputError, match="row 1: path 'plate09/x.png' not found"):
        match_paths(["plate09/x.png"], known, "t")


def test_label_readers_name_the_bad_line(tmp_path):
    (tmp_path / "HOwt_test.txt").write_text("plate01/a.png 3\nplate01/b.png 12\n")
    with pytest.raises(InputError, match=r"HOwt_test.txt:2: label 12 outside"):
        read_label_lists(tmp_path, n_classes=12)
    table = tmp_path / "t.csv"
    table.write_text("path,split\nplate01/a.png,test\n")
    with pytest.raises(InputError, match="missing column"):
        read_label_table(table)


# ---------------------------------------------------------------- the whole run

def _synthetic_screen(root, n_per_class=12, seed=0):
    """Feature dir + archive with PNGs whose pixels encode their coordinates.

    fc1 neuron 7 equals the class; CellProfiler feature 'f_lin' = 3 * fc1 neuron 2 - 1,
    'f_neg' = -fc1 neuron 4; conv8 channel 5 fires hardest in cell 11 at (3, 9).
    """
    from PIL import Image
    rng = np.random.default_rng(seed)
    classes = constants.TRANSFER_CLASS_NAMES
    labels = np.repeat(np.arange(len(classes)), n_per_class)
    n = len(labels)
    paths = [f"plate01/{i}-1-1-1.png" for i in range(n)]
    os.makedirs(root / "archive" / "plate01")
    yy, xx = np.mgrid[0:64, 0:64]
    rgb = np.stack([yy + 1, xx + 1, np.zeros_like(yy)], axis=2).astype(np.uint8)
    for p in paths:
        Image.fromarray(rgb).save(root / "archive" / p)
    (root / "archive" / "HOwt_test.txt").write_text("".join(f"{p} {l}\n" for p, l in zip(paths, labels)))
    feat = root / "features"
    feat.mkdir()
    (feat / "paths.txt").write_text("\n".join(paths) + "\n")
    fc1 = rng.normal(size=(n, 512)).astype(np.float32)
    fc1[:, 7] = labels
    np.save(feat / "fc1.npy", fc1)
    np.save(feat / "fc3.npy", rng.normal(size=(n, 12)).astype(np.float32))
    conv8 = rng.uniform(0, 1, size=(n, 256, 16, 16)).astype(np.float32)
    conv8[11, 5, 3, 9] = 50.0
    np.save(feat / "conv8.npy", conv8.reshape(n, -1))
    with open(root / "cp.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "f_noise", "f_lin", "f_neg", "f_class"])
        for i, p in enumerate(paths):
            w.writerow([p, rng.normal(), 3 * fc1[i, 2] - 1, -fc1[i, 4], labels[i] * 2.5])
    return feat, labels, paths


def test_run_interpretation_end_to_end(tmp_path):
    feat, labels, paths = _synthetic_screen(tmp_path)
    lab = read_label_lists(tmp_path / "archive", n_classes=4)
    out = tmp_path / "out"
    summary = run_interpretation(
        InterpretInputs(str(feat), lab, constants.TRANSFER_CLASS_NAMES, cp_csv=tmp_path / "cp.csv",
                        archive_root=tmp_path / "archive"),
        str(out), InterpretSettings(n_tsne=40, neurons={"conv8": [5]}, n_patches=3), RunContext(log=lambda *_: None))
    assert summary["blobs"] == ["conv8", "fc1", "fc3"]
    for name in ("tsne.png", "tsne.pdf", "tsne.csv", "patches.png", "patches.pdf", "neurons.png", "neurons.pdf",
                 "neurons_conv8.csv", "neurons_fc1.csv", "neurons_fc3.csv", "interpret.json"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "neurons_fc1.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 512
    best = max(rows, key=lambda r: float(r["mutual_information"]))
    assert best["neuron"] == "7" and float(best["mi_fraction"]) == pytest.approx(1.0, abs=1e-5)
    assert rows[2]["best_cellprofiler_feature"] == "f_lin" and float(rows[2]["pearson_r"]) == pytest.approx(1, abs=1e-5)
    assert rows[4]["best_cellprofiler_feature"] == "f_neg" and float(rows[4]["pearson_r"]) == pytest.approx(-1, abs=1e-5)
    assert summary["layers"]["fc1"]["top_neurons"][0] == 7
    assert summary["layers"]["fc1"]["mi_shuffled_median"] < float(best["mutual_information"]) / 2
    with open(out / "tsne.csv") as f:
        assert len(list(csv.DictReader(f))) == 40
    saved = json.loads((out / "interpret.json").read_text())
    conv8 = next(p for p in saved["patches"] if p["blob"] == "conv8")
    assert conv8["cells"][0] == paths[11] and conv8["positions"][0] == [3, 9]
    fc3 = [p for p in saved["patches"] if p["blob"] == "fc3"]
    assert [p["neuron"] for p in fc3] == list(range(constants.N_CLASSES))
    # Figure 3D's CellProfiler box: each feature's MI with the class on the neurons' quantile bins;
    # f_class (2.5 x the class) carries the whole class entropy, as neuron 7 of fc1 does
    with open(out / "cellprofiler_mi.csv") as f:
        cp_rows = {r["feature"]: r for r in csv.DictReader(f)}
    assert list(cp_rows) == ["f_noise", "f_lin", "f_neg", "f_class"]
    assert float(cp_rows["f_class"]["mi_fraction"]) == pytest.approx(1.0, abs=1e-5)
    assert float(cp_rows["f_class"]["mutual_information"]) == pytest.approx(float(best["mutual_information"]))
    from deepyeast.analysis.interpret.neurons import mutual_information_per_neuron
    cp_vals = np.loadtxt(tmp_path / "cp.csv", delimiter=",", skiprows=1, usecols=(1, 2, 3, 4))
    np.testing.assert_allclose([float(r["mutual_information"]) for r in cp_rows.values()],
                               mutual_information_per_neuron(cp_vals, labels, 10), rtol=1e-5)
    assert saved["cellprofiler"]["n_features"] == 4 and saved["cellprofiler"]["features"]["source"] == "external"
    manifest = json.loads((out / "result.json").read_text())
    assert manifest["tables"][0]["rows"][-1][0] == "CellProfiler features"
    assert "CellProfiler features (last box)" in manifest["figures"][-1]["caption"]
    assert "pooled to every channel's spatial mean and maximum" in manifest["summary"]  # what t-SNE ran on
    # the t-SNE maps in 2 worker processes: the same files, byte for byte.  The script, as the pipeline runs
    # it: a pool forked from this test process (which may have run OpenMP or OpenCV threads) could hang
    out2 = tmp_path / "out2"
    subprocess.run([sys.executable, os.path.join(REPO, "analysis", "interpret.py"), "--features", str(feat),
                    "--lists", str(tmp_path / "archive"), "--classes", "transfer", "--cellprofiler",
                    str(tmp_path / "cp.csv"), "--archive", str(tmp_path / "archive"), "--n-tsne", "40",
                    "--neurons", "conv8:5", "--n-patches", "3", "--jobs", "2", "--out", str(out2)],
                   check=True, capture_output=True)
    for name in ("tsne.csv", "interpret.json", "neurons_fc1.csv", "cellprofiler_mi.csv"):
        assert (out2 / name).read_bytes() == (out / name).read_bytes(), name


def test_tsne_paper_mode_is_scikit_learns_defaults_on_the_raw_features():
    from sklearn.manifold import TSNE
    from deepyeast.analysis.interpret.tsne import tsne_embedding
    x = np.random.default_rng(0).normal(size=(120, 60)) * np.arange(1, 61)  # unequal scales: no standardising
    ours = tsne_embedding(x, seed=4, mode="paper")
    ref = TSNE(random_state=4).fit_transform(x).astype(np.float32)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)
    fast = tsne_embedding(x, seed=4, mode="fast")
    assert fast.shape == (120, 2) and not np.allclose(fast, ref, atol=1e-2)
    with pytest.raises(ValueError, match="t-SNE mode"):
        tsne_embedding(x, mode="quick")


def test_conv8_patch_is_the_receptive_field_cut_from_the_image(tmp_path):
    """Unit (3, 9) of conv8 sees rows -10..37 and columns 14..61 (worked out by hand)."""
    from deepyeast.analysis.interpret.patches import activating_patches, load_cell_images
    feat, _, paths = _synthetic_screen(tmp_path, n_per_class=3)
    images = load_cell_images(paths, archive_root=tmp_path / "archive")
    assert images.shape == (12, 2, 64, 64) and images.dtype == np.uint8
    act = load_blob(str(feat), "conv8")
    (patch,) = activating_patches(act, GEOMETRY["conv8"], 5, images, k=1)
    assert patch["cell"] == 11 and patch["patch"].shape == (2, 48, 48)
    red, green = patch["patch"].astype(int)
    assert np.all(red[:10] == 0)                                      # rows -10..-1: padding
    assert np.array_equal(red[10:, 0], np.arange(0, 38) + 1)          # rows 0..37 (stored as y + 1)
    assert np.array_equal(green[10, :], np.arange(14, 62) + 1)        # cols 14..61 (stored as x + 1)


def test_blob_with_wrong_size_is_rejected(tmp_path):
    (tmp_path / "paths.txt").write_text("a.png\nb.png\n")
    np.save(tmp_path / "conv4.npy", np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(InputError, match=r"conv4.npy: 100 values per cell, but blob conv4 is 128x32x32"):
        load_blob(str(tmp_path), "conv4")
    np.save(tmp_path / "fc1.npy", np.zeros((3, 512), dtype=np.float32))
    with pytest.raises(InputError, match="3 rows but paths.txt has 2"):
        load_blob(str(tmp_path), "fc1")


def test_script_runs_and_reports_bad_input(tmp_path):
    feat, _, _ = _synthetic_screen(tmp_path, n_per_class=3)
    out = tmp_path / "o"
    cmd = [sys.executable, os.path.join(REPO, "analysis", "interpret.py"), "--features", str(feat),
           "--lists", str(tmp_path / "archive"), "--classes", "transfer", "--blobs", "fc1,fc3", "--out", str(out),
           "--n-tsne", "12"]
    subprocess.run(cmd, check=True, capture_output=True)
    assert (out / "neurons_fc1.csv").exists() and (out / "tsne.png").exists()
    (tmp_path / "archive" / "HOwt_test.txt").write_text("plate01/0-1-1-1.png 0\n")
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr


def test_cell_images_from_an_lmdb_match_the_pngs(tmp_path):
    from deepyeast.caffe.lmdb import write_datum_lmdb
    from deepyeast.analysis.interpret.patches import load_cell_images
    _, labels, paths = _synthetic_screen(tmp_path, n_per_class=3)
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(len(paths), 2, 64, 64), dtype=np.uint8)
    write_datum_lmdb(str(tmp_path / "cells_lmdb"), zip(paths, images, labels.tolist()), shuffle=True, seed=1)
    wanted = [paths[5], paths[0], paths[7]]
    got = load_cell_images(wanted, lmdb_path=str(tmp_path / "cells_lmdb"))
    assert np.array_equal(got, images[[5, 0, 7]])


# ---------------------------------------------------------------- Figure S4: Gabor filters

def _gabor_filters(n, seed=0):
    """n two-channel 3 x 3 filters whose every channel is a scaled Gabor filter of the bank's grid."""
    from deepyeast.analysis.interpret.gabor import gabor_bank
    bank, params = gabor_bank(3)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(bank), size=(n, 2))
    scale = rng.uniform(0.05, 0.3, size=(n, 2, 1))
    return (bank[picks] * scale).reshape(n, 2, 3, 3).astype(np.float32), picks, params


def test_gabor_kernel_by_hand_and_a_planted_gabor_is_found():
    from deepyeast.analysis.interpret.gabor import best_gabor_fit, gabor_bank, gabor_kernel
    # angle 0, phase 0: cos(2 pi x / 4) along x, Gaussian of sigma 1 (aspect 1): centre 1, x = +-1 -> 0
    g = gabor_kernel(3, wavelength=4.0, sigma=1.0, angle=0.0, phase=0.0)
    np.testing.assert_allclose(g[1], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(g[0, 1], np.exp(-0.5))  # y = -1 on the centre column: envelope only
    # a rotated Gabor of another wavelength and phase, with noise-free scale -1.7, is fitted exactly
    bank, params = gabor_bank(3)
    j = 1234
    r, index, amp = best_gabor_fit(-1.7 * bank[j][None, :], bank)
    assert r[0] == pytest.approx(1.0) and np.allclose(amp[0] * bank[index[0]], -1.7 * bank[j])
    assert best_gabor_fit(np.zeros((1, 9)), bank)[0][0] == 0.0  # an all-zero kernel: no fit, no NaN


def test_gabor_filters_fit_better_than_random_ones():
    from deepyeast.analysis.interpret.gabor import compare_filters, filter_fit, gabor_bank
    w, _, _ = _gabor_filters(16)
    summary, fit, random_r2, bank = compare_filters(w, seed=1, n_random=2000)
    np.testing.assert_allclose(fit["r2"], 1.0, atol=1e-6)
    assert summary["fraction_above_random_p95"] == 1.0 and summary["r2_median_random"] < 0.9
    assert random_r2.shape == (2000,) and summary["bank_size"] == len(bank) and summary["n_filters"] == 16
    # one channel Gabor, the other pure noise of the same energy: R^2 = (1 + r_noise^2) / 2
    noise = np.random.default_rng(3).standard_normal((1, 1, 3, 3))
    mixed = np.concatenate([w[:1, :1] / np.linalg.norm(w[:1, :1]), noise / np.linalg.norm(noise)], axis=1)
    f = filter_fit(mixed, bank)
    assert f["r2"][0] == pytest.approx((1 + f["r"][0, 1] ** 2) / 2) and f["r"][0, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="C_out x C_in x k x k"):
        compare_filters(np.zeros((4, 2, 3)))


def test_run_interpretation_compares_conv1_with_gabor_filters(tmp_path):
    """--weights: Figure S4 in the report (figure, table, metrics); Gabor texture columns: per-layer |r|."""
    from deepyeast.caffe.blobs import write_caffemodel
    feat, labels, paths = _synthetic_screen(tmp_path, n_per_class=6)
    w, _, _ = _gabor_filters(64, seed=2)
    weights = tmp_path / "net.caffemodel"
    write_caffemodel(str(weights), {"conv1": [w, np.zeros(64, np.float32)],
                                    "fc3": [np.zeros((12, 512), np.float32), np.zeros(12, np.float32)]})
    fc1 = np.load(feat / "fc1.npy")
    with open(tmp_path / "cp_gabor.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["path", "Marker_Texture_Gabor_3", "Protein_Intensity_Mean"])
        for i, p in enumerate(paths):
            wr.writerow([p, 2 * fc1[i, 9] + 1, fc1[i, 3]])
    lab = read_label_lists(tmp_path / "archive", n_classes=4)
    out = tmp_path / "out"
    summary = run_interpretation(InterpretInputs(str(feat), lab, constants.TRANSFER_CLASS_NAMES,
                                                 cp_csv=tmp_path / "cp_gabor.csv", blobs=["fc1", "fc3"],
                                                 weights=str(weights)),
                                 str(out), InterpretSettings(n_tsne=20), RunContext(log=lambda *_: None))
    g = summary["gabor"]
    assert g["layer"] == "conv1" and g["n_filters"] == 64 and g["r2_median"] == pytest.approx(1.0)
    assert g["gabor_features"] == ["Marker_Texture_Gabor_3"]
    # fc1 neuron 9 is the Gabor feature (r = 1): its layer's median |r| to Gabor texture is a median of 512
    with open(out / "gabor_filters.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 64 and all(float(r["ch0_r"]) == pytest.approx(1.0) for r in rows)
    manifest = json.loads((out / "result.json").read_text())
    assert manifest["metrics"]["first_layer_gabor_r2_median"] == pytest.approx(1.0)
    assert manifest["metrics"]["first_layer_gabor_above_random_p95"] == 1.0
    assert "median |r| to Gabor texture" in manifest["tables"][0]["columns"]
    s4 = next(t for t in manifest["tables"] if t["title"].startswith("Figure S4"))
    assert s4["columns"] == ["quantity", "paper", "ours"] and s4["rows"][0][2] == "1.000"
    assert any(fig["file"] == "gabor.png" and "Figure S4" in fig["caption"] for fig in manifest["figures"])
    assert (out / "gabor.png").stat().st_size > 0 and "Figure S4, in our reading" in manifest["summary"]
    assert not any("Figure S4" in m["what"] for m in manifest["missing"])
    # without weights the report names what is missing and the option that gives it
    bare = run_interpretation(InterpretInputs(str(feat), lab, constants.TRANSFER_CLASS_NAMES, blobs=["fc3"]),
                              str(tmp_path / "bare"), InterpretSettings(n_tsne=20), RunContext(log=lambda *_: None))
    assert "gabor" not in bare
    missing = json.loads((tmp_path / "bare" / "result.json").read_text())["missing"]
    assert any("Figure S4" in m["what"] and m["option"] == "--weights W.caffemodel" for m in missing)


# ---------------------------------------------------------------- t-SNE on the whole maps (the paper's input)

def test_tsne_features_embed_the_sampled_cells_from_every_neurons_output(tmp_path):
    """--tsne-features: the t-SNE cells are those of the whole-map folder, each layer's input is its full
    flattened activation (conv8: 256 x 16 x 16 = 65,536 values per cell), not the pooled 2 x 256."""
    feat, labels, paths = _synthetic_screen(tmp_path, n_per_class=5)
    full = tmp_path / "tsne_full"
    full.mkdir()
    keep = [1, 4, 6, 9, 12, 15, 17, 19]  # a sample of the cells, in list order
    (full / "paths.txt").write_text("\n".join(paths[i] for i in keep) + "\n")
    conv8 = np.load(feat / "conv8.npy")[keep]
    np.save(full / "conv8.npy", conv8)
    np.save(full / "fc1.npy", np.load(feat / "fc1.npy")[keep])
    lab = read_label_lists(tmp_path / "archive", n_classes=4)
    out = tmp_path / "out"
    summary = run_interpretation(InterpretInputs(str(feat), lab, constants.TRANSFER_CLASS_NAMES, blobs=["conv8", "fc1"],
                                                 tsne_features=str(full)),
                                 str(out), InterpretSettings(tsne="paper"), RunContext(log=lambda *_: None))
    assert summary["layers"]["conv8"]["tsne_input_dims"] == 256 * 16 * 16 == conv8.shape[1]
    assert summary["layers"]["fc1"]["tsne_input_dims"] == 512
    assert summary["tsne_cells"] == len(keep) and summary["tsne_reduce"] == "full"
    with open(out / "tsne.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [paths[i] for i in keep]
    assert [int(r["label"]) for r in rows] == [int(labels[i]) for i in keep]
    manifest = json.loads((out / "result.json").read_text())
    assert "on each layer's full activations (every neuron's output), as the paper" in manifest["summary"]
    # the default: random cells, convolution maps pooled to 2 values per channel
    pooled = run_interpretation(InterpretInputs(str(feat), lab, constants.TRANSFER_CLASS_NAMES, blobs=["conv8"]),
                                str(tmp_path / "pooled"), InterpretSettings(n_tsne=8), RunContext(log=lambda *_: None))
    assert pooled["layers"]["conv8"]["tsne_input_dims"] == 2 * 256
    # a cell of the whole-map folder that the features lack is named
    (full / "paths.txt").write_text("\n".join(["plate09/9-9-9-9.png"] + [paths[i] for i in keep[1:]]) + "\n")
    with pytest.raises(InputError, match="plate09/9-9-9-9.png"):
        run_interpretation(InterpretInputs(str(feat), lab, constants.TRANSFER_CLASS_NAMES, blobs=["fc1"],
                                           tsne_features=str(full)),
                           str(tmp_path / "bad"), context=RunContext(log=lambda *_: None))
