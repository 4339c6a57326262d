"""Caffe formats written and read by our own code (no Caffe needed): errors, atomicity, round trips,
and the DeepYeast prototxts (parse, Caffe parameter shapes, 10.99 M learnable parameters)."""

import os

import numpy as np
import pytest

from deepyeast.caffe import caffe_pb2
from deepyeast.caffe.blobs import (check_mean_shape, compute_mean, read_caffemodel, read_mean_binaryproto,
                                   read_solverstate, write_caffemodel, write_mean_binaryproto,
                                   write_solverstate)
from deepyeast.caffe.lmdb import count_datum_lmdb, read_datum_lmdb, write_datum_lmdb
from deepyeast.caffe.prototxt import read_prototxt, write_prototxt
from deepyeast.engine import Net
from deepyeast.constants import IMAGE_SIZE, N_CHANNELS
from deepyeast.utils.io import InputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "models", "deepyeast")
DATA_SHAPE = (N_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)


def _images(n, shape=(2, 8, 8), seed=0):
    rng = np.random.default_rng(seed)
    return [(f"plate01/{i}-1-1-1.png", rng.integers(0, 256, shape, dtype=np.uint8), i % 3) for i in range(n)]


# ---------------------------------------------------------------- prototxt errors

NET_WITH_TYPO = """name: "n"
layer {
  name: "data"
  type: "Input"
  top: "data"
  input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  convolution_param { num_ouptut: 4 kernel_size: 3 }
}
"""


def test_unknown_field_names_file_line_column_and_layer(tmp_path):
    path = tmp_path / "typo.prototxt"
    path.write_text(NET_WITH_TYPO)
    with pytest.raises(InputError) as err:
        read_prototxt(path, caffe_pb2.NetParameter)
    msg = str(err.value)
    col = NET_WITH_TYPO.splitlines()[12].index("num_ouptut") + 1
    assert msg.startswith(f"{path}:13:{col}:"), msg
    assert "num_ouptut" in msg and 'layer "conv1"' in msg


def test_syntax_error_names_file_line_column(tmp_path):
    path = tmp_path / "broken.prototxt"
    path.write_text('name: "n"\nlayer {\n  name: "a"\n  type: "ReLU"\n  bottom: "x" top: "x"\n  relu_param { negative_slope: oops }\n}\n')
    with pytest.raises(InputError) as err:
        read_prototxt(path, caffe_pb2.NetParameter)
    msg = str(err.value)
    assert msg.startswith(f"{path}:6:"), msg
    assert 'layer "a"' in msg


def test_unknown_layer_type_names_the_layer(tmp_path):
    path = tmp_path / "badtype.prototxt"
    path.write_text(NET_WITH_TYPO.replace("num_ouptut", "num_output").replace('"Convolution"', '"Convolutoin"'))
    with pytest.raises(InputError) as err:
        read_prototxt(path, caffe_pb2.NetParameter)
    msg = str(err.value)
    assert str(path) in msg and 'layer "conv1"' in msg and "Convolutoin" in msg


def test_missing_prototxt_names_file(tmp_path):
    with pytest.raises(InputError, match="nope.prototxt"):
        read_prototxt(tmp_path / "nope.prototxt", caffe_pb2.SolverParameter)


def test_prototxt_round_trip(tmp_path):
    net = read_prototxt(os.path.join(MODELS, "train_val.prototxt"), caffe_pb2.NetParameter)
    out = tmp_path / "copy.prototxt"
    write_prototxt(out, net)
    assert read_prototxt(out, caffe_pb2.NetParameter) == net


# ---------------------------------------------------------------- LMDB

def test_lmdb_round_trip_shuffled_like_convert_imageset(tmp_path):
    items = _images(25)
    n = write_datum_lmdb(tmp_path / "db", items, shuffle=True, seed=3)
    assert n == 25
    images, labels, keys = read_datum_lmdb(tmp_path / "db")
    assert images.dtype == np.uint8 and images.shape == (25, 2, 8, 8)
    assert keys == sorted(keys)
    assert [k[:9] for k in keys] == [f"{i:08d}_" for i in range(25)]
    by_name = {name: (img, lab) for name, img, lab in items}
    order = [k[9:] for k in keys]
    assert sorted(order) == sorted(by_name) and order != [name for name, _, _ in items]
    for key, img, lab in zip(order, images, labels):
        np.testing.assert_array_equal(img, by_name[key][0])
        assert lab == by_name[key][1]
    # same seed, same order
    write_datum_lmdb(tmp_path / "db2", items, shuffle=True, seed=3)
    assert read_datum_lmdb(tmp_path / "db2")[2] == keys


def test_lmdb_grows_map_size(tmp_path):
    items = _images(40, shape=(2, 64, 64))
    write_datum_lmdb(tmp_path / "db", items, shuffle=False, map_size=1 << 16)
    assert count_datum_lmdb(tmp_path / "db") == 40


def test_lmdb_shape_mismatch_names_both_shapes(tmp_path):
    items = _images(3) + [("plate01/odd-1-1-1.png", np.zeros((2, 9, 8), np.uint8), 0)]
    with pytest.raises(InputError) as err:
        write_datum_lmdb(tmp_path / "db", items, shuffle=False)
    msg = str(err.value)
    assert "(2, 9, 8)" in msg and "(2, 8, 8)" in msg and "odd-1-1-1.png" in msg
    assert not os.path.exists(tmp_path / "db")


def test_interrupted_lmdb_write_leaves_nothing_at_final_path(tmp_path):
    def items():
        yield from _images(5)
        raise KeyboardInterrupt  # like Ctrl-C in the middle of a long write

    with pytest.raises(KeyboardInterrupt):
        write_datum_lmdb(tmp_path / "db", items(), shuffle=False)
    assert os.listdir(tmp_path) == []


def test_interrupted_lmdb_rewrite_keeps_the_old_database(tmp_path):
    write_datum_lmdb(tmp_path / "db", _images(4), shuffle=False)

    def items():
        yield from _images(2, seed=9)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_datum_lmdb(tmp_path / "db", items(), shuffle=False)
    assert os.listdir(tmp_path) == ["db"]
    assert count_datum_lmdb(tmp_path / "db") == 4


# ---------------------------------------------------------------- mean image

def test_mean_round_trip_and_value(tmp_path):
    items = _images(7, shape=DATA_SHAPE)
    mean = compute_mean(img for _, img, _ in items)
    expected = np.mean([img.astype(np.float64) for _, img, _ in items], axis=0)
    np.testing.assert_allclose(mean, expected, rtol=1e-6)
    assert mean.dtype == np.float32 and mean.shape == DATA_SHAPE
    write_mean_binaryproto(tmp_path / "mean.binaryproto", mean)
    back = read_mean_binaryproto(tmp_path / "mean.binaryproto")
    np.testing.assert_array_equal(back, mean)
    blob = caffe_pb2.BlobProto.FromString((tmp_path / "mean.binaryproto").read_bytes())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1,) + DATA_SHAPE


def test_mean_shape_mismatch_names_both_shapes():
    with pytest.raises(InputError) as err:
        check_mean_shape(np.zeros((3, 64, 64), np.float32), (2, 64, 64), source="mean.binaryproto")
    msg = str(err.value)
    assert "mean.binaryproto" in msg and "(3, 64, 64)" in msg and "(2, 64, 64)" in msg
    check_mean_shape(np.zeros((2, 64, 64), np.float32), (2, 64, 64))


def test_bad_mean_file_is_named(tmp_path):
    bad = tmp_path / "mean.binaryproto"
    bad.write_bytes(b"\xff\xff\xff not a blob")
    with pytest.raises(InputError, match="mean.binaryproto"):
        read_mean_binaryproto(bad)


# ---------------------------------------------------------------- caffemodel, solverstate

def test_caffemodel_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    params = {"conv1": [rng.normal(size=(4, 2, 3, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)],
              "conv1_bn": [rng.normal(size=4).astype(np.float32), rng.random(4).astype(np.float32),
                           np.array([0.9], np.float32)]}
    write_caffemodel(tmp_path / "w.caffemodel", params, net_name="t",
                             layer_types={"conv1": "Convolution", "conv1_bn": "BatchNorm"})
    back, types = read_caffemodel(tmp_path / "w.caffemodel", with_types=True)
    assert list(back) == ["conv1", "conv1_bn"] and types == {"conv1": "Convolution", "conv1_bn": "BatchNorm"}
    for name in params:
        for a, b in zip(params[name], back[name]):
            assert a.shape == b.shape
            np.testing.assert_array_equal(a, b)


def test_solverstate_round_trip(tmp_path):
    hist = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)]
    write_solverstate(tmp_path / "s.solverstate", 42, hist, learned_net="x.caffemodel", current_step=2)
    st = read_solverstate(tmp_path / "s.solverstate")
    assert st["iter"] == 42 and st["current_step"] == 2 and st["learned_net"] == "x.caffemodel"
    for a, b in zip(hist, st["history"]):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- the DeepYeast model files

def _hand_count():
    """Learnable parameters counted by hand from the paper's architecture."""
    convs = [(2, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 256)]
    n = sum(cin * cout * 9 + cout for cin, cout in convs)
    fcs = [(256 * 8 * 8, 512), (512, 512), (512, 12)]
    n += sum(cin * cout + cout for cin, cout in fcs)
    n += sum(2 * cout for _, cout in convs) + 2 * 512 + 2 * 512  # Scale gamma and beta
    return n


@pytest.mark.parametrize("name", ["train_val", "deploy"])
def test_model_prototxts_have_10_99_million_learnable_parameters(name):
    net = read_prototxt(os.path.join(MODELS, f"{name}.prototxt"), caffe_pb2.NetParameter)
    for phase in ("TRAIN", "TEST"):
        n = Net.for_shapes(net, phase, data_shape=DATA_SHAPE).count_learnable()
        assert n == _hand_count()
        assert round(n / 1e6, 2) == 10.99


def test_deploy_and_train_val_share_parameter_shapes():
    tv = read_prototxt(os.path.join(MODELS, "train_val.prototxt"), caffe_pb2.NetParameter)
    dp = read_prototxt(os.path.join(MODELS, "deploy.prototxt"), caffe_pb2.NetParameter)
    shapes = lambda net: {name: shapes for name, shapes in
                          Net.for_shapes(net, "TEST", data_shape=DATA_SHAPE).param_shapes().items() if shapes}
    assert shapes(tv) == shapes(dp)
    names = list(shapes(dp))
    for i in range(1, 9):
        assert {f"conv{i}", f"conv{i}_bn", f"conv{i}_scale"} <= set(names)
    assert {"fc1", "fc1_bn", "fc1_scale", "fc2", "fc2_bn", "fc2_scale", "fc3"} <= set(names)
    last = Net.for_shapes(dp, "TEST").layers[-1]
    assert last.name == "prob" and last.top_shapes[0][1] == 12


def test_solvers_parse_and_point_at_train_val():
    for name in ("solver", "solver_cpu"):
        s = read_prototxt(os.path.join(MODELS, f"{name}.prototxt"), caffe_pb2.SolverParameter)
        assert s.net == "models/deepyeast/train_val.prototxt"
        assert os.path.isfile(os.path.join(REPO, s.net))
        assert s.momentum == pytest.approx(0.9) and s.weight_decay == pytest.approx(5e-4)
