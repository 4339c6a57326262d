"""bioimage.io export: the package passes the real bioimageio.core model test, offline, and equals our engine.

The exported TorchScript runs the bundle's network with the mean image and input
scale inside.  Checks: ``bioimageio.core.test_model`` in this process with every
socket connection refused and recorded (none may be attempted), the ``bioimageio
test`` command in a network namespace without a network (as root), and the
package's outputs on crops it was not built with against the bundle run by our
engine (1e-4), for a bundle with a mean image and one with an input scale.
"""

import os
import shutil
import socket
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from _requirements import reason

from deepyeast.utils.io import InputError
from deepyeast.model import read_bundle
from deepyeast.model.export_bioimageio import export_bioimageio, validate_package

import _bundles

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

REPO = _bundles.REPO
TOL = 1e-4


def _export_cli(*args):
    return subprocess.run([sys.executable, "analysis/export_bioimageio.py", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Two bundles exported: one with a mean image and examples (by the API), one with an input scale
    and no examples (by the command, with --test-crops and --author)."""
    d = tmp_path_factory.mktemp("bioimageio")
    path, crops, _ = _bundles.make_bundle(str(d / "mean_image"), str(d), seed=2)
    summary = export_bioimageio(path, str(d / "mean_image.zip"))
    out = {"mean_image": {"bundle": path, "zip": summary["path"], "summary": summary, "crops": crops}}
    path, crops, _ = _bundles.make_bundle(str(d / "scaled"), str(d), seed=3, input_scale=1 / 127.5, examples=False)
    test_crops, _ = _bundles.synthetic_crops(per_class=1, seed=9)
    np.save(d / "crops.npy", test_crops[:5])
    r = _export_cli(path, d / "scaled.zip", "--test-crops", d / "crops.npy", "--author", "A. Person")
    assert r.returncode == 0, r.stderr
    out["scaled"] = {"bundle": path, "zip": str(d / "scaled.zip"), "stdout": r.stdout, "test_crops": test_crops[:5]}
    return out


@pytest.fixture
def no_network(monkeypatch):
    """Refuse (and record) every attempt to open a network connection or resolve a name."""
    attempts = []

    def refuse(what):
        def f(*args, **kwargs):
            attempts.append((what, args[1:2] if what == "connect" else args[:1]))
            raise OSError(f"network access attempted in an offline test: {what} {args[1:2] or args[:1]}")
        return f

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    return attempts


def test_package_contents(exported):
    e = exported["mean_image"]
    names = set(zipfile.ZipFile(e["zip"]).namelist())
    assert {"rdf.yaml", "deepyeast.pt", "test_input.npy", "test_output.npy", "cover.png", "README.md",
            "sample_input.tif", "sample_output.tif"} <= names
    descr = validate_package(e["zip"])
    assert descr.format_version.startswith("0.5")
    inp, out = descr.inputs[0], descr.outputs[0]
    assert [a.type for a in inp.axes] == ["batch", "channel", "space", "space"]
    assert [str(a.id) for a in inp.axes[2:]] == ["y", "x"] and [a.size for a in inp.axes[2:]] == [64, 64]
    assert list(inp.axes[1].channel_names) == ["marker", "protein"]
    assert list(out.axes[1].channel_names) == list(read_bundle(e["bundle"]).classes)
    assert list(inp.preprocessing) in ([], [p for p in inp.preprocessing if p.id == "ensure_dtype"])
    assert e["summary"]["test_source"] == "example crops stored in the model bundle"
    with zipfile.ZipFile(e["zip"]) as z:
        readme = z.read("README.md").decode()
        from PIL import Image
        import io
        w, h = Image.open(io.BytesIO(z.read("cover.png"))).size
    assert "## Validation" in readme and "raw 8-bit intensities 0-255" in readme and "crop - mean" in readme
    assert w == 2 * h


def test_torchscript_is_device_agnostic(exported, tmp_path):
    """No device constant in the traced graph: a consumer can move the module to a GPU."""
    import re
    import warnings

    import torch

    with zipfile.ZipFile(exported["scaled"]["zip"]) as z:
        z.extract("deepyeast.pt", tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(tmp_path / "deepyeast.pt"), map_location="cpu")
    graph = str(module.inlined_graph)
    assert "aten::_convolution" in graph and "aten::batch_norm" in graph
    assert not re.search(r'Device = prim::Constant|aten::to\b|aten::_to_copy', graph)
    assert not any(p.requires_grad for p in module.parameters())


def test_bioimageio_core_model_test_passes_offline(exported, no_network):
    import bioimageio.core

    summary = bioimageio.core.test_model(exported["mean_image"]["zip"])
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed
    names = " | ".join(d.name for d in summary.details)
    assert "Reproduce test outputs from test inputs (torchscript)" in names
    assert "Run torchscript inference for inputs with batch_size: 2" in names
    assert no_network == []


@pytest.mark.skipif(not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("unshare")),
                    reason=reason("namespaces", "a network namespace without a network needs root and unshare"))
def test_bioimageio_test_command_in_a_namespace_without_network(exported, tmp_path):
    summary = tmp_path / "summary.json"
    cmd = ["unshare", "--net", sys.executable, "-m", "bioimageio.core", "test", exported["scaled"]["zip"],
           "--summary", str(summary)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    import json
    assert json.loads(summary.read_text())["status"] == "passed"


def test_package_outputs_equal_our_engine_on_new_crops(exported):
    import bioimageio.core

    fresh, _ = _bundles.synthetic_crops(per_class=1, seed=7)
    for key in ("mean_image", "scaled"):
        e = exported[key]
        ours = read_bundle(e["bundle"]).predictor()(fresh)
        sample = bioimageio.core.predict(model=e["zip"], inputs={"crops": fresh.astype(np.float32)})
        got = np.asarray(sample.members["probabilities"].data)
        assert got.shape == ours.shape
        assert np.abs(got - ours).max() <= TOL, (key, np.abs(got - ours).max())
        assert len(set(ours.argmax(axis=1))) >= 3


def test_export_command_and_bad_input(exported, tmp_path):
    e = exported["scaled"]
    assert "TorchScript vs DeepYeast engine max |diff|" in e["stdout"]
    descr = validate_package(e["zip"])
    assert [a.name for a in descr.authors] == ["A. Person"]
    with zipfile.ZipFile(e["zip"]) as z:
        np.testing.assert_array_equal(np.load(z.open("test_input.npy")), e["test_crops"].astype(np.float32))
    # a damaged bundle: one line naming the file, exit 2, no zip
    bad = tmp_path / "bad"
    shutil.copytree(e["bundle"], bad)
    (bad / "classes.txt").write_text("label;label_idx\nnucleus;0\n")
    r = _export_cli(bad, tmp_path / "bad.zip")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "classes.txt" in r.stderr and "sha256" in r.stderr
    assert not (tmp_path / "bad.zip").exists()
    crops, _ = _bundles.synthetic_crops(per_class=1, seed=9)
    np.save(tmp_path / "wrong.npy", crops[:, :1])
    r = _export_cli(e["bundle"], tmp_path / "w.zip", "--test-crops", tmp_path / "wrong.npy")
    assert r.returncode == 2 and "N x 2 x 64 x 64" in r.stderr and not (tmp_path / "w.zip").exists()
    with pytest.raises(InputError, match="no model bundle folder"):
        export_bioimageio(str(tmp_path / "nowhere"), str(tmp_path / "x.zip"))
