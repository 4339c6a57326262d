"""Engine speed against the machine's limit and against real Caffe, on the DeepYeast net.

Usage (from the repository root)::

    python bench/bench_engine.py [--quick] [--rounds 3] [--iterations 3] [--caffe-iterations 3]
                                 [--trained RUN | --train-iterations 240] [--no-caffe] [--against REF]
                                 [--no-write]

``--quick`` (a few minutes: no real Caffe, no bf16 call check) is the one command to rerun on an
idle machine.  Measures in one run, on this machine, with the same thread count for everything of
ours (``torch.get_num_threads()``, i.e. ``OMP_NUM_THREADS``), in interleaved rounds (GEMMs,
training, inference; each figure the best round, so a loaded machine's bursts of other work
affect all figures alike):

* the net's arithmetic, counted from the prototxt by the engine
  (:meth:`deepyeast.engine.Net.flop_counts`): FLOPs of a forward pass per cell and of a
  training iteration at batch 100.  Convention: a multiply-add is 2 FLOPs; only
  Convolution and InnerProduct are counted (weights x inputs; bias, BatchNorm, Scale,
  ReLU, pooling, softmax are elementwise and under 1%); a training iteration is the
  forward, the weight gradients and the input gradients (each one product of the
  forward's size), without conv1's input gradient, which Caffe does not compute;
* the machine's limit (bench/_peak.py): per precision the best of several GEMM shapes
  after warm-up, through ``torch.mm``, ``F.linear`` and oneDNN's convolution (a 1 x 1
  convolution in channels-last, AMX where present), beside the data-sheet peak from the
  CPU's ISA flags and clock; every percentage is of the measured limit, which a workload
  that beats every GEMM replaces (so none exceeds 100%);
* training (``deepyeast time``, TRAIN phase of ``train_val.prototxt``, batch 100,
  forward + backward) in fp32 and bf16, and real ``caffe time`` on the same file;
* inference: the TEST phase of ``train_val.prototxt`` (``deepyeast time -forward_only``,
  as Caffe's ``caffe time -phase TEST``), and the deploy path of ``analysis/predict.py``
  (:func:`deepyeast.engine.fold.deploy_net`: BatchNorm folded, ``torch.inference_mode``,
  channels-last) in fp32 and bf16 at several batch sizes;
* with ``--against REF`` (a git commit of this repository): the same ``deepyeast time`` runs of the
  engine as it was at REF (its tree exported by ``git archive``), in the same rounds, so that "no
  worse than before" is measured on this machine in one run rather than against figures of another day;
* how many class calls bf16 changes against fp32 on a trained net: the test and
  validation cells of ``--trained RUN`` (a pipeline run folder, e.g. ``runs/demo`` after
  ``make demo``), or of a net this script trains briefly itself on a small synthetic
  screen (``--train-iterations``, bf16, then precise BatchNorm statistics).

Writes the "Engine speed" section of bench/RESULTS.md (unless --no-write).  Targets: on 2
CPU cores training >= 1.5x real Caffe, inference >= 4x real Caffe's cells/s (issue 15),
bf16 changing <= 0.5% of the calls, peak memory <= 4 GB; bf16 training >= 50% and fp32
training >= 75% of the measured limit of its precision, bf16 inference >= 1,000 cells/s
(issue 24).  The GPU is measured by
``bench/gpu_check.sh`` (bench/bench_gpu.py).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _peak  # noqa: E402
from _results import export_ref  # noqa: E402,F401  (bench/_results.py: one export of an older tree)
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


def ours_time(model, iterations, phase="TRAIN", forward_only=False, precision="fp32", threads=None, repo=REPO):
    """Run ``python -m deepyeast time`` in a fresh process (the package of ``repo``: this tree, or one
    :func:`export_ref` made); returns (averages dict, the process's peak resident memory in MB)."""
    cmd = [sys.executable, "-c", _PEAK_REPORTING_MAIN, "time", "-model", model, "-iterations", str(iterations),
           "-phase", phase, "-precision", precision]
    if forward_only:
        cmd.append("-forward_only")
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    res = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"deepyeast time failed:\n{res.stderr[-3000:]}")
    return _parse(res.stderr), peak_of(res.stderr)


_PEAK_REPORTING_MAIN = (
    "import atexit, runpy, sys\n"
    "def peak():\n"
    "    try:\n"
    "        with open('/proc/self/status') as f:\n"
    "            kb = [line.split()[1] for line in f if line.startswith('VmHWM:')]\n"
    "    except OSError:\n"
    "        kb = []\n"
    "    if not kb:\n"
    "        import resource\n"
    "        kb = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]\n"
    "    sys.stderr.write(f'peak resident memory: {kb[0]} kB\\n')\n"
    "atexit.register(peak)\n"
    "sys.argv[0] = 'deepyeast'\n"
    "runpy.run_module('deepyeast', run_name='__main__', alter_sys=True)\n")
"""``python -m deepyeast`` that writes its own peak resident memory to stderr as it exits: the high-water mark
of its image (``VmHWM``), not ``ru_maxrss``, which Linux carries over ``exec`` from the forked copy of this
bench process (its GEMM buffers: gigabytes) -- what a child's ``getrusage``/``wait4`` figure then reports."""


def peak_of(stderr):
    """Megabytes of the ``peak resident memory: N kB`` line of :data:`_PEAK_REPORTING_MAIN` (0 when absent)."""
    m = re.search(r"peak resident memory: (\d+) kB", stderr)
    return int(m.group(1)) / 1024.0 if m else 0.0


def caffe_time(model, iterations, phase="TRAIN"):
    res = caffe_root.run_caffe(["time", "-model", model, "-iterations", str(iterations), "-phase", phase],
                               cwd=REPO, check=False, env={"OMP_NUM_THREADS": str(os.cpu_count() or 1)})
    if res.returncode != 0:
        raise RuntimeError(f"caffe time failed:\n{res.stdout[-3000:]}")
    return _parse(res.stdout)


# ---------------------------------------------------------------------------- arithmetic

def net_flops():
    """(forward FLOPs per cell, training FLOPs per iteration at batch 100) of the DeepYeast net."""
    return _peak.net_arithmetic(DEPLOY)  # the deploy net's batch is 100


def _timed(fn, min_reps=3, min_seconds=1.0):
    """(wall seconds, CPU seconds of this process) per call, after one warm-up call."""
    fn()
    reps, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while reps < min_reps or time.perf_counter() - wall0 < min_seconds:
        fn()
        reps += 1
    return (time.perf_counter() - wall0) / reps, (time.process_time() - cpu0) / reps


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
    ap.add_argument("--quick", action="store_true",
                    help="a few minutes: 2 rounds, GEMMs of 1024 and 2048, 2 training iterations per round, "
                         "no real Caffe, no bf16 call check")
    ap.add_argument("--rounds", type=int, help="interleaved rounds of GEMMs, training and inference; each figure is "
                                               "the best round (default 3, --quick 2)")
    ap.add_argument("--iterations", type=int, help="timed training iterations of ours per round (default 3, --quick 2)")
    ap.add_argument("--caffe-iterations", type=int, default=3, help="timed iterations of real Caffe (default 3)")
    ap.add_argument("--infer-batches", type=int, default=4, help="timed batches per inference setting and round "
                                                                 "(default 4)")
    ap.add_argument("--batches", default="50,100", help="deploy batch sizes timed (default 50,100)")
    ap.add_argument("--no-caffe", action="store_true", help="leave real Caffe out")
    ap.add_argument("--threads", type=int, help="threads for ours and the GEMMs (default: torch's, i.e. "
                                                "OMP_NUM_THREADS or the cores); 1 gives per-core figures that a "
                                                "machine loaded by other work disturbs least")
    ap.add_argument("--trained", help="pipeline run folder (RUN/train/final.caffemodel, RUN/lmdb/) whose "
                                      "test and validation cells measure the bf16 call changes")
    ap.add_argument("--train-iterations", type=int, default=240,
                    help="without --trained: train this many iterations here for the bf16 check (0: skip it)")
    ap.add_argument("--against", metavar="REF", help="also time the engine as it was at git commit REF (training "
                                                     "fp32 and bf16, TEST-phase inference) in the same rounds")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "deepyeast_bench_engine"))
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = ap.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 3)
    iterations = args.iterations or (2 if args.quick else 3)
    sizes = (1024, 2048) if args.quick else (1024, 2048, 4096)
    if args.quick:
        args.no_caffe = True
        if not args.trained:
            args.train_iterations = 0

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    cpu = _peak.cpu_description()
    isa = _peak.isa_peaks(cpu, threads)
    per_cycle = _peak.isa_flops_per_cycle(cpu["flags"])
    loads = [os.getloadavg()[0]]
    t_start = time.time()
    folder = synthetic_bundle(args.workdir, 1000, 500)
    model = bench_net(folder, 100)
    fwd_cell, train_flops = net_flops()
    test_flops = 100 * fwd_cell
    notes = []
    weights = random_deploy_weights()
    batches = [int(b) for b in args.batches.split(",") if b]

    ref = export_ref(args.against, args.workdir) if args.against else None
    ref_ms = {}  # (what, precision) -> best ms of the engine at --against

    def time_ref(key, **kw):
        avg, _ = ours_time(model, repo=ref[0], threads=threads, **kw)
        value = avg["forward_ms" if kw.get("forward_only") else "forward_backward_ms"]
        ref_ms[key] = min(ref_ms.get(key, float("inf")), value)

    # interleaved rounds: each round measures the GEMMs, training and inference once; the best round counts
    gemm, train_ms, deploy, peak_mb, test_ms = {}, {}, {}, 0.0, float("inf")
    for r in range(rounds):
        _peak.merge_best(gemm, _peak.gemm_rates(sizes, reps=3))
        for p in _peak.PRECISIONS:
            if ref and r % 2:  # the older engine first in every other round
                time_ref(("training", p), iterations=iterations, precision=p)
            avg, mb = ours_time(model, iterations, precision=p, threads=threads)
            train_ms[p] = min(train_ms.get(p, float("inf")), avg["forward_backward_ms"])
            peak_mb = max(peak_mb, mb)
            if ref and not r % 2:
                time_ref(("training", p), iterations=iterations, precision=p)
            for b in batches:
                cells, _ = deploy_rate(weights, p, True, b, args.infer_batches)
                deploy[(p, b)] = max(deploy.get((p, b), 0.0), cells)
        loads.append(os.getloadavg()[0])
        print(f"round {r + 1}/{rounds}: best GEMM fp32 {max(v for k, v in gemm.items() if k[0] == 'fp32'):.0f}, "
              f"bf16 {max(v for k, v in gemm.items() if k[0] == 'bf16'):.0f} GFLOP/s; training ms {train_ms}; "
              f"deploy cells/s { {f'{p} {b}': round(v) for (p, b), v in deploy.items()} }", flush=True)
        if ref:  # TEST-phase inference of both engines in every round (it is compared)
            avg, mb = ours_time(model, iterations * 2, phase="TEST", forward_only=True, threads=threads)
            test_ms, peak_mb = min(test_ms, avg["forward_ms"]), max(peak_mb, mb)
            time_ref(("inference TEST phase", "fp32"), iterations=iterations * 2, phase="TEST", forward_only=True)
    if not ref:
        avg, mb = ours_time(model, iterations * 2, phase="TEST", forward_only=True, threads=threads)
        test_ms, peak_mb = avg["forward_ms"], max(peak_mb, mb)
    test_phase = {"forward_ms": test_ms}
    caffe_train = caffe_test = None
    if args.no_caffe:
        notes.append("real Caffe not measured (--quick / --no-caffe)")
    elif caffe_root.have_caffe_root():
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

    # ------------------------------------------------------------------ percentages
    def gf(flops, ms):
        return flops / (ms * 1e-3) / 1e9

    best = {p: max(batches, key=lambda b: deploy[(p, b)]) for p in _peak.PRECISIONS}
    workloads = {f"training {p}": (p, gf(train_flops, train_ms[p])) for p in _peak.PRECISIONS}
    workloads["inference fp32 TEST phase"] = ("fp32", gf(test_flops, test_phase["forward_ms"]))
    for (p, b), cells in deploy.items():
        workloads[f"inference {p} deploy batch {b}"] = (p, cells * fwd_cell / 1e9)
    limit = _peak.limits(gemm, workloads)

    def pct(rate, p):
        return f"{_peak.percent(rate, limit[p][0]):.0f}%"

    def pct_isa(rate, p):
        v = _peak.percent_of_isa(rate, isa[p])
        return f"{v:.0f}%" if v is not None else "n/a"

    def vs(ours, ref):
        return f"{ours / ref:.2f}x" if ref else "n/a"

    caffe_cells = 100.0 / caffe_test["forward_ms"] * 1e3 if caffe_test else None
    caffe_train_ms = caffe_train["forward_backward_ms"] if caffe_train else None
    gemm_rows = ["| precision | path | shape (m x k x n) | GFLOP/s | % of ISA peak |", "|---|---|---|---:|---:|"]
    for (p, path, shape), v in sorted(gemm.items()):
        gemm_rows.append(f"| {p} | {path} | {shape} | {v:.0f} | {pct_isa(v, p)} |")
    rows = []
    if caffe_train:
        rows.append(("real Caffe 1.0: training (`caffe time`, TRAIN)", f"{train_flops / 1e9:.0f}",
                     f"{caffe_train_ms:.0f} ms", f"{gf(train_flops, caffe_train_ms):.0f}",
                     pct(gf(train_flops, caffe_train_ms), "fp32"), pct_isa(gf(train_flops, caffe_train_ms), "fp32"),
                     "", "1.00x"))
    for p in _peak.PRECISIONS:
        ms = train_ms[p]
        rows.append((f"ours: training {p} (`deepyeast time`, TRAIN)", f"{train_flops / 1e9:.0f}", f"{ms:.0f} ms",
                     f"{gf(train_flops, ms):.0f}", pct(gf(train_flops, ms), p), pct_isa(gf(train_flops, ms), p), "",
                     vs(caffe_train_ms, ms) if caffe_train else "n/a"))
    if caffe_test:
        ms = caffe_test["forward_ms"]
        rows.append(("real Caffe 1.0: inference (`caffe time -phase TEST`)", f"{test_flops / 1e9:.0f}",
                     f"{ms:.0f} ms", f"{gf(test_flops, ms):.0f}", pct(gf(test_flops, ms), "fp32"),
                     pct_isa(gf(test_flops, ms), "fp32"), f"{caffe_cells:.0f}", "1.00x"))
    ms = test_phase["forward_ms"]
    rows.append(("ours: inference fp32, TEST phase as Caffe (`deepyeast time -forward_only`)",
                 f"{test_flops / 1e9:.0f}", f"{ms:.0f} ms", f"{gf(test_flops, ms):.0f}",
                 pct(gf(test_flops, ms), "fp32"),
                 pct_isa(gf(test_flops, ms), "fp32"), f"{1e5 / ms:.0f}",
                 vs(1e5 / ms, caffe_cells) if caffe_cells else "n/a"))
    for p in _peak.PRECISIONS:
        for b in batches:
            cells = deploy[(p, b)]
            mark = " (best)" if b == best[p] and len(batches) > 1 else ""
            rate = cells * fwd_cell / 1e9
            rows.append((f"ours: inference {p}, deploy path (BN folded, inference_mode), batch {b}{mark}",
                         f"{fwd_cell * b / 1e9:.0f}", f"{b / cells * 1e3:.0f} ms", f"{rate:.0f}", pct(rate, p),
                         pct_isa(rate, p), f"{cells:.0f}", vs(cells, caffe_cells) if caffe_cells else "n/a"))

    cmd = "python bench/bench_engine.py" + (" --quick" if args.quick else "") + (
        f" --against {args.against}" if args.against else "") + (
        f" --threads {args.threads}" if args.threads else "") + (
        f" --rounds {args.rounds}" if args.rounds else "") + (
        f" --iterations {args.iterations}" if args.iterations else "")
    isa_text = "; ".join(f"{p} {per_cycle[p]} FLOP/cycle/core ({per_cycle['basis'][p]})" for p in _peak.PRECISIONS)
    clock = f"{cpu['ghz']:.2f} GHz ({cpu['clock_source']})" if cpu["ghz"] else "clock unknown"
    md = [f"`{cmd}`: DeepYeast `train_val.prototxt` / `deploy.prototxt`, synthetic cells; torch {torch.__version__}, "
          f"{threads} threads for ours (OMP_NUM_THREADS), {os.cpu_count()} for real Caffe. {rounds} interleaved rounds "
          f"(GEMMs, then {iterations} training iterations per precision in a fresh `deepyeast time` process, then "
          f"{args.infer_batches} inference batches per setting); every figure is its best round.", "",
          f"CPU: {cpu['model']} ({cpu['vendor'] or 'vendor unknown'}), flags {', '.join(cpu['flags']) or 'none'}; "
          f"{clock}. Data-sheet (ISA) peak on {threads} cores: "
          + ", ".join(f"{p} {isa[p]:.0f}" if isa[p] else f"{p} n/a" for p in _peak.PRECISIONS)
          + f" GFLOP/s, from {isa_text}; two FMA units per core assumed (an upper bound).", "",
          "Measured limit per precision: the best of these GEMMs after warm-up (a workload that beat every GEMM "
          "would itself be the limit, and is named below):", ""] + gemm_rows + [
          "", "Measured limit: " + "; ".join(f"{p} {limit[p][0]:.0f} GFLOP/s ({limit[p][1]})" for p in limit) + ".", "",
          f"Arithmetic counted from the prototxt (`Net.flop_counts`): forward {fwd_cell / 1e9:.3f} GFLOP per cell; "
          f"training iteration at batch 100 {train_flops / 1e9:.1f} GFLOP (forward + weight gradients + input "
          "gradients, conv1's input gradient excluded as in Caffe). A multiply-add counts 2 FLOPs; only "
          "Convolution and InnerProduct are counted (BatchNorm, Scale, ReLU, pooling, softmax are elementwise, "
          "under 1%).", "",
          "| measure | GFLOP per batch | time per batch | GFLOP/s | % of measured limit | % of ISA peak | cells/s "
          "| vs real Caffe |",
          "|---|---:|---:|---:|---:|---:|---:|---:|"]
    md += [f"| {' | '.join(r)} |" for r in rows]
    if ref:
        now = {("training", p): train_ms[p] for p in _peak.PRECISIONS}
        now[("inference TEST phase", "fp32")] = test_ms
        md += ["", f"Against the engine at {ref[1][:12]} ({ref[2]}; `--against {args.against}`), the same "
               "`deepyeast time` runs in the same rounds, each figure its best round:", "",
               "| measure | this tree ms | at the reference ms | reference / this tree |", "|---|---:|---:|---:|"]
        for (what, p), ms in ref_ms.items():
            md.append(f"| {what} {p} | {now[(what, p)]:.0f} | {ms:.0f} | {ms / now[(what, p)]:.2f} |")
        worse = [f"{what} {p}" for (what, p), ms in ref_ms.items() if now[(what, p)] > ms * 1.05]
        md.append("")
        md.append("This tree is no worse than the reference (within 5%) in every measure." if not worse else
                  "This tree is slower than the reference by more than 5% in: " + ", ".join(worse) + ".")
    md += ["", f"Peak memory of our `deepyeast time` processes (their own high-water mark, VmHWM): "
           f"{peak_mb / 1024:.2f} GB (target <= 4 GB)."]
    goal = []
    for p, target in (("bf16", 50), ("fp32", 75)):
        got = _peak.percent(workloads[f"training {p}"][1], limit[p][0])
        goal.append(f"{p} training {got:.0f}% of the measured {p} limit (goal >= {target}%: "
                    f"{'met' if got >= target else 'NOT met'})")
    bf16_cells = deploy[("bf16", best["bf16"])]
    goal.append(f"bf16 inference {bf16_cells:.0f} cells/s on {threads} core(s) (goal >= 1,000 on 2 cores"
                + (f"; {threads} core(s) x 500 = {500 * threads}: {'met' if bf16_cells >= 500 * threads else 'NOT met'}"
                   if threads != 2 else f": {'met' if bf16_cells >= 1000 else 'NOT met'}") + ")")
    md += ["", "Goals (issue 24): " + "; ".join(goal) + "."]
    top = _peak.ceiling(limit["bf16"][0], fwd_cell / 1e9)
    md.append(f"This CPU's ceiling for the inference goal: the measured bf16 limit {limit['bf16'][0]:.0f} GFLOP/s on "
              f"{threads} core(s) over {fwd_cell / 1e9:.3f} GFLOP per cell = {top:.0f} cells/s, so "
              f"{500 * threads:,} cells/s is {_peak.reach(500 * threads, top)} this CPU's reach in bf16; the deploy "
              f"path reaches {100 * bf16_cells / top:.0f}% of it.")
    if caffe_cells:
        got = bf16_cells / caffe_cells
        md.append(f"Inference against real Caffe (>= 4x its cells/s, same run): bf16 deploy path "
                  f"{got:.2f}x -> {'met' if got >= 4 else 'NOT met'}; fp32 deploy path "
                  f"{deploy[('fp32', best['fp32'])] / caffe_cells:.2f}x.")
    if changes:
        pct_changed = 100.0 * changes["bf16_changed"] / changes["n"]
        md += ["", f"bf16 against fp32 on {trained_what}: {changes['bf16_changed']} of {changes['n']} calls change "
               f"({pct_changed:.2f}%; target <= 0.5%: {'met' if pct_changed <= 0.5 else 'NOT met'}), largest "
               f"probability difference {changes['bf16_max_prob_diff']:.3g}; accuracy fp32 {changes['acc_fp32']:.3f}, "
               f"bf16 {changes['acc_bf16']:.3f}. Folded against unfolded fp32: {changes['fold_changed']} calls change, "
               f"largest probability difference {changes['fold_max_prob_diff']:.2g} (target <= 1e-5)."]
    loads.append(os.getloadavg()[0])
    if max(loads) > (os.cpu_count() or 1) * 1.2:
        notes.append(f"the machine was loaded by other work (1-minute load average {min(loads):.1f} to "
                     f"{max(loads):.1f} over the rounds, on {os.cpu_count()} cores): absolute rates are deflated, "
                     "and although each figure is its best round and the GEMMs were timed in the same rounds, the "
                     "percentages are not clean figures; rerun on an idle machine")
    else:
        notes.append(f"1-minute load average {min(loads):.1f} to {max(loads):.1f} over the rounds "
                     f"({os.cpu_count()} cores)")
    notes.append(f"whole benchmark: {(time.time() - t_start) / 60:.1f} min")
    md += [""] + [f"- {n}" for n in notes]
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        from _results import update_section
        update_section("Engine speed (bench/bench_engine.py)", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
