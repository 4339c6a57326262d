"""Faults that ran silently, hung or crashed (issue 19, defects 2, 3, 4, 6): each now stops with one line.

* weights that lack a learned layer of the net (the net would run on its filler's random values);
* a mean image holding NaN or infinity (``deepyeast test`` reported accuracy 1, predict blamed a crop);
* a scheduler address where something accepts TCP and never answers, or answers but not as Dask;
* a bioimage.io export onto a full disk (a C++ abort inside TorchScript's save).
"""

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from _solver_nets import CONVEX_NET, IMAGE_SHAPE, make_init_weights, make_lmdb, write_net, write_solver, solver_param
from _steps import one_error_line, run_step
from deepyeast.caffe import caffe_pb2
from deepyeast.caffe.blobs import compute_mean, read_caffemodel, write_caffemodel, write_mean_binaryproto
from deepyeast.caffe.prototxt import read_prototxt
from deepyeast.data.crop_png import encode_crop
from deepyeast.engine import Net
from deepyeast.utils.io import InputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(REPO, "models", "deepyeast", "deploy.prototxt")


def _deepyeast(*argv):
    """``python -m deepyeast ARGV`` in a subprocess (its Caffe-style logging owns stderr); (code, stderr)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "deepyeast", *map(str, argv)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    return r.returncode, r.stderr


class _Err:
    """Stands in for capsys where the stderr text is already at hand."""

    def __init__(self, text):
        self.err = text

    def readouterr(self):
        return self


# ============================================================================ weights lacking a layer

@pytest.fixture(scope="module")
def crops_setup(tmp_path_factory):
    """An archive of 12 crops with a test list, its mean, full random DeepYeast weights and the same without fc3."""
    d = tmp_path_factory.mktemp("faults")
    rng = np.random.default_rng(1)
    images = rng.integers(0, 200, (12, 2, 64, 64), dtype=np.uint8)
    root = d / "archive"
    (root / "plate01").mkdir(parents=True)
    lines = []
    for i, img in enumerate(images):
        rel = f"plate01/{100 + i // 3}-{i}-1-1.png"
        (root / rel).write_bytes(encode_crop(img))
        lines.append(f"{rel} {i % 12}\n")
    (root / "HOwt_test.txt").write_text("".join(lines))
    write_mean_binaryproto(d / "mean.binaryproto", compute_mean(images))
    net = read_prototxt(DEPLOY, caffe_pb2.NetParameter)
    params, types = Net.for_shapes(net).random_weights(seed=3, input_scale=60.0)
    write_caffemodel(d / "full.caffemodel", params, layer_types=types)
    write_caffemodel(d / "no_fc3.caffemodel", {k: v for k, v in params.items() if k != "fc3"},
                     layer_types=types)
    return d


def _predict(d, weights, out, mean=None, *extra):
    return run_step("analysis/predict.py", "--model", DEPLOY, "--weights", d / weights,
                    "--mean", mean or d / "mean.binaryproto", "--archive", d / "archive", "--list", "HOwt_test.txt",
                    "--out", out, *extra)


def test_predict_refuses_weights_lacking_a_layer(crops_setup, tmp_path, capsys):
    d = crops_setup
    assert _predict(d, "full.caffemodel", tmp_path / "ok.csv") == 0, capsys.readouterr().err
    capsys.readouterr()
    for extra in ((), ("--no-fold",)):
        assert _predict(d, "no_fc3.caffemodel", tmp_path / "bad.csv", None, *extra) == 2
        one_error_line(capsys, "no_fc3.caffemodel: no weights for layer(s) fc3 of net", "fillers' random values")
    assert not (tmp_path / "bad.csv").exists()


def test_bundle_and_engine_refuse_weights_lacking_a_layer(crops_setup):
    net = Net(DEPLOY, phase="TEST", seed=0)
    with pytest.raises(InputError, match=r"no_fc3.caffemodel: no weights for layer\(s\) fc3 "):
        net.load_caffemodel(crops_setup / "no_fc3.caffemodel")
    loaded = net.load_caffemodel(crops_setup / "no_fc3.caffemodel", allow_missing=True)
    assert "fc3" not in loaded and "conv1" in loaded


def test_training_from_weights_lacking_a_layer_needs_finetune(tmp_path, capsys):
    """``deepyeast train -weights`` with weights for none of a new layer: refused unless -finetune."""
    lmdb = make_lmdb(str(tmp_path / "lmdb"))
    two = CONVEX_NET.replace('top: "ip"\n', 'top: "ip0"\n', 1).replace(
        'layer {{ name: "loss"',
        'layer {{ name: "ip2" type: "InnerProduct" bottom: "ip0" top: "ip"\n'
        '  inner_product_param {{ num_output: {classes} weight_filler {{ type: "xavier" }} }} }}\n'
        'layer {{ name: "loss"', 1)
    assert two != CONVEX_NET
    net = write_net(str(tmp_path / "net.prototxt"), two, lmdb)
    init = make_init_weights(str(tmp_path / "init.caffemodel"))  # only "ip"
    assert list(read_caffemodel(init)) == ["ip"]
    solver = write_solver(str(tmp_path / "solver.prototxt"),
                          solver_param(net, str(tmp_path / "snap" / "m"), max_iter=2, snapshot=0, test_interval=0))
    code, err = _deepyeast("train", "-solver", solver, "-weights", init, "-progress", "off")
    assert code == 2
    one_error_line(_Err(err), "init.caffemodel: no weights for layer(s) ip2 of net convex", "-finetune")
    code, err = _deepyeast("train", "-solver", solver, "-weights", init, "-finetune", "-progress", "off")
    assert code == 0, err[-2000:]
    assert "Layers starting from their fillers (not in -weights): ip2" in err, err[-2000:]


# ============================================================================ a NaN or inf mean image

@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_mean_is_named_by_deepyeast_test_and_predict(crops_setup, tmp_path, capsys, bad):
    lmdb = make_lmdb(str(tmp_path / "lmdb"))
    mean = np.full(IMAGE_SHAPE, 100, np.float32)
    mean[1, 2, 3] = bad
    write_mean_binaryproto(tmp_path / "bad_mean.binaryproto", mean)
    net = write_net(str(tmp_path / "net.prototxt"), CONVEX_NET.replace(
        "transform_param {{ scale: 0.00390625 }}",
        f'transform_param {{{{ scale: 0.00390625 mean_file: "{tmp_path / "bad_mean.binaryproto"}" }}}}'), lmdb)
    init = make_init_weights(str(tmp_path / "init.caffemodel"))
    code, err = _deepyeast("test", "-model", net, "-weights", init, "-iterations", "2")
    assert code == 2
    one_error_line(_Err(err), "bad_mean.binaryproto: the mean image holds 1 NaN or infinite value(s)", "(1, 2, 3)")
    # predict.py: the mean file is named, not a crop or a row of the list
    big = np.full((2, 64, 64), 50, np.float32)
    big[0, 5, 7] = bad
    write_mean_binaryproto(tmp_path / "bad_big.binaryproto", big)
    assert _predict(crops_setup, "full.caffemodel", tmp_path / "p.csv", tmp_path / "bad_big.binaryproto") == 2
    line = one_error_line(capsys, "bad_big.binaryproto: the mean image holds 1 NaN", "(0, 5, 7)")
    assert "HOwt_test.txt" not in line


# ============================================================================ scheduler that never answers

@pytest.fixture
def listener():
    """A TCP listener on 127.0.0.1 (random port) that accepts and then sends ``reply`` (None: nothing)."""
    servers = []

    def start(reply=None):
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        conns = []

        def serve():
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                conns.append(c)
                if reply is not None:
                    c.sendall(reply)

        threading.Thread(target=serve, daemon=True).start()
        servers.append((srv, conns))
        return f"tcp://127.0.0.1:{srv.getsockname()[1]}"

    yield start
    for srv, conns in servers:
        srv.close()
        for c in conns:
            c.close()


@pytest.mark.parametrize("reply,message", [
    (None, "accepted the connection but sent no Dask handshake within 2 s"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "does not speak Dask's protocol"),
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "does not speak Dask's protocol"),
])
def test_a_scheduler_address_that_is_no_dask_ends_with_one_line(listener, reply, message):
    from deepyeast.analysis.cluster import TaskRunner

    address = listener(reply)
    t0 = time.monotonic()
    with pytest.raises(InputError, match=message) as err:
        with TaskRunner(address, timeout=2):
            pass
    assert time.monotonic() - t0 < 30  # bounded by the timeout, not Dask's untimed handshake
    assert str(err.value).startswith(f"--scheduler {address}: ")


def test_a_silent_scheduler_ends_a_step_with_exit_2(listener, crops_setup, tmp_path, capsys, monkeypatch):
    """Through a step's command line (its default timeout shortened so the test is quick)."""
    from deepyeast.analysis import cluster

    monkeypatch.setattr(cluster.TaskRunner.__init__, "__defaults__",
                        tuple(2 if v == 60 else v for v in cluster.TaskRunner.__init__.__defaults__))
    address = listener(None)
    code = run_step("analysis/cp_features.py", "--archive", crops_setup / "archive", "--list", "HOwt_test.txt",
                    "--out", tmp_path / "cp.csv", "--scheduler", address)
    assert code == 2
    one_error_line(capsys, f"--scheduler {address}: a service there accepted the connection but sent no Dask handshake")
    assert not (tmp_path / "cp.csv").exists()


# ============================================================================ export onto a full disk

@pytest.mark.slow
def test_bioimageio_export_on_a_full_disk_is_exit_3_and_leaves_nothing(tmp_path):
    """A 1 MiB file-size limit (``ulimit -f``; Python ignores SIGXFSZ, so writes fail with EFBIG, as on a
    full disk): the TorchScript weights (about 4 MiB) cannot be written.  Before: SIGABRT inside
    TorchScript's save and a hidden scratch folder left behind."""
    from _bundles import make_bundle

    bundle, _, _ = make_bundle(str(tmp_path / "bundle"), str(tmp_path))
    out = tmp_path / "pkg"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    cmd = f"ulimit -f 1024; exec {sys.executable} analysis/export_bioimageio.py {bundle} --out {out / 'model.zip'}"
    r = subprocess.run(["bash", "-c", cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 3, r.stderr[-3000:]
    one_error_line(_Err(r.stderr), f"{out / 'model.zip'}: cannot write", "disk full or over the file-size limit")
    assert os.listdir(out) == []  # no package, no scratch folder, no lock
