"""The GPU check of issue 15 (run by bench/gpu_check.sh): parity, the paper's schedule, inference, data.

Usage (from the repository root; bench/gpu_check.sh passes its arguments on)::

    python bench/bench_gpu.py [--device cuda] [--iterations 2000] [--precisions fp32,tf32,bf16]
                              [--train-cells 65000] [--val-cells 12500] [--test-iter 125]
                              [--infer-batch 1000] [--stage-seconds 120] [--results bench/RESULTS.md]

Stages, each written into the results file as soon as it ends (a later failure keeps them):

1. environment: device, torch, CUDA / cuDNN versions;
2. parity: ``pytest tests/test_device_parity.py`` with ``DEEPYEAST_TEST_DEVICE`` set to the
   device (our engine on the device against our plain CPU path, which the real-Caffe tests
   hold to Caffe): forward blobs, gradients, solver steps, Data-layer batches, bf16 deploy;
3. data: a synthetic LMDB of the paper's sizes (65,000 train / 12,500 validation cells,
   made here, nothing downloaded), read into one uint8 tensor (``load_lmdb_tensor``),
   copied to the device, and the Data layer's batch time there (mean subtraction on the
   device, no host round trip);
4. training: ``--iterations`` iterations of ``models/deepyeast/solver.prototxt``'s schedule
   (batch 100, SGD momentum, step lr) on that LMDB in each precision, after 20 warm-up
   iterations; host time to enqueue an iteration against device time (launch-bound or
   compute-bound); one validation pass of ``--test-iter`` batches; projected to the full
   195,000 iterations with a validation pass every 650;
5. inference: cells/s of the deploy path (:func:`deepyeast.engine.fold.deploy_net`, BatchNorm
   folded) at ``--infer-batch`` in fp32 and bf16.

A stage that would run past ``--stage-seconds`` stops early and reports what it timed.
Targets: 195,000 iterations <= 15 minutes on one H100-class GPU; inference >= 50,000 cells/s.
``--device cpu --iterations 3 --train-cells 300 --val-cells 200 --test-iter 2`` runs every
stage on the CPU in a minute or two (CI does; its figures are not GPU figures).
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

TITLE = "GPU check (bench/gpu_check.sh)"
PAPER_ITERS = 195000


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="torch device (default cuda; cpu for a dry run)")
    ap.add_argument("--iterations", type=int, default=2000, help="timed training iterations per precision")
    ap.add_argument("--precisions", default=None,
                    help="comma-separated training precisions (default: fp32,tf32,bf16 on cuda, fp32,bf16 on cpu)")
    ap.add_argument("--batch", type=int, default=100, help="training batch (default 100, the paper's)")
    ap.add_argument("--train-cells", type=int, default=65000, help="records of the synthetic training LMDB")
    ap.add_argument("--val-cells", type=int, default=12500, help="records of the synthetic validation LMDB")
    ap.add_argument("--test-iter", type=int, default=125, help="batches of the timed validation pass (paper: 125)")
    ap.add_argument("--infer-batch", type=int, default=1000, help="cells per inference batch")
    ap.add_argument("--stage-seconds", type=float, default=120.0, help="time cap of one timed loop")
    ap.add_argument("--skip-parity", action="store_true", help="leave out the parity tests")
    ap.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"), help="results file to update")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "deepyeast_gpu_check"))
    args = ap.parse_args(argv)
    for name in ("iterations", "batch", "train_cells", "val_cells", "test_iter", "infer_batch"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.train_cells < args.batch or args.val_cells < args.batch:
        ap.error("--train-cells and --val-cells must hold at least one batch")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        ap.error(f"--device must be cpu or cuda[:N], got {args.device!r}")
    cuda = args.device.startswith("cuda")
    args.precisions = [p for p in (args.precisions or ("fp32,tf32,bf16" if cuda else "fp32,bf16")).split(",") if p]
    bad = [p for p in args.precisions if p not in ("fp32", "tf32", "bf16")]
    if bad:
        ap.error(f"--precisions: unknown {', '.join(bad)} (fp32, tf32, bf16)")
    if not cuda and "tf32" in args.precisions:
        ap.error("--precisions tf32 needs a CUDA device")
    return args


class Report:
    """The section's markdown, by stage, rewritten into the results file after every stage."""

    def __init__(self, args, machine):
        self.args = args
        self.machine = machine
        self.parts = {}
        self.failed = []

    def set(self, key, *lines):
        self.parts[key] = list(lines)
        self.write()

    def write(self):
        from _results import update_section
        a = self.args
        head = [f"`bench/gpu_check.sh --device {a.device} --iterations {a.iterations}` (training batch {a.batch}, "
                f"training cells {a.train_cells:,}, validation {a.val_cells:,}, validation pass {a.test_iter} "
                f"batches, inference batch {a.infer_batch}).", ""]
        if not a.device.startswith("cuda"):
            head += ["**Dry run on the CPU: these are not GPU figures. The GPU figures are not measured** "
                     "(no GPU was lent to this project; run `bench/gpu_check.sh` on a CUDA machine).", ""]
        body = [line for lines in self.parts.values() for line in lines + [""]]
        tail = [f"- stage failed: {f}" for f in self.failed]
        update_section(TITLE, "\n".join(head + body + tail), path=a.results, machine=self.machine)


def stage(report, name, fn):
    t0 = time.time()
    try:
        fn()
        return True
    except Exception as err:  # a stage's failure is reported, the next stages still run
        traceback.print_exc()
        report.failed.append(f"{name} after {time.time() - t0:.0f} s: {type(err).__name__}: "
                             f"{str(err).strip().splitlines()[-1] if str(err).strip() else ''}")
        report.write()
        return False


def sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------- stages

def environment(args):
    import torch
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available to torch here (torch.cuda.is_available() is False)")
        props = torch.cuda.get_device_properties(device)
        name = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
        versions = f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    else:
        from _results import machine_description
        name = machine_description()
        versions = f"{torch.get_num_threads()} threads"
    return device, name, f"torch {torch.__version__}, {versions}, Python {platform.python_version()}"


def parity(args, report):
    env = dict(os.environ, DEEPYEAST_TEST_DEVICE=args.device,
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          os.path.join(REPO, "tests", "test_device_parity.py")],
                         cwd=REPO, env=env, capture_output=True, text=True)
    last = [ln for ln in res.stdout.strip().splitlines() if ln.strip()][-1:] or ["(no output)"]
    report.set("parity", f"Parity on `{args.device}` (`pytest tests/test_device_parity.py`, our engine on the device "
               f"against our plain CPU path): {last[0]} ({time.time() - t0:.0f} s).")
    if res.returncode != 0:
        print(res.stdout[-5000:], res.stderr[-3000:], file=sys.stderr)
        raise RuntimeError(f"parity tests failed: {last[0]}")


def make_data(args):
    from bench_engine import synthetic_bundle
    folder = os.path.join(args.workdir, f"lmdb_{args.train_cells}_{args.val_cells}")
    t0 = time.time()
    synthetic_bundle(folder, args.train_cells, args.val_cells)
    return folder, time.time() - t0


def data_stage(args, device, folder, made_s, report):
    import torch
    from bench_engine import bench_net
    from deepyeast.engine import Net
    from deepyeast.engine.layers.data import _CACHE, load_lmdb_tensor
    _CACHE.clear()
    path = os.path.join(folder, "train_lmdb")
    t0 = time.time()
    images, labels = load_lmdb_tensor(path)
    read_s = time.time() - t0
    sync(device)
    t0 = time.time()
    on_device = images.to(device)
    sync(device)
    copy_s = time.time() - t0
    del on_device
    net = Net(bench_net(folder, args.batch), phase="TRAIN", device=str(device), seed=0)
    data = net.layers[0]
    resident = data.images.device.type == device.type
    with torch.no_grad():
        for _ in range(3):
            data.forward([])
        sync(device)
        n, t0 = 0, time.time()
        while n < 20 or (time.time() - t0 < 1.0 and n < 2000):
            data.forward([])
            n += 1
        sync(device)
    batch_ms = (time.time() - t0) / n * 1e3
    mb = images.numel() / 2**20
    report.set("data", "| data step | value |", "|---|---:|",
               f"| synthetic LMDBs made (or found) | {made_s:.1f} s |",
               f"| training LMDB read into one uint8 tensor ({images.shape[0]:,} x {tuple(images.shape[1:])}, "
               f"{mb:.0f} MiB) | {read_s:.1f} s |",
               f"| copied to `{device}` | {copy_s:.2f} s |",
               f"| Data layer: batch of {args.batch} on the device (gather, mean subtraction, float) | {batch_ms:.3f} ms |",
               f"| whole LMDB resident on the device | {'yes' if resident else 'no (did not fit)'} |")


def solver_param(args, folder):
    from bench_engine import bench_net
    from deepyeast.caffe import caffe_pb2
    from deepyeast.caffe.prototxt import read_prototxt
    p = read_prototxt(os.path.join(REPO, "models", "deepyeast", "solver.prototxt"), caffe_pb2.SolverParameter)
    p.net = bench_net(folder, args.batch)
    p.snapshot = 0
    p.snapshot_after_train = False
    p.display = 0
    p.test_interval = 0
    p.test_iter[0] = args.test_iter
    return p


def train_stage(args, device, folder, precision, report, rows):
    import torch
    from deepyeast.engine.solver import Solver
    p = solver_param(args, folder)
    test_every, test_iter_paper = 650, 125  # the paper's validation: every epoch, 12,500 cells
    s = Solver(p, device=str(device), precision=precision, progress=False)
    s.step(min(20, args.iterations))  # warm-up: cudnn autotuning, allocator
    sync(device)
    # host time to enqueue one iteration, and its device time; Solver.step ends with a sync
    # (the finite-loss check), so the iteration is spelled out here without it
    t0 = time.perf_counter()
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    s._zero_grads()
    s.net.forward()
    s.net.loss.backward()
    s.apply_update()
    s.iter += 1
    host_ms = (time.perf_counter() - t0) * 1e3
    if device.type == "cuda":
        end.record()
        sync(device)
        device_ms = start.elapsed_time(end)
    else:
        device_ms = host_ms
    done, t0 = 0, time.perf_counter()
    chunk = max(1, min(50, args.iterations))
    while done < args.iterations:
        n = min(chunk, args.iterations - done)
        s.step(n)
        done += n
        if time.perf_counter() - t0 > args.stage_seconds:
            sync(device)
            break
    sync(device)
    per_iter = (time.perf_counter() - t0) / done
    loss = s._smoothed_loss()
    t0 = time.perf_counter()
    s.test(0)
    sync(device)
    test_s = (time.perf_counter() - t0) * test_iter_paper / args.test_iter
    projected = per_iter * PAPER_ITERS + test_s * (PAPER_ITERS // test_every)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    rows.append((precision, done, per_iter * 1e3, host_ms, device_ms, test_s, projected / 60, peak, loss))
    report.set("training", *training_table(rows, args.batch))
    del s
    if device.type == "cuda":
        torch.cuda.empty_cache()


def training_table(rows, batch):
    out = [f"Training: `models/deepyeast/solver.prototxt` (batch {batch}, SGD momentum 0.9, step lr), synthetic "
           "cells. Host ms = time to enqueue one iteration; device ms = its GPU time (host >= device: launch-bound). "
           "Projection: 195,000 iterations + 300 validation passes of 125 batches. Target <= 15 min on one H100.",
           "", "| precision | iterations timed | ms / iteration | host ms | device ms | validation pass (125 batches) "
           "| projected 195,000 iterations | peak GPU memory | smoothed loss |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for prec, n, ms, host, dev, test_s, proj, peak, loss in rows:
        out.append(f"| {prec} | {n} | {ms:.2f} | {host:.2f} | {dev:.2f} | {test_s:.1f} s | {proj:.1f} min | "
                       f"{'' if peak != peak else f'{peak:.2f} GiB'} | {loss:.3f} |")
    return out


def inference_stage(args, device, report):
    import torch
    from bench_engine import random_deploy_weights
    from deepyeast.engine.fold import deploy_net
    weights = random_deploy_weights()
    b = args.infer_batch
    lines = [f"Inference: deploy path (BatchNorm folded, `torch.inference_mode`, channels-last), batch {b}. "
             "Target >= 50,000 cells/s on one H100.", "", "| precision | cells/s | ms per batch |", "|---|---:|---:|"]
    x = torch.randn(b, 2, 64, 64, device=device) * 40
    for precision in ("fp32", "bf16"):
        net = deploy_net(os.path.join(REPO, "models", "deepyeast", "deploy.prototxt"), weights,
                         precision=precision, device=str(device))
        with torch.inference_mode():
            for _ in range(3):
                net(data=x)
            sync(device)
            n, t0 = 0, time.perf_counter()
            while n < 3 or (time.perf_counter() - t0 < min(10.0, args.stage_seconds) and n < 200):
                net(data=x)
                n += 1
            sync(device)
        dt = (time.perf_counter() - t0) / n
        lines.append(f"| {precision} | {b / dt:,.0f} | {dt * 1e3:.1f} |")
        del net
    report.set("inference", *lines)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    t_start = time.time()
    try:
        device, name, versions = environment(args)
    except Exception as err:
        report = Report(args, "no device")
        report.failed.append(f"environment: {err}")
        report.write()
        print(f"gpu_check: {err}", file=sys.stderr)
        return 1
    report = Report(args, name)
    report.set("software", f"Software: {versions}.")
    if not args.skip_parity:
        stage(report, "parity", lambda: parity(args, report))
    holder = {}

    def data():
        holder["folder"], made_s = make_data(args)
        data_stage(args, device, holder["folder"], made_s, report)

    stage(report, "data", data)
    rows = []
    if "folder" in holder:
        for precision in args.precisions:
            stage(report, f"training {precision}",
                  lambda p=precision: train_stage(args, device, holder["folder"], p, report, rows))
    stage(report, "inference", lambda: inference_stage(args, device, report))
    report.set("total", f"Whole check: {(time.time() - t_start) / 60:.1f} min.")
    print(open(args.results, encoding="utf-8").read().split(f"## {TITLE}")[1].split("\n## ")[0])
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
