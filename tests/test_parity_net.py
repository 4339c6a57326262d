"""Parity of deepyeast.engine.Net with real Caffe 1.0 (pycaffe in the Caffe root).

Same .caffemodel and inputs on both sides; compared:

* every named blob of deploy.prototxt and of train_val.prototxt's TEST phase (LMDB Data layer,
  mean file, wrap-around), **element-wise**: ``|ours - caffe| <= 1e-5 |caffe| + 1e-5 max|caffe|``
  (:data:`FWD_RTOL`, :data:`FWD_ATOL`; the atol part is relative to the blob's largest value),
  and the class probabilities with no absolute part at all (``<= 1e-5 |caffe|``: a probability of
  1e-6 is checked to 1e-11);
* every parameter gradient of train_val's TRAIN phase (dropout removed) over 12 data draws, away
  from float32 ties (:func:`test_train_gradients_match_caffe_over_seeds_away_from_float32_ties`
  explains the comparison and derives its tolerance from the measured float error);
* BatchNorm's three blobs after one TRAIN forward;
* a small net of the other layer types (grouped dilated convolution, padded
  MAX/AVE pooling with Caffe's rounding, Eltwise, Concat, Bias, Scale with two
  bottoms, leaky ReLU, Sigmoid, TanH, Flatten, global pooling, ignore_label,
  Accuracy top-k, Data crop/scale/mean_value), forward and backward.
Batches are tiny (real Caffe needs ~6 s for a batch-100 DeepYeast step).
"""

import json
import os
import textwrap

import numpy as np
import pytest
import torch

from deepyeast.caffe import caffe_pb2, root as caffe_root
from deepyeast.caffe.blobs import compute_mean, write_mean_binaryproto
from deepyeast.caffe.lmdb import write_datum_lmdb
from deepyeast.caffe.prototxt import parse_prototxt, read_prototxt, write_prototxt
from deepyeast.engine import Net

pytestmark = [pytest.mark.caffe, pytest.mark.usefixtures("caffe_root_present")]

from _deploy import input_train_val  # noqa: E402
from _caffe_parity import (FWD_ATOL, FWD_RTOL, PYCAFFE_SCRIPT, assert_blobs_match, randomize, rel_max,  # noqa: E402,F401
                           run_caffe)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "models", "deepyeast")

def bias_into_batchnorm(net_param):
    """(layer, 1) for Convolution/InnerProduct biases whose top goes straight into a BatchNorm."""
    out = set()
    layers = list(net_param.layer)
    for i, lp in enumerate(layers):
        if lp.type in ("Convolution", "InnerProduct") and i + 1 < len(layers):
            nxt = layers[i + 1]
            if nxt.type == "BatchNorm" and list(nxt.bottom) == [lp.top[0]]:
                out.add((lp.name, 1))
    return out


@pytest.fixture(scope="module")
def deepyeast_weights(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("weights")
    net = Net(os.path.join(MODELS, "deploy.prototxt"), phase="TEST", seed=3)
    randomize(net, 7)
    path = tmp / "w.caffemodel"
    net.save_caffemodel(path)
    return path


def test_deploy_forward_matches_caffe(tmp_path, deepyeast_weights):
    rng = np.random.default_rng(0)
    x = (rng.normal(0, 40, size=(3, 2, 64, 64))).astype(np.float32)
    ref = run_caffe(tmp_path, os.path.join(MODELS, "deploy.prototxt"), deepyeast_weights, "TEST",
                    inputs={"data": x})
    net = Net(os.path.join(MODELS, "deploy.prototxt"), phase="TEST", seed=0)
    net.load_caffemodel(deepyeast_weights)
    with torch.no_grad():
        blobs = net(data=x)
    names = [k.split("/", 1)[1] for k in ref if k.startswith("fwd0/")]
    assert set(names) == set(blobs), (sorted(names), sorted(blobs))
    assert_blobs_match({n: b.numpy() for n, b in blobs.items()}, ref, names)
    # the test input spreads the probabilities: small ones are really checked
    assert float(ref["fwd0/prob"].min()) < 1e-2


def test_train_val_test_phase_matches_caffe(tmp_path, deepyeast_weights):
    """TEST phase with the LMDB Data layer: 3 batches of 4 from 10 records (wraps around)."""
    rng = np.random.default_rng(1)
    root = tmp_path / "root"
    images = rng.integers(0, 256, size=(10, 2, 64, 64), dtype=np.uint8)
    labels = rng.integers(0, 12, size=10)
    write_datum_lmdb(root / "data/deepyeast/val_lmdb",
                             [(f"c{i}", images[i], int(labels[i])) for i in range(10)], shuffle=False)
    write_mean_binaryproto(root / "data/deepyeast/mean.binaryproto", compute_mean(images))
    proto = read_prototxt(os.path.join(MODELS, "train_val.prototxt"), caffe_pb2.NetParameter)
    for lp in proto.layer:
        if lp.type == "Data":
            lp.data_param.batch_size = 4
    write_prototxt(root / "tv.prototxt", proto)
    ref = run_caffe(tmp_path, root / "tv.prototxt", deepyeast_weights, "TEST", forwards=3, cwd=root)
    net = Net(proto, phase="TEST", seed=0, root_dir=str(root))
    net.load_caffemodel(deepyeast_weights)
    for it in range(3):
        with torch.no_grad():
            blobs = net()
        names = [k.split("/", 1)[1] for k in ref if k.startswith(f"fwd{it}/")]
        assert set(names) == set(blobs)
        assert_blobs_match({n: b.numpy() for n, b in blobs.items()}, ref, names, prefix=f"fwd{it}/",
                           prob_blobs=())
    # the label blob follows key order with wrap-around: batch 3 = records 8, 9, 0, 1
    np.testing.assert_array_equal(ref["fwd2/label"], labels[[8, 9, 0, 1]])


GRAD_SEEDS = tuple(range(12))
"""Data draws of the gradient comparison (the old single-draw test passed for 9 of draws 0-13)."""

MARGIN = 4.0
"""A unit counts as tied when it is within MARGIN x the measured float error of its boundary."""

GRAD_FACTOR = 4.0
"""Gradient tolerance: GRAD_FACTOR x the draw's forward float error (see the test's docstring)."""

ELEMENT_FACTOR = 8.0
"""Element-wise gradient tolerance, x the draw's forward float error: the largest of a blob's elements
(up to 1.2 million in fc1) sits further out than its L2 norm.  Measured 2026-12-06 on a 2-core AMD EPYC:
4.1 x e at most (draw 5, fc2's weights; the L2 ratios 2.4 x e at most), above the 4 that had held on
the Intel Xeon; a wrong gradient is off by far more (a missing scale or a wrong sign: ~1 relative)."""

PYCAFFE_SEEDS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import caffe
    caffe.set_mode_cpu()
    cfg = json.load(open(sys.argv[1]))
    net = caffe.Net(cfg["proto"], caffe.TRAIN)
    inputs = np.load(cfg["inputs"])
    out = {}
    for k in cfg["seeds"]:
        net.copy_from(cfg["weights"])          # fresh weights and BatchNorm sums for every draw
        for blobs in net.params.values():
            for b in blobs:
                b.diff[...] = 0                # pycaffe's backward() accumulates into param diffs
        for name in cfg["tops"]:
            net.blobs[name].data[...] = inputs["%d/%s" % (k, name)]
        net.forward()
        net.backward()
        for name in cfg["record"]:
            out["%d/fwd/%s" % (k, name)] = net.blobs[name].data.copy()
        for lname, blobs in net.params.items():
            for i, b in enumerate(blobs):
                out["%d/param/%s/%d" % (k, lname, i)] = b.data.copy()
                out["%d/diff/%s/%d" % (k, lname, i)] = b.diff.copy()
    np.savez(cfg["out"], **out)
""")


def gated_net(proto, shapes):
    """``proto`` with a gate after every ReLU and max pool: the ReLU (or pool) writes ``X_relu`` (``X_raw``),
    an ``Eltwise PROD`` with a 0/1 input ``<that>_gate`` of the same shape gives ``<that>_gated``, which
    the next layer reads.  The ReLU is out of place, so the blob ``X`` keeps the pre-activation.

    Returns (net, gate names, ReLU input blobs, pools as (input blob, raw output, kernel, stride)).
    """
    net = caffe_pb2.NetParameter(name=proto.name)
    body, gates, relu_inputs, pools, current = [], [], [], [], {}
    for lp in proto.layer:
        layer = caffe_pb2.LayerParameter()
        layer.CopyFrom(lp)
        del layer.bottom[:]
        layer.bottom.extend(current.get(b, b) for b in lp.bottom)
        if lp.type in ("ReLU", "Pooling"):
            assert lp.type == "ReLU" or lp.pooling_param.pool == caffe_pb2.PoolingParameter.MAX
            raw = lp.top[0] + ("_relu" if lp.type == "ReLU" else "_raw")
            del layer.top[:]
            layer.top.append(raw)
            gate = caffe_pb2.LayerParameter(name=lp.name + "_gate", type="Eltwise")
            gate.bottom.extend([raw, raw + "_gate"])
            gate.top.append(raw + "_gated")
            gate.eltwise_param.operation = caffe_pb2.EltwiseParameter.PROD
            body += [layer, gate]
            gates.append((raw, shapes[lp.top[0]]))
            if lp.type == "ReLU":
                relu_inputs.append(layer.bottom[0])
            else:
                pp = lp.pooling_param
                pools.append((layer.bottom[0], raw, pp.kernel_size, pp.stride))
            current[lp.top[0]] = raw + "_gated"
        else:
            body.append(layer)
    for layer in body:
        net.layer.add().CopyFrom(layer)
        if layer.type == "Input":
            gi = net.layer.add(name="gates", type="Input")
            for raw, shape in gates:
                gi.top.append(raw + "_gate")
                gi.input_param.shape.add().dim.extend(shape)
    return net, [g for g, _ in gates], relu_inputs, pools


def tied_units(blobs, eps, gates, relu_inputs, pools):
    """Gates with every tied unit closed (0): a ReLU input within MARGIN x eps of 0, or a max-pool
    window whose two largest inputs are within MARGIN x eps of each other.  ``eps``: blob -> the
    measured float error of that blob between the two implementations."""
    out = {n: g.copy() for n, g in gates.items()}
    for z in relu_inputs:
        out[z + "_relu_gate"] *= np.abs(blobs[z]) > MARGIN * eps[z]
    for src, raw, k, stride in pools:
        x = blobs[src]
        n, c = x.shape[:2]
        oh, ow = out[raw + "_gate"].shape[2:]
        assert k == stride and oh * k <= x.shape[2] and ow * k <= x.shape[3]  # DeepYeast's 2x2/2 pools
        win = x[:, :, :oh * k, :ow * k].reshape(n, c, oh, k, ow, k).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, oh, ow, -1)
        top2 = np.sort(win, axis=-1)[..., -2:]
        out[raw + "_gate"] *= ~(((top2[..., 1] - top2[..., 0]) <= MARGIN * eps[src]) & (top2[..., 1] > 0))
    return out


@pytest.mark.slow
def test_train_gradients_match_caffe_over_seeds_away_from_float32_ties(tmp_path, deepyeast_weights):
    """Every parameter gradient of train_val (TRAIN, dropout removed) against pycaffe, over 12 draws.

    Why not compare the nets as they are: in float32 this net's gradient is discontinuous at the
    scale of rounding.  A ReLU input within rounding of 0, or a max-pool window whose two largest
    inputs are within rounding of each other, can fall on different sides in the two
    implementations, and then a whole gradient path switches (measured: such flips in 1-4 units
    per draw give gradient differences of 1e-3 to 7e-3 in most draws; the earlier single-draw test
    passed only because its draw had none above conv5).  So ties must not decide the comparison:

    1. Both engines run the net with a *gate* (an element-wise product with a 0/1 input) after
       every ReLU and max pool.  All gates open, the forward passes give each pre-activation blob's
       float error ``eps`` = max |ours - caffe| (forward values are continuous, so this is pure
       rounding).
    2. A unit is tied when its ReLU input is within ``MARGIN x eps`` of 0, or its pool window's two
       largest inputs are within ``MARGIN x eps``; its gate is closed, in both engines, which cuts
       its gradient path exactly (a closed ReLU gate also zeroes a value within rounding of 0; a
       closed pool gate zeroes an output whose routing is in doubt).  Closing gates moves the
       values downstream, so the search repeats on our forward pass until no new tie appears.
    3. Both engines run forward and backward with those gates.  Asserted: no open unit falls on
       different sides of its ReLU in the two engines (so no tie decides anything), the tied units
       are a tiny share of all units (reported per draw), and every gradient agrees within a
       tolerance derived from the float error: with ``e`` = the draw's largest relative forward
       error over the pre-activation blobs (max |ours - caffe| / max |caffe|, measured with the
       gates), each parameter's relative L2 error is at most ``GRAD_FACTOR x e`` and each element's
       error at most ``ELEMENT_FACTOR x e x (|caffe| + max |caffe|)``.  (Measured: the relative L2
       error is 0.7-1.5 x ``e``; ``e`` itself is ~1e-4, BatchNorm with batch statistics of 4 items
       being where the two implementations' rounding differs most.)

    Biases that feed a BatchNorm are left out: their true gradient is 0 (BatchNorm removes any
    constant), so both engines hold rounding noise there.
    """
    batch = 4
    proto = input_train_val(batch)
    shapes = Net(proto, phase="TRAIN", seed=0).blob_shapes
    net_param, gate_names, relu_inputs, pools = gated_net(proto, shapes)
    write_prototxt(tmp_path / "gated.prototxt", net_param)
    ours = Net(net_param, phase="TRAIN", seed=0)
    all_open = {g + "_gate": np.ones(shapes[g[:-len("_relu")]] if g.endswith("_relu") else shapes[g[:-len("_raw")]],
                                     np.float32) for g in gate_names}
    draws = {}
    for k in GRAD_SEEDS:
        rng = np.random.default_rng(1000 + k)
        draws[k] = {"data": rng.normal(0, 40, size=(batch, 2, 64, 64)).astype(np.float32),
                    "label": rng.integers(0, 12, size=batch).astype(np.float32)}
    record = sorted(set(relu_inputs) | {src for src, *_ in pools})

    def caffe(gates, tag):
        script = tmp_path / "seeds.py"
        script.write_text(PYCAFFE_SEEDS)
        np.savez(tmp_path / f"in_{tag}.npz", **{f"{k}/{n}": v for k in GRAD_SEEDS for n, v in
                                                 {**draws[k], **gates[k]}.items()})
        cfg = {"proto": str(tmp_path / "gated.prototxt"), "weights": str(deepyeast_weights), "seeds": list(GRAD_SEEDS),
               "inputs": str(tmp_path / f"in_{tag}.npz"), "tops": ["data", "label"] + sorted(all_open),
               "record": record, "out": str(tmp_path / f"out_{tag}.npz")}
        (tmp_path / f"{tag}.json").write_text(json.dumps(cfg))
        r = caffe_root.run_pycaffe(str(script), [str(tmp_path / f"{tag}.json")], cwd=str(tmp_path), check=False,
                                   timeout=1200)
        assert r.returncode == 0, r.stdout[-4000:]
        return dict(np.load(tmp_path / f"out_{tag}.npz"))

    def run_ours(feed, backward=False):
        ours.load_caffemodel(deepyeast_weights)
        for p in ours.learnable_params:
            p.tensor.grad = None
        with torch.set_grad_enabled(backward):
            blobs = ours(**feed)
        if backward:
            ours.loss.backward()
        return {n: b.detach().numpy().copy() for n, b in blobs.items()}

    # 1-2: float error with all gates open, then the tied units
    open_ref = caffe({k: all_open for k in GRAD_SEEDS}, "open")
    gates = {}
    for k in GRAD_SEEDS:
        fwd = run_ours({**draws[k], **all_open})
        eps = {b: float(np.abs(open_ref[f"{k}/fwd/{b}"] - fwd[b]).max()) for b in record}
        g = tied_units(fwd, eps, all_open, relu_inputs, pools)
        for _ in range(10):
            fwd = run_ours({**draws[k], **g})
            g2 = tied_units(fwd, eps, g, relu_inputs, pools)
            if all((g2[n] == g[n]).all() for n in g):
                break
            g = g2
        else:
            pytest.fail(f"draw {k}: the tied units did not settle")
        gates[k] = g

    # 3: the gated comparison
    ref = caffe(gates, "gated")
    skip = bias_into_batchnorm(proto)
    n_units = sum(int(np.prod(v.shape)) for v in all_open.values())
    report, failures = [], []
    for k in GRAD_SEEDS:
        fwd = run_ours({**draws[k], **gates[k]}, backward=True)
        closed = {n: int((g == 0).sum()) for n, g in gates[k].items()}
        flips = sum(int((((ref[f"{k}/fwd/{z}"] > 0) != (fwd[z] > 0)) & (gates[k][z + "_relu_gate"] > 0)).sum())
                    for z in relu_inputs)
        e = max(float(np.abs(ref[f"{k}/fwd/{z}"] - fwd[z]).max() / np.abs(ref[f"{k}/fwd/{z}"]).max())
                for z in relu_inputs)
        errs, elem = {}, {}
        for p in ours.learnable_params:
            if p.lr_mult == 0 or (p.layer_name, p.index) in skip:
                continue
            g = p.tensor.grad.detach().numpy().astype(np.float64)
            r = ref[f"{k}/diff/{p.layer_name}/{p.index}"].astype(np.float64)
            errs[f"{p.layer_name}/{p.index}"] = float(np.linalg.norm(g - r) / np.linalg.norm(r))
            elem[f"{p.layer_name}/{p.index}"] = float((np.abs(g - r) / (np.abs(r) + np.abs(r).max())).max())
        bn = {f"{p.layer_name}/{p.index}": rel_max(p.tensor.detach().numpy(), ref[f"{k}/param/{p.layer_name}/{p.index}"])
              for p in ours.learnable_params if p.layer_name.endswith("_bn")}
        worst = max(errs, key=errs.get)
        report.append(f"draw {k:2d}: {sum(closed.values()):4d} of {n_units} units tied and excluded "
                      f"({', '.join(f'{n[:-5]} {c}' for n, c in closed.items() if c)}); forward error e {e:.1e}; "
                      f"gradient rel. L2 median {np.median(list(errs.values())):.1e}, max {errs[worst]:.1e} ({worst})")
        if len(errs) != 32 or len(bn) != 30:
            failures.append(f"draw {k}: compared {len(errs)} gradients and {len(bn)} BatchNorm blobs, expected 32 and 30")
        if flips:
            failures.append(f"draw {k}: {flips} open units on different sides of their ReLU (margin too small)")
        if sum(closed.values()) > 1e-3 * n_units:
            failures.append(f"draw {k}: {sum(closed.values())} tied units, more than 0.1% of {n_units}")
        if e > 1e-3:
            failures.append(f"draw {k}: forward error {e:.1e} exceeds 1e-3")
        bad = {n: v for n, v in errs.items() if v > GRAD_FACTOR * e}
        bad.update({f"{n} (element)": v for n, v in elem.items() if v > ELEMENT_FACTOR * e})
        bad.update({f"{n} (BatchNorm blob)": v for n, v in bn.items() if v > GRAD_FACTOR * e})
        if bad:
            failures.append(f"draw {k}: beyond {GRAD_FACTOR} x e = {GRAD_FACTOR * e:.1e}: {bad}")
    print("\n".join(report))
    assert not failures, "\n".join(failures + report)


ZOO = """
name: "zoo"
layer { name: "in" type: "Input" top: "data" top: "label" top: "gate"
  input_param { shape { dim: 3 dim: 4 dim: 9 dim: 9 } shape { dim: 3 } shape { dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 group: 2 dilation: 2
    weight_filler { type: "xavier" variance_norm: AVERAGE } bias_filler { type: "uniform" min: -0.2 max: 0.2 } } }
layer { name: "conv_hw" type: "Convolution" bottom: "data" top: "conv_hw"
  convolution_param { num_output: 6 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 1
    weight_filler { type: "msra" variance_norm: FAN_OUT } } }
layer { name: "gated" type: "Scale" bottom: "conv" bottom: "gate" top: "gated" scale_param { bias_term: true } }
layer { name: "pool_ave" type: "Pooling" bottom: "gated" top: "pool_ave"
  pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "pool_max" type: "Pooling" bottom: "gated" top: "pool_max"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "pool_ceil" type: "Pooling" bottom: "gated" top: "pool_ceil"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "pool_ceil_ave" type: "Pooling" bottom: "conv_hw" top: "pool_ceil_ave"
  pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "emax" type: "Eltwise" bottom: "pool_ave" bottom: "pool_max" top: "emax"
  eltwise_param { operation: MAX } }
layer { name: "esum" type: "Eltwise" bottom: "pool_ave" bottom: "pool_max" bottom: "pool_ceil" top: "esum"
  eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 1.5 } }
layer { name: "eprod" type: "Eltwise" bottom: "emax" bottom: "esum" top: "eprod"
  eltwise_param { operation: PROD } }
layer { name: "leaky" type: "ReLU" bottom: "eprod" top: "eprod" relu_param { negative_slope: 0.1 } }
layer { name: "sig" type: "Sigmoid" bottom: "emax" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "pool_ceil_ave" top: "tanh" }
layer { name: "cat" type: "Concat" bottom: "eprod" bottom: "sig" bottom: "tanh" top: "cat" }
layer { name: "bn" type: "BatchNorm" bottom: "cat" top: "cat" batch_norm_param { moving_average_fraction: 0.9 eps: 0.001 } }
layer { name: "sc" type: "Scale" bottom: "cat" top: "cat" }
layer { name: "bias" type: "Bias" bottom: "cat" top: "cat" bias_param { filler { type: "gaussian" std: 0.3 } } }
layer { name: "gpool" type: "Pooling" bottom: "cat" top: "gpool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "flat" type: "Flatten" bottom: "cat" top: "flat" }
layer { name: "ip" type: "InnerProduct" bottom: "flat" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.05 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "ipg" type: "InnerProduct" bottom: "gpool" top: "ipg"
  inner_product_param { num_output: 5 transpose: true weight_filler { type: "xavier" } } }
layer { name: "scores" type: "Eltwise" bottom: "ip" bottom: "ipg" top: "scores" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "scores" bottom: "label" top: "loss"
  loss_param { ignore_label: 4 normalization: VALID } }
layer { name: "loss2" type: "SoftmaxWithLoss" bottom: "ipg" bottom: "label" top: "loss2"
  loss_weight: 0.5 loss_param { normalization: BATCH_SIZE } }
layer { name: "loss3" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss3"
  loss_weight: 0.25 loss_param { normalization: FULL } }
layer { name: "acc" type: "Accuracy" bottom: "scores" bottom: "label" top: "acc" accuracy_param { top_k: 2 } }
"""


def test_layer_zoo_forward_backward_match_caffe(tmp_path):
    proto = parse_prototxt(ZOO, caffe_pb2.NetParameter)
    write_prototxt(tmp_path / "zoo.prototxt", proto)
    net = Net(proto, phase="TRAIN", seed=5)
    randomize(net, 11)
    net.save_caffemodel(tmp_path / "zoo.caffemodel")
    rng = np.random.default_rng(3)
    inputs = {"data": rng.normal(size=(3, 4, 9, 9)).astype(np.float32),
              "label": np.array([1, 4, 3], dtype=np.float32),   # label 4 is ignored by "loss"
              "gate": rng.normal(size=6).astype(np.float32)}
    ref = run_caffe(tmp_path, tmp_path / "zoo.prototxt", tmp_path / "zoo.caffemodel", "TRAIN",
                    inputs=inputs, backward=True)
    blobs = net(**inputs)
    net.loss.backward()
    assert_blobs_match({n: b.detach().numpy() for n, b in blobs.items()}, ref, list(blobs), prob_blobs=())
    errs = {}
    for p in net.learnable_params:
        r = ref[f"param/{p.layer_name}/{p.index}"]
        if p.layer_name == "bn":
            errs[f"stat {p.index}"] = rel_max(p.tensor.detach().numpy(), r)
            continue
        g = p.tensor.grad.detach().numpy().astype(np.float64)
        d = ref[f"diff/{p.layer_name}/{p.index}"].astype(np.float64)
        errs[f"{p.layer_name}/{p.index}"] = float(np.linalg.norm(g - d) / max(np.linalg.norm(d), 1e-30))
    assert max(errs.values()) <= 1e-4, errs


def test_data_layer_transform_matches_caffe(tmp_path):
    """TEST-phase Data layer: centre crop, mean_value per channel, scale; label top."""
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(5, 2, 12, 10), dtype=np.uint8)
    write_datum_lmdb(tmp_path / "db", [(f"k{i}", images[i], i) for i in range(5)], shuffle=False)
    proto = parse_prototxt(f"""
        layer {{ name: "d" type: "Data" top: "data" top: "label"
          transform_param {{ crop_size: 7 mean_value: 100 mean_value: 20 scale: 0.25 }}
          data_param {{ source: "{tmp_path / 'db'}" batch_size: 3 backend: LMDB }} }}
        layer {{ name: "w" type: "InnerProduct" bottom: "data" top: "ip"
          inner_product_param {{ num_output: 2 }} }}
    """, caffe_pb2.NetParameter)
    write_prototxt(tmp_path / "d.prototxt", proto)
    net = Net(proto, phase="TEST", seed=0)
    net.save_caffemodel(tmp_path / "d.caffemodel")
    ref = run_caffe(tmp_path, tmp_path / "d.prototxt", tmp_path / "d.caffemodel", "TEST", forwards=2)
    for it in range(2):
        blobs = net()
        np.testing.assert_allclose(blobs["data"].numpy(), ref[f"fwd{it}/data"], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(blobs["label"].numpy(), ref[f"fwd{it}/label"])


def test_loss_clamp_and_accuracy_ties_match_caffe(tmp_path):
    """SoftmaxWithLoss at probabilities below FLT_MIN (value clamped, gradient not) and Accuracy's tie order.

    The scores pass an identity InnerProduct, so Caffe's weight gradient carries the score gradient.
    """
    proto = parse_prototxt("""
        layer { name: "in" type: "Input" top: "x" top: "label"
          input_param { shape { dim: 5 dim: 3 } shape { dim: 5 } } }
        layer { name: "ident" type: "InnerProduct" bottom: "x" top: "s" inner_product_param { num_output: 3 } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "label" top: "loss" }
        layer { name: "acc1" type: "Accuracy" bottom: "s" bottom: "label" top: "acc1" }
        layer { name: "acc2" type: "Accuracy" bottom: "s" bottom: "label" top: "acc2" accuracy_param { top_k: 2 } }
    """, caffe_pb2.NetParameter)
    write_prototxt(tmp_path / "edge.prototxt", proto)
    net = Net(proto, phase="TEST")
    with torch.no_grad():
        net.layer("ident").blobs[0].copy_(torch.eye(3))
    net.save_caffemodel(tmp_path / "edge.caffemodel")
    x = np.array([[0, 200, 0], [1, 1, 0], [1, 1, 0], [2, 2, 2], [3, 1, 3]], np.float32)
    label = np.array([0, 0, 1, 1, 0], np.float32)
    ref = run_caffe(tmp_path, tmp_path / "edge.prototxt", tmp_path / "edge.caffemodel", "TEST",
                    inputs={"x": x, "label": label}, backward=True)
    out = net(x=x, label=label)
    net.loss.backward()
    for name in ("loss", "acc1", "acc2"):
        assert float(out[name].detach()) == pytest.approx(float(ref["fwd0/" + name]), rel=1e-5), name
    assert float(out["loss"].detach()) > 17  # item 0 alone contributes -log(FLT_MIN) / 5
    for i in range(2):
        np.testing.assert_allclose(net.layer("ident").blobs[i].grad.numpy(), ref[f"diff/ident/{i}"],
                                   rtol=1e-5, atol=1e-6)
