"""bench/bench_profile.py (issue 24, item 1): how a profile of the engine is split into where the time goes.

The split runs on a real torch.profiler trace of a small Caffe net trained a step in bf16 autocast
(the engine's training path); the goal arithmetic is the issue's: 1,000 cells/s at 1.839 GFLOP per cell.
"""

import pytest
import torch

from bench import bench_profile as bp
from deepyeast.caffe import caffe_pb2
from deepyeast.caffe.prototxt import parse_prototxt
from deepyeast.engine import Net
from deepyeast.engine.solver import Solver

from _solver_nets import SMALL_CONV_NET, make_lmdb, solver_param, write_net

NET = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 4 dim: 3 dim: 12 dim: 12 } } }
layer { name: "c1" type: "Convolution" bottom: "x" top: "c1" convolution_param { num_output: 8 kernel_size: 3 pad: 1
  weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "bn" type: "BatchNorm" bottom: "c1" top: "c1" }
layer { name: "sc" type: "Scale" bottom: "c1" top: "c1" scale_param { bias_term: true } }
layer { name: "r" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "p" type: "Pooling" bottom: "c1" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "c2" type: "Convolution" bottom: "p" top: "c2" convolution_param { num_output: 6 kernel_size: 3
  weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "fc" type: "InnerProduct" bottom: "c2" top: "fc" inner_product_param { num_output: 5
  weight_filler { type: "gaussian" std: 0.1 } } }
"""


def test_ops_fall_into_their_categories_and_casts_of_parameter_shapes_are_weight_casts():
    params = frozenset({(8, 3, 3, 3)})
    assert bp.category("aten::convolution_backward") == "convolution backward"
    assert bp.category("aten::native_batch_norm_backward") == "BatchNorm + Scale"
    assert bp.category("aten::threshold_backward") == "ReLU"
    assert bp.category("aten::_foreach_add_") == "solver update"
    assert bp.category("aten::_foreach_zero_") == "zeroing and accumulating gradients"
    assert bp.category("aten::copy_", (8, 3, 3, 3), params) == "weight casts"
    assert bp.category("aten::copy_", (4, 8, 12, 12), params) == "activation casts and layout copies"
    assert bp.category("aten::log_softmax") == "dropout, loss and the rest"
    assert set(bp._OPS) <= set(bp.CATEGORIES)


def test_a_real_bf16_training_step_splits_into_convolutions_batchnorm_pooling_and_weight_casts():
    net = Net(parse_prototxt(NET, caffe_pb2.NetParameter), phase="TRAIN", seed=3, autocast="bf16")
    bp.annotate_layers(net)
    x = torch.randn(4, 3, 12, 12)

    def step():
        net(x=x)["fc"].float().sum().backward()

    step()
    prof, wall = bp.profiled(step, 2)
    split = bp.split_profile(prof, 2, bp.param_shapes(net))
    assert list(split) == list(bp.CATEGORIES)
    for cat in ("convolution forward", "convolution backward", "BatchNorm + Scale", "pooling", "fully connected",
                "weight casts"):
        assert split[cat] > 0, cat
    events = prof.key_averages()
    ops = sum(e.self_cpu_time_total for e in events if e.key.startswith(("aten::", "mkldnn::"))) / 1e3 / 2
    assert sum(split.values()) == pytest.approx(ops, rel=1e-6)  # every operator counted once
    assert not bp.is_op("layer:c1") and not bp.is_op("ConvolutionBackward0")  # annotations, autograd nodes: not
    convs = bp.conv_layers(prof, 2, net)
    assert list(convs) == ["c1", "c2"] and all(f > 0 and b > 0 for f, b in convs.values())
    layers = bp.layer_forward_ms(prof, 2)
    assert {"in", "c1", "bn+sc+r", "p", "c2", "fc"} <= set(layers)
    assert sum(layers.values()) <= wall * 1e3 * 1.05


def test_the_inference_goal_needs_more_than_the_measured_bf16_limit_of_the_issue():
    need, pct, ok = bp.goal_verdict(1000, 1.839, 1765.0)
    assert need == pytest.approx(1839.0) and pct == pytest.approx(104.19, abs=0.01) and not ok
    assert bp.goal_verdict(1000, 1.839, 2000.0)[2]
    assert bp.gemm_ms(550.7e9, 1700.0) == pytest.approx(323.9, abs=0.1)


def test_the_baselines_undo_issue_24s_changes_and_the_ab_times_every_variant(tmp_path):
    """Each A/B variant is a Solver whose setup really is the engine before a change: gradients zeroed and kept
    (not None) after an iteration, weights cast by autocast (no kept bf16 copy); the A/B times every variant."""
    model = write_net(str(tmp_path / "conv.prototxt"), SMALL_CONV_NET, make_lmdb(str(tmp_path / "lmdb")))
    assert list(bp.baseline_variants("fp32")) == ["engine now", "gradients zeroed and added into (before)"]
    variants = bp.baseline_variants("bf16")
    assert len(variants) == 4

    def solver():
        p = solver_param(model, str(tmp_path / "s" / "m"), max_iter=100, snapshot=0, test_interval=0,
                         snapshot_after_train=False)
        return Solver(p, progress=False, precision="bf16")

    now = solver()
    now.step(1)
    before = variants["both (the engine before issue 24)"](solver())
    before.step(1)
    assert not before.net.keep_casts and "_kept_casts" not in before.net.layer("conv1").__dict__
    assert now.net.keep_casts and now.net.layer("conv1")._kept_casts[0][2].dtype == torch.bfloat16
    before._zero_grads()
    grads = [info.tensor.grad for info in before.params if info.tensor.requires_grad]
    assert grads and all(g is not None and not g.any() for g in grads)
    now._zero_grads()
    assert all(info.tensor.grad is None for info in now.params)

    best = bp.ab_training(str(tmp_path), model, "bf16", variants, rounds=2, iterations=1)
    assert list(best) == list(variants) and all(0 < ms < float("inf") for ms in best.values())
    md = bp.ab_markdown({"bf16": {"engine now": 100.0, "both (the engine before issue 24)": 125.0},
                         "fp32": {"engine now": 300.0}}, 3, 2, 100, 2, [0.5, 1.0])
    table = "\n".join(md)
    assert "| both (the engine before issue 24) | 125 | 1.250 | n/a (nothing is cast in fp32) |  |" in table
    assert "| engine now | 100 | 1.000 | 300 | 1.000 |" in table and "load average 0.5 to 1.0" in table


def test_traceable_engine_steps_aside_only_while_compiling_and_puts_the_engine_back():
    """The torch.compile comparison's patch: eager passes inside it still keep their bf16 weight copies (the
    patch acts only under tracing), and on leaving it the engine's own functions are back."""
    from deepyeast.engine.layers import common, vision

    engine = (vision._pointwise_applies, vision.compute_blobs, common.compute_blobs)
    net = Net(parse_prototxt(NET, caffe_pb2.NetParameter), phase="TEST", seed=3, autocast="bf16")
    with bp.traceable_engine():
        assert vision._pointwise_applies is not engine[0] and common.compute_blobs is not engine[2]
        with torch.no_grad():
            net(x=torch.randn(4, 3, 12, 12))
        assert net.layer("c1")._kept_casts[0][2].dtype == torch.bfloat16
    assert (vision._pointwise_applies, vision.compute_blobs, common.compute_blobs) == engine


def test_largest_differences_and_the_compile_crops():
    assert bp.largest_differences([1.0, 2.5, -3.0], [1.0, 2.0, -2.0]) == pytest.approx((1.0, 0.5))
    examples = (torch.arange(2 * 2 * 4 * 4) % 256).reshape(2, 2, 4, 4).to(torch.uint8).numpy()
    crops = bp.compile_crops(examples, 7)
    assert crops.shape == (7, 2, 4, 4) and crops.dtype.name == "float32"
    near = [min(abs(c.astype(int) - e.astype(int)).max() for e in examples) for c in crops]
    assert 0 < max(near) <= 8 and crops.min() >= 0 and crops.max() <= 255
    assert bp.compile_crops(None, 3).shape == (3, 2, 64, 64)
