"""Float cancellation in the engine (issue 10, item 1).

SoftmaxWithLoss used to clamp the picked log-probability as
``v + (clamp(v) - v).detach()``: for logits around 1e10, ``clamp(v) - v`` rounds
to ``-v`` in float32 and the loss of a diverged net read 0 instead of Caffe's
``-log(FLT_MIN) = 87.3365``.  These tests hold the loss and its gradient to
real Caffe for logits of every size, and cover the other places the audit
changed (average pooling's sum, BatchNorm folding's ``b - mean``).
"""

import json
import math
import textwrap

import numpy as np
import pytest
import torch

from deepyeast.caffe import caffe_pb2, root as caffe_root
from deepyeast.caffe.prototxt import parse_prototxt
from deepyeast.engine import Net
from deepyeast.engine.layers.base import FLT_MIN

FLOOR = -math.log(FLT_MIN)  # 87.33654...

NET = """
name: "huge_logits"
force_backward: true
layer {{ name: "in" type: "Input" top: "x" top: "label"
        input_param {{ shape {{ dim: {n} dim: 3 dim: 2 dim: 2 }} shape {{ dim: {n} dim: 2 dim: 2 }} }} }}
layer {{ name: "score" type: "Convolution" bottom: "x" top: "score"
        convolution_param {{ num_output: 5 kernel_size: 1 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
        {loss_param} }}
"""

# logits of every size: small, moderate (Caffe's probabilities underflow below FLT_MIN),
# huge (1e10: the old cancellation), near float32's limit
SCALES = [0.5, 30.0, 100.0, 1e10, 1e30]
LOSS_PARAMS = {
    "valid": "",
    "ignore": "loss_param { ignore_label: 2 }",
    "batch": "loss_param { normalization: BATCH_SIZE }",
    "none": "loss_param { normalization: NONE ignore_label: 0 }",
}

PYCAFFE = textwrap.dedent("""
    import json, sys
    import numpy as np
    import caffe
    caffe.set_mode_cpu()
    cfg = json.load(open(sys.argv[1]))
    out = {}
    for key, proto in cfg["protos"].items():
        net = caffe.Net(proto, caffe.TRAIN)
        for s, scale in enumerate(cfg["scales"]):
            net.params["score"][0].data[...] = np.load(cfg["weight"]) * np.float32(scale)
            net.params["score"][1].data[...] = 0
            net.blobs["x"].data[...] = np.load(cfg["x"])
            net.blobs["label"].data[...] = np.load(cfg["label"])
            for blob in net.params["score"]:
                blob.diff[...] = 0  # pycaffe's backward adds to the parameter diffs
            net.forward()
            net.backward()
            out["%s/%d/loss" % (key, s)] = np.array(net.blobs["loss"].data)
            out["%s/%d/dw" % (key, s)] = net.params["score"][0].diff.copy()
            out["%s/%d/dx" % (key, s)] = net.blobs["x"].diff.copy()
    np.savez(cfg["out"], **out)
""")


def _inputs(n=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3, 2, 2)).astype(np.float32)
    label = rng.integers(0, 5, size=(n, 2, 2)).astype(np.float32)
    weight = rng.normal(size=(5, 3, 1, 1)).astype(np.float32)
    return x, label, weight


def _ours(proto_text, x, label, weight, scale):
    net = Net(parse_prototxt(proto_text, caffe_pb2.NetParameter), phase="TRAIN", seed=0)
    layer = net.layer("score")
    with torch.no_grad():
        layer.blobs[0].copy_(torch.from_numpy(weight) * np.float32(scale))
        layer.blobs[1].zero_()
    xt = torch.from_numpy(x).requires_grad_(True)
    net.forward(x=xt, label=label)
    net.loss.backward()
    return float(net.loss.detach()), layer.blobs[0].grad.numpy().copy(), xt.grad.numpy().copy()


def test_diverged_logits_give_caffes_clamped_loss_not_zero():
    """Every picked probability underflows: the loss is -log(FLT_MIN) per item, at any logit size."""
    proto = NET.format(n=1, loss_param="")
    x = np.zeros((1, 3, 2, 2), np.float32)
    x[0, 0] = 1.0
    label = np.full((1, 2, 2), 3, np.float32)
    weight = np.zeros((5, 3, 1, 1), np.float32)
    weight[0, 0] = 1.0  # class 0 gets the logit, the label is class 3
    for scale in (1e3, 1e10, 1e20, 3e38):
        loss, dw, _ = _ours(proto, x, label, weight, scale)
        assert loss == pytest.approx(FLOOR, rel=1e-7), scale
        # gradient is Caffe's (p - onehot) / 4, unaffected by the clamp: +1/4 to class 0, -1/4 to class 3
        assert dw[0, 0, 0, 0] == pytest.approx(1.0) and dw[3, 0, 0, 0] == pytest.approx(-1.0), scale


def test_loss_is_finite_and_caffes_when_probabilities_are_exactly_one():
    proto = NET.format(n=1, loss_param="")
    x = np.zeros((1, 3, 2, 2), np.float32)
    x[0, 0] = 1.0
    label = np.zeros((1, 2, 2), np.float32)
    weight = np.zeros((5, 3, 1, 1), np.float32)
    weight[0, 0] = 1.0
    loss, dw, _ = _ours(proto, x, label, weight, 1e10)
    assert loss == 0.0 and not np.any(dw)


def test_probability_top_gets_no_gradient_as_in_caffe():
    text = NET.format(n=2, loss_param="").replace('top: "loss"', 'top: "loss" top: "prob"')
    net = Net(parse_prototxt(text, caffe_pb2.NetParameter), phase="TRAIN", seed=0)
    x, label, _ = _inputs(2)
    net.forward(x=x, label=label)
    assert not net.blobs["prob"].requires_grad
    np.testing.assert_allclose(net.blobs["prob"].detach().sum(1).numpy(), 1.0, rtol=1e-6)


@pytest.mark.caffe
@pytest.mark.usefixtures("caffe_root_present")
def test_softmax_loss_and_gradient_match_real_caffe_for_huge_logits(tmp_path):
    """Loss, weight gradient and input gradient against pycaffe, logits from 0.5 to 1e30,
    four normalization / ignore_label settings, a spatial softmax (inner = 4)."""
    x, label, weight = _inputs(4)
    protos = {}
    for key, lp in LOSS_PARAMS.items():
        path = tmp_path / f"{key}.prototxt"
        path.write_text(NET.format(n=4, loss_param=lp))
        protos[key] = str(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "label.npy", label)
    np.save(tmp_path / "w.npy", weight)
    script = tmp_path / "run.py"
    script.write_text(PYCAFFE)
    cfg = {"protos": protos, "scales": SCALES, "x": str(tmp_path / "x.npy"), "label": str(tmp_path / "label.npy"),
           "weight": str(tmp_path / "w.npy"), "out": str(tmp_path / "caffe.npz")}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    r = caffe_root.run_pycaffe(str(script), [str(tmp_path / "cfg.json")], cwd=str(tmp_path), check=False,
                               timeout=300, env={"GLOG_minloglevel": "2"})
    assert r.returncode == 0, r.stdout[-3000:]
    ref = dict(np.load(tmp_path / "caffe.npz"))
    clamped_seen = 0
    for key, lp in LOSS_PARAMS.items():
        text = NET.format(n=4, loss_param=lp)
        for s, scale in enumerate(SCALES):
            loss, dw, dx = _ours(text, x, label, weight, scale)
            want = float(ref[f"{key}/{s}/loss"])
            where = f"{key}, logits x {scale:g}"
            assert loss == pytest.approx(want, rel=2e-6, abs=1e-6), (where, loss, want)
            np.testing.assert_allclose(dw, ref[f"{key}/{s}/dw"], rtol=1e-5, atol=1e-6, err_msg=where)
            # the input gradient is W^T (p - onehot): W itself is huge here, compare relative to its scale
            gx = ref[f"{key}/{s}/dx"]
            np.testing.assert_allclose(dx, gx, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(gx).max()), err_msg=where)
            if scale >= 1e10:
                assert loss > 10.0, where  # a diverged net never looks converged
                clamped_seen += 1
    assert clamped_seen == 2 * len(LOSS_PARAMS)
