"""The authors' Keras weights as a bundle: converter against real Keras 3 and real Caffe 1.0.

The released file cannot be downloaded here, so the tests build the authors' network
with real Keras (PyTorch backend), give it random weights and calibrated BatchNorm
statistics (tests/_keras_deepyeast.py), write it in the legacy HDF5 layouts (Keras 3's
own whole-model file; Keras 2's weights-only and whole-model layouts with byte-string
attributes and ':0' weight names; a Theano-backend file), read each back with Keras,
and require the converted bundle to give Keras' probabilities to 1e-4 -- with our
engine, and with real Caffe reading raw crops from an LMDB through its Data layer with
the bundle's mean and scale.  The fetch step is tried against a local HTTP server.
"""

import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

import _keras_deepyeast as kd  # noqa: E402
import keras  # noqa: E402

from deepyeast.caffe import caffe_pb2, root as caffe_root  # noqa: E402
from deepyeast.caffe.blobs import read_caffemodel  # noqa: E402
from deepyeast.caffe.lmdb import write_datum_lmdb  # noqa: E402
from deepyeast.caffe.prototxt import read_prototxt, write_prototxt  # noqa: E402
from deepyeast.engine import Net  # noqa: E402
from deepyeast.utils.io import InputError  # noqa: E402
from deepyeast.model import read_bundle  # noqa: E402
from deepyeast.model import convert_keras_weights as kconv  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_LAYER_FORWARD = os.path.join(REPO, "tests", "pycaffe", "data_layer_forward.py")
TOL = 1e-4



@pytest.fixture(scope="module")
def crops():
    from deepyeast.data.make_synthetic import example_crops
    return np.concatenate([example_crops("main", k, 2, seed=5) for k in range(12)])


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory, crops):
    d = tmp_path_factory.mktemp("keras")
    model = kd.randomize(kd.build_model(), crops, seed=0)
    files = {
        "keras3_model": kd.save_keras3_model(model, str(d / "keras3_model.h5")),
        "keras2_weights": kd.save_keras2_weights(model, str(d / "keras2_weights.h5")),
        "keras2_model": kd.save_keras2_weights(model, str(d / "keras2_model.hdf5"), whole_model=True),
        "theano_weights": kd.save_keras2_weights(model, str(d / "theano_weights.h5"), backend="theano"),
    }
    return {"dir": d, "files": files, "in_memory": kd.predict(model, crops)}


def keras_reference(path, crops):
    """Keras 3's probabilities with the weights read back from ``path`` (legacy HDF5)."""
    if path.endswith("keras3_model.h5"):
        model = keras.models.load_model(path)
    else:
        model = kd.build_model()
        model.load_weights(path)
    return kd.predict(model, crops)


@pytest.fixture(scope="module")
def converted(keras_files, tmp_path_factory):
    out = {}
    root = tmp_path_factory.mktemp("bundles")
    for key, path in keras_files["files"].items():
        kconv.convert_keras_weights(path, str(root / key))
        out[key] = read_bundle(str(root / key))
    return out


@pytest.mark.parametrize("key", ["keras3_model", "keras2_weights", "keras2_model"])
def test_bundle_gives_keras_probabilities(key, keras_files, converted, crops):
    path = keras_files["files"][key]
    ref = keras_reference(path, crops)
    # the file holds what the model held, and the weights are not trivial
    np.testing.assert_allclose(ref, keras_files["in_memory"], atol=1e-6)
    assert len(set(ref.argmax(axis=1))) >= 4 and ref.max(axis=1).mean() < 0.8
    ours = converted[key].predictor()(crops)
    assert np.abs(ours - ref).max() <= TOL, np.abs(ours - ref).max()
    meta = converted[key].metadata
    assert meta["input"]["scale"] == pytest.approx(1 / 127.5) and np.all(converted[key].mean == 127.5)
    assert meta["source"]["keras_layout"] == ("weights" if key == "keras2_weights" else "model")
    assert meta["source"]["is_release_file"] is False and meta["metrics"] == {}


def test_the_release_file_gets_the_authors_facts(keras_files, tmp_path):
    """Only a file with the released md5 is described with the authors' training and accuracy."""
    path = keras_files["files"]["keras2_model"]
    md5 = hashlib.md5(open(path, "rb").read()).hexdigest()
    kconv.convert_keras_weights(path, str(tmp_path / "m"), published_md5=md5)
    b = read_bundle(str(tmp_path / "m"))
    assert b.metadata["source"]["is_release_file"] is True
    assert b.metadata["metrics"]["test_accuracy (authors)"] == 0.89
    assert b.metadata["authors"] == ["Tanel Parnamaa", "Leopold Parts"]
    assert "checkpoint | epoch 22, validation accuracy 0.902" in open(tmp_path / "m" / "readme.md").read()


def test_theano_kernels_are_flipped_back(converted):
    a = read_caffemodel(converted["theano_weights"].weights_path)
    b = read_caffemodel(converted["keras2_weights"].weights_path)
    assert list(a) == list(b)
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_array_equal(x, y)


def test_deploy_carries_keras_epsilon(converted):
    net = read_prototxt(converted["keras2_model"].deploy_path, caffe_pb2.NetParameter)
    eps = [layer.batch_norm_param.eps for layer in net.layer if layer.type == "BatchNorm"]
    assert len(eps) == 10 and all(e == pytest.approx(1e-3) for e in eps)


def test_naive_conversions_would_be_caught(keras_files, converted, crops):
    """What the 1e-4 checks guard against: skipping fc1's permutation or Keras' epsilon moves the output."""
    bundle = converted["keras2_weights"]
    ref = keras_files["in_memory"]
    kw = kconv.read_keras_h5(keras_files["files"]["keras2_weights"])
    x = bundle.preprocess(crops)

    def run(params, eps=None):
        net_param = read_prototxt(bundle.deploy_path, caffe_pb2.NetParameter)
        if eps is not None:
            for layer in net_param.layer:
                if layer.type == "BatchNorm":
                    layer.batch_norm_param.eps = eps
        net = Net(net_param, phase="TEST", seed=0)
        net.load_weights(params)
        import torch
        with torch.no_grad():
            return net.forward(data=torch.from_numpy(x))["prob"].numpy()

    params = kconv.keras_to_caffe_params(kw)
    assert np.abs(run(params) - ref).max() <= TOL
    naive = dict(params)
    naive["fc1"] = [kw.layers["ip1"]["kernel"].T.copy(), params["fc1"][1]]
    assert np.abs(run(naive) - ref).max() > 1e-2
    assert np.abs(run(params, eps=1e-5) - ref).max() > TOL


@pytest.mark.caffe
def test_real_caffe_data_layer_gives_keras_probabilities(keras_files, converted, crops, tmp_path,
                                                         caffe_root_present):
    """Real Caffe reads the raw crops from an LMDB and applies the bundle's mean and scale itself."""
    bundle = converted["keras2_model"]
    n = len(crops)
    write_datum_lmdb(str(tmp_path / "crops_lmdb"),
                     [(f"plate01/{i}-0-0-0.png", c, 0) for i, c in enumerate(crops)], shuffle=False)
    results = {}
    for variant in ("mean_file", "mean_value"):
        net = read_prototxt(bundle.deploy_path, caffe_pb2.NetParameter)
        data = net.layer[0]
        assert data.type == "Input"
        data.Clear()
        data.name, data.type = "data", "Data"
        data.top.append("data")
        data.data_param.source = str(tmp_path / "crops_lmdb")
        data.data_param.backend = caffe_pb2.DataParameter.LMDB
        data.data_param.batch_size = n // 2
        data.transform_param.scale = bundle.input_scale
        if variant == "mean_file":
            data.transform_param.mean_file = bundle.mean_path
        else:  # what the deploy header and the readme say in Caffe's words
            data.transform_param.mean_value.extend([127.5, 127.5])
        write_prototxt(str(tmp_path / f"{variant}.prototxt"), net)
        out = tmp_path / f"{variant}.npy"
        r = caffe_root.run_pycaffe(DATA_LAYER_FORWARD, [str(tmp_path / f"{variant}.prototxt"), bundle.weights_path,
                                                        "prob", str(n), str(out)],
                                   binds=[bundle.path], check=False)
        assert r.returncode == 0, r.stdout[-3000:]
        results[variant] = np.load(out)
    ref = keras_reference(keras_files["files"]["keras2_model"], crops)
    for variant, prob in results.items():
        assert prob.shape == ref.shape
        assert np.abs(prob - ref).max() <= TOL, (variant, np.abs(prob - ref).max())


# ---------------------------------------------------------------- command line and bad files

def _cli(*args):
    return subprocess.run([sys.executable, "analysis/convert_keras_weights.py", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True)


def test_cli_converts_and_says_what_the_file_is(keras_files, tmp_path):
    out = tmp_path / "not" / "yet" / "model"  # parents made as every step makes them (was a traceback)
    r = _cli(keras_files["files"]["keras2_model"], out)
    assert r.returncode == 0, r.stderr
    assert "NOT the released file" in r.stdout
    readme = (out / "readme.md").read_text()
    assert "NOT the authors' released file" in readme and "0.89" not in readme
    assert "scale: 0.007843137718737125" in readme  # Caffe's float32 of 1/127.5


def _copy_without(src, dst, drop=None, reshape=None):
    import h5py
    with h5py.File(src) as a, h5py.File(dst, "w") as b:
        for k, v in a.attrs.items():
            b.attrs[k] = v
        for name in a:
            if name != drop:
                a.copy(name, b)
        if reshape:
            layer, role = reshape
            ds = f"{layer}/{layer}/{role}:0"
            data = b[ds][()]
            del b[ds]
            b.create_dataset(ds, data=data[..., :-1])


def test_cli_refuses_bad_files_and_keeps_the_old_bundle(keras_files, tmp_path):
    src = keras_files["files"]["keras2_weights"]
    out = tmp_path / "model"
    assert _cli(src, out).returncode == 0
    before = (out / "bundle.json").read_bytes()
    (tmp_path / "notes.h5").write_text("not an hdf5 file\n")
    _copy_without(src, tmp_path / "no_ip3.h5", drop="ip3")
    _copy_without(src, tmp_path / "short.h5", reshape=("conv2_1", "kernel"))
    cases = {"notes.h5": "not an HDF5 file", "no_ip3.h5": "'ip3' but the file has no group",
             "short.h5": "layer conv2_1 kernel has shape (3, 3, 64, 127), DeepYeast needs (3, 3, 64, 128)"}
    for name, message in cases.items():
        r = _cli(tmp_path / name, out)
        assert r.returncode == 2, (name, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and name in lines[0] and message in lines[0], (name, r.stderr)
    assert (out / "bundle.json").read_bytes() == before
    with pytest.raises(InputError, match="not a Keras HDF5 file"):
        import h5py
        with h5py.File(tmp_path / "empty.h5", "w"):
            pass
        kconv.read_keras_h5(tmp_path / "empty.h5")


# ---------------------------------------------------------------- fetch

@pytest.fixture
def file_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_fetch_weights_checks_md5(file_server, keras_files, tmp_path):
    root, url = file_server
    data = open(keras_files["files"]["keras2_model"], "rb").read()
    (root / kconv.KERAS_WEIGHTS_FILE).write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    fetch = [sys.executable, "data_prep/fetch_weights.py", "--url", f"{url}/{kconv.KERAS_WEIGHTS_FILE}"]
    r = subprocess.run(fetch + ["--out", str(tmp_path / "w"), "--md5", md5], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = tmp_path / "w" / kconv.KERAS_WEIGHTS_FILE
    assert got.read_bytes() == data and r.stdout.strip() == str(got)
    # the released md5 is the default: this file is not the release, so it is refused and removed
    r = subprocess.run(fetch + ["--out", str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 3 and kconv.KERAS_WEIGHTS_MD5 in r.stderr
    assert not (tmp_path / "x" / kconv.KERAS_WEIGHTS_FILE).exists()
    assert not (tmp_path / "x" / (kconv.KERAS_WEIGHTS_FILE + ".part")).exists()
