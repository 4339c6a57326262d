"""Precise BatchNorm statistics (deepyeast bnstats): equal-weight averages with the final weights."""

import numpy as np
import pytest
import torch

from _solver_nets import BATCH, SMALL_CONV_NET, make_lmdb
from deepyeast.caffe import caffe_pb2
from deepyeast.commands import main
from deepyeast.engine import Net
from deepyeast.engine.bnstats import recompute_bn_caffemodel, recompute_bn_statistics
from deepyeast.caffe.blobs import read_caffemodel
from deepyeast.caffe.prototxt import parse_prototxt
from deepyeast.utils.io import InputError


def _net_text(tmp_path):
    lmdb = str(tmp_path / "lmdb")
    make_lmdb(lmdb, n=32)  # 4 batches of 8
    return SMALL_CONV_NET.format(lmdb=lmdb, batch=BATCH, classes=3)


def test_statistics_are_the_equal_weight_average_of_batch_statistics(tmp_path):
    text = _net_text(tmp_path)
    net = Net(parse_prototxt(text, caffe_pb2.NetParameter), phase="TRAIN", seed=3)
    # an independent calculation: the conv1 output of each of the 4 batches, before BatchNorm
    probe = Net(parse_prototxt(text, caffe_pb2.NetParameter), phase="TRAIN", seed=3)
    probe.load_weights({k: [t.detach().clone() for t in v] for k, v in net.layer_params().items()})
    conv = probe.layer("conv1")
    means, variances = [], []
    with torch.no_grad():
        for _ in range(4):
            probe.forward()
            x = torch.nn.functional.conv2d(probe.blobs["data"], conv.blobs[0], conv.blobs[1], padding=1)
            m = x.shape[0] * x.shape[2] * x.shape[3]
            means.append(x.mean(dim=(0, 2, 3)))
            variances.append(x.var(dim=(0, 2, 3), unbiased=False) * m / (m - 1))

    bn = net.layer("conv1_bn")
    with torch.no_grad():
        for blob in (bn.blob0, bn.blob1, bn.blob2):
            blob.fill_(123.0)  # stale statistics that must disappear
    assert recompute_bn_statistics(net, 4) == 1
    s = float(bn.blob2[0])
    assert s == 4.0
    np.testing.assert_allclose((bn.blob0 / s).numpy(), torch.stack(means).mean(0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose((bn.blob1 / s).numpy(), torch.stack(variances).mean(0).numpy(), rtol=1e-4, atol=1e-6)
    assert bn.fraction == parse_prototxt(text, caffe_pb2.NetParameter).layer[3].batch_norm_param.moving_average_fraction


def test_bnstats_command_changes_only_batchnorm_blobs(tmp_path):
    text = _net_text(tmp_path)
    model = tmp_path / "net.prototxt"
    model.write_text(text)
    net = Net(str(model), phase="TRAIN", seed=1)
    for _ in range(3):
        net.forward()
    net.save_caffemodel(str(tmp_path / "w.caffemodel"))
    assert main(["bnstats", "-model", str(model), "-weights", str(tmp_path / "w.caffemodel"),
                 "-out", str(tmp_path / "p.caffemodel"), "-iterations", "4"]) == 0
    before = read_caffemodel(str(tmp_path / "w.caffemodel"))
    after = read_caffemodel(str(tmp_path / "p.caffemodel"))
    assert before.keys() == after.keys()
    for name in before:
        same = all(np.array_equal(a, b) for a, b in zip(before[name], after[name]))
        assert same == (name != "conv1_bn"), name
    assert after["conv1_bn"][2][0] == 4.0


def test_bnstats_in_bf16_collects_close_statistics_and_fp32_stays_the_default(tmp_path):
    """-precision bf16 runs the forward passes under bf16 autocast (as the Solver trains with it): the
    statistics stay float32 and within bf16's rounding of the fp32 ones, but are not the fp32 ones;
    the default is fp32, byte for byte the same as naming it."""
    text = _net_text(tmp_path)
    model = tmp_path / "net.prototxt"
    model.write_text(text)
    net = Net(str(model), phase="TRAIN", seed=1)
    net.save_caffemodel(str(tmp_path / "w.caffemodel"))
    out = {}
    for prec in (None, "fp32", "bf16"):
        path = tmp_path / f"{prec}.caffemodel"
        args = ["bnstats", "-model", str(model), "-weights", str(tmp_path / "w.caffemodel"), "-out", str(path),
                "-iterations", "4"] + (["-precision", prec] if prec else [])
        assert main(args) == 0
        out[prec] = read_caffemodel(str(path))
    assert (tmp_path / "None.caffemodel").read_bytes() == (tmp_path / "fp32.caffemodel").read_bytes()
    fp32, bf16 = out["fp32"]["conv1_bn"], out["bf16"]["conv1_bn"]
    assert all(b.dtype == np.float32 for b in bf16)
    assert bf16[2][0] == fp32[2][0] == 4.0
    np.testing.assert_allclose(bf16[0], fp32[0], rtol=3e-2, atol=3e-3)  # bf16 keeps 8 significant bits
    np.testing.assert_allclose(bf16[1], fp32[1], rtol=6e-2, atol=3e-3)
    assert not np.array_equal(bf16[0], fp32[0])
    for name in out["fp32"]:
        if name != "conv1_bn":
            assert all(np.array_equal(a, b) for a, b in zip(out["fp32"][name], out["bf16"][name])), name


def test_bnstats_refuses_an_unknown_precision_before_writing(tmp_path):
    text = _net_text(tmp_path)
    model = tmp_path / "net.prototxt"
    model.write_text(text)
    Net(str(model), phase="TRAIN", seed=1).save_caffemodel(str(tmp_path / "w.caffemodel"))
    with pytest.raises(InputError, match="precision must be one of"):
        recompute_bn_caffemodel(str(model), str(tmp_path / "w.caffemodel"), str(tmp_path / "o.caffemodel"),
                                iterations=1, precision="fp16")
    assert not (tmp_path / "o.caffemodel").exists()
