"""The napari plugin (deepyeast/napari): its work gives what `deepyeast classify` gives on the same
micrograph (one path); its manifest passes `npe2 validate`; real napari, headless under Xvfb (in a
subprocess, so this process needs no display), opens a micrograph with the plugin's reader, runs the
widget, shows the cells layer coloured by class with its features and the protein's call, and turns
bad input into a notification carrying the command's one-line message."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from _bundles import make_bundle
from _data_helpers import REPO_ROOT, tiny_screen
from _requirements import need
from deepyeast.data.micrographs import read_micrograph
from deepyeast.model import read_bundle
from deepyeast.napari.layers import cells_layer, load_bundle, micrograph_from_layers
from deepyeast.utils.io import InputError

MANIFEST = os.path.join(REPO_ROOT, "deepyeast", "napari", "napari.yaml")
SESSION = os.path.join(REPO_ROOT, "tests", "_napari_session.py")


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(bundle folder, a field of the tiny screen (2 x H x W TIFF), its images table row)."""
    tmp = tmp_path_factory.mktemp("napari")
    bundle, _, _ = make_bundle(str(tmp / "model"), str(tmp))
    fields = tiny_screen(tmp_path_factory, jobs=1) / "main" / "fields"
    row = _csv(fields / "images.csv")[0]
    field = tmp / "field.tif"
    shutil.copy(fields / row["image"], field)
    return tmp, bundle, field


class _Result:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


def _command(capsys, *args):
    """``deepyeast ARGS`` in this process (the command's own entry point): exit code and stderr."""
    from deepyeast.commands import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    return _Result(code, capsys.readouterr().err)


def test_plugin_cells_are_the_commands_cells(setup, capsys):
    """The widget's cells layer and call on one micrograph = `deepyeast classify`'s cells.csv and proteins.csv."""
    tmp, bundle_dir, field = setup
    (tmp / "one.csv").write_text(f"image,protein\n{field},P1\n")
    res = _command(capsys, "classify", "--model", bundle_dir, "--images", tmp / "one.csv", "--out", tmp / "cmd")
    assert res.returncode == 0, res.stderr
    rows = _csv(tmp / "cmd" / "cells.csv")
    (protein,) = _csv(tmp / "cmd" / "proteins.csv")

    bundle, predictor = load_bundle(bundle_dir)
    assert load_bundle(bundle_dir)[1] is predictor  # kept, not reloaded
    data = tifffile.imread(field)
    layer = cells_layer(bundle, micrograph_from_layers(data), predictor=predictor, name="field")
    f = layer.features
    assert len(rows) >= 3 and len(f["index"]) == len(rows)
    assert list(f["index"]) == list(range(1, len(rows) + 1)) and layer.data.max() == len(rows)
    np.testing.assert_allclose(f["x"], [float(r["x"]) for r in rows], atol=5e-3)
    np.testing.assert_allclose(f["y"], [float(r["y"]) for r in rows], atol=5e-3)
    for k, name in enumerate(bundle.classes):
        np.testing.assert_allclose(f[f"prob_{name}"], [float(r[f"prob_{k}"]) for r in rows], atol=1e-5)
    assert list(f["class"]) == [r["class"] for r in rows]
    # each label covers its cell: the centroid of label k is row k's centroid
    for k in (1, len(rows)):
        ys, xs = np.nonzero(layer.data == k)
        assert abs(xs.mean() - f["x"][k - 1]) < 1e-6 and abs(ys.mean() - f["y"][k - 1]) < 1e-6
    assert layer.call["class"] == protein["class"] and layer.call["n_cells"] == int(protein["n_cells"])
    assert abs(layer.call["p_call"] - float(protein["p_call"])) < 1e-5
    for k, name in enumerate(bundle.classes):
        assert abs(layer.call[f"post_{name}"] - float(protein[f"post_{k}"])) < 1e-5
    colours = {layer.colors[k + 1] for k in range(len(rows))}
    assert len(colours) == len(set(f["class"]))  # one colour per class

    # two single-channel layers = the same micrograph; a given Labels layer is used as is
    two = micrograph_from_layers(data[0], data[1], names=("marker", "protein"))
    assert np.array_equal(two, read_micrograph(str(field)))
    given = cells_layer(bundle, two, mask=layer.data, predictor=predictor)
    np.testing.assert_allclose(given.features["prob_" + bundle.classes[0]], f["prob_" + bundle.classes[0]],
                               atol=1e-6)
    assert list(given.features["cell"]) == list(f["index"])


def test_bad_layers_give_the_commands_message(setup, capsys):
    tmp, bundle_dir, field = setup
    single = tmp / "single.tif"
    tifffile.imwrite(single, tifffile.imread(field)[0])
    (tmp / "single.csv").write_text(f"image,protein\n{single},P1\n")
    res = _command(capsys, "classify", "--model", bundle_dir, "--images", tmp / "single.csv", "--out", tmp / "x")
    assert res.returncode == 2
    with pytest.raises(InputError) as err:
        micrograph_from_layers(tifffile.imread(single), names=("single", "protein"))
    message = str(err.value)
    assert message.startswith("single: ") and message[len("single: "):] in res.stderr
    (tmp / "nobundle").mkdir(exist_ok=True)
    res = _command(capsys, "classify", "--model", tmp / "nobundle", "--images", tmp / "single.csv", "--out", tmp / "x")
    with pytest.raises(InputError) as err:
        load_bundle(tmp / "nobundle")
    assert res.returncode == 2 and res.stderr.strip().endswith(str(err.value))
    with pytest.raises(InputError, match="16-bit|bits"):
        micrograph_from_layers(np.full((2, 40, 40), 4000, np.uint16))
    with pytest.raises(InputError, match="protein layer is 30x40 but marker layer"):
        micrograph_from_layers(np.zeros((40, 40), np.uint8), np.zeros((40, 30), np.uint8))
    assert not (tmp / "x").exists()


def test_manifest_validates():
    res = subprocess.run([sys.executable, "-m", "npe2", "validate", MANIFEST], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=REPO_ROOT))
    assert res.returncode == 0 and "valid" in (res.stdout + res.stderr).lower(), res.stdout + res.stderr
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == "deepyeast"
    assert [w.display_name for w in manifest.contributions.widgets] == ["Classify cells"]
    (reader,) = manifest.contributions.readers
    assert set(reader.filename_patterns) == {"*.tif", "*.tiff", "*.png", "*.zarr"} and reader.accepts_directories
    for command in manifest.contributions.commands:  # every python_name imports
        module, _, attr = command.python_name.partition(":")
        assert callable(getattr(__import__(module, fromlist=[attr]), attr)), command.python_name


@pytest.mark.slow
def test_napari_runs_the_widget_headless(setup):
    """Real napari under Xvfb: the reader's layers, the widget's notifications for bad input (the command's
    lines), then the cells layer with its features, class colours in a screenshot, and the call's table."""
    tmp, bundle_dir, field = setup
    if shutil.which("xvfb-run") is None:
        need("xvfb")
    out = tmp / "session"
    out.mkdir(exist_ok=True)
    (tmp / "nobundle").mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, QT_QPA_PLATFORM="xcb", NAPARI_CONFIG=str(tmp / "napari.yaml"))
    res = subprocess.run(["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", sys.executable, SESSION, str(field),
                          str(bundle_dir), str(tmp / "nobundle"), str(out)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    s = json.load(open(out / "session.json"))

    # the reader: one layer per channel of the TIFF
    data = tifffile.imread(field)
    assert s["reader_layers"] == [[f"field.tif [c{i}]", list(data.shape[1:]), str(data.dtype)] for i in range(2)]
    # bad input: the command's one-line messages as error notifications, no layer added, the viewer lives on
    errors = [message for severity, message in s["notifications"] if severity.lower() == "error"]
    with pytest.raises(InputError) as one_channel:
        micrograph_from_layers(data[0], names=("field.tif [c0]", "protein"))
    with pytest.raises(InputError) as no_bundle:
        read_bundle(str(tmp / "nobundle"))
    assert errors == [str(one_channel.value), str(no_bundle.value)]
    infos = [message for severity, message in s["notifications"] if severity.lower() == "info"]
    assert infos == [f"{s['labels_max']} cells; call: {s['metadata']['protein_call']['class']} "
                     f"(share {s['metadata']['protein_call']['top1_share']:.2f}, "
                     f"p_call {s['metadata']['protein_call']['p_call']:.2f})"]
    assert s["layers_after_bad_input"] == [2, 2]
    # the cells layer: its features are the plugin's cells (= the command's, test above)
    assert s["layers"][-1] == ["field.tif [c0] cells", "Labels"] and len(s["layers"]) == 3
    bundle = read_bundle(bundle_dir)
    expected = cells_layer(bundle, read_micrograph(str(field)), name="field.tif [c0]")
    f = s["features"]
    assert f["index"] == list(range(1, s["labels_max"] + 1)) and f["class"] == list(expected.features["class"])
    for name in bundle.classes:
        np.testing.assert_allclose(f[f"prob_{name}"], expected.features[f"prob_{name}"], atol=1e-6)
    assert s["metadata"]["protein_call"] == expected.call
    assert "DeepYeast protein call" in s["docks"] and "Classify cells (deepyeast)" in s["docks"]
    # coloured by class: each label's colour is its class's
    for label, rgba in s["colour"].items():
        np.testing.assert_allclose(rgba, expected.colors[int(label)], atol=1e-6)
    # the screenshot shows the cells in their class colours on a background
    from PIL import Image

    shot = np.asarray(Image.open(out / "screenshot.png").convert("RGB")).astype(int)
    assert shot.shape[0] > 100 and shot.shape[1] > 100 and shot.std() > 5
    for k in set(int(v) for v in f["index"]):
        target = np.round(np.asarray(expected.colors[k][:3]) * 255).astype(int)
        close = np.abs(shot - target).max(axis=2) <= 3
        assert close.sum() >= 20, (k, target)  # the cell's colour covers some pixels


@pytest.mark.slow
def test_plugin_ood_flags_are_the_commands(setup, tmp_path_factory, capsys):
    """A bundle with out-of-distribution statistics: the plugin's ood_score and ood per cell, and the cells
    left out of the call, equal the command's on the same micrographs (one of them 16x too dark)."""
    from _bundles import DEPLOY, make_weights
    from deepyeast.analysis.ood import fit_bundle_statistics
    from deepyeast.caffe.blobs import compute_mean
    from deepyeast.constants import CLASS_NAMES
    from deepyeast.model import write_bundle
    from deepyeast.model.make_bundle import list_crops

    tmp, _, field = setup
    main = tiny_screen(tmp_path_factory, jobs=1) / "main"
    crops, labels = list_crops(str(main / "HOwt_train.txt"), CLASS_NAMES)
    val, val_labels = list_crops(str(main / "HOwt_val.txt"), CLASS_NAMES)
    mean = compute_mean(crops)
    weights = make_weights(str(tmp / "ood.caffemodel"), crops[:100], mean, seed=0)
    plain = write_bundle(str(tmp / "ood_plain"), DEPLOY, weights, mean, CLASS_NAMES)
    ood = fit_bundle_statistics(read_bundle(plain).predictor(extra_blobs=("fc1",)), crops, labels, val, val_labels,
                                len(CLASS_NAMES))
    path = write_bundle(str(tmp / "ood_model"), DEPLOY, weights, mean, CLASS_NAMES, ood=ood)
    dark = tmp / "dark.tif"
    tifffile.imwrite(dark, (tifffile.imread(field) // 16).astype(np.uint8))
    (tmp / "ood.csv").write_text(f"image,protein\n{field},P1\n{dark},P2\n")
    res = _command(capsys, "classify", "--model", path, "--images", tmp / "ood.csv", "--out", tmp / "ood_out")
    assert res.returncode == 0, res.stderr
    rows, proteins = _csv(tmp / "ood_out" / "cells.csv"), _csv(tmp / "ood_out" / "proteins.csv")
    bundle, predictor = load_bundle(path)
    flagged = 0
    for image, protein in ((field, proteins[0]), (dark, proteins[1])):
        layer = cells_layer(bundle, micrograph_from_layers(tifffile.imread(image)), predictor=predictor)
        mine = [r for r in rows if r["image"] == str(image)]
        np.testing.assert_allclose(layer.features["ood_score"], [float(r["ood_score"]) for r in mine], rtol=1e-4)
        assert [int(v) for v in layer.features["ood"]] == [int(r["ood"]) for r in mine]
        assert layer.call["n_ood"] == int(protein["n_ood"]) and layer.call["n_cells"] == int(protein["n_cells"])
        flagged += int(np.sum(layer.features["ood"]))
    assert flagged >= 1  # the dark micrograph's cells are unlike the training cells
