"""Caffe's SGD solver on top of :class:`deepyeast.engine.Net`.

The update follows ``caffe::SGDSolver`` exactly (not ``torch.optim.SGD``),
per learnable blob ``w`` with gradient ``g`` (float32, Caffe's order):

1. clip: when ``clip_gradients >= 0`` and the L2 norm of all gradients
   exceeds it, scale every gradient by ``clip_gradients / norm``;
2. normalize: ``g /= iter_size`` (gradients are summed over iter_size
   forward/backward passes);
3. regularize: ``g += local_decay * w`` (L2) or ``local_decay * sign(w)`` (L1),
   ``local_decay = weight_decay * decay_mult``;
4. ``history = momentum * history + local_rate * g``, ``local_rate = lr * lr_mult``;
5. ``w -= history``.

The momentum history is kept in units of the learning rate, so it is what a
``.solverstate`` stores and the two engines can resume each other's runs.
Iteration semantics are Caffe's: test at iteration 0 when
``test_initialization``, then at every ``test_interval``; a snapshot at
iteration N holds the weights after N updates; a final snapshot after
``max_iter`` when ``snapshot_after_train``.  Logs use Caffe's messages
(``Iteration N, lr = X``, ``Iteration N (...), loss = X``,
``Train net output #k: name = v``, ``Test net output #k: name = v``), so
Caffe log parsers work.

Beside each ``{prefix}_iter_{N}.solverstate`` we write
``{prefix}_iter_{N}.dystate.npz`` (data cursors and random-number states of our
engine, and fingerprints of the net, solver and data it was trained on;
:mod:`deepyeast.engine.resume`, plain arrays and JSON, nothing that can run code), so
resuming one of our runs continues it exactly; without it (a solverstate
written by Caffe) the data cursors restart at the first record, as in Caffe.

Reliability: the solver's numbers are checked before any work (a negative ``base_lr`` or
``max_iter`` is refused), the snapshot location is checked to be writable at the start (as
Caffe does), and a NaN or infinite TRAIN or TEST loss stops training with
:class:`TrainingDiverged` (exit 3) naming the last snapshot written before it; the snapshots
whose weights gave it are renamed ``*.diverged``, so no rule or ``-snapshot auto`` picks them.
"""

import logging
import math
import os
import sys
import time
from collections import defaultdict

import numpy as np
import torch

from deepyeast.constants import TRAINING_PRECISIONS
from deepyeast.caffe import caffe_pb2
from deepyeast.caffe.blobs import read_solverstate, write_solverstate
from deepyeast.caffe.prototxt import read_prototxt
from deepyeast.utils.io import InputError, StepFailed, check_writable
from deepyeast.engine import resume
from deepyeast.engine.snapshots import SOLVERSTATE_SUFFIX, WEIGHTS_SUFFIX, snapshot_name
from deepyeast.engine.lr_policy import check_solver_numbers, format_float, learning_rate

__all__ = ["Solver", "TrainingDiverged", "setup_caffe_logging", "read_solver_param", "log"]

log = logging.getLogger("deepyeast.solver")

DIVERGED_SUFFIX = ".diverged"
"""Suffix given to the files of snapshots whose weights gave a non-finite loss."""


class TrainingDiverged(StepFailed):
    """The loss became NaN or infinite; the message names the iteration and the last good snapshot."""


# --------------------------------------------------------------------------- logging

class _GlogFormatter(logging.Formatter):
    """``I1126 19:16:18.427865 12345 solver.py:123] message``, like glog."""

    _letters = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W",
                logging.ERROR: "E", logging.CRITICAL: "F"}

    def format(self, record):
        t = time.localtime(record.created)
        micro = int((record.created - int(record.created)) * 1e6)
        prefix = (f"{self._letters.get(record.levelno, 'I')}{time.strftime('%m%d %H:%M:%S', t)}."
                  f"{micro:06d} {record.process} {record.filename}:{record.lineno}] ")
        return prefix + record.getMessage()


def setup_caffe_logging(stream=None, level=logging.INFO):
    """Send ``deepyeast.*`` log records to ``stream`` (default stderr) in glog's format. Idempotent."""
    root = logging.getLogger("deepyeast")
    for h in list(root.handlers):
        if getattr(h, "_deepyeast_glog", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_GlogFormatter())
    handler._deepyeast_glog = True
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    return handler


# --------------------------------------------------------------------------- helpers

def read_solver_param(solver):
    """A ``SolverParameter`` from a path or a message (copied)."""
    if isinstance(solver, caffe_pb2.SolverParameter):
        p = caffe_pb2.SolverParameter()
        p.CopyFrom(solver)
        return p
    return read_prototxt(os.fspath(solver), caffe_pb2.SolverParameter)


def _solver_type(param):
    if param.HasField("solver_type") and param.solver_type != caffe_pb2.SolverParameter.SGD:
        return caffe_pb2.SolverParameter.SolverType.Name(param.solver_type)
    return param.type or "SGD"


def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _float_list(t):
    return [float(v) for v in t.detach().float().reshape(-1).cpu().tolist()]


# --------------------------------------------------------------------------- solver

class Solver:
    """Caffe's ``SGDSolver`` for a :class:`~deepyeast.engine.Net`.

    Parameters
    ----------
    solver : str or caffe_pb2.SolverParameter
        ``solver.prototxt`` path or message.  ``net`` / ``train_net`` /
        ``test_net`` paths are relative to the current directory, as in Caffe.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:0"``...; default: ``cuda`` when
        ``solver_mode: GPU`` and CUDA is available, else ``cpu``.
    precision : {"fp32", "tf32", "bf16"}
        ``fp32`` (default) for parity with Caffe; ``tf32`` allows TF32 matrix
        math on GPUs; ``bf16`` runs forward passes under bfloat16 autocast.
    channels_last : bool or None
        Run 4-D activations channels-last (Net option; default on).
    progress : bool or None
        Progress on stderr (:mod:`deepyeast.utils.progress`): None (default) a bar on a terminal
        and a line with the time left every 30 s in a log; False none.
    snapshot_prefix : str or None
        Overrides the solver's ``snapshot_prefix``.
    """

    def __init__(self, solver, device=None, precision="fp32", channels_last=None, progress=None,
                 snapshot_prefix=None, solver_path=None):
        from deepyeast.engine import Net  # late import: the net module loads torch layers

        self.solver_path = solver_path or (os.fspath(solver) if not isinstance(solver, caffe_pb2.SolverParameter)
                                           else None)
        self.param = p = read_solver_param(solver)
        stype = _solver_type(p)
        if stype != "SGD":
            raise InputError(f"solver: type \"{stype}\" is not supported (only Caffe's SGD is implemented)")
        if p.regularization_type not in ("L1", "L2"):
            raise InputError(f"solver: unknown regularization_type \"{p.regularization_type}\" (L1 or L2)")
        if p.snapshot_format != caffe_pb2.SolverParameter.BINARYPROTO:
            raise InputError("solver: snapshot_format HDF5 is not supported (use BINARYPROTO)")
        if p.iter_size < 1:
            raise InputError(f"solver: iter_size must be >= 1, got {p.iter_size}")
        if p.average_loss < 1:
            raise InputError(f"solver: average_loss must be >= 1, got {p.average_loss}")
        check_solver_numbers(p)
        learning_rate(p, 0, 0)  # validates lr_policy and its fields before any work

        self.rank, self.world_size = _dist()
        if device is None:
            device = "cuda" if (p.solver_mode == caffe_pb2.SolverParameter.GPU and torch.cuda.is_available()) \
                else "cpu"
        self.device = torch.device(device)
        if precision not in TRAINING_PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(TRAINING_PRECISIONS)}, got {precision!r}")
        self.precision = precision
        if self.device.type == "cuda":
            tf32 = precision == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cudnn.benchmark = True
        self.channels_last = True if channels_last is None else bool(channels_last)
        self.progress = progress
        self.seed = int(p.random_seed) if p.random_seed >= 0 else None
        if self.seed is not None:
            torch.manual_seed(self.seed)
            np.random.seed(self.seed % (2 ** 32))

        train_src, test_srcs = self._net_sources()
        tstate = p.train_state
        net_kw = dict(device=str(self.device), seed=self.seed, channels_last=self.channels_last,
                      autocast=torch.bfloat16 if precision == "bf16" else None)
        self.net = Net(train_src, phase="TRAIN", level=tstate.level, stages=tuple(tstate.stage), **net_kw)
        self.test_nets = []
        for i, src in enumerate(test_srcs):
            st = p.test_state[i] if i < len(p.test_state) else caffe_pb2.NetState()
            tn = Net(src, phase="TEST", level=st.level, stages=tuple(st.stage), **net_kw)
            tn.share_params_from(self.net)
            self.test_nets.append(tn)
        if self.test_nets and p.test_interval <= 0:
            log.info("test_interval is 0: the test nets run only if asked")
        if p.test_interval > 0 and len(p.test_iter) != len(self.test_nets):
            raise InputError(f"solver: {len(self.test_nets)} test net(s) but {len(p.test_iter)} test_iter values")

        self.params = list(self.net.learnable_params)
        self._data_layers = [l for l in self.net.layers if getattr(l, "caffe_type", "") == "Data"]
        if self.world_size > 1:
            self.shard_data()
        self.history = [torch.zeros_like(info.tensor, memory_format=torch.preserve_format).detach()
                        for info in self.params]
        self._history_live = [float(info.lr_mult) != 0.0 for info in self.params]
        self.iter = 0
        self.current_step = 0
        self.last_snapshot = None
        self.test_results = []  # list of (iteration, test_net_id, {name: mean score})
        self.train_outputs = []  # list of (iteration, smoothed loss) at display iterations
        self.lr_log = []  # list of (iteration, rate) at display iterations
        self._losses = []
        self._bad_iter = None  # device tensor: first iteration with a non-finite loss (-1 if none)
        self._groups = None
        self.snapshots = []  # (iteration, solverstate path) written or resumed from in this run
        self._resumed_from = None
        self._fingerprints = None
        if self.rank == 0 and (p.snapshot or p.snapshot_after_train):
            check_writable(self.snapshot_filename(WEIGHTS_SUFFIX), "snapshot (snapshot_prefix)")

    # ------------------------------------------------------------------ setup helpers

    def _net_sources(self):
        p = self.param
        n_generic = int(p.HasField("net")) + int(p.HasField("net_param"))
        n_train = n_generic + int(p.HasField("train_net")) + int(p.HasField("train_net_param"))
        if n_train != 1:
            raise InputError("solver: give exactly one of net, net_param, train_net, train_net_param "
                             f"(found {n_train})")
        if p.HasField("train_net"):
            train = p.train_net
        elif p.HasField("train_net_param"):
            train = p.train_net_param
        elif p.HasField("net"):
            train = p.net
        else:
            train = p.net_param
        for path in ([train] if isinstance(train, str) else []) + list(p.test_net):
            if not os.path.isfile(path):
                raise InputError(f"solver: net file \"{path}\" not found (paths are relative to the "
                                 f"current directory {os.getcwd()})")
        tests = list(p.test_net_param) + list(p.test_net)
        n_generic_tests = len(p.test_iter) - len(tests)
        if n_generic_tests > 0:
            if not n_generic:
                raise InputError(f"solver: {len(p.test_iter)} test_iter values but only {len(tests)} test nets")
            tests += [train] * n_generic_tests
        return train, tests

    def _param_groups(self):
        """Group blob indices by (lr_mult, decay_mult) so the update runs as a few fused ops."""
        if self._groups is None:
            groups = defaultdict(list)
            for i, info in enumerate(self.params):
                groups[(float(info.lr_mult), float(info.decay_mult))].append(i)
            self._groups = sorted(groups.items())
        return self._groups

    # ------------------------------------------------------------------ logging helpers

    def _log(self, msg, *args):
        if self.rank == 0:
            log.info(msg, *args)

    # ------------------------------------------------------------------ main loop

    def solve(self, resume_file=None):
        """Train to ``max_iter`` (Caffe's ``Solver::Solve``); resume from ``resume_file`` if given."""
        p = self.param
        self._log("Solving %s", getattr(self.net, "name", "") or "")
        self._log("Learning Rate Policy: %s", p.lr_policy)
        if resume_file:
            self._log("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if p.display and self.iter % p.display == 0:
            with torch.no_grad(), self._autocast():
                self.net.forward()
            loss = float(self.net.loss) if self.net.loss is not None else 0.0
            self._update_smoothed(torch.tensor(loss), start_iter)
            self._log("Iteration %d, loss = %s", self.iter, format_float(self._smoothed_loss()))
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        self._log("Optimization Done.")

    def step(self, iters):
        """Run ``iters`` iterations (Caffe's ``Solver::Step``)."""
        p = self.param
        stop_iter = self.iter + int(iters)
        start_iter = self.iter
        self._losses = []
        self._loss_start = start_iter
        timer_start, iters_last = time.perf_counter(), self.iter
        bar = None
        if self.progress is not False and self.rank == 0 and iters > 0:
            from deepyeast.utils.progress import Progress
            bar = Progress(total=int(iters), desc="train", unit="iteration", enabled=self.progress)
        check_every_iter = self.device.type == "cpu"
        try:
            while self.iter < stop_iter:
                self._zero_grads()
                if (p.test_interval and self.iter % p.test_interval == 0
                        and (self.iter > 0 or p.test_initialization)):
                    self.test_all()
                display = bool(p.display) and self.iter % p.display == 0
                loss = None
                for _ in range(p.iter_size):
                    with self._autocast():
                        self.net.forward()
                    if self.world_size > 1:
                        self._skip_other_shards()
                    l = self.net.loss
                    if l is None:
                        raise InputError("the train net has no loss output (a layer with loss_weight)")
                    l.backward()
                    loss = l.detach() if loss is None else loss + l.detach()
                loss = loss / p.iter_size
                if check_every_iter:
                    v = float(loss)
                    if not math.isfinite(v):
                        self._diverged(v, self.iter)
                else:
                    self._track_finite(loss)
                self._update_smoothed(loss, start_iter)
                if display:
                    self._check_finite()
                    lapse = time.perf_counter() - timer_start
                    per_s = (self.iter - iters_last) / (lapse if lapse else 1)
                    self._log("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter,
                              format_float(per_s), format_float(lapse), p.display,
                              format_float(self._smoothed_loss()))
                    self.train_outputs.append((self.iter, self._smoothed_loss()))
                    timer_start, iters_last = time.perf_counter(), self.iter
                    self._log_outputs(self.net, "Train")
                self.apply_update(display)
                self.iter += 1
                if bar is not None:
                    bar.update(1)
                if p.snapshot and self.iter % p.snapshot == 0 and self.rank == 0:
                    self._check_finite()
                    self.snapshot()
        finally:
            if bar is not None:
                bar.close()
        self._check_finite()

    # ------------------------------------------------------------------ pieces of an iteration

    def _autocast(self):
        # bf16 autocast is applied inside Net.forward (Net(autocast=...)); nothing to add here
        return torch.autocast(device_type=self.device.type, enabled=False)

    def _zero_grads(self):
        """Caffe's ClearParamDiffs, as no gradient at all: the first backward then hands its gradient
        over instead of adding it to zeros (0 + g is g, so the update is the same), which saves a
        pass that zeroes and a pass that adds over every parameter blob per iteration."""
        for info in self.params:
            info.tensor.grad = None

    def _update_smoothed(self, loss, start_iter):
        avg = self.param.average_loss
        if len(self._losses) < avg:
            self._losses.append(loss)
        else:
            self._losses[(self.iter - start_iter) % avg] = loss

    def _smoothed_loss(self):
        if not self._losses:
            return 0.0
        return float(torch.stack([l.float().reshape(()) for l in self._losses]).mean())

    def _track_finite(self, loss):
        bad = ~torch.isfinite(loss)
        it = torch.full((), self.iter, device=loss.device, dtype=torch.int64)
        if self._bad_iter is None:
            self._bad_iter = torch.full((), -1, device=loss.device, dtype=torch.int64)
        self._bad_iter = torch.where(bad & (self._bad_iter < 0), it, self._bad_iter)

    def _check_finite(self):
        if self._bad_iter is not None:
            bad = int(self._bad_iter)
            if bad >= 0:
                self._diverged(float("nan"), bad)

    def last_good_snapshot(self, bad_iteration):
        """The newest snapshot of this run taken before ``bad_iteration`` (its weights gave finite
        losses), or None."""
        good = [path for it, path in self.snapshots if it < bad_iteration]
        return good[-1] if good else None

    def _diverged(self, value, iteration, what="TRAIN loss"):
        last = self.last_good_snapshot(iteration) or "none (no snapshot was written before it in this run)"
        moved = self._quarantine(iteration)
        msg = (f"{what} is {format_float(value)} at iteration {iteration}: training stopped (diverged). "
               f"Last snapshot with finite losses: {last}")
        if moved:
            msg += f"; the {len(moved)} snapshot(s) from iteration {iteration} on were renamed *{DIVERGED_SUFFIX}"
        log.error(msg)
        raise TrainingDiverged(msg)

    def _quarantine(self, iteration):
        """Rename this run's snapshots taken at or after ``iteration`` (their weights gave a non-finite
        loss) to ``*.diverged``, so neither ``-snapshot auto`` nor a snapshot rule can pick them."""
        moved = []
        for it, state in list(self.snapshots):
            if it < iteration or (it, state) == self._resumed_from:
                continue
            for path in (state, os.path.splitext(state)[0] + WEIGHTS_SUFFIX, resume.state_path(state)):
                if os.path.exists(path):
                    os.replace(path, path + DIVERGED_SUFFIX)
            self.snapshots.remove((it, state))
            moved.append(state)
        return moved

    def _log_outputs(self, net, kind):
        if self.rank != 0:
            return
        outputs = self._net_outputs(net)
        k = 0
        for name, value in outputs.items():
            weight = self._loss_weight(net, name)
            for v in _float_list(value):
                extra = f" (* {format_float(weight)} = {format_float(weight * v)} loss)" if weight else ""
                log.info("    %s net output #%d: %s = %s%s", kind, k, name, format_float(v), extra)
                k += 1

    @staticmethod
    def _net_outputs(net):
        names = list(getattr(net, "output_names", []) or [])
        return {n: net.blobs[n] for n in names}

    @staticmethod
    def _loss_weight(net, name):
        weights = getattr(net, "loss_weights", None)
        if weights is None:
            weights = dict(getattr(net, "_loss_terms", ()))
        try:
            return float(weights.get(name, 0.0))
        except AttributeError:
            return 0.0

    def learning_rate(self):
        """Rate for the current iteration (advances ``current_step`` for multistep, as Caffe does)."""
        rate, self.current_step, msg = learning_rate(self.param, self.iter, self.current_step)
        if msg:
            self._log("%s", msg)
        return rate

    def apply_update(self, display=False):
        """Caffe's ``SGDSolver::ApplyUpdate``: clip, normalize, regularize, momentum, ``w -= history``."""
        p = self.param
        rate = self.learning_rate()
        if display:
            self._log("Iteration %d, lr = %s", self.iter, format_float(rate))
            self.lr_log.append((self.iter, float(rate)))
        with torch.no_grad():
            if self.world_size > 1:
                self._allreduce_grads()
            grads = [info.tensor.grad for info in self.params]
            present = [g for g in grads if g is not None]
            if p.clip_gradients >= 0 and present:
                sumsq = torch.stack([g.float().pow(2).sum() for g in present]).sum()
                l2 = float(torch.sqrt(sumsq))
                clip = float(np.float32(p.clip_gradients))
                if l2 > clip:
                    scale = float(np.float32(clip / l2))
                    self._log("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale factor %s",
                              format_float(l2), format_float(clip), format_float(scale))
                    torch._foreach_mul_(present, scale)
            if p.iter_size > 1 and present:
                torch._foreach_mul_(present, float(np.float32(1.0) / np.float32(p.iter_size)))
            momentum = float(np.float32(p.momentum))
            wd = np.float32(p.weight_decay)
            for (lr_mult, decay_mult), idx in self._param_groups():
                local_rate = float(np.float32(rate * np.float32(lr_mult)))
                local_decay = float(np.float32(wd * np.float32(decay_mult)))
                live = [i for i in idx if local_rate != 0.0 or self._history_live[i]]
                if not live:
                    continue
                # detach, not .data: the in-place update moves the blob's version counter, which tells
                # the layers' kept bf16 copies (layers.base.compute_blobs) to refresh
                w = [self.params[i].tensor.detach() for i in live]
                g = [grads[i] if grads[i] is not None else torch.zeros_like(w[k]) for k, i in enumerate(live)]
                h = [self.history[i] for i in live]
                if local_decay:
                    if p.regularization_type == "L2":
                        torch._foreach_add_(g, w, alpha=local_decay)
                    else:
                        torch._foreach_add_(g, [torch.sign(x) for x in w], alpha=local_decay)
                torch._foreach_mul_(h, momentum)
                if local_rate:
                    torch._foreach_add_(h, g, alpha=local_rate)
                # Caffe copies history into the diff, then Net::Update does data -= diff
                torch._foreach_sub_(w, h)

    def shard_data(self):
        """Give this DDP rank its share of every train batch: rank r reads records
        [r*b, (r+1)*b) of each global batch of world*b records (the union per step is
        the same records Caffe's ``-gpu all`` reads, so the averaged gradient is the same)."""
        for layer in self._data_layers:
            layer.cursor = (layer.cursor + self.rank * layer.batch_size) % layer.n_records

    def _skip_other_shards(self):
        for layer in self._data_layers:
            layer.cursor = (layer.cursor + (self.world_size - 1) * layer.batch_size) % layer.n_records

    def _allreduce_grads(self):
        """Average gradients over the DDP ranks (Caffe's multi-GPU sums then scales by 1/solver_count)."""
        grads = [info.tensor.grad for info in self.params if info.tensor.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat.mul_(1.0 / self.world_size)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    # ------------------------------------------------------------------ testing

    def test_all(self):
        """Run every test net (Caffe's ``TestAll``); returns the list of {output name: mean} dicts."""
        if self.rank != 0:
            return []
        return [self.test(i) for i in range(len(self.test_nets))]

    def test(self, test_net_id=0):
        """Average each output of test net ``test_net_id`` over ``test_iter`` batches and log it."""
        p = self.param
        net = self.test_nets[test_net_id]
        n = p.test_iter[test_net_id]
        self._log("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        sums, loss_sum = None, None
        with torch.no_grad(), self._autocast():
            for _ in range(n):
                net.forward()
                outs = self._net_outputs(net)
                vals = {k: v.detach().float().reshape(-1) for k, v in outs.items()}
                if sums is None:
                    sums = {k: v.clone() for k, v in vals.items()}
                else:
                    for k in sums:
                        sums[k] += vals[k]
                if p.test_compute_loss and net.loss is not None:
                    loss_sum = net.loss.detach().float() if loss_sum is None else loss_sum + net.loss.detach()
        if loss_sum is not None:
            self._log("Test loss: %s", format_float(float(loss_sum) / n))
        result = {}
        bad = None
        k = 0
        for name, total in (sums or {}).items():
            weight = self._loss_weight(net, name)
            vals = (total / n).cpu().tolist()
            for v in vals:
                extra = f" (* {format_float(weight)} = {format_float(weight * v)} loss)" if weight else ""
                self._log("    Test net output #%d: %s = %s%s", k, name, format_float(v), extra)
                k += 1
                if bad is None and not math.isfinite(v):
                    bad = (name, v)
            result[name] = vals[0] if len(vals) == 1 else vals
        self.test_results.append((self.iter, test_net_id, result))
        if bad is None and loss_sum is not None and not math.isfinite(float(loss_sum)):
            bad = ("loss", float(loss_sum))
        if bad is not None:
            self._diverged(bad[1], self.iter, f"TEST net #{test_net_id} output {bad[0]}")
        return result

    # ------------------------------------------------------------------ snapshots

    def snapshot_prefix(self):
        p = self.param
        if p.snapshot_prefix:
            return p.snapshot_prefix
        if self.solver_path:
            return os.path.splitext(self.solver_path)[0]
        raise InputError("solver: snapshot_prefix is not set")

    def snapshot_filename(self, extension):
        return snapshot_name(self.snapshot_prefix(), self.iter, extension)

    def fingerprints(self):
        """What this run trains on (:func:`deepyeast.engine.resume.fingerprints`), computed once."""
        if self._fingerprints is None:
            self._fingerprints = resume.fingerprints(self)
        return self._fingerprints

    def snapshot(self):
        """Write ``{prefix}_iter_{N}.caffemodel``, ``.dystate.npz`` and ``.solverstate`` (in that order)."""
        if self.rank != 0:
            return None
        model = self.snapshot_filename(WEIGHTS_SUFFIX)
        state = self.snapshot_filename(SOLVERSTATE_SUFFIX)
        os.makedirs(os.path.dirname(os.path.abspath(model)), exist_ok=True)
        self._log("Snapshotting to binary proto file %s", model)
        self.net.save_caffemodel(model)
        resume.write_engine_state(resume.state_path(state), self, self.fingerprints())
        self._log("Snapshotting solver state to binary proto file %s", state)
        history = [h.detach().contiguous().float().cpu().numpy() for h in self.history]
        write_solverstate(state, self.iter, history, learned_net=model, current_step=self.current_step)
        self.last_snapshot = state
        self.snapshots.append((self.iter, state))
        return state

    def restore(self, state_file):
        """Resume from a ``.solverstate`` (Caffe's or ours) and its ``.dystate.npz`` when present.

        An old pickled ``.dystate`` beside it is never loaded (a pickle can run code): the run
        resumes from the ``.solverstate`` alone, with a warning that the data order restarts.
        A ``.dystate.npz`` whose fingerprints differ from this run's is used with a warning (an
        explicit ``-snapshot FILE`` resumes as in Caffe; ``-snapshot auto`` refuses first, see
        :mod:`deepyeast.engine.cli`).
        """
        state = read_solverstate(state_file)
        if len(state["history"]) != len(self.history):
            raise InputError(f"{state_file}: holds {len(state['history'])} history blobs but the net has "
                             f"{len(self.history)} learnable blobs")
        for i, (arr, info) in enumerate(zip(state["history"], self.params)):
            if arr.size != info.tensor.numel():
                raise InputError(f"{state_file}: history blob {i} (layer {info.layer_name} blob {info.index}) "
                                 f"has shape {arr.shape}, the net's blob {tuple(info.tensor.shape)}")
        self.iter = state["iter"]
        learned = state["learned_net"]
        if learned:
            path = learned
            if not os.path.isfile(path):
                alt = os.path.join(os.path.dirname(os.path.abspath(state_file)), os.path.basename(learned))
                if os.path.isfile(alt):
                    path = alt
                else:
                    raise InputError(f"{state_file}: its weights file {learned} is missing")
            self.net.load_caffemodel(path)
        self.current_step = state["current_step"]
        self._log("SGDSolver: restoring history")
        with torch.no_grad():
            for i, (arr, h) in enumerate(zip(state["history"], self.history)):
                h.copy_(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).reshape(h.shape))
                if not self._history_live[i] and bool(torch.any(h != 0)):
                    self._history_live[i] = True
        self._resumed_from = (self.iter, state_file)
        self.snapshots.append(self._resumed_from)
        dy = resume.state_path(state_file)
        if os.path.isfile(dy):
            extra = resume.read_engine_state(dy)
            if extra.get("iter") != self.iter:
                log.warning("%s is for iteration %s, the solverstate for %d: ignored; the data order restarts "
                            "at the first record", dy, extra.get("iter"), self.iter)
                return
            changes = resume.fingerprint_changes(extra.get("fingerprints") or {}, self.fingerprints())
            if changes:
                log.warning("%s was trained on other inputs than this run: %s changed; resuming as asked",
                            state_file, ", ".join(changes))
            torch.set_rng_state(extra["torch_rng"])
            if extra.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(extra["cuda_rng"])
            if extra.get("numpy_rng") is not None:
                np.random.set_state(extra["numpy_rng"])
            self.net.set_data_state(extra["train_data"])
            if self.world_size > 1:
                self.shard_data()
            for n, s in zip(self.test_nets, extra.get("test_data", [])):
                n.set_data_state(s)
            self._log("Restored data cursors and random state from %s", dy)
        elif os.path.isfile(resume.old_pickle_path(state_file)):
            log.warning("%s is an engine state in the old pickle format, which is never loaded (a pickle can "
                        "run code): resuming from %s alone, so the data order restarts at the first record "
                        "(as in Caffe) and random streams restart from the seed",
                        resume.old_pickle_path(state_file), os.path.basename(state_file))
        else:
            self._log("No %s: data cursors restart at the first record (as in Caffe)", os.path.basename(dy))

    def copy_trained_layers(self, weights, finetune=False):
        """Load one or more ``.caffemodel`` files (comma-separated) into the train and test nets.

        Every learned layer must get weights from one of the files, unless ``finetune`` (new layers
        start from their fillers, as Caffe's fine-tuning does); the net's layers that none of the
        files has are logged then."""
        files = [s for s in str(weights).split(",") if s]
        loaded = set()
        for w in files:
            if not os.path.isfile(w):
                raise InputError(f"-weights: {w} not found")
            self._log("Finetuning from %s", w)
            loaded |= set(self.net.load_caffemodel(w, allow_missing=True))
            for n in self.test_nets:
                n.load_caffemodel(w, allow_missing=True)
        if files and not finetune:
            self.net.check_loaded(loaded, ",".join(files))
        elif files:
            new = [name for name in self.net.layer_params() if name not in loaded]
            if new:
                self._log("Layers starting from their fillers (not in -weights): %s", ", ".join(new))
