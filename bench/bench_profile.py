"""Where the time of a DeepYeast training iteration and of bf16 inference goes (issue 24).

Usage (from the repository root)::

    python bench/bench_profile.py [--quick] [--threads N] [--iterations 3] [--rounds 3] [--ab-only]
                                  [--compile] [--compile-only] [--bundle DIR] [--no-write]

Measures on this machine, in one run:

* the measured GEMM limit per precision (bench/_peak.py: the best of several GEMM shapes
  after warm-up), so that "the convolutions' GEMM time" of an iteration -- its counted
  FLOPs (:meth:`deepyeast.engine.Net.flop_counts`) at that rate -- stands beside the
  measured time;
* one training iteration of the Solver (forward, backward and Caffe's SGD update, batch
  100, ``train_val.prototxt`` on synthetic cells) in bf16 and fp32: its wall time without
  the profiler (best of ``--iterations``), then ``torch.profiler`` over ``--iterations``
  iterations, each op's self time put into one category (:func:`category`): convolution
  forward / backward (per layer, with its GFLOP/s), fully connected, BatchNorm + Scale,
  ReLU, pooling, weight casts (a cast of a tensor of a parameter's shape), activation
  casts and layout copies, the solver's update, zeroing gradients, and the rest; what no
  op accounts for is Python, the autograd engine and the profiler itself;
* the deploy path of bf16 inference (``deepyeast.engine.fold.deploy_net``: BatchNorm
  folded, conv1 and the fully connected layers in fp32, ``inference_mode``) at batch 100
  and 256: cells/s without the profiler and the same split by category, with the
  arithmetic of the goal (1,000 cells/s x the net's GFLOP per cell against the measured
  bf16 GEMM limit);
* the A/B of issue 24's solver changes (alone with ``--ab-only``): Solver iterations of the
  engine now against the same engine with each change undone -- gradients zeroed and added
  into instead of dropped, and in bf16 the weights cast by autocast at every forward instead
  of kept as bf16 copies (:attr:`deepyeast.engine.Net.keep_casts`) -- and with both undone
  (the engine before them), every variant a Solver of its own, interleaved in ``--rounds``
  rounds of ``--iterations`` iterations, each figure its best.

Writes the "Training and inference profile" section and the A/B's section of bench/RESULTS.md
(unless --no-write), each with the CPU, the date and the load average.  ``--batch 4
--iterations 1 --rounds 1 --no-write`` checks the script in a minute or two.
"""

import argparse
import os
import sys
import tempfile
import time
from collections import OrderedDict, defaultdict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SECTION = "Training and inference profile (bench/bench_profile.py)"
SECTION_AB = "Training iteration against the engine before issue 24's solver changes (bench/bench_profile.py)"
SECTION_COMPILE = "torch.compile of the deploy net and the training step against eager (bench/bench_profile.py)"

CATEGORIES = ("convolution forward", "convolution backward", "fully connected", "BatchNorm + Scale", "ReLU",
              "pooling", "weight casts", "activation casts and layout copies", "solver update",
              "zeroing and accumulating gradients", "dropout, loss and the rest")

_OPS = {
    "convolution forward": ("aten::mkldnn_convolution", "mkldnn::_convolution_pointwise", "aten::_convolution",
                            "aten::convolution", "aten::conv2d", "aten::_mkldnn_convolution"),
    "convolution backward": ("aten::convolution_backward", "aten::mkldnn_convolution_backward"),
    "fully connected": ("aten::addmm", "aten::mm", "aten::linear", "aten::matmul", "aten::t", "aten::bmm"),
    "BatchNorm + Scale": ("aten::native_batch_norm", "aten::native_batch_norm_backward", "aten::batch_norm",
                          "aten::_batch_norm_impl_index", "aten::_native_batch_norm_legit",
                          "aten::_native_batch_norm_legit_no_training", "aten::_batch_norm_with_update",
                          "aten::batch_norm_backward", "aten::_batch_norm_impl_index_backward"),
    "ReLU": ("aten::relu", "aten::relu_", "aten::threshold_backward", "aten::clamp_min", "aten::clamp_min_"),
    "pooling": ("aten::max_pool2d", "aten::max_pool2d_with_indices", "aten::max_pool2d_with_indices_backward"),
    "zeroing and accumulating gradients": ("aten::_foreach_zero_", "aten::zero_", "aten::zeros_like"),
}
_CASTS = ("aten::to", "aten::_to_copy", "aten::copy_", "aten::clone", "aten::contiguous")


def category(name, first_shape=(), param_shapes=frozenset()):
    """The category (one of CATEGORIES) of a profiler op ``name`` whose first input has ``first_shape``.

    A cast or copy of a tensor of one of ``param_shapes`` (the net's parameter-blob shapes) is a
    weight cast; other casts and copies (dtype changes of activations, NCHW <-> NHWC layout
    changes) are activation copies.  ``_foreach_*`` ops other than zeroing are the solver's update.
    """
    for cat, names in _OPS.items():
        if name in names:
            return cat
    if name in _CASTS:
        return "weight casts" if tuple(first_shape) in param_shapes else "activation casts and layout copies"
    if name.startswith("aten::_foreach_"):
        return "solver update"
    return "dropout, loss and the rest"


def is_op(name):
    """Is profiler event ``name`` an operator (``aten::``, ``mkldnn::``), not an autograd node or annotation?"""
    return name.startswith(("aten::", "mkldnn::", "prim::"))


def _first_shape(evt):
    shapes = getattr(evt, "input_shapes", None) or []
    return tuple(shapes[0]) if shapes and shapes[0] else ()


def split_profile(prof, iterations, param_shapes):
    """OrderedDict category -> milliseconds per iteration (self CPU times of the ops) of a
    ``torch.profiler.profile`` run over ``iterations`` iterations."""
    out = OrderedDict((c, 0.0) for c in CATEGORIES)
    for evt in prof.key_averages(group_by_input_shape=True):
        if not is_op(evt.key):
            continue  # autograd nodes and wrappers, our annotations: the engine's bookkeeping, not arithmetic
        out[category(evt.key, _first_shape(evt), param_shapes)] += evt.self_cpu_time_total / 1e3 / iterations
    return out


def conv_layers(prof, iterations, net):
    """OrderedDict layer name(s) -> (forward ms, backward ms) per iteration of the net's convolutions,
    matched by the weight shape (layers of one weight shape are reported together)."""
    by_shape = defaultdict(list)
    for layer in net.layers:
        if layer.caffe_type == "Convolution":
            by_shape[tuple(layer.blob0.shape)].append(layer.name)
    fwd, bwd = defaultdict(float), defaultdict(float)
    for evt in prof.key_averages(group_by_input_shape=True):
        shapes = [tuple(s) for s in (evt.input_shapes or [])]
        if evt.key in ("aten::mkldnn_convolution", "mkldnn::_convolution_pointwise") and len(shapes) > 1:
            fwd[shapes[1]] += evt.self_cpu_time_total / 1e3 / iterations
        elif evt.key == "aten::convolution_backward" and len(shapes) > 2:
            bwd[shapes[2]] += evt.self_cpu_time_total / 1e3 / iterations
    return OrderedDict(("+".join(names), (fwd.get(shape, 0.0), bwd.get(shape, 0.0)))
                       for shape, names in by_shape.items())


def annotate_layers(net):
    """Wrap each step of ``net`` in a ``record_function("layer:<names>")`` (this bench's view only)."""
    import torch

    for step in net._steps:
        run = step.run
        label = "layer:" + "+".join(layer.name for layer in step.layers)

        def wrapped(bottoms, run=run, label=label):
            with torch.profiler.record_function(label):
                return run(bottoms)
        step.run = wrapped


def layer_forward_ms(prof, iterations):
    """OrderedDict annotation -> forward milliseconds per iteration (from :func:`annotate_layers`)."""
    out = OrderedDict()
    for evt in prof.key_averages():
        if evt.key.startswith("layer:"):
            out[evt.key[6:]] = evt.cpu_time_total / 1e3 / iterations
    return out


def gemm_ms(flops, rate_gflops):
    """Milliseconds ``flops`` take at ``rate_gflops`` GFLOP/s."""
    return flops / (rate_gflops * 1e9) * 1e3


def goal_verdict(cells_per_s_goal, gflop_per_cell, limit_gflops):
    """(GFLOP/s the goal needs, its % of the measured limit, reachable?) of an inference-rate goal."""
    need = cells_per_s_goal * gflop_per_cell
    return need, 100.0 * need / limit_gflops, need <= limit_gflops


# ---------------------------------------------------------------------------- measuring

def make_solver(folder, model, precision, seed=1, channels_last=None):
    """A Solver on ``model`` (batch 100): lr 0.001, momentum 0.9, weight decay 0.0005, no tests or snapshots."""
    from deepyeast.caffe import caffe_pb2
    from deepyeast.caffe.prototxt import write_prototxt
    from deepyeast.engine.solver import Solver

    p = caffe_pb2.SolverParameter(net=model, base_lr=0.001, lr_policy="fixed", momentum=0.9, weight_decay=0.0005,
                                  max_iter=10 ** 7, display=0, snapshot_after_train=False, random_seed=seed)
    path = os.path.join(folder, "profile_solver.prototxt")
    write_prototxt(path, p)
    return Solver(path, device="cpu", precision=precision, progress=False, channels_last=channels_last)


def best_iteration_s(solver, iterations):
    """Best wall seconds of one ``solver.step(1)`` over ``iterations`` steps (after one warm-up step)."""
    solver.step(1)
    best = float("inf")
    for _ in range(iterations):
        t = time.perf_counter()
        solver.step(1)
        best = min(best, time.perf_counter() - t)
    return best


def profiled(fn, iterations):
    """(profiler, wall seconds per call) of ``iterations`` calls of ``fn`` under torch.profiler."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        t = time.perf_counter()
        for _ in range(iterations):
            fn()
        wall = (time.perf_counter() - t) / iterations
    return prof, wall


def _bn_relu_eager(x, weight, bias):
    """The engine's training BatchNorm + Scale + ReLU: one batch_norm call, then an in-place ReLU."""
    import torch
    import torch.nn.functional as F

    tm, tv = torch.zeros(x.shape[1]), torch.zeros(x.shape[1])
    return torch.relu_(F.batch_norm(x, tm, tv, weight, bias, training=True, momentum=1.0, eps=1e-5))


def _bn_relu_math(x, weight, bias):
    """The same chain written out for torch.compile to fuse (float32 statistics, one rounding)."""
    import torch

    xf = x.float()
    var, mean = torch.var_mean(xf, dim=(0, 2, 3), correction=0)
    scale = torch.rsqrt(var + 1e-5) * weight
    y = (xf - mean[None, :, None, None]) * scale[None, :, None, None] + bias[None, :, None, None]
    return torch.relu(y).to(x.dtype)


def compile_check(shapes, reps):
    """BatchNorm + Scale + ReLU forward and backward, eager against torch.compile (inductor), per shape:
    [(shape, dtype name, eager ms, compiled ms, compile s, largest output difference)]."""
    import torch

    rows = []
    for shape in shapes:
        for dtype in (torch.bfloat16, torch.float32):
            x0 = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)
            grad = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)
            weight = torch.rand(shape[1], requires_grad=True)
            bias = torch.randn(shape[1], requires_grad=True)
            compiled = torch.compile(_bn_relu_math, dynamic=False)

            def run(fn):
                x = x0.clone().requires_grad_(True)
                y = fn(x, weight, bias)
                y.backward(grad)
                return y.detach()

            t = time.perf_counter()
            got = run(compiled)
            compile_s = time.perf_counter() - t
            want = run(_bn_relu_eager)
            diff = float((got.float() - want.float()).abs().max())
            eager = _peak_best(lambda: run(_bn_relu_eager), reps)
            comp = _peak_best(lambda: run(compiled), reps)
            rows.append((shape, str(dtype).replace("torch.", ""), eager * 1e3, comp * 1e3, compile_s, diff))
    return rows


def _peak_best(fn, reps):
    import _peak

    return _peak.best_seconds(fn, reps=reps, warmup_s=0.0)


def zeroed_gradients(solver):
    """The baseline of issue 24's gradient change: gradients zeroed in place before each iteration and
    the backward adding into them (the engine before it), instead of no gradient at all."""
    import torch

    def zero():
        for info in solver.params:
            t = info.tensor
            if t.requires_grad:
                if t.grad is None:
                    t.grad = torch.zeros_like(t)
                else:
                    t.grad.zero_()
    solver._zero_grads = zero
    return solver


def weights_cast_every_forward(solver):
    """The baseline of issue 24's kept bf16 weights: autocast casts the float32 weights at every forward
    (:attr:`deepyeast.engine.Net.keep_casts` off in the train and test nets)."""
    for net in [solver.net] + list(solver.test_nets):
        net.keep_casts = False
    return solver


def engine_before(solver):
    """Both of issue 24's solver changes undone: the engine before them."""
    return weights_cast_every_forward(zeroed_gradients(solver))


def baseline_variants(precision):
    """OrderedDict variant name -> setup for :func:`ab_training`: the engine now, each change of issue 24
    undone alone, and all undone (in fp32 nothing is cast, so the gradient change is the only one)."""
    variants = OrderedDict([("engine now", None), ("gradients zeroed and added into (before)", zeroed_gradients)])
    if precision != "fp32":
        variants["weights cast at every forward (before)"] = weights_cast_every_forward
        variants["both (the engine before issue 24)"] = engine_before
    return variants


def ab_training(folder, model, precision, variants, rounds, iterations):
    """Best ms of one Solver iteration per variant, the variants interleaved round by round (the order
    rotated each round, so a variant is not always first after another's work).

    ``variants``: OrderedDict name -> function(solver) that sets the solver up (``None``: as it is).
    """
    solvers = OrderedDict()
    for name, setup in variants.items():
        solver = make_solver(folder, model, precision)
        solvers[name] = setup(solver) if setup else solver
        solvers[name].step(1)
    names = list(solvers)
    best = OrderedDict((name, float("inf")) for name in names)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            solver = solvers[name]
            for _ in range(iterations):
                t = time.perf_counter()
                solver.step(1)
                best[name] = min(best[name], (time.perf_counter() - t) * 1e3)
    return best


def param_shapes(net):
    return frozenset(tuple(info.tensor.shape) for info in net.learnable_params)


def profile_training(folder, model, precision, iterations):
    """dict(wall_ms, profiled_ms, split, convs, layers) of Solver iterations in ``precision``."""
    solver = make_solver(folder, model, precision)
    wall = best_iteration_s(solver, iterations)
    annotate_layers(solver.net)
    prof, pwall = profiled(lambda: solver.step(1), iterations)
    return dict(wall_ms=wall * 1e3, profiled_ms=pwall * 1e3,
                split=split_profile(prof, iterations, param_shapes(solver.net)),
                convs=conv_layers(prof, iterations, solver.net), layers=layer_forward_ms(prof, iterations))


def profile_inference(weights, batch, iterations):
    """dict(cells_per_s, split, convs, layers) of the bf16 deploy net at ``batch``."""
    import torch
    from bench_engine import DEPLOY
    from deepyeast.engine.fold import deploy_net

    net = deploy_net(DEPLOY, weights, precision="bf16", fold=True)
    x = torch.randn(batch, 2, 64, 64) * 40
    with torch.inference_mode():
        net(data=x)
        best = float("inf")
        for _ in range(iterations):
            t = time.perf_counter()
            net(data=x)
            best = min(best, time.perf_counter() - t)
        annotate_layers(net)
        prof, _ = profiled(lambda: net(data=x), iterations)
    return dict(cells_per_s=batch / best, ms=best * 1e3, split=split_profile(prof, iterations, param_shapes(net)),
                convs=conv_layers(prof, iterations, net), layers=layer_forward_ms(prof, iterations))


# ---------------------------------------------------------------------------- torch.compile of the whole net

class traceable_engine:
    """While entered, the engine's two Python-side shortcuts step aside under ``torch.compile`` tracing, so
    that the net is one graph rather than one per layer (this bench's view only; eager runs are unchanged):
    the oneDNN Convolution + ReLU call (:func:`deepyeast.engine.layers.vision._pointwise_applies`; inductor
    fuses the ReLU into the convolution itself) and the kept bf16 weight copies
    (:func:`deepyeast.engine.layers.base.compute_blobs`, a cache keyed by version counters that dynamo
    cannot trace; in the graph autocast casts the weights)."""

    def __enter__(self):
        import torch
        from deepyeast.engine.layers import common, vision

        self._saved = [(vision, "_pointwise_applies", vision._pointwise_applies),
                       (vision, "compute_blobs", vision.compute_blobs), (common, "compute_blobs", common.compute_blobs)]
        pointwise, blobs = vision._pointwise_applies, vision.compute_blobs
        vision._pointwise_applies = lambda *a: False if torch.compiler.is_compiling() else pointwise(*a)
        eager_blobs = (lambda layer, *b: b if torch.compiler.is_compiling() else blobs(layer, *b))
        vision.compute_blobs = common.compute_blobs = eager_blobs
        return self

    def __exit__(self, *exc):
        for module, name, value in self._saved:
            setattr(module, name, value)
        return False


def largest_differences(got, want):
    """(largest absolute, largest relative) difference of two arrays (relative to ``|want|``, 1e-30 floor)."""
    import numpy as np

    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    d = np.abs(got - want)
    return float(d.max()), float((d / np.maximum(np.abs(want), 1e-30)).max())


def _interleaved_best(fns, rounds):
    """Best seconds per name of ``fns`` (name -> callable), called once each per round, the order rotated."""
    names = list(fns)
    best = {n: float("inf") for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            fns[n]()
            best[n] = min(best[n], time.perf_counter() - t)
    return best


def compile_inference(net_files, precision, crops, rounds, batch=100):
    """The Predictor's deploy net eager against its ``torch.compile`` on ``crops`` (float32 N x C x H x W):
    dict(eager_ms, compiled_ms per batch, compile_s of the first compiled call, abs/rel largest probability
    difference over all crops, calls_changed)."""
    import numpy as np
    import torch
    from deepyeast.engine.inference import InferenceSettings, Predictor

    pred = Predictor(net_files, InferenceSettings(precision=precision, batch=batch))
    blob = pred.keep[0]

    def eager(x):
        return pred.module.blobs(x)[blob]

    compiled = torch.compile(eager, dynamic=False)
    batches = [torch.from_numpy(np.ascontiguousarray(crops[s:s + batch])) for s in range(0, len(crops) - batch + 1,
                                                                                          batch)]
    with traceable_engine(), torch.inference_mode():
        t = time.perf_counter()
        compiled(batches[0])
        compile_s = time.perf_counter() - t
        want = np.concatenate([eager(x).float().numpy() for x in batches])
        got = np.concatenate([compiled(x).float().numpy() for x in batches])
        eager(batches[0])
        best = _interleaved_best({"eager": lambda: eager(batches[0]), "compiled": lambda: compiled(batches[0])},
                                 rounds)
    d_abs, d_rel = largest_differences(got, want)
    return dict(eager_ms=best["eager"] * 1e3, compiled_ms=best["compiled"] * 1e3, compile_s=compile_s,
                abs=d_abs, rel=d_rel, calls_changed=int((got.argmax(1) != want.argmax(1)).sum()), n=len(got))


_RANDOM_LAYERS = ("Data", "Dropout")
"""Layers that draw from the net's random streams (crop offsets and mirrors, dropout masks): left out of the
compiled graph, where inductor would replace the draws by its own generator (other masks, other crops)."""


def compile_training(folder, model, precision, rounds, iterations=10):
    """A Solver with its train net's forward under ``torch.compile`` against an eager Solver of the same seed:
    dict(eager_ms, compiled_ms per iteration (best of ``rounds``), compile_s of the first compiled step,
    first_abs/first_rel: the difference of the first iteration's losses (same weights, same batch: the
    arithmetic alone), abs/rel: the largest over the ``iterations`` after it (gradients' differences
    carried on by the updates), nchw_abs/nchw_rel: the same for an eager Solver in NCHW instead of
    channels-last (another rounding of the same arithmetic, for scale))."""
    import torch

    eager, comp = make_solver(folder, model, precision), make_solver(folder, model, precision)
    nchw = make_solver(folder, model, precision, channels_last=False)
    for step in comp.net._steps:
        if any(layer.caffe_type in _RANDOM_LAYERS for layer in step.layers):
            step.run = torch.compiler.disable(step.run)  # their draws from the net's own generators stay eager
    comp.net.forward = torch.compile(comp.net.forward, dynamic=False)
    losses = {"eager": [], "compiled": [], "nchw": []}
    with traceable_engine():
        for i in range(iterations + 1):
            for name, solver in (("eager", eager), ("nchw", nchw), ("compiled", comp)):
                t = time.perf_counter()
                solver.step(1)
                if i == 0 and name == "compiled":
                    compile_s = time.perf_counter() - t
                losses[name].append(float(solver.net.loss.detach()))
        best = _interleaved_best({"eager": lambda: eager.step(1), "compiled": lambda: comp.step(1)}, rounds)
    le = losses["eager"]
    first_abs, first_rel = largest_differences(losses["compiled"][:1], le[:1])
    d_abs, d_rel = largest_differences(losses["compiled"][1:], le[1:])
    n_abs, n_rel = largest_differences(losses["nchw"][1:], le[1:])
    return dict(eager_ms=best["eager"] * 1e3, compiled_ms=best["compiled"] * 1e3, compile_s=compile_s,
                first_abs=first_abs, first_rel=first_rel, abs=d_abs, rel=d_rel, nchw_abs=n_abs, nchw_rel=n_rel,
                losses=losses)


def compile_crops(examples, n, seed=0):
    """``n`` float32 crops for the inference comparison: uint8 ``examples`` (a bundle's example crops) drawn
    with replacement, +-8 grey levels of noise added; without examples random cells (N(0, 40))."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if examples is not None and len(examples):
        noisy = (examples[rng.integers(0, len(examples), n)].astype(np.int16)
                 + rng.integers(-8, 9, (n,) + examples.shape[1:]))
        return np.clip(noisy, 0, 255).astype(np.float32)
    return (rng.standard_normal((n, 2, 64, 64)) * 40).astype(np.float32)


def compile_section(args, folder, model, threads):
    """The torch.compile section's markdown (inference on the Predictor's net, the training step)."""
    import torch
    from bench_engine import DEPLOY, random_deploy_weights
    from deepyeast.engine.inference import NetFiles

    import torch._inductor.config

    torch._inductor.config.force_disable_caches = True  # the first compiled call is a cold compile, every run
    loads = [os.getloadavg()[0]]
    t0 = time.time()
    if args.bundle:
        from deepyeast.model import read_bundle
        bundle = read_bundle(args.bundle)
        net_files = bundle.net_files
        examples = bundle.examples()
        what = f"the model bundle `{os.path.basename(os.path.normpath(args.bundle))}` on 300 of its example crops " \
               "with +-8 grey levels of noise"
    else:
        net_files, examples = NetFiles(DEPLOY, random_deploy_weights(), source="random weights"), None
        what = "random weights (bench_engine.random_deploy_weights) on 300 random cells"
    crops = compile_crops(examples, 300)
    rows = []
    for p in ("fp32", "bf16"):
        r = compile_inference(net_files, p, crops, args.rounds)
        loads.append(os.getloadavg()[0])
        print(f"compile inference {p}: {r}", flush=True)
        rows.append((f"inference, the Predictor's deploy net, batch 100 ({what})", p, r,
                     f"probabilities: largest difference {r['abs']:.2g} absolute, {r['rel']:.2g} relative; "
                     f"{r['calls_changed']} of {r['n']} calls changed"))
    for p in ("fp32", "bf16"):
        r = compile_training(folder, model, p, args.rounds)
        loads.append(os.getloadavg()[0])
        print(f"compile training {p}: {r}", flush=True)
        rows.append((f"training, Solver iteration at batch {args.batch} (train net's forward compiled)", p, r,
                     f"losses from the same seed: first iteration (same weights) {r['first_rel']:.2g} relative; "
                     f"the 10 after it up to {r['rel']:.2g} relative (eager NCHW against eager channels-last, "
                     f"for scale: {r['nchw_rel']:.2g})"))
    md = [f"`python bench/bench_profile.py --compile-only{' --bundle ...' if args.bundle else ''} --rounds "
          f"{args.rounds}`: torch {torch.__version__} `torch.compile` (inductor, default mode, static shapes), "
          f"{threads} thread(s); compiled and eager interleaved in {args.rounds} rounds after warm-up, each figure its "
          "best; the first compiled call (tracing and code generation, inductor's caches off) timed apart. While "
          "compiling, the engine's oneDNN Convolution + ReLU call and its kept bf16 weight copies step aside so the "
          "net traces as one graph (`traceable_engine`; inductor fuses the ReLU and autocast casts the weights in the "
          "graph); in training the Data and Dropout layers stay eager (their random draws).", "",
          "| what | precision | eager ms | compiled ms | compiled / eager | first compiled call s | exactness |",
          "|---|---|---:|---:|---:|---:|---|"]
    for what_, p, r, exact in rows:
        md.append(f"| {what_} | {p} | {r['eager_ms']:.0f} | {r['compiled_ms']:.0f} | "
                  f"{r['compiled_ms'] / r['eager_ms']:.3f} | {r['compile_s']:.1f} | {exact} |")
    gains = [1 - r["compiled_ms"] / r["eager_ms"] for _, _, r, _ in rows]
    md += ["", f"Largest gain of the compiled net: {100 * max(gains):.0f}% (the issue asks >= 10% to adopt it)."]
    loads.append(os.getloadavg()[0])
    md += ["", f"- 1-minute load average {min(loads):.1f} to {max(loads):.1f} during the run ({os.cpu_count()} cores)"
           + ("; the machine was loaded by other work: the interleaved rounds share it alike, but absolute figures "
              "are deflated" if max(loads) > (os.cpu_count() or 1) * 1.2 else ""),
           f"- torch.compile comparison: {(time.time() - t0) / 60:.1f} min"]
    return "\n".join(md)


# ---------------------------------------------------------------------------- report

def _split_table(columns, ideal):
    """Markdown rows: category x columns (ms and % of the column's wall), GEMM-rate time, unaccounted."""
    names = list(columns)
    head = "| where the time goes | " + " | ".join(names) + " |"
    rows = [head, "|---|" + "---:|" * len(names)]
    for cat in CATEGORIES:
        cells = []
        for n in names:
            ms = columns[n]["split"][cat]
            cells.append(f"{ms:.0f} ms ({100 * ms / columns[n]['profiled_ms']:.0f}%)")
        if any(columns[n]["split"][cat] >= 0.5 for n in names):
            rows.append(f"| {cat} | " + " | ".join(cells) + " |")
    rest = [columns[n]["profiled_ms"] - sum(columns[n]["split"].values()) for n in names]
    rows.append("| not in any op (Python, autograd engine and nodes, profiler) | "
                + " | ".join(f"{r:.0f} ms ({100 * r / columns[n]['profiled_ms']:.0f}%)" for r, n in zip(rest, names))
                + " |")
    rows.append("| **iteration under the profiler** | " + " | ".join(f"{columns[n]['profiled_ms']:.0f} ms"
                                                                    for n in names) + " |")
    rows.append("| **iteration without the profiler (best)** | "
                + " | ".join(f"{columns[n]['wall_ms']:.0f} ms" for n in names) + " |")
    rows.append("| the counted FLOPs at the measured GEMM limit | "
                + " | ".join(f"{ideal[n]:.0f} ms" for n in names) + " |")
    return rows


def _conv_table(columns, layer_flops):
    names = list(columns)
    rows = ["| layer | " + " | ".join(f"{n} forward | {n} backward" for n in names) + " |",
            "|---|" + "---:|---:|" * len(names)]
    for layer in columns[names[0]]["convs"]:
        fwd_flops = sum(layer_flops[name][0] for name in layer.split("+"))
        bwd_flops = sum(layer_flops[name][1] + layer_flops[name][2] for name in layer.split("+"))
        cells = []
        for n in names:
            f, b = columns[n]["convs"].get(layer, (0.0, 0.0))
            cells.append(f"{f:.0f} ms ({fwd_flops / max(f, 1e-9) / 1e6:.0f} GFLOP/s)")
            cells.append(f"{b:.0f} ms ({bwd_flops / max(b, 1e-9) / 1e6:.0f} GFLOP/s)")
        rows.append(f"| {layer} | " + " | ".join(cells) + " |")
    return rows


def ab_markdown(ab, rounds, iterations, batch, threads, loads):
    """The A/B section: per precision each variant's best ms per iteration and its ratio to the engine now."""
    import torch

    precisions = list(ab)
    md = [f"`python bench/bench_profile.py --ab-only`: Solver iterations (forward, backward, Caffe's SGD update; "
          f"lr 0.001, momentum 0.9, weight decay 0.0005) of `train_val.prototxt` at batch {batch} on synthetic "
          f"cells, torch {torch.__version__}, {threads} thread(s); every variant a Solver of its own in this "
          f"process, {rounds} interleaved rounds of {iterations} timed iterations (after one warm-up), each "
          "figure its best iteration.", "",
          "| variant | " + " | ".join(f"{p} ms per iteration | {p} / engine now" for p in precisions) + " |",
          "|---|" + "---:|---:|" * len(precisions)]
    names = list(OrderedDict((n, None) for p in precisions for n in ab[p]))
    for name in names:
        cells = []
        for p in precisions:
            if name in ab[p]:
                cells += [f"{ab[p][name]:.0f}", f"{ab[p][name] / ab[p]['engine now']:.3f}"]
            else:
                cells += ["n/a (nothing is cast in fp32)", ""]
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    md += ["", f"- 1-minute load average {min(loads):.1f} to {max(loads):.1f} during the rounds "
           f"({os.cpu_count()} cores)" + ("; the machine was loaded by other work: the interleaved rounds share it "
                                          "alike, but absolute figures are deflated"
                                          if max(loads) > (os.cpu_count() or 1) * 1.2 else "")]
    return md


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="GEMMs of 1024 and 2048 only, 2 iterations per setting")
    ap.add_argument("--iterations", type=int, help="timed and profiled iterations per setting (default 3, --quick 2)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the A/B of issue 24's training "
                                                          "changes (default %(default)s)")
    ap.add_argument("--ab-only", action="store_true", help="only the A/B of the training changes against the "
                                                           "engine before them (its own section)")
    ap.add_argument("--batch", type=int, default=100, help="training batch (default %(default)s; smaller only to "
                                                           "check the script, with --no-write)")
    ap.add_argument("--threads", type=int, help="threads (default torch's: OMP_NUM_THREADS or the cores)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "deepyeast_bench_engine"))
    ap.add_argument("--compile", action="store_true",
                    help="also BatchNorm + Scale + ReLU under torch.compile against eager (about 2 minutes more)")
    ap.add_argument("--compile-only", action="store_true",
                    help="only torch.compile of the deploy net and of the training step against eager (its own "
                         "section; about 5 minutes)")
    ap.add_argument("--bundle", help="with --compile-only: a model bundle folder whose net and example crops the "
                                     "inference comparison runs (default: random weights, random cells)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = ap.parse_args(argv)
    iterations = args.iterations or (2 if args.quick else 3)
    if args.batch != 100 and not args.no_write:
        ap.error("--batch other than 100 is for checking the script: add --no-write")

    import torch
    from bench_engine import bench_net, synthetic_bundle

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    t_start = time.time()
    folder = synthetic_bundle(args.workdir, 1000, 500)
    model = bench_net(folder, args.batch)
    if args.compile_only:
        text = compile_section(args, folder, model, threads)
        print(text)
        if not args.no_write:
            from _results import update_section
            update_section(SECTION_COMPILE, text)
        return 0
    if not args.ab_only:
        text = profile_section(args, folder, model, iterations, threads, t_start)
        print(text)
        if not args.no_write:
            from _results import update_section
            update_section(SECTION, text)

    t_ab = time.time()
    loads = [os.getloadavg()[0]]
    ab = OrderedDict()
    for p in ("bf16", "fp32"):
        ab[p] = ab_training(folder, model, p, baseline_variants(p), rounds=args.rounds, iterations=iterations)
        loads.append(os.getloadavg()[0])
        print(f"A/B {p}: {dict(ab[p])}", flush=True)
    md = ab_markdown(ab, args.rounds, iterations, args.batch, threads, loads)
    md.append(f"- A/B: {(time.time() - t_ab) / 60:.1f} min")
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        from _results import update_section
        update_section(SECTION_AB, text)
    return 0


def profile_section(args, folder, model, iterations, threads, t_start):
    """The profile section's markdown: GEMM limit, training split, per-layer convolutions, inference."""
    import torch
    import _peak
    from bench_engine import net_flops, random_deploy_weights
    from deepyeast.engine import Net

    loads = [os.getloadavg()[0]]
    fwd_cell, train_flops = net_flops()
    train_flops *= args.batch / 100.0
    layer_flops = Net.for_shapes(model, phase="TRAIN", data_shape=(2, 64, 64)).flop_counts()
    gemm = _peak.gemm_rates((1024, 2048) if args.quick else (1024, 2048, 4096), reps=3)
    limit = {p: max(v for k, v in gemm.items() if k[0] == p) for p in _peak.PRECISIONS}

    train = OrderedDict()
    for p in ("bf16", "fp32"):
        train[f"training {p}"] = profile_training(folder, model, p, iterations)
        loads.append(os.getloadavg()[0])
        print(f"training {p}: {train[f'training {p}']['wall_ms']:.0f} ms", flush=True)
    weights = random_deploy_weights()
    infer = OrderedDict()
    for b in (100, 256):
        r = profile_inference(weights, b, iterations)
        r["wall_ms"], r["profiled_ms"] = r["ms"], sum(r["split"].values())
        infer[f"bf16 deploy batch {b}"] = r
        loads.append(os.getloadavg()[0])
        print(f"inference bf16 batch {b}: {r['cells_per_s']:.0f} cells/s", flush=True)

    ideal = {n: gemm_ms(train_flops, limit[n.split()[-1]]) for n in train}
    md = [f"`python bench/bench_profile.py{' --quick' if args.quick else ''}`: torch {torch.__version__}, {threads} "
          f"threads. Measured GEMM limit (bench/_peak.py, best shape after warm-up): fp32 {limit['fp32']:.0f}, bf16 "
          f"{limit['bf16']:.0f} GFLOP/s. Training: Solver iterations (forward, backward, Caffe's SGD update) of "
          f"`train_val.prototxt` at batch {args.batch} ({train_flops / 1e9:.1f} GFLOP counted), {iterations} timed, "
          f"then {iterations} under torch.profiler; each op's self time in one category.", ""]
    md += _split_table(train, ideal)
    md += ["", "Convolutions per layer (training, from the profile; GFLOP/s of the layer's counted FLOPs):", ""]
    md += _conv_table(train, layer_flops)
    md += ["", "Inference, bf16 deploy path (BN folded; conv1 and the fully connected layers fp32 by design):", ""]
    ideal_inf = {n: gemm_ms(fwd_cell * int(n.split()[-1]), limit["bf16"]) for n in infer}
    md += _split_table(infer, ideal_inf)
    md += ["", "| forward of | " + " | ".join(infer) + " |", "|---|" + "---:|" * len(infer)]
    for layer in next(iter(infer.values()))["layers"]:
        md.append(f"| {layer} | " + " | ".join(f"{infer[n]['layers'].get(layer, 0.0):.1f} ms" for n in infer) + " |")
    if args.compile:
        rows = compile_check([(100, 64, 64, 64), (100, 128, 32, 32), (100, 256, 16, 16)], iterations + 1)
        md += ["", "BatchNorm + Scale + ReLU of the training net (forward and backward, channels-last), the engine's "
               "eager calls against the chain under `torch.compile` (inductor):", "",
               "| activation | dtype | eager ms | compiled ms | compiled / eager | first compile s | largest difference |",
               "|---|---|---:|---:|---:|---:|---:|"]
        for shape, dt, e, c, cs, d in rows:
            md.append(f"| {'x'.join(map(str, shape))} | {dt} | {e:.0f} | {c:.0f} | {c / e:.2f} | {cs:.1f} | {d:.2g} |")
    best_cells = max(r["cells_per_s"] for r in infer.values())
    need, pct, ok = goal_verdict(1000, fwd_cell / 1e9, limit["bf16"])
    md += ["", f"bf16 inference: best {best_cells:.0f} cells/s on {threads} thread(s) "
           f"({best_cells * fwd_cell / 1e9:.0f} GFLOP/s at {fwd_cell / 1e9:.3f} GFLOP per cell). The goal of 1,000 "
           f"cells/s needs {need:.0f} GFLOP/s = {pct:.0f}% of the measured bf16 GEMM limit here: "
           + ("reachable only with every layer at the GEMM rate" if ok else
              "NOT reachable on this machine at this arithmetic (it exceeds the best GEMM)") + "."]
    loads.append(os.getloadavg()[0])
    md += ["", f"- 1-minute load average {min(loads):.1f} to {max(loads):.1f} during the run ({os.cpu_count()} cores)"
           + ("; the machine was loaded by other work: absolute figures are deflated" if max(loads) > (
               os.cpu_count() or 1) * 1.2 else ""),
           f"- profile: {(time.time() - t_start) / 60:.1f} min"]
    return "\n".join(md)


if __name__ == "__main__":
    sys.exit(main())
