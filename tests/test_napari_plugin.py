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
    fields = tiny_screen(tmp_path_factory, workers=1) / "main" / "fields"
    row = _csv(fields / "images.csv")[0]
    field = tmp / "field.tif"
    shutil.copy(fields / row["image"], field)
    return tmp, bundle, field


def _command(*args, cwd):
    return subprocess.run([sys.executable, "-m", "deepyeast", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=REPO_ROOT))


def test_plugin_cells_are_the_commands_cells(setup):
    """The widget's cells layer and call on one micrograph = `deepyeast classify`'s cells.csv and proteins.csv."""
    tmp, bundle_dir, field = setup
    (tmp / "one.csv").write_text(f"image,protein\n{field},P1\n")
    res = _command("classify", "--model", bundle_dir, "--images", tmp / "one.csv", "--out", tmp / "cmd", cwd=tmp)
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


def test_bad_layers_give_the_commands_message(setup):
    tmp, bundle_dir, field = setup
    single = tmp / "single.tif"
    tifffile.imwrite(single, tifffile.imread(field)[0])
    (tmp / "single.csv").write_text(f"image,protein\n{single},P1\n")
    res = _command("classify", "--model", bundle_dir, "--images", tmp / "single.csv", "--out", tmp / "x", cwd=tmp)
    assert res.returncode == 2
    with pytest.raises(InputError) as err:
        micrograph_from_layers(tifffile.imread(single), names=("single", "protein"))
    message = str(err.value)
    assert message.startswith("single: ") and message[len("single: "):] in res.stderr
    (tmp / "nobundle").mkdir()
    res = _command("classify", "--model", tmp / "nobundle", "--images", tmp / "single.csv", "--out", tmp / "x",
                   cwd=tmp)
    with pytest.raises(InputError) as err:
        load_bundle(tmp / "nobundle")
    assert res.returncode == 2 and res.stderr.strip().endswith(str(err.value))
    with pytest.raises(InputError, match="16-bit|bits"):
        micrograph_from_layers(np.full((2, 40, 40), 4000, np.uint16))
    with pytest.raises(InputError, match="protein layer is 30x40 but marker layer"):
        micrograph_from_layers(np.zeros((40, 40), np.uint8), np.zeros((40, 30), np.uint8))
    assert not (tmp / "x").exists()
