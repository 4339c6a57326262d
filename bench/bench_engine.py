"""Engine speed against the machine's limit and against real Caffe, on the DeepYeast net.

Usage (from the repository root)::

    python bench/bench_engine.py [--iterations 5] [--caffe-iterations 3] [--infer-batches 6]
                                 [--trained RUN | --train-iterations 240] [--no-write]

Measures in one run, on this machine, with the same thread count for everything of ours
(``torch.get_num_threads()``, i.e. ``OMP_NUM_THREADS``):

* the net's arithmetic, counted from the prototxt by the engine
  (:meth:`deepyeast.engine.Net.flop_counts`): FLOPs of a forward pass per cell and of a
  training iteration at batch 100.  Convention: a multiply-add is 2 FLOPs; only
  Convolution and InnerProduct are counted (weights x inputs; bias, BatchNorm, Scale,
  ReLU, pooling, softmax are elementwise and under 1%); a training iteration is the
  forward, the weight gradients and the input gradients (each one product of the
  forward's size), without conv1's input gradient, which Caffe does not compute;
* the machine's matrix-multiply peak in fp32 and bf16: ``torch.mm`` of 4096 x 4096
  matrices, and the same arithmetic through oneDNN (a 1x1 convolution, which is one
  GEMM), since on this CPU torch.mm's fp32 path (MKL) is not the fastest one;
* training (``deepyeast time``, TRAIN phase of ``train_val.prototxt``, batch 100,
  forward + backward) in fp32 and bf16, and real ``caffe time`` on the same file;
* inference: the TEST phase of ``train_val.prototxt`` (``deepyeast time -forward_only``,
  as Caffe's ``caffe time -phase TEST``), and the deploy path of ``analysis/predict.py``
  (:func:`deepyeast.engine.fold.deploy_net`: BatchNorm folded, ``torch.inference_mode``,
  channels-last) in fp32 and bf16 at several batch sizes;
* how many class calls bf16 changes against fp32 on a trained net: the test and
  validation cells of ``--trained RUN`` (a pipeline run folder, e.g. ``runs/demo`` after
  ``make demo``), or of a net this script trains briefly itself on a small synthetic
  screen (``--train-iterations``, bf16, then precise BatchNorm statistics).

Writes the "Engine speed" section of bench/RESULTS.md (unless --no-write).  Targets: on 2
CPU cores training >= 1.5x real Caffe, inference >= 4x real Caffe's cells/s (issue 15),
bf16 changing <= 0.5% of the calls, peak memory <= 4 GB.  The GPU is measured by
``bench/gpu_check.sh`` (bench/bench_gpu.py).
"""

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from deepyeast.caffe import caffe_pb2, root as caffe_root  # noqa: E402
from deepyeast.caffe.blobs import compute_mean, write_mean_binaryproto
from deepyeast.caffe.lmdb import write_datum_lmdb
from deepyeast.caffe.prototxt import read_prototxt, write_prototxt

AVG = {"forward_ms": r"Average Forward pass: (\S+) ms", "backward_ms": r"Average Backward pass: (\S+) ms",
       "forward_backward_ms": r"Average Forward-Backward: (\S+) ms"}
DEPLOY = os.path.join(REPO, "models", "deepyeast", "deploy.prototxt")


def synthetic_bundle(folder, n_train, n_val, seed=0):
    """Random 2x64x64 uint8 cells with 12 labels: train/val LMDBs and a mean; returns the folder."""
    import numpy as np
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for split, n in (("train", n_train), ("val", n_val)):
        path = os.path.join(folder, f"{split}_lmdb")
        if os.path.isdir(path):
            continue
        chunk = rng.integers(0, 256, (min(n, 1000), 2, 64, 64), dtype=np.uint8)
        # each image keeps one label (a learnable task: the schedule's lr 0.1 does not diverge on it)
        items = ((f"c{i:06d}", chunk[i % len(chunk)], (i % len(chunk)) % 12) for i in range(n))
        write_datum_lmdb(path, items, shuffle=False, map_size=max(1 << 28, n * 9000))
    mean_path = os.path.join(folder, "mean.binaryproto")
    if not os.path.exists(mean_path):
        from deepyeast.caffe.lmdb import iter_datum_lmdb
        write_mean_binaryproto(mean_path, compute_mean(img for _, img, _ in iter_datum_lmdb(
            os.path.join(folder, "train_lmdb"))))
    return folder


def bench_net(folder, batch=100):
    """A copy of train_val.prototxt reading the synthetic bundle (absolute paths)."""
    net = read_prototxt(os.path.join(REPO, "models", "deepyeast", "train_val.prototxt"), caffe_pb2.NetParameter)
    for layer in net.layer:
        if layer.type == "Data":
            train = layer.include[0].phase == caffe_pb2.TRAIN
            layer.data_param.source = os.path.join(folder, "train_lmdb" if train else "val_lmdb")
            layer.data_param.batch_size = batch
            layer.transform_param.mean_file = os.path.join(folder, "mean.binaryproto")
    path = os.path.join(folder, f"train_val_b{batch}.prototxt")
    write_prototxt(path, net)
    return path


def _parse(text):
    out = {}
    for key, pat in AVG.items():
        m = re.search(pat, text)
        if m:
            out[key] = float(m.group(1))
    return out


def ours_time(model, iterations, phase="TRAIN", forward_only=False, precision="fp32", threads=None):
    """Run ``python -m deepyeast time`` in a fresh process; returns (averages dict, peak RSS in MB)."""
    cmd = [sys.executable, "-m", "deepyeast", "time", "-model", model, "-iterations", str(iterations),
           "-phase", phase, "-precision", precision]
    if forward_only:
        cmd.append("-forward_only")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far
    if res.returncode != 0:
        raise RuntimeError(f"deepyeast time failed:\n{res.stderr[-3000:]}")
    return _parse(res.stderr), peak / 1024.0


def caffe_time(model, iterations, phase="TRAIN"):
    res = caffe_root.run_caffe(["time", "-model", model, "-iterations", str(iterations), "-phase", phase],
                               cwd=REPO, check=False, env={"OMP_NUM_THREADS": str(os.cpu_count() or 1)})
    if res.returncode != 0:
        raise RuntimeError(f"caffe time failed:\n{res.stdout[-3000:]}")
    return _parse(res.stdout)


# ---------------------------------------------------------------------------- arithmetic

def net_flops():
    """(forward FLOPs per cell, training FLOPs per iteration at batch 100) of the DeepYeast net."""
    from deepyeast.engine import Net
    counts = Net(DEPLOY, phase="TEST").flop_counts()  # the deploy net's batch is 100
    forward = sum(f for f, _, _ in counts.values())
    return forward / 100.0, float(sum(sum(v) for v in counts.values()))


def _timed(fn, min_reps=3, min_seconds=1.0):
    """(wall seconds, CPU seconds of this process) per call, after one warm-up call."""
    fn()
    reps, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while reps < min_reps or time.perf_counter() - wall0 < min_seconds:
        fn()
        reps += 1
    return (time.perf_counter() - wall0) / reps, (time.process_time() - cpu0) / reps


def matmul_peaks(n=4096):
    """GFLOP/s of dense products in fp32 and bf16: {(dtype name, 'torch.mm' | 'oneDNN'): GFLOP/s}."""
    import torch
    import torch.nn.functional as F
    out = {}
    with torch.inference_mode():
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a = torch.randn(n, n).to(dtype)
            b = torch.randn(n, n).to(dtype)
            wall, _ = _timed(lambda: torch.mm(a, b), min_reps=2, min_seconds=0.5)
            out[(name, "torch.mm")] = 2 * n ** 3 / wall / 1e9
            # the same GEMM through oneDNN: a 1x1 convolution, (16*32*32) x 1024 times 1024 x 1024
            x = torch.randn(16, 1024, 32, 32).to(dtype).contiguous(memory_format=torch.channels_last)
            w = torch.randn(1024, 1024, 1, 1).to(dtype)
            wall, _ = _timed(lambda: F.conv2d(x, w), min_reps=2, min_seconds=0.5)
            out[(name, "oneDNN")] = 2 * 16 * 32 * 32 * 1024 * 1024 / wall / 1e9
    return out


# ---------------------------------------------------------------------------- deploy inference

def random_deploy_weights(seed=7):
    """Deploy weights with non-trivial BatchNorm statistics (for timing: values do not matter)."""
    import torch
    from deepyeast.engine import Net
    net = Net(DEPLOY, phase="TEST", seed=seed)
    with torch.no_grad():
        for layer in net.layers:
            if layer.caffe_type == "BatchNorm":
                layer.blobs[1].fill_(1.0)
                layer.blobs[2].fill_(1.0)
    return {name: [t.detach().numpy().copy() for t in blobs] for name, blobs in net.layer_params().items()}


def deploy_rate(weights, precision, fold, batch, batches):
    """(cells/s wall, cells per CPU-second) of the deploy net on random cells."""
    import torch
    from deepyeast.engine.fold import deploy_net
    net = deploy_net(DEPLOY, weights, precision=precision, fold=fold)
    x = torch.randn(batch, 2, 64, 64) * 40
    with torch.inference_mode():
        wall, cpu = _timed(lambda: net(data=x), min_reps=batches, min_seconds=0)
    return batch / wall, batch / cpu


# ---------------------------------------------------------------------------- bf16 call changes

def brief_training(workdir, iterations):
    """Train DeepYeast briefly on a small synthetic screen (cached in ``workdir``).

    Returns (weights path, mean path, [LMDB paths of held-out cells], description).
    """
    run = os.path.join(workdir, "trained")
    lmdb = os.path.join(run, "lmdb")
    weights = os.path.join(run, f"bn_{iterations}.caffemodel")
    py = [sys.executable]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def call(args):
        res = subprocess.run(py + args, cwd=REPO, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed:\n{res.stderr[-3000:]}")

    if not os.path.exists(os.path.join(lmdb, "mean.binaryproto")):
        call(["data_prep/make_synthetic.py", os.path.join(run, "data"), "--size", "small", "--seed", "0"])
        call(["data_prep/make_lmdb.py", os.path.join(run, "data", "main"), lmdb])
    if not os.path.exists(weights):
        cfg = os.path.join(run, f"cfg_{iterations}")
        call(["data_prep/make_run_config.py", "--lmdb-dir", lmdb, "--out", cfg, "--set", f"max_iter={iterations}",
              "--set", f"stepsize={max(iterations // 3, 1)}", "--set", f"snapshot={iterations}",
              "--set", f"test_interval={iterations}", "--set", "test_iter=4", "--set", "display=20"])
        call(["-m", "deepyeast", "train", "-solver", os.path.join(cfg, "solver.prototxt"), "-precision", "bf16"])
        snap = os.path.join(cfg, "snapshots", f"deepyeast_iter_{iterations}.caffemodel")
        call(["-m", "deepyeast", "bnstats", "-model", os.path.join(cfg, "train_val.prototxt"), "-weights", snap,
              "-out", weights, "-iterations", "10"])
    return (weights, os.path.join(lmdb, "mean.binaryproto"),
            [os.path.join(lmdb, "val_lmdb"), os.path.join(lmdb, "test_lmdb")],
            f"DeepYeast trained here for {iterations} iterations (bf16, batch 100, base_lr 0.01) on the "
            "synthetic `small` screen (2,100 training cells), BatchNorm statistics recomputed over 10 batches")


def call_changes(weights, mean_path, lmdbs, batch=100):
    """Class calls of fp32 vs bf16 (both folded) and folded vs unfolded fp32 on the cells of ``lmdbs``."""
    import numpy as np
    import torch
    from deepyeast.engine.fold import deploy_net
    from deepyeast.caffe.blobs import read_mean_binaryproto
    from deepyeast.caffe.lmdb import read_datum_lmdb
    mean = read_mean_binaryproto(mean_path)
    images, labels = [], []
    for path in lmdbs:
        im, lab, _ = read_datum_lmdb(path)
        images.append(im)
        labels.append(lab)
    x = np.concatenate(images).astype(np.float32) - mean
    labels = np.concatenate(labels)
    probs = {}
    for key, precision, fold in (("fp32", "fp32", True), ("bf16", "bf16", True), ("unfolded", "fp32", False)):
        net = deploy_net(DEPLOY, weights, precision=precision, fold=fold)
        out = []
        with torch.inference_mode():
            for s in range(0, len(x), batch):
                out.append(net(data=torch.from_numpy(x[s:s + batch]))["prob"].float().numpy())
        probs[key] = np.concatenate(out)
    calls = {k: p.argmax(1) for k, p in probs.items()}
    return dict(n=len(x), bf16_changed=int((calls["bf16"] != calls["fp32"]).sum()),
                fold_changed=int((calls["unfolded"] != calls["fp32"]).sum()),
                fold_max_prob_diff=float(np.abs(probs["unfolded"] - probs["fp32"]).max()),
                bf16_max_prob_diff=float(np.abs(probs["bf16"] - probs["fp32"]).max()),
                acc_fp32=float((calls["fp32"] == labels).mean()), acc_bf16=float((calls["bf16"] == labels).mean()))


# ---------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=5, help="timed training iterations of ours (default 5)")
    ap.add_argument("--caffe-iterations", type=int, default=3, help="timed iterations of real Caffe (default 3)")
    ap.add_argument("--infer-batches", type=int, default=6, help="timed batches per inference setting (default 6)")
    ap.add_argument("--batches", default="50,100", help="deploy batch sizes timed (default 50,100)")
    ap.add_argument("--trained", help="pipeline run folder (RUN/train/final.caffemodel, RUN/lmdb/) whose "
                                      "test and validation cells measure the bf16 call changes")
    ap.add_argument("--train-iterations", type=int, default=240,
                    help="without --trained: train this many iterations here for the bf16 check (0: skip it)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "deepyeast_bench_engine"))
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = ap.parse_args(argv)

    import torch
    threads = torch.get_num_threads()
    load0 = os.getloadavg()[0]
    t_start = time.time()
    folder = synthetic_bundle(args.workdir, 1000, 500)
    model = bench_net(folder, 100)
    fwd_cell, train_flops = net_flops()
    test_flops = 100 * fwd_cell
    notes = []

    peaks = matmul_peaks()
    print("matmul GFLOP/s:", {f"{k[0]} {k[1]}": round(v) for k, v in peaks.items()}, flush=True)
    peak = {p: max(v for (d, _), v in peaks.items() if d == p) for p in ("fp32", "bf16")}

    train = {p: ours_time(model, args.iterations, precision=p, threads=threads) for p in ("fp32", "bf16")}
    test_phase, peak_test = ours_time(model, args.iterations * 2, phase="TEST", forward_only=True, threads=threads)
    print("ours train:", train, "TEST phase:", test_phase, flush=True)
    weights = random_deploy_weights()
    batches = [int(b) for b in args.batches.split(",") if b]
    deploy = {}
    for p in ("fp32", "bf16"):
        for b in batches:
            deploy[(p, b)] = deploy_rate(weights, p, True, b, args.infer_batches)
            print(f"deploy {p} batch {b}: {deploy[(p, b)][0]:.0f} cells/s", flush=True)
    caffe_train = caffe_test = None
    if caffe_root.have_caffe_root():
        caffe_train = caffe_time(model, args.caffe_iterations)
        caffe_test = caffe_time(model, args.caffe_iterations, phase="TEST")
        print(f"caffe: train {caffe_train};  TEST {caffe_test}", flush=True)
    else:
        notes.append(f"real Caffe not measured: {caffe_root.missing_reason()}")

    changes = None
    if args.trained:
        run = args.trained
        changes = call_changes(os.path.join(run, "train", "final.caffemodel"),
                               os.path.join(run, "lmdb", "mean.binaryproto"),
                               [os.path.join(run, "lmdb", "val_lmdb"), os.path.join(run, "lmdb", "test_lmdb")])
        trained_what = f"the trained net of `{run}` (its validation and test cells)"
    elif args.train_iterations > 0:
        w, mean, lmdbs, trained_what = brief_training(args.workdir, args.train_iterations)
        changes = call_changes(w, mean, lmdbs)
    if changes:
        print("calls:", changes, flush=True)

    # ------------------------------------------------------------------ table
    def gf(flops, ms):
        return flops / (ms * 1e-3) / 1e9

    def pct(v, p):
        return f"{100 * v / peak[p]:.0f}%"

    def vs(ours, ref):
        return f"{ours / ref:.2f}x" if ref else "n/a"

    best = {p: max((b for b in batches), key=lambda b: deploy[(p, b)][0]) for p in ("fp32", "bf16")}
    caffe_cells = 100.0 / caffe_test["forward_ms"] * 1e3 if caffe_test else None
    caffe_train_ms = caffe_train["forward_backward_ms"] if caffe_train else None
    rows = [
        ("matmul peak fp32: torch.mm 4096^2 / oneDNN GEMM", "", "",
         f"{peaks[('fp32', 'torch.mm')]:.0f} / {peaks[('fp32', 'oneDNN')]:.0f}", "", "", ""),
        ("matmul peak bf16: torch.mm 4096^2 / oneDNN GEMM", "", "",
         f"{peaks[('bf16', 'torch.mm')]:.0f} / {peaks[('bf16', 'oneDNN')]:.0f}", "", "", ""),
    ]
    if caffe_train:
        rows.append(("real Caffe 1.0: training (`caffe time`, TRAIN)", f"{train_flops / 1e9:.0f}",
                     f"{caffe_train_ms:.0f} ms", f"{gf(train_flops, caffe_train_ms):.0f}",
                     pct(gf(train_flops, caffe_train_ms), "fp32"), "", "1.00x"))
    for p in ("fp32", "bf16"):
        ms = train[p][0]["forward_backward_ms"]
        rows.append((f"ours: training {p} (`deepyeast time`, TRAIN)", f"{train_flops / 1e9:.0f}", f"{ms:.0f} ms",
                     f"{gf(train_flops, ms):.0f}", pct(gf(train_flops, ms), p), "",
                     vs(caffe_train_ms, ms) if caffe_train else "n/a"))
    if caffe_test:
        ms = caffe_test["forward_ms"]
        rows.append(("real Caffe 1.0: inference (`caffe time -phase TEST`)", f"{test_flops / 1e9:.0f}",
                     f"{ms:.0f} ms", f"{gf(test_flops, ms):.0f}", pct(gf(test_flops, ms), "fp32"),
                     f"{caffe_cells:.0f}", "1.00x"))
    ms = test_phase["forward_ms"]
    rows.append(("ours: inference fp32, TEST phase as Caffe (`deepyeast time -forward_only`)",
                 f"{test_flops / 1e9:.0f}", f"{ms:.0f} ms", f"{gf(test_flops, ms):.0f}", pct(gf(test_flops, ms), "fp32"),
                 f"{1e5 / ms:.0f}", vs(1e5 / ms, caffe_cells) if caffe_cells else "n/a"))
    for p in ("fp32", "bf16"):
        for b in batches:
            cells, cpu_cells = deploy[(p, b)]
            mark = " (best)" if b == best[p] and len(batches) > 1 else ""
            rows.append((f"ours: inference {p}, deploy path (BN folded, inference_mode), batch {b}{mark}",
                         f"{fwd_cell * b / 1e9:.0f}", f"{b / cells * 1e3:.0f} ms", f"{cells * fwd_cell / 1e9:.0f}",
                         pct(cells * fwd_cell / 1e9, p), f"{cells:.0f}", vs(cells, caffe_cells) if caffe_cells else "n/a"))
    md = [f"`python bench/bench_engine.py --iterations {args.iterations} --caffe-iterations {args.caffe_iterations} "
          f"--infer-batches {args.infer_batches}`: DeepYeast `train_val.prototxt` / `deploy.prototxt`, synthetic "
          f"cells; torch {torch.__version__}, {threads} threads for ours (OMP_NUM_THREADS), "
          f"{os.cpu_count()} for real Caffe.", "",
          f"Arithmetic counted from the prototxt (`Net.flop_counts`): forward {fwd_cell / 1e9:.3f} GFLOP per cell; "
          f"training iteration at batch 100 {train_flops / 1e9:.1f} GFLOP (forward + weight gradients + input "
          "gradients, conv1's input gradient excluded as in Caffe). A multiply-add counts 2 FLOPs; only "
          "Convolution and InnerProduct are counted (BatchNorm, Scale, ReLU, pooling, softmax are elementwise, "
          "under 1%). Percentages are of the best measured matmul rate of the same precision "
          f"(fp32 {peak['fp32']:.0f}, bf16 {peak['bf16']:.0f} GFLOP/s on {threads} threads).", "",
          "| measure | GFLOP per batch | time per batch | GFLOP/s | % of peak | cells/s | vs real Caffe |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    md += [f"| {' | '.join(r)} |" for r in rows]
    peak_mb = max(max(t[1] for t in train.values()), peak_test)
    md += ["", f"Peak memory of our `deepyeast time` processes (ru_maxrss): {peak_mb / 1024:.2f} GB (target <= 4 GB)."]
    if caffe_cells:
        got = deploy[("bf16", best["bf16"])][0] / caffe_cells
        md.append(f"Inference target (>= 4x real Caffe's cells/s, same run): bf16 deploy path "
                  f"{got:.2f}x -> {'met' if got >= 4 else 'NOT met'}; fp32 deploy path "
                  f"{deploy[('fp32', best['fp32'])][0] / caffe_cells:.2f}x.")
    if changes:
        pct_changed = 100.0 * changes["bf16_changed"] / changes["n"]
        md += ["", f"bf16 against fp32 on {trained_what}: {changes['bf16_changed']} of {changes['n']} calls change "
               f"({pct_changed:.2f}%; target <= 0.5%: {'met' if pct_changed <= 0.5 else 'NOT met'}), largest "
               f"probability difference {changes['bf16_max_prob_diff']:.3g}; accuracy fp32 {changes['acc_fp32']:.3f}, "
               f"bf16 {changes['acc_bf16']:.3f}. Folded against unfolded fp32: {changes['fold_changed']} calls change, "
               f"largest probability difference {changes['fold_max_prob_diff']:.2g} (target <= 1e-5)."]
    load1 = os.getloadavg()[0]
    if max(load0, load1) > (os.cpu_count() or 1) * 1.2:
        notes.append(f"the machine was busy (1-minute load average {load0:.1f} at the start, {load1:.1f} at the end, "
                     f"on {os.cpu_count()} cores): absolute times are inflated and GFLOP/s deflated, and each "
                     "measurement got a different share of the CPU, so above about twice the core count even the "
                     "ratios are not representative; rerun on an idle machine")
    notes.append(f"whole benchmark: {(time.time() - t_start) / 60:.1f} min")
    md += [""] + [f"- {n}" for n in notes]
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _results import update_section
        update_section("Engine speed (bench/bench_engine.py)", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
