"""Engine speed and memory: real ``caffe time`` vs ``deepyeast time`` on the DeepYeast net, batch 100.

Usage (from the repository root)::

    python bench/bench_engine.py [--iterations 3] [--caffe-iterations 3] [--gpu-iterations 2000] [--no-write]

Measures in one run, on this machine:

* training: average forward+backward ms per iteration of ``train_val.prototxt`` (TRAIN phase,
  batch 100) with real Caffe 1.0 (in the Caffe root, when present) and with our engine; ratio;
* inference: cells/s of the TEST phase forward pass (batch 100), ours vs Caffe's;
* peak memory (ru_maxrss) of each of our measurement processes;
* on a GPU, when present: ``--gpu-iterations`` iterations of the real schedule
  (``solver.prototxt``: step lr, momentum, test every 650 iterations on 125 batches) on
  synthetic LMDBs of the real sizes (65,000 train / 12,500 val cells), projected to 195,000
  iterations, and inference cells/s at batch 1,000.

Writes the "Engine speed" section of bench/RESULTS.md (unless --no-write).  Targets
(issue 3): on 2 CPU cores training >= 1.5x and inference >= 2x real Caffe, peak <= 4 GB;
on one H100 195,000 iterations <= 15 minutes and inference >= 50,000 cells/s.
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
        write_datum_lmdb(path, ((f"c{i:06d}", chunk[i % len(chunk)], i % 12) for i in range(n)), shuffle=False)
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


def ours_time(model, iterations, phase="TRAIN", forward_only=False, gpu="", threads=None):
    """Run ``python -m deepyeast time`` in a fresh process; returns (averages dict, peak RSS in MB)."""
    cmd = [sys.executable, "-m", "deepyeast", "time", "-model", model, "-iterations", str(iterations),
           "-phase", phase]
    if forward_only:
        cmd.append("-forward_only")
    if gpu != "":
        cmd += ["-gpu", str(gpu)]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if res.returncode != 0:
        raise RuntimeError(f"deepyeast time failed:\n{res.stderr[-3000:]}")
    return _parse(res.stderr), max(after, before) / 1024.0


def caffe_time(model, iterations, phase="TRAIN"):
    res = caffe_root.run_caffe(["time", "-model", model, "-iterations", str(iterations), "-phase", phase],
                               cwd=REPO, check=False, env={"OMP_NUM_THREADS": str(os.cpu_count() or 1)})
    if res.returncode != 0:
        raise RuntimeError(f"caffe time failed:\n{res.stdout[-3000:]}")
    return _parse(res.stdout)


def gpu_schedule(folder, iterations):
    """Time ``iterations`` of solver.prototxt's schedule on CUDA; returns a dict of figures."""
    import torch
    from deepyeast.engine.solver import Solver
    param = read_prototxt(os.path.join(REPO, "models", "deepyeast", "solver.prototxt"), caffe_pb2.SolverParameter)
    param.net = bench_net(folder, 100)
    param.max_iter = iterations
    param.snapshot = 0
    param.snapshot_after_train = False
    param.display = max(iterations // 4, 1)
    s = Solver(param, device="cuda", progress=False)
    s.step(20)  # warm-up (cudnn autotune, allocator)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    s.step(iterations)
    torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    s.test(0)
    torch.cuda.synchronize()
    test_s = time.perf_counter() - t0
    per_iter = train_s / iterations
    n_tests = 195000 // param.test_interval
    projected = per_iter * 195000 + test_s * n_tests
    # inference throughput at batch 1000 (TEST phase, no autograd)
    from deepyeast.engine import Net
    net = Net(bench_net(folder, 1000), phase="TEST", device="cuda")
    with torch.no_grad():
        for _ in range(5):
            net.forward()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        reps = 50
        for _ in range(reps):
            net.forward()
        torch.cuda.synchronize()
    cells_s = reps * 1000 / (time.perf_counter() - t0)
    return dict(device=torch.cuda.get_device_name(0), ms_per_iter=per_iter * 1e3, test_s=test_s,
                projected_min=projected / 60, infer_cells_s=cells_s,
                peak_gpu_gb=torch.cuda.max_memory_allocated() / 2 ** 30)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=5, help="timed iterations of ours (default 5)")
    ap.add_argument("--caffe-iterations", type=int, default=3, help="timed iterations of real Caffe (default 3)")
    ap.add_argument("--gpu-iterations", type=int, default=2000, help="schedule iterations timed on a GPU")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "deepyeast_bench_engine"))
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = ap.parse_args(argv)

    import torch
    folder = synthetic_bundle(args.workdir, 1000, 500)
    model = bench_net(folder, 100)
    rows, notes = [], []
    ours_train, peak_train = ours_time(model, args.iterations)
    ours_infer, peak_infer = ours_time(model, args.iterations * 2, phase="TEST", forward_only=True)
    print(f"ours:  train {ours_train}  peak {peak_train:.0f} MB;  inference {ours_infer} peak {peak_infer:.0f} MB")
    caffe_train = caffe_infer = None
    if caffe_root.have_caffe_root():
        caffe_train = caffe_time(model, args.caffe_iterations)
        caffe_infer = caffe_time(model, args.caffe_iterations, phase="TEST")
        print(f"caffe: train {caffe_train};  inference {caffe_infer}")
    else:
        notes.append(f"real Caffe not measured: {caffe_root.missing_reason()}")

    def cells(d):
        return 100.0 / d["forward_ms"] * 1e3

    fb_o = ours_train["forward_backward_ms"]
    rows.append(("training, ms per iteration (batch 100, fwd+bwd)", f"{fb_o:.0f}",
                 f"{caffe_train['forward_backward_ms']:.0f}" if caffe_train else "n/a",
                 f"{caffe_train['forward_backward_ms'] / fb_o:.2f}x" if caffe_train else "n/a", ">= 1.5x"))
    rows.append(("inference, cells/s (TEST forward, batch 100)", f"{cells(ours_infer):.0f}",
                 f"{cells(caffe_infer):.0f}" if caffe_infer else "n/a",
                 f"{cells(ours_infer) / cells(caffe_infer):.2f}x" if caffe_infer else "n/a", ">= 2x"))
    peak = max(peak_train, peak_infer)
    rows.append(("peak memory of our process (ru_maxrss)", f"{peak / 1024:.2f} GB", "", "", "<= 4 GB"))
    md = ["CPU: `python bench/bench_engine.py` (DeepYeast `train_val.prototxt`, batch 100, synthetic LMDB; "
          f"ours {args.iterations} iterations, Caffe {args.caffe_iterations}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads).", "",
          "| measure | ours | real Caffe 1.0 | ratio | target |", "|---|---|---|---|---|"]
    md += [f"| {' | '.join(r)} |" for r in rows]
    if torch.cuda.is_available():
        big = synthetic_bundle(os.path.join(args.workdir, "full"), 65000, 12500)
        g = gpu_schedule(big, args.gpu_iterations)
        print("gpu:", g)
        md += ["", f"GPU ({g['device']}): {args.gpu_iterations} iterations of `solver.prototxt`'s schedule on synthetic "
               "LMDBs of the real sizes.", "",
               "| measure | value | target |", "|---|---|---|",
               f"| ms per training iteration | {g['ms_per_iter']:.2f} | |",
               f"| one validation pass (125 batches), s | {g['test_s']:.2f} | |",
               f"| projected 195,000 iterations + 300 validations | {g['projected_min']:.1f} min | <= 15 min |",
               f"| inference, cells/s (batch 1,000) | {g['infer_cells_s']:.0f} | >= 50,000 |",
               f"| peak GPU memory | {g['peak_gpu_gb']:.2f} GB | |"]
    else:
        notes.append("no GPU on this machine: the GPU schedule was not timed")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) * 1.2:
        notes.append(f"the machine was busy (1-minute load average {load:.1f} on {os.cpu_count()} cores at the end): "
                     "absolute times are inflated; the ratios compare runs made under the same load")
    if notes:
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
