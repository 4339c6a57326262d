"""analysis/predict.py and deepyeast.analysis.predict: the predictions table and features from both engines.

Weights are random but well scaled, with non-trivial BatchNorm statistics
(Net.random_weights), so every blob of the caffemodel matters.  The
engine agreement test needs the Caffe root (marked ``caffe``).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from deepyeast.caffe import caffe_pb2
from deepyeast.caffe.blobs import compute_mean, write_caffemodel, write_mean_binaryproto
from deepyeast.caffe.lmdb import write_datum_lmdb
from deepyeast.caffe.prototxt import read_prototxt
from deepyeast.engine import Net
from deepyeast.engine.inference import InferenceSettings
from deepyeast.analysis import predict
from deepyeast.analysis.features import read_features
from deepyeast.data.crop_png import encode_crop
from deepyeast.utils.io import OUTPUT_MARKER, InputError
from deepyeast.analysis.prediction_table import read_predictions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(REPO, "models", "deepyeast", "deploy.prototxt")
SCRIPT = os.path.join(REPO, "analysis", "predict.py")
N = 24
BLOBS = ["conv1", "conv8", "fc1", "fc3"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:64, :64]
    images = np.empty((N, 2, 64, 64), np.uint8)
    for i in range(N):
        cy, cx = rng.integers(16, 48, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(3, 12) ** 2))
        images[i, 0] = np.clip(100 * blob + rng.normal(20, 6, (64, 64)), 0, 255)
        images[i, 1] = np.clip(rng.uniform(50, 250) * blob + rng.normal(10, 6, (64, 64)), 0, 255)
    labels = np.arange(N) % 12
    root = d / "archive"
    lines = []
    for i in range(N):
        rel = f"plate{1 + i % 2:02d}/{100 + i // 3}-{i}-1-1.png"
        os.makedirs(root / os.path.dirname(rel), exist_ok=True)
        (root / rel).write_bytes(encode_crop(images[i]))
        lines.append(f"{rel} {labels[i]}\n")
    (root / "HOwt_test.txt").write_text("".join(lines))
    mean = compute_mean(images)
    write_mean_binaryproto(d / "mean.binaryproto", mean)
    net = read_prototxt(DEPLOY, caffe_pb2.NetParameter)
    x = images.astype(np.float32) - mean
    params, types = Net.for_shapes(net).random_weights(seed=3, input_scale=float(x.std()))
    write_caffemodel(d / "w.caffemodel", params, layer_types=types)
    write_datum_lmdb(d / "test_lmdb", zip([ln.split()[0] for ln in lines], images, labels), seed=1)
    return {"dir": d, "root": root, "images": images, "labels": labels, "lines": lines,
            "mean": d / "mean.binaryproto", "weights": d / "w.caffemodel"}


def run_script(setup, engine, out_name, extra=(), reduce="full"):
    d = setup["dir"]
    cmd = [sys.executable, SCRIPT, "--engine", engine, "--model", DEPLOY, "--weights", str(setup["weights"]),
           "--mean", str(setup["mean"]), "--out", str(d / f"{out_name}.csv"),
           "--features-out", str(d / f"{out_name}_features"), "--blobs", ",".join(BLOBS), "--batch", "10"]
    cmd += ["--features-reduce", reduce] if reduce else []
    cmd += list(extra) or ["--archive", str(setup["root"]), "--list", "HOwt_test.txt"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_predictions(d / f"{out_name}.csv", require_all_classes=False), d / f"{out_name}_features"


@pytest.fixture(scope="module")
def ours(setup):
    return run_script(setup, "ours", "ours")


def test_ours_writes_the_predictions_table(setup, ours):
    table, _ = ours
    header = open(setup["dir"] / "ours.csv").readline().strip().split(",")
    assert header == ["path", "protein", "split", "label", "pred"] + [f"prob_{k}" for k in range(12)]
    assert list(table.path) == [ln.split()[0] for ln in setup["lines"]]
    assert table.protein[0] == "plate01/100" and table.protein[4] == "plate01/101"
    assert set(table.split) == {"test"}
    np.testing.assert_array_equal(table.label, setup["labels"])
    np.testing.assert_allclose(table.probs.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(table.pred, table.probs.argmax(axis=1))
    assert table.probs.max() < 0.99  # the random net makes a graded prediction


def test_ours_writes_features(setup, ours):
    table, fdir = ours
    assert sorted(os.listdir(fdir)) == sorted([b + ".npy" for b in BLOBS] + ["paths.txt", OUTPUT_MARKER])
    feats = {b: read_features(fdir, b) for b in BLOBS}
    assert feats["conv1"][0].shape == (N, 64 * 64 * 64) and feats["conv1"][0].dtype == np.float32
    assert feats["conv8"][0].shape == (N, 256 * 16 * 16)
    assert feats["fc1"][0].shape == (N, 512) and feats["fc3"][0].shape == (N, 12)
    assert feats["fc1"][1] == list(table.path)
    # features are taken after the in-place BatchNorm/Scale/ReLU, as Caffe's blob holds them
    assert feats["conv1"][0].min() >= 0 and feats["fc1"][0].min() >= 0
    logits = feats["fc3"][0].astype(np.float64)
    soft = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(soft / soft.sum(1, keepdims=True), table.probs, atol=1e-5)


def test_sample_keeps_whole_maps_of_a_seeded_sample_in_list_order(setup, ours):
    """--sample N --seed S (make reproduce's t-SNE cells): N listed cells, in list order, the sample
    :func:`sample_rows` draws, with every neuron's output (conv1: 64 x 64 x 64 per cell)."""
    from deepyeast.data.lists import sample_rows
    table, fdir = run_script(setup, "ours", "sampled", extra=["--archive", str(setup["root"]), "--list",
                                                               "HOwt_test.txt", "--sample", "7", "--seed", "2"])
    keep = sample_rows(N, 7, seed=2)
    assert list(keep) == sorted(keep) and len(set(keep)) == 7
    full_table, full_dir = ours
    assert list(table.path) == [full_table.path[i] for i in keep]
    conv1, paths = read_features(fdir, "conv1")
    assert conv1.shape == (7, 64 * 64 * 64) and paths == list(table.path)
    np.testing.assert_allclose(conv1, read_features(full_dir, "conv1")[0][keep], rtol=1e-5, atol=1e-5)
    assert list(sample_rows(N, None)) == list(range(N)) == list(sample_rows(N, N + 5))
    with pytest.raises(InputError, match="--sample must be at least 1"):
        sample_rows(N, 0)
    proc = subprocess.run([sys.executable, SCRIPT, "--model", DEPLOY, "--weights", str(setup["weights"]), "--mean",
                           str(setup["mean"]), "--lmdb", str(setup["dir"] / "test_lmdb"), "--sample", "3",
                           "--out", str(setup["dir"] / "z.csv")], capture_output=True, text=True)
    assert proc.returncode == 2 and "--sample needs --archive with --list" in proc.stderr


def test_lmdb_input_gives_the_same_table(setup, ours):
    d = setup["dir"]
    cells = predict.cells_from_lmdb(d / "test_lmdb")
    table = predict.predict_cells(cells, predict.net_files(DEPLOY, setup["weights"], setup["mean"]), engine="ours",
                                  out_csv=d / "lmdb.csv")
    assert set(table.split) == {"test"}
    ref, _ = ours
    order = {p: i for i, p in enumerate(ref.path)}
    idx = [order[p] for p in table.path]
    np.testing.assert_allclose(table.probs, ref.probs[idx], atol=1e-6)
    np.testing.assert_array_equal(table.label, ref.label[idx])


def test_bad_inputs_are_named(setup, tmp_path):
    cells = predict.cells_from_list(setup["root"], setup["root"] / "HOwt_test.txt")
    write_mean_binaryproto(tmp_path / "bad_mean.binaryproto", np.zeros((3, 64, 64), np.float32))
    with pytest.raises(InputError, match=r"bad_mean.binaryproto.*\(3, 64, 64\).*\(2, 64, 64\)"):
        predict.predict_cells(cells, predict.net_files(DEPLOY, setup["weights"], tmp_path / "bad_mean.binaryproto"),
                              out_csv=tmp_path / "x.csv")
    with pytest.raises(InputError, match="nosuchblob"):
        predict.predict_cells(cells, predict.net_files(DEPLOY, setup["weights"], setup["mean"]),
                              out_csv=tmp_path / "x.csv",
                              features=predict.FeatureRequest(tmp_path / "f", ("nosuchblob",)))
    assert not os.path.exists(tmp_path / "x.csv") and not os.path.exists(tmp_path / "f")
    (tmp_path / "list.txt").write_text(setup["lines"][0] + "plate01/missing-1-1-1.png 3\n")
    with pytest.raises(InputError, match="missing-1-1-1.png"):
        predict.cells_from_list(setup["root"], tmp_path / "list.txt")
    with pytest.raises(InputError, match="--split"):
        predict.predict_cells(predict.Cells(cells.images, cells.labels, cells.paths, "cells.txt"),
                              predict.net_files(DEPLOY, setup["weights"], setup["mean"]))
    proc = subprocess.run([sys.executable, SCRIPT, "--model", DEPLOY, "--weights", str(setup["weights"]),
                           "--mean", str(tmp_path / "bad_mean.binaryproto"), "--archive", str(setup["root"]),
                           "--list", "HOwt_test.txt", "--out", str(tmp_path / "y.csv")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "bad_mean.binaryproto" in proc.stderr and "Traceback" not in proc.stderr


def test_split_from_name():
    assert predict.split_from_name("ROOT/HOwt_test.txt") == "test"
    assert predict.split_from_name("ROOT/HOwt_transfer_val.txt") == "transfer_val"
    assert predict.split_from_name("data/deepyeast/train_lmdb/") == "train"
    assert predict.split_from_name("cells.txt") is None


@pytest.mark.caffe
def test_both_engines_agree_on_the_same_weights(setup, ours, caffe_root_present):
    table_c, fdir_c = run_script(setup, "caffe", "caffe")
    table_o, fdir_o = ours
    assert list(table_c.path) == list(table_o.path)
    assert np.abs(table_c.probs - table_o.probs).max() <= 1e-4
    np.testing.assert_array_equal(table_c.pred, table_o.pred)
    for b in BLOBS:
        fc, _ = read_features(fdir_c, b)
        fo, _ = read_features(fdir_o, b)
        assert fc.shape == fo.shape
        scale = max(1.0, float(np.abs(fc).max()))
        assert np.abs(fc - fo).max() <= 1e-4 * scale, b


def test_pooled_features_equal_the_pooled_whole_blobs(setup, ours):
    """Pooling, the default (no --features-reduce), writes conv blobs as per-channel mean then max
    (N x 2C), the same numbers the transfer analysis computes from the whole blob, and each
    channel's top cells with their strongest unit, the same the patch search finds in the whole
    maps; fc blobs stay whole."""
    from deepyeast.analysis.features import blob_features, has_blob, layer_features, load_blob, read_top
    from deepyeast.analysis.interpret.patches import stored_top_units, top_activating_units
    _, fdir_full = ours
    table, fdir = run_script(setup, "ours", "pooled", reduce=None)
    assert sorted(os.listdir(fdir)) == sorted(["conv1.pool.npy", "conv1.top.npz", "conv8.pool.npy", "conv8.top.npz",
                                               "fc1.npy", "fc3.npy", "paths.txt", OUTPUT_MARKER])
    assert np.load(fdir / "conv1.pool.npy").shape == (N, 128) and np.load(fdir / "conv8.pool.npy").shape == (N, 512)
    for b in BLOBS:
        assert has_blob(fdir, b)
        np.testing.assert_allclose(blob_features(fdir, b), layer_features(load_blob(fdir_full, b)),
                                   rtol=1e-5, atol=1e-6, err_msg=b)
    for b in ("conv1", "conv8"):
        top, whole = read_top(fdir, b), load_blob(fdir_full, b)
        assert top["cell"].shape == (whole.shape[1], 16)
        for channel in range(whole.shape[1]):
            want = top_activating_units(whole, channel, k=16)
            got = stored_top_units(top, channel, k=16)
            assert [u[:3] for u in got] == [u[:3] for u in want], (b, channel)
            np.testing.assert_allclose([u[3] for u in got], [u[3] for u in want], rtol=1e-6)
    with pytest.raises(InputError, match=r"conv1.pool.npy.*saved pooled"):
        blob_features(fdir, "conv1", reduce="full")
    np.save(fdir / "conv8.pool.npy", np.zeros((N, 7), np.float32))
    with pytest.raises(InputError, match=r"conv8.pool.npy: shape \(24, 7\), expected 24 x 512"):
        blob_features(fdir, "conv8")


@pytest.mark.caffe
def test_pycaffe_pools_like_our_engine(setup, tmp_path, caffe_root_present):
    cells = predict.cells_from_list(setup["root"], setup["root"] / "HOwt_test.txt")
    got = {}
    for engine in ("ours", "caffe"):
        predict.predict_cells(cells, predict.net_files(DEPLOY, setup["weights"], setup["mean"]), engine=engine,
                              features=predict.FeatureRequest(tmp_path / engine, ("conv2", "fc2"), "pool"))
        got[engine] = np.load(tmp_path / engine / "conv2.pool.npy")
        assert sorted(os.listdir(tmp_path / engine)) == sorted(["conv2.pool.npy", "conv2.top.npz", "fc2.npy",
                                                                "paths.txt", OUTPUT_MARKER])
        # the stored top value of a channel is the largest of its per-cell maxima
        top = np.load(tmp_path / engine / "conv2.top.npz")
        np.testing.assert_array_equal(top["value"][:, 0], got[engine][:, 64:].max(axis=0))
    assert got["ours"].shape == (N, 128)
    scale = max(1.0, float(np.abs(got["caffe"]).max()))
    assert np.abs(got["caffe"] - got["ours"]).max() <= 1e-4 * scale


def test_folding_and_bf16_options(setup, ours):
    """Folding (the default) equals --no-fold within 1e-5; --precision bf16 stays close; real Caffe
    has no bf16, so --engine caffe --precision bf16 is refused before any work."""
    ref, fdir_ref = ours
    archive = ["--archive", str(setup["root"]), "--list", "HOwt_test.txt"]
    table, fdir = run_script(setup, "ours", "nofold", extra=archive + ["--no-fold"])
    np.testing.assert_allclose(table.probs, ref.probs, rtol=0, atol=1e-5)
    for b in BLOBS:
        a, _ = read_features(fdir, b)
        r, _ = read_features(fdir_ref, b)
        assert np.abs(a - r).max() <= 1e-5 * np.abs(r).max(), b
    table, _ = run_script(setup, "ours", "bf16", extra=archive + ["--precision", "bf16"])
    assert np.abs(table.probs - ref.probs).max() < 0.05
    np.testing.assert_allclose(table.probs.sum(axis=1), 1, atol=1e-5)
    proc = subprocess.run([sys.executable, SCRIPT, "--engine", "caffe", "--precision", "bf16", "--model", DEPLOY,
                           "--weights", str(setup["weights"]), "--mean", str(setup["mean"]), "--out",
                           str(setup["dir"] / "x.csv")] + archive, capture_output=True, text=True)
    assert proc.returncode == 2 and "needs --engine ours" in proc.stderr
    assert not os.path.exists(setup["dir"] / "x.csv")


def test_features_written_in_chunks_equal_one_batch(setup, tmp_path):
    """Predictions, pooled features and top activations written 5 cells at a time equal those of all
    24 cells in one forward pass (the files are streamed, never held whole)."""
    from deepyeast.analysis.features import read_top
    cells = predict.cells_from_list(setup["root"], setup["root"] / "HOwt_test.txt")
    got = {}
    for batch in (5, N):
        out = tmp_path / f"b{batch}"
        table = predict.predict_cells(cells, predict.net_files(DEPLOY, setup["weights"], setup["mean"]),
                                      InferenceSettings(batch=batch), out_csv=out / "cells.csv",
                                      features=predict.FeatureRequest(out / "f", ("conv2", "conv8", "fc1")))
        got[batch] = (table, {name: np.load(out / "f" / name) for name in ("conv2.pool.npy", "conv8.pool.npy",
                                                                            "fc1.npy")},
                      {b: read_top(out / "f", b) for b in ("conv2", "conv8")})
    (t5, f5, top5), (t1, f1, top1) = got[5], got[N]
    # float32 rounding differs with the batch size (the convolution may pick another algorithm)
    np.testing.assert_allclose(t5.probs, t1.probs, atol=1e-5)
    for name in f1:
        assert f5[name].shape == f1[name].shape
        np.testing.assert_allclose(f5[name], f1[name], atol=1e-4 * np.abs(f1[name]).max(), err_msg=name)
    for b in top1:
        np.testing.assert_allclose(top5[b]["value"], top1[b]["value"], atol=1e-4 * np.abs(top1[b]["value"]).max())
        # the cells and units agree wherever the values are not within rounding of a tie
        gap = np.abs(np.diff(top1[b]["value"], axis=1)).min(axis=1) > 1e-4
        for key in ("cell", "row", "col"):
            np.testing.assert_array_equal(top5[b][key][gap], top1[b][key][gap])
