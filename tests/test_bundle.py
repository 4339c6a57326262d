"""Model bundles (RUN/model/): written atomically, read back, refused when their parts disagree, run.

The bundle's net runs with our engine and, on the same files, with real pycaffe; both
must agree, and agree with the prediction step the pipeline already uses.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from deepyeast.caffe import caffe_pb2, root as caffe_root
from deepyeast.caffe.blobs import compute_mean, write_mean_binaryproto
from deepyeast.caffe.prototxt import read_prototxt
from deepyeast.constants import CHANNELS, CLASS_NAMES
from deepyeast.utils.io import OUTPUT_MARKER, InputError
from deepyeast.model import bundle as mb
from deepyeast.model import predict_crops, read_bundle, write_bundle
from deepyeast.model.bundle import BundleInfo

import _bundles

REPO = _bundles.REPO
FORWARD = os.path.join(REPO, "deepyeast", "caffe", "pycaffe_forward.py")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle")
    path, crops, labels = _bundles.make_bundle(str(d / "model"), str(d), seed=0)
    return {"dir": d, "path": path, "crops": crops, "labels": labels}


def copy_bundle(made, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(made["path"], dst)
    return dst


def rehash(folder, name):
    """Update bundle.json's checksum of ``name`` (a deliberate edit, not damage)."""
    meta = json.loads((folder / "bundle.json").read_text())
    data = (folder / name).read_bytes()
    meta["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "bundle.json").write_text(json.dumps(meta))


# ---------------------------------------------------------------- round trip

def test_bundle_round_trip(made):
    b = read_bundle(made["path"])
    assert sorted(os.listdir(made["path"])) == sorted(mb.BUNDLE_FILES + (mb.BUNDLE_JSON, mb.EXAMPLES, OUTPUT_MARKER))
    assert b.classes == CLASS_NAMES and b.channels == CHANNELS
    assert b.input_blob == "data" and b.output_blob == "prob" and b.input_shape == (2, 64, 64)
    assert b.input_scale == 1.0
    np.testing.assert_array_equal(b.mean, compute_mean(made["crops"]))
    np.testing.assert_array_equal(b.examples(), made["crops"][::2])
    assert mb.read_class_table(os.path.join(made["path"], "classes.txt")) == list(CLASS_NAMES)
    meta = b.metadata
    assert meta["format"] == "deepyeast-model-bundle" and meta["metrics"]["cell_accuracy"]["correct"] == 12
    for name, info in meta["files"].items():
        data = open(os.path.join(made["path"], name), "rb").read()
        assert info["sha256"] == hashlib.sha256(data).hexdigest() and info["bytes"] == len(data)
    # the deploy net is copied byte for byte (its comments are documentation)
    assert open(b.deploy_path, "rb").read() == open(_bundles.DEPLOY, "rb").read()


def test_readme_is_model_zoo_style(made):
    text = open(os.path.join(made["path"], "readme.md"), encoding="utf-8").read()
    front = text.split("---")[1]
    sha1 = hashlib.sha1(open(os.path.join(made["path"], "weights.caffemodel"), "rb").read()).hexdigest()
    assert "caffemodel: weights.caffemodel" in front and f"sha1: {sha1}" in front
    for needle in ("channel 0: red: cytosolic mCherry marker", "channel 1: green: GFP-tagged protein",
                   "N x 2 x 64 x 64 uint8", "blob = crop - mean", 'transform_param { mean_file: "mean.binaryproto" }',
                   "| 3 | ER |", "| cell_accuracy | 0.5 (12/24) |", "| data | synthetic cells (tests) |"):
        assert needle in text, needle


def test_predictions_equal_the_pipeline_prediction_step(made, tmp_path):
    from deepyeast.analysis.predict import forward_blobs

    b = read_bundle(made["path"])
    ours = b.predictor(batch=7)(made["crops"])
    assert ours.shape == (len(made["crops"]), 12) and np.allclose(ours.sum(axis=1), 1, atol=1e-5)
    assert len(set(ours.argmax(axis=1))) >= 4  # weights are not trivial
    forward_blobs("ours", b.net_files, made["crops"], ["prob"], str(tmp_path))
    np.testing.assert_allclose(ours, np.load(tmp_path / "prob.npy"), atol=1e-6)
    np.testing.assert_allclose(predict_crops(made["path"], made["crops"][:3]), ours[:3], atol=1e-6)


def test_bf16_predictions_stay_close(made):
    b = read_bundle(made["path"])
    fp32 = b.predictor()(made["crops"])
    bf16 = b.predictor(precision="bf16")(made["crops"])
    assert bf16.dtype == np.float32 and np.abs(bf16 - fp32).max() < 0.05
    assert not np.array_equal(bf16, fp32)  # it did run in another precision


def test_input_scale_is_applied_like_caffe(tmp_path):
    path, crops, _ = _bundles.make_bundle(str(tmp_path / "m"), str(tmp_path), seed=1, input_scale=0.25)
    b = read_bundle(path)
    x = b.preprocess(crops)
    np.testing.assert_array_equal(x, (crops.astype(np.float32) - b.mean) * np.float32(0.25))
    assert "blob = (crop - mean) * 0.25" in open(os.path.join(path, "readme.md")).read()
    assert 'scale: 0.25 }' in open(os.path.join(path, "readme.md")).read()


@pytest.mark.caffe
def test_real_pycaffe_gives_the_bundle_probabilities(made, tmp_path, caffe_root_present):
    b = read_bundle(made["path"])
    np.save(tmp_path / "x.npy", made["crops"])
    np.save(tmp_path / "mean.npy", b.mean)
    r = caffe_root.run_pycaffe(FORWARD, ["--model", b.deploy_path, "--weights", b.weights_path, "--images",
                                         str(tmp_path / "x.npy"), "--mean", str(tmp_path / "mean.npy"),
                                         "--out", str(tmp_path / "out"), "--batch", "10"],
                               binds=[b.path], check=False)
    assert r.returncode == 0, r.stdout[-3000:]
    caffe_prob = np.load(tmp_path / "out" / "prob.npy")
    assert np.abs(caffe_prob - b.predictor()(made["crops"])).max() <= 1e-4


# ---------------------------------------------------------------- refusals

def _refused(folder, *needles, verify=True):
    with pytest.raises(InputError) as e:
        read_bundle(str(folder), verify=verify)
    msg = str(e.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def test_damaged_file_is_refused_by_checksum(made, tmp_path):
    m = copy_bundle(made, tmp_path)
    with open(m / "weights.caffemodel", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    _refused(m, "weights.caffemodel", "sha256", "does not match")


def test_class_table_disagreeing_with_the_net_is_refused(made, tmp_path):
    m = copy_bundle(made, tmp_path)
    mb.write_class_table(str(m / "classes.txt"), CLASS_NAMES[:11])
    rehash(m, "classes.txt")
    _refused(m, "classes.txt", "disagrees with bundle.json")
    meta = json.loads((m / "bundle.json").read_text())
    meta["classes"] = list(CLASS_NAMES[:11])
    (m / "bundle.json").write_text(json.dumps(meta))
    _refused(m, "classes.txt", "11 classes", "12 values per cell")


def test_input_and_mean_shapes_are_checked(made, tmp_path):
    m = copy_bundle(made, tmp_path)
    meta = json.loads((m / "bundle.json").read_text())
    meta["input"]["shape"] = [2, 32, 32]
    (m / "bundle.json").write_text(json.dumps(meta))
    _refused(m, "mean.binaryproto", "(2, 64, 64)", "(2, 32, 32)")
    m2 = tmp_path / "m2"
    shutil.copytree(made["path"], m2)
    write_mean_binaryproto(str(m2 / "mean.binaryproto"), np.zeros((1, 64, 64), np.float32))
    rehash(m2, "mean.binaryproto")
    _refused(m2, "mean.binaryproto", "mean image has shape (1, 64, 64)", "(2, 64, 64)")
    # a deploy net that takes other crops than bundle.json says
    m3 = tmp_path / "m3"
    shutil.copytree(made["path"], m3)
    text = (m3 / "deploy.prototxt").read_text().replace("dim: 100 dim: 2 dim: 64 dim: 64", "dim: 1 dim: 2 dim: 48 dim: 48")
    (m3 / "deploy.prototxt").write_text(text)
    rehash(m3, "deploy.prototxt")
    _refused(m3, "input.shape is [2, 64, 64]", "takes [2, 48, 48]")


def test_weights_of_another_net_are_refused(made, tmp_path):
    m = copy_bundle(made, tmp_path)
    text = (m / "deploy.prototxt").read_text()
    i = text.index('name: "fc2"')
    text = text[:i] + text[i:].replace("num_output: 512", "num_output: 256", 1)
    (m / "deploy.prototxt").write_text(text)
    rehash(m, "deploy.prototxt")
    _refused(m, "fc2", "(512, 512)", "(256, 512)")


def test_bad_metadata_is_named(made, tmp_path):
    m = copy_bundle(made, tmp_path)
    os.remove(m / "bundle.json")
    _refused(m, "bundle.json: missing")
    (m / "bundle.json").write_text('{"format": "deepyeast-model-bundle",\n "format_version": 1,,}')
    _refused(m, "bundle.json: not valid JSON: line 2")
    shutil.copy(os.path.join(made["path"], "bundle.json"), m / "bundle.json")
    meta = json.loads((m / "bundle.json").read_text())
    meta["input"]["scale"] = -1
    (m / "bundle.json").write_text(json.dumps(meta))
    _refused(m, "input: field 'scale' is -1")
    meta["input"]["scale"] = 1.0
    meta["files"]["../outside.txt"] = {"sha256": "0" * 64}
    (m / "bundle.json").write_text(json.dumps(meta))
    _refused(m, "'../outside.txt' is not a plain file name")
    with pytest.raises(InputError, match="no model bundle folder"):
        read_bundle(str(tmp_path / "nowhere"))


def test_bad_crops_are_refused(made):
    b = read_bundle(made["path"])
    with pytest.raises(InputError, match=r"takes N x 2 x 64 x 64"):
        b.predictor()(made["crops"][:, :1])
    with pytest.raises(InputError, match="uint16"):
        b.predictor()(made["crops"].astype(np.uint16))


def test_write_bundle_refuses_disagreeing_parts_and_keeps_the_old_bundle(made, tmp_path):
    m = copy_bundle(made, tmp_path)
    before = {p: (m / p).read_bytes() for p in os.listdir(m)}
    b = read_bundle(str(m))
    w = b.weights_path
    cases = [
        (dict(classes=CLASS_NAMES[:11]), "11 classes"),
        (dict(mean=np.zeros((2, 32, 32), np.float32)), "mean image has shape (2, 32, 32)"),
        (dict(classes=["a", "a"] + list(CLASS_NAMES[2:])), "class names repeat"),
        (dict(input_scale=0.0), "input_scale must be a positive number"),
    ]
    for change, message in cases:
        args = dict(deploy=b.deploy_path, weights=w, mean=b.mean, classes=CLASS_NAMES)
        args.update(change)
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            write_bundle(str(m), args.pop("deploy"), args.pop("weights"), args.pop("mean"), args.pop("classes"),
                         BundleInfo(**args))
        assert {p: (m / p).read_bytes() for p in os.listdir(m)} == before
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no half-written folders left behind
    # a good write replaces the whole folder at once
    shutil.copy(w, tmp_path / "w.caffemodel")
    write_bundle(str(m), _bundles.DEPLOY, str(tmp_path / "w.caffemodel"), b.mean, CLASS_NAMES,
                 BundleInfo(name="Renamed"))
    assert read_bundle(str(m)).name == "Renamed" and not (m / "examples.npy").exists()
    assert sorted(os.listdir(tmp_path)) == ["model", "w.caffemodel"]


# ---------------------------------------------------------------- the pipeline's command

def test_make_bundle_command(made, tmp_path):
    from deepyeast.data.crop_png import encode_crop
    from deepyeast.data.lists import write_class_doc, write_split_list

    root = tmp_path / "screen"
    (root / "plate01").mkdir(parents=True)
    entries = []
    for i, (crop, label) in enumerate(zip(made["crops"], made["labels"])):
        rel = f"plate01/{label:03d}{i:03d}-0-0-0.png"
        (root / rel).write_bytes(encode_crop(crop))
        entries.append((rel, int(label)))
    write_split_list(str(root / "HOwt_test.txt"), entries)
    write_class_doc(str(root / "HOwt_doc.txt"), CLASS_NAMES)  # lower-case names, like the archive
    metrics = {"cell_accuracy": {"value": 0.75, "correct": 18, "total": 24}, "cell_kappa": {"value": 0.7},
               "protein_accuracy": None, "versions": {"numpy": "2"}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    b = read_bundle(made["path"])
    cmd = [sys.executable, "analysis/make_bundle.py", "--model", b.deploy_path, "--weights", b.weights_path,
           "--mean", b.mean_path, "--classes", str(root / "HOwt_doc.txt"), "--metrics", str(tmp_path / "metrics.json"),
           "--solver", os.path.join(REPO, "models", "deepyeast", "solver.prototxt"),
           "--examples", str(root / "HOwt_test.txt"), "--out", str(tmp_path / "model")]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = read_bundle(str(tmp_path / "model"))
    assert out.classes == CLASS_NAMES  # "er" in the doc file, "ER" in the bundle
    assert out.examples().shape == (12, 2, 64, 64)
    np.testing.assert_array_equal(out.examples()[3], made["crops"][list(made["labels"]).index(3)])
    meta = out.metadata
    assert set(meta["metrics"]) == {"cell_accuracy", "cell_kappa"}
    tr = meta["training"]
    assert tr["base_lr"] == 0.1 and tr["stepsize"] == 16250 and tr["max_iter"] == 195000 and tr["batch_size"] == 100
    # bad input: one line naming the file, exit 2, nothing written
    (tmp_path / "bad.json").write_text("{not json")
    r = subprocess.run(cmd[:-1] + [str(tmp_path / "model2")] + ["--metrics", str(tmp_path / "bad.json")],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "bad.json" in r.stderr
    assert not (tmp_path / "model2").exists()


def test_bundle_json_is_the_readme_facts(made):
    meta = json.load(open(os.path.join(made["path"], "bundle.json")))
    assert meta["input"]["channels"] == list(CHANNELS) and meta["input"]["shape"] == [2, 64, 64]
    assert meta["classes"] == list(CLASS_NAMES)
    net = read_prototxt(os.path.join(made["path"], "deploy.prototxt"), caffe_pb2.NetParameter)
    assert [layer.inner_product_param.num_output for layer in net.layer if layer.name == "fc3"] == [12]


def test_predictor_outputs_extra_blobs_beside_the_probabilities(made):
    """One pass gives the probabilities and other kept blobs; fc3's softmax is the probabilities."""
    b = read_bundle(made["path"])
    out = b.predictor(extra_blobs=("fc3",), batch=5).outputs(made["crops"])
    assert list(out) == ["prob", "fc3"] and out["fc3"].shape == (len(made["crops"]), 12)
    logits = out["fc3"].astype(np.float64)
    soft = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(soft / soft.sum(axis=1, keepdims=True), out["prob"], atol=1e-5)
    np.testing.assert_array_equal(b.predictor(batch=5)(made["crops"]), out["prob"])


def test_bundle_from_run_in_process(made, tmp_path):
    """The library of make-bundle, called without a subprocess: a run's files become a bundle that gives the
    same probabilities, with the class table spelled as DeepYeast spells it and no metrics it was not given."""
    from deepyeast.data.lists import write_class_doc
    from deepyeast.model.make_bundle import RunFiles, bundle_from_run

    b = read_bundle(made["path"])
    write_class_doc(str(tmp_path / "HOwt_doc.txt"), CLASS_NAMES)  # lower-case names, like the archive
    out = bundle_from_run(str(tmp_path / "model"), RunFiles(b.deploy_path, b.weights_path, b.mean_path,
                                                            str(tmp_path / "HOwt_doc.txt")), trained_on="synthetic")
    assert out.classes == CLASS_NAMES and out.metadata["metrics"] == {}
    assert out.metadata["training"] == {"data": "synthetic"} and out.examples() is None
    crops = made["crops"][:4]
    np.testing.assert_array_equal(read_bundle(out.path).predictor()(crops), b.predictor()(crops))
