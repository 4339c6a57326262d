"""The engine's verbs of the ``deepyeast`` command: a ``caffe``-like command for our PyTorch engine.

``deepyeast`` (= ``python -m deepyeast``, :mod:`deepyeast.commands`) runs these verbs
(:data:`ACTIONS`, parsed by :func:`build_parser`); its other subcommands are the steps.  Caffe's action names and single-dash flags::

    deepyeast train -solver S [-weights W | -snapshot S.solverstate] [-gpu ID|all]
    deepyeast test -model M -weights W [-iterations 50]
    deepyeast time -model M [-iterations 50] [-phase TRAIN|TEST]
    deepyeast extract -model M -weights W -blobs fc1,fc2 -out DIR [-iterations N]
    deepyeast bnstats -model M -weights W -out W2 [-iterations 50]   (precise BatchNorm statistics)

Logs go to stderr in Caffe's format (``Iteration 100, loss = 0.5``,
``Iteration 100, lr = 0.1``, ``Test net output #0: accuracy = 0.9``), so
Caffe log parsers work; a progress bar is shown only on a terminal.

Several GPUs: ``-gpu all`` re-launches itself under ``torchrun`` with one
process per GPU, or launch it yourself::

    torchrun --nproc_per_node 4 -m deepyeast train -solver S -gpu all

Each process reads its own interleaved share of the training LMDB and the
gradients are averaged (Caffe's ``-gpu all`` semantics: the effective batch
is the number of processes times batch_size).  Without GPUs, torchrun runs the
same on CPU processes with the gloo backend.
"""

import argparse
import logging
import os
import sys
import time

from deepyeast.constants import TRAINING_PRECISIONS
from deepyeast.engine.snapshots import latest_solverstate

__all__ = ["ACTIONS", "build_parser", "train", "test", "time_net", "extract", "latest_solverstate"]

log = logging.getLogger("deepyeast.cli")


def _add(p, name, **kw):
    p.add_argument(f"-{name}", f"--{name}", **kw)


def build_parser():
    """The argparse parser of the ``deepyeast`` command."""
    parser = argparse.ArgumentParser(
        prog="deepyeast",
        description="Caffe-compatible PyTorch engine for DeepYeast: train, test, time and extract features "
                    "from Caffe prototxt nets; reads and writes .caffemodel/.solverstate files.",
        epilog="Example: deepyeast train -solver models/deepyeast/solver_cpu.prototxt")
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    common_prec = dict(choices=list(TRAINING_PRECISIONS), default="fp32",
                       help="arithmetic: fp32 (default, Caffe parity), tf32 matmuls on GPU, or bf16 autocast")

    t = sub.add_parser("train", help="train a net from a solver prototxt (like caffe train)")
    _add(t, "solver", required=True, help="solver .prototxt")
    _add(t, "weights", default="", help="comma-separated .caffemodel files to start from (finetuning)")
    _add(t, "snapshot", default="", help=".solverstate to resume from (ours or real Caffe's), as in Caffe; 'auto': "
                                         "the newest {snapshot_prefix}_iter_N.solverstate if any (else start "
                                         "fresh), refused when it was trained on another net, solver or data")
    _add(t, "finetune", action="store_true",
         help="with -weights: layers of the net that the weights lack start from their fillers (fine-tuning a "
              "net with new layers); without it such weights are refused, naming the layers")
    _add(t, "allow_changed", action="store_true",
         help="with -snapshot auto: resume the newest snapshot even when the net, the solver's optimisation "
              "settings or the data changed since it was written (or it has no record of them)")
    _add(t, "gpu", default="", help="GPU id, or 'all' for every GPU (DistributedDataParallel via torchrun); "
                                    "default: the solver's solver_mode")
    _add(t, "precision", **common_prec)
    _add(t, "progress", choices=["auto", "on", "off"], default="auto",
         help="progress on stderr (auto: a bar on a terminal, a line with the time left every 30 s in a log)")

    te = sub.add_parser("test", help="score a model over N batches (like caffe test)")
    _add(te, "model", required=True, help="net .prototxt (its TEST phase)")
    _add(te, "weights", required=True, help=".caffemodel")
    _add(te, "iterations", type=_at_least(1), default=50, help="number of batches (default 50)")
    _add(te, "gpu", default="", help="GPU id (default CPU)")
    _add(te, "phase", choices=["TRAIN", "TEST"], default="TEST")
    _add(te, "level", type=int, default=0)
    _add(te, "stage", default="", help="comma-separated net stages")
    _add(te, "precision", **common_prec)

    ti = sub.add_parser("time", help="average forward/backward time per iteration (like caffe time)")
    _add(ti, "model", required=True, help="net .prototxt")
    _add(ti, "weights", default="", help="optional .caffemodel")
    _add(ti, "iterations", type=_at_least(1), default=50, help="timed iterations (default 50)")
    _add(ti, "gpu", default="", help="GPU id (default CPU)")
    _add(ti, "phase", choices=["TRAIN", "TEST"], default="TRAIN")
    _add(ti, "level", type=int, default=0)
    _add(ti, "stage", default="")
    _add(ti, "precision", **common_prec)
    _add(ti, "forward_only", action="store_true", help="time inference only (no backward, no autograd)")

    ex = sub.add_parser("extract", help="write blobs of every cell as .npy features")
    _add(ex, "model", required=True, help="net .prototxt (its TEST phase) whose Data layer reads the cells")
    _add(ex, "weights", required=True, help=".caffemodel")
    _add(ex, "blobs", required=True, help="comma-separated blob names, e.g. conv8,fc1,fc2,fc3")
    _add(ex, "out", required=True, help="output folder: <blob>.npy (float32 N x D) and paths.txt")
    _add(ex, "force", action="store_true",
         help="replace -out even when it holds files no DeepYeast step wrote (they are deleted)")
    _add(ex, "iterations", type=_at_least(0), default=0, help="batches to run (default 0: the whole LMDB once)")
    _add(ex, "gpu", default="", help="GPU id (default CPU)")
    _add(ex, "level", type=int, default=0)
    _add(ex, "stage", default="")

    bn = sub.add_parser("bnstats", help="recompute BatchNorm statistics of trained weights (precise BN)",
                        description="Re-collect every BatchNorm layer's statistics with the final weights: "
                                    "equal-weight averages over N TRAIN-phase batches. Needed after short "
                                    "schedules, where Caffe's running averages still hold early weights' "
                                    "statistics (deepyeast/engine/bnstats.py explains).")
    _add(bn, "model", required=True, help="train_val .prototxt whose TRAIN Data layer reads the training LMDB")
    _add(bn, "weights", required=True, help=".caffemodel to start from")
    _add(bn, "out", required=True, help=".caffemodel to write")
    _add(bn, "iterations", type=_at_least(1), default=50, help="TRAIN batches averaged (default 50)")
    _add(bn, "gpu", default="", help="GPU id (default CPU)")
    _add(bn, "precision", **dict(common_prec, help="arithmetic of the forward passes: fp32 (default, Caffe's), tf32 "
                                                   "on GPU, or bf16 autocast (the net's as trained with -precision bf16)"))
    return parser


def _at_least(minimum):
    """argparse type: an integer >= ``minimum`` (``-iterations 0`` would average nothing)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def bnstats(args):
    """``bnstats``: precise BatchNorm statistics for a trained .caffemodel."""
    from deepyeast.engine.bnstats import recompute_bn_caffemodel
    n = recompute_bn_caffemodel(args.model, args.weights, args.out, iterations=args.iterations,
                                device=_device(args.gpu), precision=args.precision)
    log.info("Recomputed the statistics of %d BatchNorm layers over %d batches (%s): %s", n, args.iterations,
             args.precision, args.out)


def _device(gpu):
    import torch
    if gpu in ("", None):
        return "cpu"
    if gpu == "all":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    first = str(gpu).split(",")[0]
    if not torch.cuda.is_available():
        from deepyeast.utils.io import InputError
        raise InputError(f"-gpu {gpu}: CUDA is not available on this machine")
    return f"cuda:{int(first)}"


def _stages(s):
    return tuple(x for x in (s or "").split(",") if x)


def _sync(device):
    import torch
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- train

def train(args):
    """``train``: returns the finished :class:`~deepyeast.engine.solver.Solver`."""
    import torch
    from deepyeast.engine.solver import Solver, read_solver_param
    from deepyeast.utils.io import InputError

    param = read_solver_param(args.solver)
    auto = args.snapshot == "auto"
    if auto:
        prefix = param.snapshot_prefix or os.path.splitext(args.solver)[0]
        args.snapshot = latest_solverstate(prefix) or ""
        if args.snapshot:
            log.info("Resuming from the newest snapshot %s", args.snapshot)
            args.weights = ""
    if args.weights and args.snapshot:
        raise InputError("Give a snapshot to resume training or weights to finetune but not both.")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.gpu == "all" and world == 1 and torch.cuda.device_count() > 1:
        n = torch.cuda.device_count()
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                "-m", "deepyeast"] + sys.argv[1:]
        log.info("Using %d GPUs: %s", n, " ".join(argv))
        os.execv(sys.executable, argv)
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and (args.gpu != "" or param.solver_mode == 1)
        if use_cuda:
            device = f"cuda:{local}"
            torch.cuda.set_device(local)
            backend = "nccl"
        else:
            device, backend = "cpu", "gloo"
        torch.distributed.init_process_group(backend=backend)
    elif args.gpu != "":
        device = _device(args.gpu)
    else:
        device = None
    prog = {"auto": None, "on": True, "off": False}[args.progress]
    log.info("Starting Optimization")
    solver = Solver(param, device=device, precision=args.precision, progress=prog, solver_path=args.solver)
    if world > 1:
        _sync_start(solver)
    if auto and args.snapshot and not getattr(args, "allow_changed", False):
        _check_same_inputs(solver, args.snapshot)
    if args.snapshot:
        solver.solve(resume_file=args.snapshot)
    else:
        if args.weights:
            solver.copy_trained_layers(args.weights, finetune=args.finetune)
            if world > 1:
                _sync_start(solver)
        solver.solve()
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return solver


def _check_same_inputs(solver, snapshot):
    """``-snapshot auto``: refuse a snapshot trained on another net, solver or data (or with no
    record of it), so a changed run never silently continues (or "finishes") a stale one."""
    from deepyeast.engine import resume
    from deepyeast.utils.io import InputError

    how = (f"start afresh (another snapshot_prefix, or remove {os.path.basename(snapshot)} and the other "
           f"snapshots of that run), resume it anyway with -snapshot {snapshot}, or add -allow_changed")
    recorded = resume.recorded_fingerprints(snapshot)
    if recorded is None:
        raise InputError(f"-snapshot auto: {snapshot} has no record of the net, solver and data it was trained "
                         f"on (written by real Caffe or an older deepyeast), so it cannot be checked: {how}")
    changes = resume.fingerprint_changes(recorded, solver.fingerprints())
    if changes:
        raise InputError(f"-snapshot auto: the newest snapshot {snapshot} was trained on other inputs: "
                         f"{'; '.join(changes)} changed since. To go on: {how}")


def _sync_start(solver):
    """Give every DDP rank rank 0's weights and its own data share and dropout stream."""
    import torch
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    with torch.no_grad():
        for info in solver.params:
            torch.distributed.broadcast(info.tensor.data, src=0)
    if hasattr(solver.net, "set_data_shard"):
        solver.net.set_data_shard(rank, world)
    if solver.seed is not None:
        torch.manual_seed(solver.seed + rank)


# --------------------------------------------------------------------------- test

def test(args):
    """``test``: returns {output name: mean score} over ``-iterations`` batches (Caffe's messages)."""
    import torch
    from deepyeast.engine import Net
    from deepyeast.engine.lr_policy import format_float

    device = _device(args.gpu)
    net = Net(args.model, phase=args.phase, device=device, level=args.level, stages=_stages(args.stage))
    net.load_caffemodel(args.weights)
    log.info("Running for %d iterations.", args.iterations)
    names = list(net.output_names)
    weights = getattr(net, "loss_weights", None) or {}
    sums, loss_sum = None, 0.0
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                              enabled=args.precision == "bf16")
    with torch.no_grad(), autocast:
        for i in range(args.iterations):
            net.forward()
            loss_sum += float(net.loss) if net.loss is not None else 0.0
            vals = [(n, [float(v) for v in net.blobs[n].detach().float().reshape(-1).cpu().tolist()])
                    for n in names]
            flat = [v for _, vs in vals for v in vs]
            sums = flat if sums is None else [a + b for a, b in zip(sums, flat)]
            for n, vs in vals:
                for v in vs:
                    log.info("Batch %d, %s = %s", i, n, format_float(v))
    log.info("Loss: %s", format_float(loss_sum / max(args.iterations, 1)))
    result, k = {}, 0
    for n in names:
        size = int(net.blobs[n].numel())
        means = [s / args.iterations for s in sums[k:k + size]]
        k += size
        w = float(weights.get(n, 0.0)) if hasattr(weights, "get") else 0.0
        for m in means:
            extra = f" (* {format_float(w)} = {format_float(w * m)} loss)" if w else ""
            log.info("%s = %s%s", n, format_float(m), extra)
        result[n] = means[0] if size == 1 else means
    return result


# --------------------------------------------------------------------------- time

def time_net(args):
    """``time``: returns dict(forward_ms, backward_ms, forward_backward_ms, total_ms, iterations, initial_loss)."""
    import torch
    from deepyeast.engine import Net
    from deepyeast.engine.lr_policy import format_float

    device = _device(args.gpu)
    net = Net(args.model, phase=args.phase, device=device, level=args.level, stages=_stages(args.stage))
    if args.weights:
        net.load_caffemodel(args.weights)
    forward_only = getattr(args, "forward_only", False)
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                              enabled=args.precision == "bf16")

    def backward_target():
        if net.loss is not None and net.loss.requires_grad:
            return net.loss
        outs = [net.blobs[n] for n in net.output_names if net.blobs[n].requires_grad]
        return sum(o.float().sum() for o in outs) if outs else None

    params = [info.tensor for info in net.learnable_params]

    def run_once():
        t0 = time.perf_counter()
        if forward_only:
            with torch.no_grad(), autocast:
                net.forward()
        else:
            with autocast:
                net.forward()
        _sync(device)
        t1 = time.perf_counter()
        if not forward_only:
            target = backward_target()
            if target is not None:
                for p in params:
                    p.grad = None
                target.backward()
        _sync(device)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    log.info("Performing Forward")
    run_once()
    initial_loss = float(net.loss.detach()) if net.loss is not None else 0.0
    log.info("Initial loss: %s", format_float(initial_loss))
    log.info("*** Benchmark begins ***")
    log.info("Testing for %d iterations.", args.iterations)
    fwd = bwd = 0.0
    total0 = time.perf_counter()
    for j in range(args.iterations):
        f, b = run_once()
        fwd += f
        bwd += b
        log.info("Iteration: %d forward-backward time: %s ms.", j + 1, format_float((f + b) * 1e3))
    total = time.perf_counter() - total0
    n = max(args.iterations, 1)
    res = dict(forward_ms=fwd * 1e3 / n, backward_ms=bwd * 1e3 / n, forward_backward_ms=total * 1e3 / n,
               total_ms=total * 1e3, iterations=args.iterations, initial_loss=initial_loss)
    log.info("Average Forward pass: %s ms.", format_float(res["forward_ms"]))
    log.info("Average Backward pass: %s ms.", format_float(res["backward_ms"]))
    log.info("Average Forward-Backward: %s ms.", format_float(res["forward_backward_ms"]))
    log.info("Total Time: %s ms.", format_float(res["total_ms"]))
    log.info("*** Benchmark ends ***")
    return res


# --------------------------------------------------------------------------- extract

def extract(args):
    """``extract``: writes OUT/<blob>.npy (float32 N x D) and OUT/paths.txt; returns N."""
    import numpy as np
    import torch
    from deepyeast.engine import Net
    from deepyeast.caffe.lmdb import count_datum_lmdb, path_of_key, read_keys
    from deepyeast.caffe.feature_files import feature_file, feature_folder
    from deepyeast.utils.io import InputError

    device = _device(args.gpu)
    net = Net(args.model, phase="TEST", device=device, level=args.level, stages=_stages(args.stage))
    net.load_caffemodel(args.weights)
    blobs = [b for b in args.blobs.split(",") if b]
    if not blobs:
        raise InputError("-blobs: give at least one blob name")
    source, batch = _data_source(net)
    n_records = count_datum_lmdb(source) if source else None
    iterations = args.iterations
    if iterations <= 0:
        if n_records is None:
            raise InputError(f"{args.model}: no Data layer found; give -iterations")
        iterations = -(-n_records // batch)
    feats = {b: [] for b in blobs}
    keys = []
    all_keys = read_keys(source) if source else None
    data_layer = next((l for l in net.layers if getattr(l, "caffe_type", "") == "Data"), None)
    with torch.no_grad():
        for i in range(iterations):
            batch_keys = None
            if data_layer is not None and all_keys is not None and hasattr(data_layer, "cursor"):
                start = int(data_layer.cursor)
                batch_keys = [all_keys[(start + j) % len(all_keys)] for j in range(data_layer.batch_size)]
            net.forward()
            for b in blobs:
                if b not in net.blobs:
                    raise InputError(f"-blobs: the net has no blob \"{b}\" (blobs: {', '.join(net.blobs)})")
                v = net.blobs[b].detach().float()
                feats[b].append(v.reshape(v.shape[0], -1).cpu().numpy())
            keys.extend(batch_keys if batch_keys is not None else _batch_keys(net))
    n = sum(len(x) for x in feats[blobs[0]])
    if args.iterations <= 0 and n_records is not None:
        n = min(n, n_records)
    if not keys:
        raise InputError(f"{args.model}: the net's Data layer gives no record keys, so the rows cannot be named")
    with feature_folder(args.out, [path_of_key(k) for k in keys[:n]]) as tmp:
        for b in blobs:
            arr = np.concatenate(feats[b])[:n].astype(np.float32)
            np.save(os.path.join(tmp, feature_file(b)), arr)
            log.info("Extracted %s: %d x %d -> %s", b, arr.shape[0], arr.shape[1], os.path.join(args.out, feature_file(b)))
    return n


def _data_source(net):
    """(LMDB path, batch size) of the net's Data layer, or (None, 0)."""
    param = getattr(net, "net_param", None) or getattr(net, "param", None)
    if param is None:
        return None, 0
    for layer in param.layer:
        if layer.type == "Data":
            src = layer.data_param.source
            root = getattr(net, "root_dir", None)
            if root and not os.path.isabs(src):
                src = os.path.join(root, src)
            return src, layer.data_param.batch_size
    return None, 0


def _batch_keys(net):
    for attr in ("batch_keys", "last_keys"):
        keys = getattr(net, attr, None)
        if callable(keys):
            keys = keys()
        if keys is not None:
            return list(keys)
    return []


# --------------------------------------------------------------------------- main

ACTIONS = {"train": train, "test": test, "time": time_net, "extract": extract, "bnstats": bnstats}
"""The engine's verbs: name -> function(args) on the arguments :func:`build_parser` parsed (its return
value is for callers in Python, not an exit code).  ``deepyeast VERB ...`` runs them through
:func:`deepyeast.commands.main`, which gives the exit codes and error lines of every step."""
