"""BatchNorm folding for deploy (deepyeast/engine/fold.py), bf16 inference, and the net's FLOP count.

The folded DeepYeast net must equal the unfolded one within 1e-5 (every named
blob, relative to the blob's largest value; the probabilities absolutely), in
our engine and in real Caffe reading the folded prototxt + .caffemodel.
"""

import os

import numpy as np
import pytest
import torch

from deepyeast.caffe import caffe_pb2, root as caffe_root
from deepyeast.caffe.blobs import write_caffemodel
from deepyeast.caffe.prototxt import parse_prototxt, read_prototxt
from deepyeast.engine import Net
from deepyeast.engine.fold import deploy_net, fold_batchnorm, fold_files
from deepyeast.utils.io import InputError

from _deploy import DEPLOY, MODELS, REPO, cells, deploy_weights, rel_err

FORWARD = os.path.join(REPO, "deepyeast", "caffe", "pycaffe_forward.py")
BLOBS = ["conv1", "conv2", "pool1", "conv4", "conv8", "pool3", "fc1", "fc2", "fc3", "prob"]


def run(net, x, name="data"):
    with torch.inference_mode():
        out = net(**{name: x})
    return {k: v.float().numpy() for k, v in out.items()}


@pytest.fixture(scope="module")
def weights():
    return deploy_weights()


def test_folded_deploy_net_equals_unfolded_within_1e5(weights):
    param = read_prototxt(DEPLOY, caffe_pb2.NetParameter)
    folded, fw, chains = fold_batchnorm(param, weights)
    assert len(chains) == 10 and all(len(c) == 3 for c in chains)
    types = [lp.type for lp in folded.layer]
    assert "BatchNorm" not in types and "Scale" not in types
    assert set(fw) == {"conv%d" % i for i in range(1, 9)} | {"fc1", "fc2", "fc3"}
    ref = Net(param, phase="TEST", seed=0)
    ref.load_weights(weights)
    x = cells()
    want = run(ref, x)
    got = run(deploy_net(param, weights), x)
    assert set(got) == set(want)  # in-place chains keep every blob name
    errs = {b: rel_err(got[b], want[b]) for b in want if b != "data"}
    assert max(errs.values()) <= 1e-5, errs
    assert np.abs(got["prob"] - want["prob"]).max() <= 1e-5


def test_bf16_inference_keeps_float32_probabilities_and_close_values(weights):
    x = cells()
    fp32 = run(deploy_net(DEPLOY, weights), x)
    net = deploy_net(DEPLOY, weights, precision="bf16")
    dtypes = {layer.name: layer.blobs[0].dtype for layer in net.layers if layer.blobs}
    assert dtypes["conv1"] == torch.float32 and dtypes["conv2"] == torch.bfloat16
    assert dtypes["fc1"] == torch.float32
    with torch.inference_mode():
        out = net(data=x)
    assert out["prob"].dtype == torch.float32
    np.testing.assert_allclose(out["prob"].sum(1).numpy(), 1.0, rtol=1e-5)
    # bf16 keeps 8 bits: activations agree to a few percent of their range, not to 1e-5
    assert rel_err(out["fc1"].float().numpy(), fp32["fc1"]) < 0.05
    assert rel_err(out["conv8"].float().numpy(), fp32["conv8"]) < 0.05
    with pytest.raises(InputError, match="precision"):
        deploy_net(DEPLOY, weights, precision="fp16")


def _chain_net(extra=""):
    return parse_prototxt("""
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 3 dim: 2 dim: 5 dim: 5 } } }
        layer { name: "c" type: "Convolution" bottom: "x" top: "c"
                convolution_param { num_output: 4 kernel_size: 3 bias_term: false weight_filler { type: "xavier" } } }
        layer { name: "bn" type: "BatchNorm" bottom: "c" top: "n" }
        layer { name: "sc" type: "Scale" bottom: "n" top: "s" scale_param { bias_term: true } }
        layer { name: "ip" type: "InnerProduct" bottom: "s" top: "ip"
                inner_product_param { num_output: 3 transpose: true weight_filler { type: "xavier" } } }
        layer { name: "bn2" type: "BatchNorm" bottom: "ip" top: "ip" batch_norm_param { eps: 0.01 } }
    """ + extra, caffe_pb2.NetParameter)


def _random_weights(param, seed=1):
    net = Net(param, phase="TEST", seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in net.layers:
            if layer.caffe_type == "BatchNorm":
                layer.blobs[0].copy_(torch.randn(layer.blobs[0].shape, generator=g))
                layer.blobs[1].copy_(torch.rand(layer.blobs[1].shape, generator=g) + 0.1)
                layer.blobs[2].fill_(0.5)  # statistics are blob / 0.5
            elif layer.caffe_type == "Scale":
                for t in layer.blobs:
                    t.copy_(torch.randn(t.shape, generator=g))
    return net, {n: [t.detach().numpy().copy() for t in b] for n, b in net.layer_params().items()}


def test_fold_handles_chains_out_of_place_without_bias_and_transposed():
    param = _chain_net()
    ref, weights = _random_weights(param)
    folded, fw, chains = fold_batchnorm(param, weights)
    assert chains == [("c", "bn", "sc"), ("ip", "bn2")]
    conv = [lp for lp in folded.layer if lp.name == "c"][0]
    assert list(conv.top) == ["s"] and conv.convolution_param.bias_term
    net = Net(folded, phase="TEST")
    net.load_weights(fw)
    x = np.random.default_rng(2).normal(size=(3, 2, 5, 5)).astype(np.float32)
    want, got = run(ref, x, "x"), run(net, x, "x")
    for b in ("s", "ip"):
        np.testing.assert_allclose(got[b], want[b], rtol=1e-5, atol=1e-5 * np.abs(want[b]).max())
    assert "c" not in got and "n" not in got  # folded away (out of place)


def test_fold_keeps_what_it_must():
    param = _chain_net()
    _, weights = _random_weights(param)
    # a blob asked for by name keeps its unfolded value: the chain stops before it
    _, _, chains = fold_batchnorm(param, weights, keep=["c"])
    assert chains == [("ip", "bn2")]
    _, _, chains = fold_batchnorm(param, weights, keep=["n"])
    assert chains == [("c", "bn"), ("ip", "bn2")]
    # a second reader of the product's output, or batch statistics in TEST: not an affine map of one input
    extra = 'layer { name: "other" type: "ReLU" bottom: "c" top: "other" }'
    _, _, chains = fold_batchnorm(_chain_net(extra), weights)
    assert ("c", "bn", "sc") not in chains
    p = _chain_net()
    p.layer[2].batch_norm_param.use_global_stats = False
    _, _, chains = fold_batchnorm(p, weights)
    assert chains == [("ip", "bn2")]
    # TRAIN-only layers are not part of the TEST-phase net
    p = _chain_net('layer { name: "t" type: "ReLU" bottom: "ip" top: "t" include { phase: TRAIN } }')
    folded, _, _ = fold_batchnorm(p, weights)
    assert "t" not in [lp.name for lp in folded.layer]
    with pytest.raises(InputError, match='layer "bn".*no weights'):
        fold_batchnorm(param, {k: v for k, v in weights.items() if k != "bn"})


def test_flop_count_reproduces_the_paper_nets_arithmetic():
    """1.84 GFLOP per cell forward; 551 GFLOP per training iteration at batch 100 (3x forward,
    less conv1's input gradient, which Caffe does not compute).  Counted by hand from the
    layer table: (out channels x out pixels) x (in channels x 3 x 3) multiply-adds, 2 FLOPs each."""
    convs = [(2, 64, 64), (64, 64, 64), (64, 128, 32), (128, 128, 32), (128, 256, 16), (256, 256, 16),
             (256, 256, 16), (256, 256, 16)]
    per_cell = sum(2 * cout * s * s * cin * 9 for cin, cout, s in convs)
    per_cell += 2 * (256 * 8 * 8 * 512 + 512 * 512 + 512 * 12)
    counts = Net(DEPLOY, phase="TEST").flop_counts()
    assert list(counts) == [f"conv{i}" for i in range(1, 9)] + ["fc1", "fc2", "fc3"]
    forward = sum(f for f, _, _ in counts.values())
    assert forward == 100 * per_cell
    assert round(forward / 100 / 1e9, 2) == 1.84
    train = sum(sum(v) for v in counts.values())
    assert counts["conv1"][2] == 0 and counts["conv2"][2] == counts["conv2"][0]
    assert train == 3 * forward - counts["conv1"][0]
    assert round(train / 1e9) == 551


@pytest.mark.caffe
@pytest.mark.usefixtures("caffe_root_present")
def test_real_caffe_runs_the_folded_files_and_agrees(tmp_path, weights):
    """fold_files writes a prototxt + .caffemodel that pycaffe loads; its blobs equal the unfolded
    net's (real Caffe on the original files) within 1e-5."""
    w = tmp_path / "w.caffemodel"
    write_caffemodel(w, weights, layer_types={})
    chains = fold_files(DEPLOY, w, tmp_path / "folded.prototxt", tmp_path / "folded.caffemodel")
    assert len(chains) == 10
    x = cells(4)
    np.save(tmp_path / "x.npy", x)
    outs = {}
    for tag, model, wpath in (("orig", DEPLOY, w), ("folded", tmp_path / "folded.prototxt",
                                                    tmp_path / "folded.caffemodel")):
        out = tmp_path / tag
        r = caffe_root.run_pycaffe(FORWARD, ["--model", str(model), "--weights", str(wpath), "--images",
                                             str(tmp_path / "x.npy"), "--out", str(out), "--blobs", ",".join(BLOBS)],
                                   check=False, timeout=300, binds=[MODELS])
        assert r.returncode == 0, r.stdout[-3000:]
        outs[tag] = {b: np.load(out / f"{b}.npy") for b in BLOBS}
    ours = run(deploy_net(tmp_path / "folded.prototxt", tmp_path / "folded.caffemodel", fold=False), x)
    for b in BLOBS:
        ref = outs["orig"][b].astype(np.float64)
        assert rel_err(outs["folded"][b], ref) <= 1e-5, b
        assert rel_err(ours[b].reshape(len(x), -1), ref) <= 1e-5, b
    assert np.abs(outs["folded"]["prob"] - outs["orig"]["prob"]).max() <= 1e-5


def test_flop_count_follows_caffes_backward_rules():
    """lr_mult 0 -> no weight gradient; a bottom that needs no backward (data through frozen layers)
    or propagate_down false -> no input gradient."""
    net = Net(parse_prototxt("""
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
        layer { name: "a" type: "Convolution" bottom: "x" top: "a" param { lr_mult: 0 } param { lr_mult: 0 }
                convolution_param { num_output: 4 kernel_size: 3 group: 1 } }
        layer { name: "b" type: "Convolution" bottom: "a" top: "b"
                convolution_param { num_output: 6 kernel_size: 1 stride: 2 } }
        layer { name: "c" type: "InnerProduct" bottom: "b" top: "c" propagate_down: false
                inner_product_param { num_output: 5 } }
        layer { name: "d" type: "InnerProduct" bottom: "c" top: "d" inner_product_param { num_output: 2 } }
    """, caffe_pb2.NetParameter), phase="TRAIN")
    a, b, c = 2 * 2 * 4 * 6 * 6 * 3 * 9, 2 * 2 * 6 * 3 * 3 * 4, 2 * 2 * (6 * 3 * 3) * 5
    d = 2 * 2 * 5 * 2
    assert net.flop_counts() == {"a": (a, 0, 0), "b": (b, b, 0), "c": (c, c, 0), "d": (d, d, d)}


def test_product_and_in_place_relu_run_as_one_step_with_the_same_gradients():
    """A Convolution / InnerProduct followed by an in-place ReLU (what a folded net is made of) is one
    step that rectifies the product's fresh output in place; values and gradients are unchanged."""
    param = parse_prototxt("""
        layer { name: "in" type: "Input" top: "x" top: "label"
                input_param { shape { dim: 4 dim: 3 dim: 6 dim: 6 } shape { dim: 4 } } }
        layer { name: "c" type: "Convolution" bottom: "x" top: "c"
                convolution_param { num_output: 5 kernel_size: 3 weight_filler { type: "xavier" } } }
        layer { name: "r" type: "ReLU" bottom: "c" top: "c" }
        layer { name: "ip" type: "InnerProduct" bottom: "c" top: "ip"
                inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
        layer { name: "r2" type: "ReLU" bottom: "ip" top: "ip" }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
    """, caffe_pb2.NetParameter)
    x = np.random.default_rng(0).normal(size=(4, 3, 6, 6)).astype(np.float32)
    label = np.array([0, 1, 2, 1], np.float32)
    out = []
    for fuse in (True, False):
        net = Net(param, phase="TRAIN", seed=2, fuse=fuse)
        assert sum(len(s.layers) == 2 for s in net._steps) == (2 if fuse else 0)
        blobs = net(x=x, label=label)
        net.loss.backward()
        out.append([blobs["c"].detach(), blobs["ip"].detach()] + [p.tensor.grad for p in net.learnable_params])
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


_HEAP_PROBE = """
import json, resource, sys
import torch
sys.path.insert(0, sys.argv[1])
from _deploy import DEPLOY, cells, deploy_weights
from deepyeast.engine.fold import deploy_net
net = deploy_net(DEPLOY, deploy_weights())
x = torch.from_numpy(cells(50))
faults = []
with torch.inference_mode():
    for _ in range(5):  # the heap grows over the first passes
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net(data=x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""


def test_cpu_nets_reuse_freed_activation_memory():
    """A second pass takes its activations (hundreds of MB) back from the heap instead of
    page-faulting fresh memory in (glibc would mmap and unmap them every pass;
    deepyeast.engine.net._retain_freed_memory).  Measured in a fresh process: in this one, what
    earlier tests left in the heap (or a library that trims it) decides how many pages fault."""
    import json
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", _HEAP_PROBE, os.path.dirname(os.path.abspath(__file__))],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    faults = json.loads(proc.stdout.strip().splitlines()[-1])
    # conv1 and conv2 alone write 2 x 50 MiB (50 x 64 x 64 x 64 float32): 25,600 fresh 4 KiB pages a pass
    assert min(faults[2:]) < 3000, faults


def test_fold_reads_legacy_4d_inner_product_blobs():
    """Old .caffemodels store an InnerProduct weight as (1, 1, out, in) and vectors as (1, 1, 1, n)."""
    param = _chain_net()
    ref, weights = _random_weights(param)
    legacy = dict(weights)
    legacy["ip"] = [weights["ip"][0][None, None], weights["ip"][1][None, None, None]]
    legacy["bn2"] = [a.reshape(1, 1, 1, -1) for a in weights["bn2"]]
    _, fw, chains = fold_batchnorm(param, legacy)
    _, want, _ = fold_batchnorm(param, weights)
    assert ("ip", "bn2") in chains
    for a, b in zip(fw["ip"], want["ip"]):
        np.testing.assert_array_equal(a, b)
