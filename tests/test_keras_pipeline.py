"""A model written by real Keras, converted, then used the ways a user would: each gives Keras's numbers.

The authors' Keras DeepYeast is rebuilt with real Keras 3 (tests/_keras_deepyeast.py: random but
calibrated weights), saved with ``model.save`` (legacy HDF5 whole model) and converted into a
bundle.  48 crops are written as RGB PNGs in the published archive's layout (``plateNN/<protein>-
<field>-<cell>-<k>.png`` with ``HOwt_test.txt``) by PIL, and the reference probabilities are
Keras's on those PNGs read the authors' way -- PIL, ``[:, :, :2]``, ``x / 127.5 - 1`` -- not with
our decoder.  Then

* the predictions step (``analysis/predict.py --bundle``),
* classify_screen on micrographs tiled from the same crops (one cell per tile, masks given),
* the bioimage.io export (its TorchScript run on the crops),

each give Keras's probabilities to 1e-4.  The predictions step refuses the bundle's loose files,
whose preprocessing (input scale 1/127.5) they cannot say, with one line naming ``--bundle``;
the same net without the input scale would be far off (what the 1e-4 checks guard against).
"""

import csv
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

import _keras_deepyeast as kd  # noqa: E402
import keras  # noqa: E402
from PIL import Image  # noqa: E402

from deepyeast.analysis import predict  # noqa: E402
from deepyeast.analysis.prediction_table import read_predictions  # noqa: E402
from deepyeast.engine.inference import NetFiles, Predictor  # noqa: E402
from deepyeast.model import convert_keras_weights as kconv  # noqa: E402
from deepyeast.model import read_bundle  # noqa: E402
from deepyeast.utils.io import InputError  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4
PER_CLASS = 4  # 12 proteins (one per class) x 4 cells = 48 crops


def authors_read(path):
    """A crop as the authors' Keras code reads it: PIL, the first two channels, H x W x 2 uint8."""
    return np.asarray(Image.open(path))[:, :, :2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The archive (PNG crops by PIL), Keras's probabilities on them, and the converted bundle."""
    from deepyeast.data.make_synthetic import example_crops

    d = tmp_path_factory.mktemp("keras_pipeline")
    crops = np.concatenate([example_crops("main", k, PER_CLASS, seed=11) for k in range(12)])
    archive = d / "archive"
    relpaths, labels = [], []
    for i, crop in enumerate(crops):
        k, j = divmod(i, PER_CLASS)
        rel = f"plate01/{k + 1:03d}00{k + 1:02d}00-1-{j + 1}-1.png"
        os.makedirs(archive / "plate01", exist_ok=True)
        rgb = np.zeros((64, 64, 3), np.uint8)
        rgb[:, :, 0], rgb[:, :, 1] = crop[0], crop[1]  # R marker, G protein, B empty: the archive's PNGs
        Image.fromarray(rgb, "RGB").save(archive / rel)
        relpaths.append(rel)
        labels.append(k)
    (archive / "HOwt_test.txt").write_text("".join(f"{p} {k}\n" for p, k in zip(relpaths, labels)))

    hwc = np.stack([authors_read(archive / p) for p in relpaths])  # N x 64 x 64 x 2 uint8
    model = kd.randomize(kd.build_model(), crops, seed=3)
    h5 = kd.save_keras3_model(model, str(d / "deepyeast.h5"))
    x = hwc.astype(np.float32) / 127.5 - 1.0  # the authors' preprocess_input
    ref = np.asarray(keras.ops.convert_to_numpy(keras.models.load_model(h5)(x, training=False)), np.float32)
    bundle_dir = kconv.convert_keras_weights(h5, str(d / "bundle"))
    return {"dir": d, "archive": archive, "relpaths": relpaths, "labels": np.asarray(labels),
            "chw": hwc.transpose(0, 3, 1, 2).copy(), "rgb": {p: np.asarray(Image.open(archive / p)) for p in relpaths},
            "keras": ref, "bundle": bundle_dir}


def test_reference_is_not_trivial(world):
    ref = world["keras"]
    assert ref.shape == (48, 12) and np.allclose(ref.sum(axis=1), 1, atol=1e-5)
    assert len(set(ref.argmax(axis=1))) >= 4 and ref.max(axis=1).mean() < 0.9


def test_predictions_step_with_bundle_gives_keras_probabilities(world):
    out = world["dir"] / "cells_test.csv"
    proc = subprocess.run([sys.executable, "analysis/predict.py", "--bundle", world["bundle"],
                           "--archive", str(world["archive"]), "--list", "HOwt_test.txt", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    table = read_predictions(out)
    order = {p: i for i, p in enumerate(world["relpaths"])}
    got = table.probs[[order[p] for p in table.path]]
    assert len(table.path) == 48
    assert np.abs(got - world["keras"][[order[p] for p in table.path]]).max() <= TOL


@pytest.mark.caffe
def test_real_caffe_predictions_with_bundle_give_keras_probabilities(world, caffe_root_present):
    """The predictions step on real pycaffe applies the bundle's input scale too."""
    cells = predict.cells_from_list(world["archive"], world["archive"] / "HOwt_test.txt")
    table = predict.predict_cells(cells, read_bundle(world["bundle"]).net_files, engine="caffe")
    order = {p: i for i, p in enumerate(world["relpaths"])}
    assert np.abs(table.probs - world["keras"][[order[p] for p in table.path]]).max() <= TOL


def test_loose_bundle_files_are_refused_naming_bundle(world, tmp_path):
    b = read_bundle(world["bundle"])
    with pytest.raises(InputError, match=r"input by 0\.00784314.*give --bundle"):
        predict.net_files(b.deploy_path, b.weights_path, b.mean_path)
    # copied out of the bundle the same files are a net trained here (input scale 1): allowed
    for name in ("deploy.prototxt", "weights.caffemodel", "mean.binaryproto"):
        (tmp_path / name).write_bytes(open(os.path.join(b.path, name), "rb").read())
    loose = predict.net_files(tmp_path / "deploy.prototxt", tmp_path / "weights.caffemodel",
                              tmp_path / "mean.binaryproto")
    assert loose.input_scale == 1.0
    # ... and what that silently wrong path gives: far from Keras (the bug this refusal prevents)
    wrong = Predictor(NetFiles(b.deploy_path, b.weights_path, b.mean, 1.0))(world["chw"])
    assert np.abs(wrong - world["keras"]).max() > 0.1
    proc = subprocess.run([sys.executable, "analysis/predict.py", "--model", b.deploy_path, "--weights",
                           b.weights_path, "--mean", b.mean_path, "--archive", str(world["archive"]), "--list",
                           "HOwt_test.txt", "--out", str(tmp_path / "x.csv")], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "--bundle" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "x.csv")


def test_classify_screen_gives_keras_probabilities(world, tmp_path):
    """Each protein's 4 crops tiled side by side into one RGB micrograph, with a mask whose cell k is a
    5 x 5 square centred on tile k: the crop classify cuts is the tile itself."""
    from deepyeast.analysis.classify_screen import classify_screen
    from deepyeast.utils.run_context import RunContext

    rows = []
    for k in range(12):
        tiles = world["relpaths"][k * PER_CLASS:(k + 1) * PER_CLASS]
        Image.fromarray(np.concatenate([world["rgb"][p] for p in tiles], axis=1), "RGB").save(tmp_path / f"m{k}.png")
        mask = np.zeros((64, 64 * PER_CLASS), np.uint8)
        for j in range(PER_CLASS):
            mask[30:35, 64 * j + 30:64 * j + 35] = j + 1
        Image.fromarray(mask, "L").save(tmp_path / f"m{k}_mask.png")
        rows.append(f"m{k}.png,1,p{k:02d},m{k}_mask.png\n")
    (tmp_path / "images.csv").write_text("image,plate,protein,mask\n" + "".join(rows))
    classify_screen(world["bundle"], tmp_path / "images.csv", tmp_path / "out", context=RunContext(progress=False))
    with open(tmp_path / "out" / "cells.csv", newline="") as f:
        cells = list(csv.DictReader(f))
    assert len(cells) == 48
    got = np.zeros((48, 12))
    for row in cells:
        k, j = int(row["protein"][1:]), int(row["cell"]) - 1
        assert row["padded"] == "0"
        got[k * PER_CLASS + j] = [float(row[f"prob_{c}"]) for c in range(12)]
    assert np.abs(got - world["keras"]).max() <= TOL


def test_bioimageio_export_gives_keras_probabilities(world, tmp_path):
    import torch

    from deepyeast.model.export_bioimageio import export_bioimageio

    summary = export_bioimageio(world["bundle"], str(tmp_path / "keras.zip"), test_input=world["chw"])
    with zipfile.ZipFile(summary["path"]) as z:
        z.extractall(tmp_path / "pkg")
    module = torch.jit.load(str(tmp_path / "pkg" / "deepyeast.pt"))
    with torch.no_grad():
        got = module(torch.from_numpy(world["chw"].astype(np.float32))).numpy()
    assert np.abs(got - world["keras"]).max() <= TOL
    stored = np.load(tmp_path / "pkg" / "test_output.npy").reshape(48, 12)
    assert np.abs(stored - world["keras"]).max() <= TOL
