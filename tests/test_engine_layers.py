"""deepyeast.engine Net and layers against Caffe's rules, written out in numpy (no Caffe needed).

Real-Caffe parity lives in tests/test_parity_net.py.
"""

import math
import os

import numpy as np
import pytest
import torch

from deepyeast.caffe import caffe_pb2
from deepyeast.caffe.blobs import compute_mean, read_caffemodel, write_mean_binaryproto
from deepyeast.caffe.lmdb import write_datum_lmdb
from deepyeast.caffe.prototxt import parse_prototxt, read_prototxt
from deepyeast.engine import Net
from deepyeast.engine.fillers import caffe_fans, fill
from deepyeast.utils.io import InputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "models", "deepyeast")


def net_from(text):
    return parse_prototxt(text, caffe_pb2.NetParameter)


def input_layer(shapes, tops):
    dims = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in shapes)
    t = " ".join(f'top: "{n}"' for n in tops)
    return f'layer {{ name: "in" type: "Input" {t} input_param {{ {dims} }} }}\n'


# ---------------------------------------------------------------- net construction

def test_phase_level_stage_filtering():
    text = input_layer([(2, 3)], ["x"]) + """
    layer { name: "train_only" type: "ReLU" bottom: "x" top: "a" include { phase: TRAIN } }
    layer { name: "test_only" type: "ReLU" bottom: "x" top: "a" include { phase: TEST } }
    layer { name: "not_test" type: "Sigmoid" bottom: "x" top: "b" exclude { phase: TEST } }
    layer { name: "level2" type: "TanH" bottom: "x" top: "c" include { min_level: 2 } }
    layer { name: "staged" type: "TanH" bottom: "x" top: "d" include { stage: "deploy" not_stage: "fast" } }
    """
    names = lambda **kw: Net(net_from(text), **kw).layer_names
    assert names(phase="TRAIN") == ["in", "train_only", "not_test"]
    assert names(phase="TEST") == ["in", "test_only"]
    assert names(phase="TEST", level=2) == ["in", "test_only", "level2"]
    assert names(phase="TEST", stages=["deploy"]) == ["in", "test_only", "staged"]
    assert names(phase="TEST", stages=["deploy", "fast"]) == ["in", "test_only"]


def test_bad_nets_are_reported_with_the_layer():
    base = input_layer([(2, 3, 4, 4)], ["x"])
    cases = {
        'layer { name: "a" type: "ReLU" bottom: "nope" top: "y" }': 'unknown bottom blob "nope"',
        'layer { name: "a" type: "ReLU" bottom: "x" top: "x2" }\n'
        'layer { name: "b" type: "ReLU" bottom: "x" top: "x2" }': 'top blob "x2" is already produced',
        'layer { name: "a" type: "LRN" bottom: "x" top: "y" }': 'unsupported layer type "LRN"',
        'layer { name: "a" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: STOCHASTIC kernel_size: 2 } }':
            "STOCHASTIC",
        'layer { name: "a" type: "ReLU" bottom: "x" top: "y" pooling_param { pool: MAX } }':
            "field 'pooling_param' is not supported",
        'layer { name: "a" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 } }':
            "kernel_size",
        'layer { name: "a" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 kernel_size: 7 } }':
            "does not fit",
        'layer { name: "a" type: "ReLU" bottom: "x" top: "y" param { lr_mult: 1 } }': "1 param specs",
        'layer { name: "a" type: "Eltwise" bottom: "x" bottom: "x" top: "y" eltwise_param { operation: MAX coeff: 1 coeff: 2 } }':
            "coeff is only allowed",
    }
    for body, expected in cases.items():
        with pytest.raises(InputError) as err:
            Net(net_from(base + body), phase="TEST")
        assert 'layer "a"' in str(err.value) or 'layer "b"' in str(err.value), str(err.value)
        assert expected in str(err.value), str(err.value)


def test_unsupported_subfield_names_field():
    text = input_layer([(2, 3)], ["x"]) + """
    layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y"
      inner_product_param { num_output: 2 weight_filler { type: "bilinear" } } }"""
    with pytest.raises(InputError, match='layer "fc".*unsupported filler type \'bilinear\''):
        Net(net_from(text), phase="TEST")
    text = input_layer([(2, 3)], ["x"]) + """
    layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y"
      inner_product_param { num_output: 2 weight_filler { type: "constant" std: 3 } } }"""
    with pytest.raises(InputError, match="filler field 'std'"):
        Net(net_from(text), phase="TEST")


def test_inner_product_shape_change_is_reported_on_load(tmp_path):
    ip = """layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 4 } }"""
    small = Net(net_from(input_layer([(2, 10)], ["x"]) + ip), phase="TEST", seed=0)
    small.save_caffemodel(tmp_path / "w.caffemodel")
    big = Net(net_from(input_layer([(2, 3, 2, 2)], ["x"]) + ip), phase="TEST", seed=0)
    with pytest.raises(InputError) as err:
        big.load_caffemodel(tmp_path / "w.caffemodel")
    msg = str(err.value)
    assert 'layer "fc"' in msg and "(4, 10)" in msg and "(4, 12)" in msg


def test_legacy_net_inputs_and_outputs_sorted():
    text = """input: "x" input_shape { dim: 2 dim: 3 }
    layer { name: "s" type: "Sigmoid" bottom: "x" top: "z_out" }
    layer { name: "t" type: "TanH" bottom: "x" top: "a_out" }"""
    net = Net(net_from(text), phase="TEST")
    assert net.output_names == ["a_out", "z_out"]
    x = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)
    out = net(x=x)
    np.testing.assert_allclose(out["z_out"].numpy(), 1 / (1 + np.exp(-x)), rtol=1e-6)
    with pytest.raises(InputError, match="expects"):
        net(x=np.zeros((2, 4), np.float32))
    with pytest.raises(InputError, match="not an Input blob"):
        net(y=x)


def test_params_order_lr_mult_loss_weights_and_inplace():
    text = input_layer([(4, 3), (4,)], ["x", "label"]) + """
    layer { name: "fc" type: "InnerProduct" bottom: "x" top: "h"
      param { lr_mult: 2 decay_mult: 0 } param { lr_mult: 0 }
      inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 } } }
    layer { name: "bn" type: "BatchNorm" bottom: "h" top: "h" }
    layer { name: "sc" type: "Scale" bottom: "h" top: "h" scale_param { bias_term: true } }
    layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "h" bottom: "label" top: "loss" }
    layer { name: "aux" type: "Eltwise" bottom: "h" bottom: "h" top: "aux" loss_weight: 0.5 }
    """
    net = Net(net_from(text), phase="TRAIN", seed=1)
    info = [(p.layer_name, p.index, tuple(p.tensor.shape), p.lr_mult, p.decay_mult) for p in net.learnable_params]
    assert info == [("fc", 0, (5, 3), 2.0, 0.0), ("fc", 1, (5,), 0.0, 1.0),
                    ("bn", 0, (5,), 0.0, 1.0), ("bn", 1, (5,), 0.0, 1.0), ("bn", 2, (1,), 0.0, 1.0),
                    ("sc", 0, (5,), 1.0, 1.0), ("sc", 1, (5,), 1.0, 1.0)]
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    y = np.array([0, 1, 2, 4], np.float32)
    blobs = {k: v.detach() for k, v in net(x=x, label=y).items()}
    # in-place: "h" holds the value after ReLU; loss = softmax loss + 0.5 * sum(2h)
    assert float(blobs["h"].detach().min()) >= 0
    expected = float(blobs["loss"]) + 0.5 * float((2 * blobs["h"]).sum())
    assert float(net.loss.detach()) == pytest.approx(expected, rel=1e-6)
    net.loss.backward()
    grads = [p.tensor.grad for p in net.learnable_params]
    assert grads[0] is not None and grads[1] is None  # lr_mult 0 -> no gradient, as in Caffe
    assert all(g is None for g in grads[2:5])            # BatchNorm statistics never get one
    assert grads[5] is not None and grads[6] is not None


def test_implicit_split_adds_gradients():
    text = input_layer([(3, 4)], ["x"]) + """
    layer { name: "fc" type: "InnerProduct" bottom: "x" top: "h" inner_product_param { num_output: 2
      weight_filler { type: "uniform" min: -1 max: 1 } } }
    layer { name: "a" type: "Sigmoid" bottom: "h" top: "a" loss_weight: 1 }
    layer { name: "b" type: "TanH" bottom: "h" top: "b" loss_weight: 3 }"""
    net = Net(net_from(text), phase="TRAIN", seed=2)
    x = torch.randn(3, 4)
    net(x=x)
    net.loss.backward()
    w, b = (t.detach().clone().requires_grad_() for t in net.layer("fc").blobs)
    h = x @ w.t() + b
    (torch.sigmoid(h).sum() + 3 * torch.tanh(h).sum()).backward()
    torch.testing.assert_close(net.layer("fc").blobs[0].grad, w.grad)


# ---------------------------------------------------------------- fillers

def test_fillers_follow_caffe_fans():
    g = torch.Generator().manual_seed(0)
    shape = (64, 32, 3, 3)
    fan_in, fan_out = caffe_fans(shape)
    assert (fan_in, fan_out) == (32 * 9, 64 * 9)
    assert caffe_fans((7,)) == (1, 7)
    for kind, norm, n in (("xavier", "FAN_IN", fan_in), ("xavier", "FAN_OUT", fan_out),
                          ("xavier", "AVERAGE", (fan_in + fan_out) / 2), ("msra", "FAN_IN", fan_in),
                          ("msra", "AVERAGE", (fan_in + fan_out) / 2)):
        f = caffe_pb2.FillerParameter(type=kind, variance_norm=getattr(caffe_pb2.FillerParameter, norm))
        w = fill(shape, f, g)
        std = math.sqrt(1.0 / n) if kind == "xavier" else math.sqrt(2.0 / n)  # uniform(+-sqrt(3/n)) has var 1/n
        assert float(w.std()) == pytest.approx(std, rel=0.03), (kind, norm)
        if kind == "xavier":
            assert float(w.abs().max()) <= math.sqrt(3.0 / n) + 1e-7
    w = fill((4, 5), caffe_pb2.FillerParameter(type="constant", value=0.25), g)
    assert torch.all(w == 0.25)
    w = fill((1000,), caffe_pb2.FillerParameter(type="uniform", min=2, max=3), g)
    assert 2 <= float(w.min()) and float(w.max()) <= 3
    w = fill((100, 400), caffe_pb2.FillerParameter(type="gaussian", std=1, sparse=25), g)
    assert float((w != 0).float().mean()) == pytest.approx(0.25, abs=0.02)


# ---------------------------------------------------------------- pooling

def caffe_pool_ref(x, k, s, p, method, ceil=True):
    """Caffe's pooling loops on a numpy N x C x H x W array (square kernel/stride/pad)."""
    n, c, h, w = x.shape

    def out_size(size):
        o = (int(math.ceil((size + 2 * p - k) / s)) if ceil else (size + 2 * p - k) // s) + 1
        if p and (o - 1) * s >= size + p:
            o -= 1
        return o
    oh, ow = out_size(h), out_size(w)
    y = np.zeros((n, c, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s - p, j * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs:he, ws:we]
            y[:, :, i, j] = win.max(axis=(2, 3)) if method == "MAX" else win.sum(axis=(2, 3)) / size
    return y


@pytest.mark.parametrize("k,s,p,size", [(2, 2, 0, 7), (3, 2, 0, 8), (3, 2, 1, 7), (3, 3, 1, 10), (2, 1, 1, 5),
                                        (3, 2, 2, 6)])  # pad below the kernel, as Caffe requires
@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_matches_caffe_loops(k, s, p, size, method):
    assert p < k
    text = input_layer([(2, 3, size, size)], ["x"]) + f"""
    layer {{ name: "pool" type: "Pooling" bottom: "x" top: "y"
      pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} }} }}"""
    net = Net(net_from(text), phase="TEST")
    x = np.random.default_rng(k * 100 + s * 10 + p).normal(size=(2, 3, size, size)).astype(np.float32)
    y = net(x=x)["y"].numpy()
    ref = caffe_pool_ref(x.astype(np.float64), k, s, p, method)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_global_and_floor_pooling():
    text = input_layer([(2, 3, 5, 7)], ["x"]) + """
    layer { name: "g" type: "Pooling" bottom: "x" top: "g" pooling_param { pool: AVE global_pooling: true } }
    layer { name: "f" type: "Pooling" bottom: "x" top: "f" pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR } }"""
    net = Net(net_from(text), phase="TEST")
    x = torch.randn(2, 3, 5, 7)
    out = net(x=x)
    torch.testing.assert_close(out["g"][:, :, 0, 0], x.mean((2, 3)))
    assert tuple(out["f"].shape) == (2, 3, 2, 3)


# ---------------------------------------------------------------- batch norm

def test_batchnorm_running_statistics_follow_caffe(tmp_path):
    text = input_layer([(4, 3, 2, 2)], ["x"]) + """
    layer { name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { moving_average_fraction: 0.9 eps: 0.01 } }"""
    train = Net(net_from(text), phase="TRAIN")
    test = Net(net_from(text), phase="TEST").share_params_from(train)
    rng = np.random.default_rng(0)
    s0 = np.zeros(3)
    s1 = np.zeros(3)
    s2 = 0.0
    m = 4 * 2 * 2
    for _ in range(2):
        x = rng.normal(2, 3, size=(4, 3, 2, 2)).astype(np.float32)
        y = train(x=x)["y"].detach().numpy()
        mean = x.mean(axis=(0, 2, 3))
        var = x.var(axis=(0, 2, 3))
        np.testing.assert_allclose(y, (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 0.01),
                                   rtol=1e-4, atol=1e-5)
        s2 = 0.9 * s2 + 1
        s0 = 0.9 * s0 + mean
        s1 = 0.9 * s1 + var * m / (m - 1)
    blobs = [b.numpy() for b in train.layer("bn").blobs]
    np.testing.assert_allclose(blobs[0], s0, rtol=1e-5)
    np.testing.assert_allclose(blobs[1], s1, rtol=1e-5)
    np.testing.assert_allclose(blobs[2], [s2], rtol=1e-6)
    # TEST phase uses the shared global statistics blob / scale factor
    x = rng.normal(size=(4, 3, 2, 2)).astype(np.float32)
    y = test(x=x)["y"].numpy()
    np.testing.assert_allclose(y, (x - (s0 / s2)[None, :, None, None]) / np.sqrt((s1 / s2)[None, :, None, None] + 0.01),
                               rtol=1e-4, atol=1e-5)
    # scale factor 0 -> statistics 0 (Caffe)
    fresh = Net(net_from(text), phase="TEST")
    np.testing.assert_allclose(fresh(x=x)["y"].numpy(), x / np.sqrt(0.01), rtol=1e-5)


def test_fused_and_unfused_batchnorm_scale_relu_agree():
    text = input_layer([(6, 4, 5, 5)], ["x"]) + """
    layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 3 kernel_size: 3
      weight_filler { type: "xavier" } } }
    layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" }
    layer { name: "sc" type: "Scale" bottom: "c" top: "c" scale_param { bias_term: true
      filler { type: "uniform" min: 0.5 max: 1.5 } bias_filler { type: "uniform" min: -1 max: 1 } } }
    layer { name: "r" type: "ReLU" bottom: "c" top: "c" loss_weight: 1 }"""
    x = torch.randn(6, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    results, grads = [], []
    for fuse in (True, False):
        net = Net(net_from(text), phase="TRAIN", seed=4, fuse=fuse)
        assert any(s.fused for s in net._steps) == fuse
        net(x=x)
        (net.loss * 0 + (net.blobs["c"] ** 2).sum()).backward()
        results.append([net.blobs["c"].detach()] + [p.tensor.detach().clone() for p in net.learnable_params])
        grads.append([p.tensor.grad for p in net.learnable_params if p.tensor.grad is not None])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # a gradient sums ~160 products: its rounding scales with the largest gradient (~50 here), not with
    # itself. The convolution's bias gradient is 0 in exact arithmetic (BatchNorm removes the batch mean),
    # so it holds rounding alone, ~1e-5 either way: an absolute 1e-5 failed for 2% of random inputs.
    scale = max(float(g.abs().max()) for g in grads[1])
    assert scale > 1
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * scale)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("conv", ["num_output: 6 kernel_size: 3 pad: 1",
                                  "num_output: 4 kernel_size: 3 stride: 2 bias_term: false",
                                  "num_output: 6 kernel_size: 3 dilation: 2 pad: 2 group: 2"])
def test_convolution_relu_fused_by_onednn_gives_the_unfused_numbers(conv, dtype):
    """A Convolution followed by an in-place ReLU (a folded deploy net) runs as one oneDNN call with the
    ReLU as post-op where nothing needs a gradient (issue 24); same numbers as conv2d then relu, and
    training (gradients) still takes the autograd path."""
    text = input_layer([(3, 4, 9, 11)], ["x"]) + f"""
    layer {{ name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param {{ {conv}
      weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "gaussian" std: 0.5 }} }} }}
    layer {{ name: "r" type: "ReLU" bottom: "c" top: "c" }}"""
    net = Net(net_from(text), phase="TEST", seed=2)
    layer = net.layer("c")
    for t in layer.blobs:
        t.data = t.data.to(dtype)
    x = torch.randn(3, 4, 9, 11).to(dtype).contiguous(memory_format=torch.channels_last)
    want = torch.relu(layer.forward([x])[0]).detach()
    assert (want == 0).any() and (want > 0).any()
    with torch.inference_mode():
        with torch.profiler.profile() as prof:
            got = net(x=x)["c"]
    assert any(e.name == "mkldnn::_convolution_pointwise" for e in prof.events())
    assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # with gradients needed: conv2d + relu_ under autograd, same values
    got = net(x=x.clone().requires_grad_(True))["c"]
    assert got.requires_grad
    torch.testing.assert_close(got.detach(), want, rtol=0, atol=0)


# ---------------------------------------------------------------- losses, accuracy, eltwise, dropout

@pytest.mark.parametrize("mode,ignore", [("FULL", None), ("VALID", 2), ("VALID", None), ("BATCH_SIZE", 2),
                                         ("NONE", None)])
def test_softmax_with_loss_normalization(mode, ignore):
    ig = f"ignore_label: {ignore}" if ignore is not None else ""
    text = input_layer([(3, 4, 2), (3, 2)], ["x", "label"]) + f"""
    layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: "loss"
      loss_param {{ normalization: {mode} {ig} }} }}"""
    net = Net(net_from(text), phase="TRAIN")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4, 2)).astype(np.float32)
    lab = np.array([[0, 2], [3, 2], [1, 1]], np.float32)
    xt = torch.tensor(x, requires_grad=True)
    net(x=xt, label=lab)
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    valid = np.ones_like(lab, bool) if ignore is None else lab != ignore
    nll = -np.log(np.take_along_axis(p, lab.astype(int)[:, None, :], 1)[:, 0, :])
    norm = {"FULL": 6, "VALID": valid.sum(), "BATCH_SIZE": 3, "NONE": 1}[mode]
    assert float(net.loss.detach()) == pytest.approx((nll * valid).sum() / norm, rel=1e-5)
    net.loss.backward()
    onehot = np.zeros_like(p)
    np.put_along_axis(onehot, lab.astype(int)[:, None, :], 1, axis=1)
    np.testing.assert_allclose(xt.grad.numpy(), (p - onehot) * valid[:, None, :] / norm, atol=1e-6)


def _loss_net(loss_param="", shapes=((3, 4, 2), (3, 2))):
    text = input_layer(list(shapes), ["x", "label"]) + f"""
    layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: "loss" {loss_param} }}"""
    return Net(net_from(text), phase="TRAIN")


@pytest.mark.parametrize("labels,first", [([[0, 4], [1, 2], [3, 0]], 4),        # == the class count
                                          ([[0, 1], [-1, 2], [7, 0]], -1),      # negative, then too big
                                          ([[0, 5], [1, 2], [6, 0]], 5)])       # the first of two is named
def test_softmax_with_loss_refuses_labels_outside_the_classes(labels, first):
    """Caffe reads any label as an index; ours stops at the first one outside 0..C-1 and names it."""
    net = _loss_net()
    x = np.zeros((3, 4, 2), np.float32)
    with pytest.raises(InputError, match=rf'layer "loss".*: label value {first} is outside 0\.\.3$'):
        net(x=x, label=np.array(labels, np.float32))
    net(x=x, label=np.array([[0, 3], [1, 2], [3, 0]], np.float32))  # 0 and C-1 are fine


def test_softmax_with_loss_label_count_checked_at_every_forward():
    """Labels that stop matching the predictions after setup (e.g. a reshaped input) are refused with both counts."""
    layer = _loss_net().layer("loss")
    with pytest.raises(InputError, match=r'layer "loss".*: the label blob has 5 values \(shape \(5\)\) but the '
                                         r"predictions need 6 \(outer 3 x inner 2\)"):
        layer.forward([torch.zeros(3, 4, 2), torch.zeros(5)])


def test_softmax_with_loss_computes_in_float64_or_float32():
    """float64 logits keep float64 (a loss of 1e-10 survives); bfloat16 logits are computed in float32, as Caffe."""
    layer = _loss_net().layer("loss")
    lab = torch.tensor([[0, 3], [1, 2], [3, 0]], dtype=torch.float32)
    x = torch.zeros(3, 4, 2, dtype=torch.float64)
    x.scatter_(1, lab.long().unsqueeze(1), 30.0)  # p_label = 1 / (1 + 3 e^-30): loss ~ 3 e^-30 per item
    loss64 = layer.forward([x, lab])[0]
    assert loss64.dtype == torch.float64 and 0 < float(loss64) == pytest.approx(3 * math.exp(-30), rel=1e-9)
    assert float(layer.forward([x.float(), lab])[0]) == 0.0  # float32 rounds p_label to 1
    xb = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    got = layer.forward([xb, lab])[0]
    assert got.dtype == torch.float32
    assert float(got) == float(layer.forward([xb.float(), lab])[0])


def test_softmax_with_loss_valid_normalization_counts_one_label_as_one():
    """VALID with one label left divides by 1 (not by a clamp above 1); with none left the loss is 0, not NaN."""
    net = _loss_net("loss_param { normalization: VALID ignore_label: 2 }")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 4, 2)).astype(np.float32)
    lab = np.array([[2, 2], [2, 1], [2, 2]], np.float32)
    net(x=x, label=lab)
    p = np.exp(x[1, :, 1]) / np.exp(x[1, :, 1]).sum()
    assert float(net.loss.detach()) == pytest.approx(-np.log(p[1]), rel=1e-6)
    net(x=x, label=np.full((3, 2), 2, np.float32))
    assert float(net.loss.detach()) == 0.0


def test_accuracy_top_k_and_ties():
    text = input_layer([(4, 3), (4,)], ["x", "label"]) + """
    layer { name: "a1" type: "Accuracy" bottom: "x" bottom: "label" top: "a1" top: "per_class" }
    layer { name: "a2" type: "Accuracy" bottom: "x" bottom: "label" top: "a2" accuracy_param { top_k: 2 } }
    layer { name: "ai" type: "Accuracy" bottom: "x" bottom: "label" top: "ai" accuracy_param { ignore_label: 0 } }"""
    net = Net(net_from(text), phase="TEST")
    x = np.array([[3, 2, 1], [1, 1, 0], [1, 1, 0], [0, 5, 4]], np.float32)
    lab = np.array([0, 1, 0, 2], np.float32)
    out = net(x=x, label=lab)
    # a tie with another class counts against the label (real Caffe 1.0): items 1 and 2 are misses
    assert float(out["a1"]) == pytest.approx(1 / 4)
    assert float(out["a2"]) == pytest.approx(4 / 4)
    assert float(out["ai"]) == pytest.approx(0 / 2)
    np.testing.assert_allclose(out["per_class"].numpy(), [0.5, 0.0, 0.0])


def test_eltwise_max_routes_gradient_like_caffe():
    text = input_layer([(5,), (5,), (5,)], ["a", "b", "c"]) + """
    layer { name: "m" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" top: "m" loss_weight: 1
      eltwise_param { operation: MAX } }"""
    net = Net(net_from(text), phase="TRAIN")
    a = torch.tensor([1., 2., 3., 0., 5.], requires_grad=True)
    b = torch.tensor([1., 1., 4., 0., 5.], requires_grad=True)
    c = torch.tensor([0., 2., 4., 1., 5.], requires_grad=True)
    out = net(a=a, b=b, c=c)
    net.loss.backward()
    np.testing.assert_array_equal(out["m"].detach().numpy(), [1, 2, 4, 1, 5])
    # a==b -> b; a > b but c ties -> a keeps it; b==c -> b (strictly larger needed to move on)
    np.testing.assert_array_equal(a.grad.numpy(), [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(b.grad.numpy(), [1, 0, 1, 0, 1])
    np.testing.assert_array_equal(c.grad.numpy(), [0, 0, 0, 1, 0])


def test_dropout_scales_in_train_and_passes_in_test():
    text = input_layer([(200, 50)], ["x"]) + """
    layer { name: "d" type: "Dropout" bottom: "x" top: "y" dropout_param { dropout_ratio: 0.3 } }"""
    x = torch.ones(200, 50)
    y = Net(net_from(text), phase="TRAIN", seed=0)(x=x)["y"]
    vals = np.unique(y.numpy())
    np.testing.assert_allclose(vals, [0.0, 1 / 0.7], rtol=1e-6)
    assert float((y == 0).float().mean()) == pytest.approx(0.3, abs=0.02)
    torch.testing.assert_close(Net(net_from(text), phase="TEST")(x=x)["y"], x)


# ---------------------------------------------------------------- data layer, weights, sharing

def make_lmdb(tmp_path, n=7, shape=(2, 6, 5)):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(n,) + shape, dtype=np.uint8)
    labels = np.arange(n) % 4
    write_datum_lmdb(tmp_path / "db", [(f"r{i}", images[i], int(labels[i])) for i in range(n)],
                             shuffle=False)
    mean = compute_mean(images)
    write_mean_binaryproto(tmp_path / "mean.binaryproto", mean)
    return images, labels, mean


def data_net(crop=0, mirror=False, batch=3, scale=1.0):
    return net_from(f"""
    layer {{ name: "d" type: "Data" top: "data" top: "label"
      transform_param {{ mean_file: "mean.binaryproto" crop_size: {crop} mirror: {str(mirror).lower()} scale: {scale} }}
      data_param {{ source: "db" batch_size: {batch} backend: LMDB }} }}""")


def test_data_layer_sequential_with_wraparound(tmp_path):
    images, labels, mean = make_lmdb(tmp_path)
    net = Net(data_net(scale=0.5), phase="TEST", root_dir=str(tmp_path))
    order = [0, 1, 2, 3, 4, 5, 6, 0, 1]
    for start in (0, 3, 6):
        out = net()
        idx = order[start:start + 3]
        np.testing.assert_allclose(out["data"].numpy(), (images[idx] - mean) * 0.5, rtol=1e-6, atol=1e-5)
        np.testing.assert_array_equal(out["label"].numpy(), labels[idx])


def test_data_layer_random_crop_mirror_and_exact_resume(tmp_path):
    images, labels, mean = make_lmdb(tmp_path)
    net = Net(data_net(crop=4, mirror=True), phase="TRAIN", root_dir=str(tmp_path), seed=3)
    centred = (images - mean).astype(np.float32)
    seen_flip = seen_plain = False
    offsets = set()
    for it in range(4):
        out = net()["data"].numpy()
        for j in range(3):
            src = centred[(it * 3 + j) % 7]
            found = False
            for ho in range(src.shape[1] - 4 + 1):
                for wo in range(src.shape[2] - 4 + 1):
                    crop = src[:, ho:ho + 4, wo:wo + 4]
                    if np.allclose(out[j], crop, atol=1e-4):
                        found = seen_plain = True
                    elif np.allclose(out[j], crop[:, :, ::-1], atol=1e-4):
                        found = seen_flip = True
                    if found:
                        offsets.add((ho, wo))
                        break
                if found:
                    break
            assert found, (it, j)
    assert seen_flip and seen_plain and len(offsets) > 1
    state = net.data_state()
    a = [net()["data"].clone() for _ in range(2)]
    net.set_data_state(state)
    b = [net()["data"].clone() for _ in range(2)]
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    # TEST phase crops the centre
    test = Net(data_net(crop=4), phase="TEST", root_dir=str(tmp_path))
    np.testing.assert_allclose(test()["data"].numpy()[0], centred[0][:, 1:5, 0:4], atol=1e-4)


def test_caffemodel_roundtrip_and_weight_sharing(tmp_path):
    text = input_layer([(2, 2, 8, 8)], ["x"]) + """
    layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 3 kernel_size: 3
      weight_filler { type: "msra" } bias_filler { type: "gaussian" std: 1 } } }
    layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" }
    layer { name: "fc" type: "InnerProduct" bottom: "c" top: "y" inner_product_param { num_output: 2
      weight_filler { type: "xavier" } } }"""
    a = Net(net_from(text), phase="TRAIN", seed=1)
    x = torch.randn(2, 2, 8, 8)
    a(x=x)  # updates BatchNorm statistics
    a.save_caffemodel(tmp_path / "a.caffemodel")
    saved = read_caffemodel(tmp_path / "a.caffemodel")
    assert list(saved) == ["c", "bn", "fc"] and saved["c"][0].shape == (3, 2, 3, 3)
    b = Net(net_from(text), phase="TEST", seed=99)
    assert b.load_caffemodel(tmp_path / "a.caffemodel") == ["c", "bn", "fc"]
    c = Net(net_from(text), phase="TEST", seed=98).share_params_from(a)
    torch.testing.assert_close(b(x=x)["y"], c(x=x)["y"])
    with torch.no_grad():
        a.layer("fc").blobs[0].add_(1.0)
    assert a.layer("fc").blobs[0] is c.layer("fc").blobs[0]
    assert not torch.allclose(b(x=x)["y"], c(x=x)["y"])


def test_deepyeast_train_val_builds_and_trains_one_step(tmp_path):
    """The real train_val.prototxt on a tiny LMDB: shapes chain, loss finite, gradients where Caffe has them."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 2, 64, 64), dtype=np.uint8)
    for split in ("train", "val"):
        write_datum_lmdb(tmp_path / f"data/deepyeast/{split}_lmdb",
                                 [(f"c{i}", images[i], i % 12) for i in range(6)], shuffle=False)
    write_mean_binaryproto(tmp_path / "data/deepyeast/mean.binaryproto", compute_mean(images))
    proto = read_prototxt(os.path.join(MODELS, "train_val.prototxt"), caffe_pb2.NetParameter)
    for lp in proto.layer:
        if lp.type == "Data":
            lp.data_param.batch_size = 4
    train = Net(proto, phase="TRAIN", seed=0, root_dir=str(tmp_path))
    test = Net(proto, phase="TEST", seed=0, root_dir=str(tmp_path)).share_params_from(train)
    assert train.output_names == ["loss"] and test.output_names == ["accuracy", "loss"]
    assert len(train.learnable_params) == 8 * 2 + 3 * 2 + 10 * 3 + 10 * 2
    train()
    assert math.isfinite(float(train.loss.detach()))
    train.loss.backward()
    for p in train.learnable_params:
        assert (p.tensor.grad is not None) == (p.lr_mult != 0), p.layer_name
    out = test()
    assert 0.0 <= float(out["accuracy"]) <= 1.0


def test_loss_weight_takes_the_value_when_the_layer_runs_and_propagate_down():
    """An in-place layer with a loss weight contributes its own output, not the blob's final value."""
    text = input_layer([(2, 3), (2, 3)], ["x", "z"]) + """
    layer { name: "s" type: "Sigmoid" bottom: "x" top: "x" loss_weight: 1 }
    layer { name: "t" type: "TanH" bottom: "x" top: "x" loss_weight: 2 }
    layer { name: "p" type: "Eltwise" bottom: "x" bottom: "z" top: "p" loss_weight: 1
      propagate_down: true propagate_down: false eltwise_param { operation: PROD } }"""
    net = Net(net_from(text), phase="TRAIN")
    x = torch.randn(2, 3, requires_grad=True)
    z = torch.randn(2, 3, requires_grad=True)
    out = net(x=x, z=z)
    x_in, x = x, x.detach()
    s = torch.sigmoid(x)
    t = torch.tanh(s)
    assert float(net.loss.detach()) == pytest.approx(float(s.sum() + 2 * t.sum() + (t * z.detach()).sum()), rel=1e-5)
    torch.testing.assert_close(out["x"].detach(), t)
    net.loss.backward()
    assert z.grad is None  # propagate_down: false for bottom 1
    assert x_in.grad is not None


def test_bf16_autocast_runs_close_to_float32():
    x = torch.randn(4, 2, 64, 64) * 30
    outs = []
    for mode in (None, "bf16"):
        net = Net(os.path.join(MODELS, "deploy.prototxt"), phase="TEST", seed=1, autocast=mode)
        with torch.no_grad():
            outs.append(net(data=x)["fc3"].float())
    assert float((outs[0] - outs[1]).abs().max() / outs[0].abs().max()) < 0.1
    with pytest.raises(InputError, match="autocast"):
        Net(os.path.join(MODELS, "deploy.prototxt"), phase="TEST", autocast="int8")


def test_dummy_data_refills_only_random_fillers():
    text = """
    layer { name: "dd" type: "DummyData" top: "c" top: "g"
      dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 4 }
        data_filler { type: "constant" value: 1.5 } data_filler { type: "gaussian" std: 1 } } }"""
    net = Net(net_from(text), phase="TEST", seed=0)
    a = {k: v.clone() for k, v in net().items()}
    b = net()
    assert tuple(a["c"].shape) == (2, 3) and torch.all(a["c"] == 1.5) and torch.equal(a["c"], b["c"])
    assert tuple(a["g"].shape) == (4,) and not torch.equal(a["g"], b["g"])


def test_forward_keeping_some_blobs_gives_their_values_and_lets_the_others_go():
    """``Net.forward(keep=...)`` (what the Predictor runs, issue 21: memory flat in the number of
    micrographs): the kept blobs have the values of a full pass, only they are returned and kept in
    ``net.blobs``, and every other activation is freed during the pass, not held to the next one."""
    import weakref

    net = Net(os.path.join(MODELS, "deploy.prototxt"), phase="TEST", seed=1)
    x = torch.randn(3, 2, 64, 64) * 30
    with torch.inference_mode():
        full = {k: v.clone() for k, v in net.forward(data=x).items()}
    alive = []
    for step in net._steps:
        def recording(bottoms, _run=step.run, _tops=step.tops):
            tops = _run(bottoms)
            alive.extend((name, weakref.ref(t)) for name, t in zip(_tops, tops))
            return tops
        step.run = recording
    for keep in (("prob",), ("fc1", "prob"), ("conv2",)):
        del alive[:]
        with torch.inference_mode():
            got = net.forward(keep=keep, data=x)
        assert list(got) == list(keep) and list(net.blobs) == list(keep)
        for name in keep:
            assert torch.equal(got[name], full[name]), name
        held = sorted({name for name, ref in alive if ref() is not None})
        assert held == sorted(set(keep) | {"data"}), held  # conv1, pool1, fc2, ... were let go (the Input
        # layer holds its own value until the next input)
        del got
    with pytest.raises(InputError, match="no blob named fc9"):
        net.forward(keep=("fc9",), data=x)
