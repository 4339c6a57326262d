"""Derive a run's net and solver files from the model zoo files in ``models/deepyeast/``.

The model files point at ``data/deepyeast/...``; a run (the demo, a test, a
user's own screen) keeps its data elsewhere.  These helpers copy the net and
solver, change only the data paths, snapshot prefix and the schedule fields
asked for, and write them beside the run, so the architecture is never
retyped (``run-config``); after training they choose the snapshot the run uses
(``choose-snapshot``).
"""

import math
import os
import re

from google.protobuf import text_format

from deepyeast.caffe import caffe_pb2
from deepyeast.caffe.prototxt import read_prototxt
from deepyeast.constants import MEAN_FILE, lmdb_folder
from deepyeast.engine import snapshots
from deepyeast.engine.lr_policy import check_solver_numbers
from deepyeast.engine.snapshots import SOLVERSTATE_SUFFIX, WEIGHTS_SUFFIX, iteration_of, snapshot_name
from deepyeast.utils.io import InputError, StepFailed, atomic_path, atomic_write_text


# solver fields a run may override: the schedule, never the optimizer
SCHEDULE_FIELDS = {
    "base_lr": float, "lr_policy": str, "gamma": float, "power": float, "stepsize": int,
    "max_iter": int, "test_iter": int, "test_interval": int, "test_initialization": bool,
    "display": int, "average_loss": int, "snapshot": int, "random_seed": int, "iter_size": int,
}


def retarget_net(net, sources, mean_file=None, batch_sizes=None):
    """Copy of ``net`` (NetParameter) with its Data layers pointed elsewhere.

    Parameters
    ----------
    net : caffe_pb2.NetParameter
    sources : dict
        Phase name (``"TRAIN"``/``"TEST"``) -> LMDB folder for the Data layer
        included in that phase.
    mean_file : str, optional
        New ``transform_param.mean_file`` for every Data layer.
    batch_sizes : dict, optional
        Phase name -> batch size (only for tests that need small batches).
    """
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    seen = set()
    for layer in out.layer:
        if layer.type != "Data":
            continue
        phases = {caffe_pb2.Phase.Name(rule.phase) for rule in layer.include if rule.HasField("phase")}
        for phase in phases or {"TRAIN", "TEST"}:
            if phase in sources:
                layer.data_param.source = sources[phase]
                seen.add(phase)
            if batch_sizes and phase in batch_sizes:
                layer.data_param.batch_size = int(batch_sizes[phase])
        if mean_file is not None:
            layer.transform_param.mean_file = mean_file
    missing = set(sources) - seen
    if missing:
        raise InputError(f"net has no Data layer for phase(s) {sorted(missing)}")
    return out


def retarget_solver(solver, net_path, snapshot_prefix, **schedule):
    """Copy of ``solver`` (SolverParameter) for a run: its net, snapshot prefix and schedule.

    ``schedule`` holds fields of :data:`SCHEDULE_FIELDS` (``max_iter=300``,
    ``test_iter=10``...); anything else raises :class:`InputError`.
    """
    out = caffe_pb2.SolverParameter()
    out.CopyFrom(solver)
    out.net = net_path
    out.snapshot_prefix = snapshot_prefix
    for key, value in schedule.items():
        if key not in SCHEDULE_FIELDS:
            raise InputError(f"solver field {key!r} is not a schedule field; allowed: {sorted(SCHEDULE_FIELDS)}")
        value = SCHEDULE_FIELDS[key](value)
        if key == "test_iter":
            del out.test_iter[:]
            out.test_iter.append(value)
        else:
            setattr(out, key, value)
    check_solver_numbers(out)
    return out


def parse_overrides(pairs):
    """``["max_iter=300", "base_lr=0.05"]`` -> dict with values converted by field type."""
    result = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"override {pair!r} is not FIELD=VALUE")
        key, value = pair.split("=", 1)
        key = key.strip()
        if key not in SCHEDULE_FIELDS:
            raise InputError(f"solver field {key!r} is not a schedule field; allowed: {sorted(SCHEDULE_FIELDS)}")
        kind = SCHEDULE_FIELDS[key]
        result[key] = (value.strip().lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return result


def _net_of(solver, solver_path):
    """The solver's ``net`` path: as given when it exists (Caffe resolves it from the working folder),
    else, for a model-zoo solver (``net: "models/deepyeast/..."``), under the zoo's parent folder."""
    if os.path.isabs(solver.net) or os.path.exists(solver.net):
        return solver.net
    from deepyeast.caffe.zoo import zoo_dir

    candidate = os.path.join(os.path.dirname(zoo_dir()), solver.net)
    return candidate if os.path.exists(candidate) else solver.net


def write_run_config(run_dir, lmdb_dir, solver_path=None, overrides=None, net_path=None, batch_sizes=None):
    """Write ``run_dir/train_val.prototxt`` and ``run_dir/solver.prototxt`` for data in ``lmdb_dir``.

    ``solver_path``: the solver to start from (default the model zoo's ``solver_cpu.prototxt``).
    ``lmdb_dir`` holds ``train_lmdb``, ``val_lmdb`` and ``mean.binaryproto``.
    Snapshots go to ``run_dir/snapshots/deepyeast``.  Returns the solver path.
    """
    if solver_path is None:
        from deepyeast.caffe.zoo import zoo_file

        solver_path = zoo_file("solver_cpu.prototxt")
    solver = read_prototxt(solver_path, caffe_pb2.SolverParameter)
    net_path = net_path or _net_of(solver, solver_path)
    net = read_prototxt(net_path, caffe_pb2.NetParameter)
    net = retarget_net(net, {"TRAIN": os.path.join(lmdb_dir, lmdb_folder("train")),
                             "TEST": os.path.join(lmdb_dir, lmdb_folder("val"))},
                       mean_file=os.path.join(lmdb_dir, MEAN_FILE), batch_sizes=batch_sizes)
    net_out = os.path.join(run_dir, "train_val.prototxt")
    solver_out = os.path.join(run_dir, "solver.prototxt")
    solver = retarget_solver(solver, net_out, os.path.join(run_dir, "snapshots", "deepyeast"),
                             **(overrides or {}))
    os.makedirs(os.path.join(run_dir, "snapshots"), exist_ok=True)
    header = (f"# Generated from {net_path} by deepyeast.engine.run_config: only the data paths differ.\n")
    atomic_write_text(net_out, header + text_format.MessageToString(net))
    header = (f"# Generated from {solver_path} by deepyeast.engine.run_config: net, snapshot prefix and schedule.\n")
    atomic_write_text(solver_out, header + text_format.MessageToString(solver))
    return solver_out


def snapshot_path(solver, iteration):
    """``{snapshot_prefix}_iter_{iteration}.caffemodel`` of a SolverParameter."""
    return snapshot_name(solver.snapshot_prefix, iteration, WEIGHTS_SUFFIX)


def parse_training_log(log_text, output_name="loss"):
    """Read a Caffe-format training log (real Caffe's or ours; several runs appended, as the
    pipeline's ``tee -a`` leaves them): ``(losses, first_bad)``.

    ``losses``: iteration -> TEST value of ``output_name`` (``Iteration N, Testing net (#0)``
    followed by ``Test net output #k: loss = X``).  ``first_bad``: the first iteration whose TRAIN
    loss (``Iteration N (...), loss = X``) or TEST output was NaN or infinite, or None.  A run
    that starts (``Solving ...``) at iteration S -- 0, or the iteration of the snapshot it
    restores -- replaces what earlier runs logged from S on.
    """
    losses, bad = {}, None
    current = None
    start = None  # a run began: the iteration it starts from, applied at its first iteration line
    for line in log_text.splitlines():
        if re.search(r"\] Solving ", line):
            start, current = 0, None
            continue
        restoring = re.search(r"Restoring previous solver status from (.*)$", line)
        if restoring and iteration_of(restoring.group(1).strip(), SOLVERSTATE_SUFFIX) is not None:
            start = iteration_of(restoring.group(1).strip(), SOLVERSTATE_SUFFIX)
            continue
        if start is not None and re.search(r"Iteration \d+", line):
            losses = {it: v for it, v in losses.items() if it < start}
            bad = bad if bad is not None and bad < start else None
            start = None
        m = re.search(r"Iteration (\d+), Testing net \(#(\d+)\)", line)
        if m:
            current = int(m.group(1)) if m.group(2) == "0" else None
            continue
        m = re.search(r"Iteration (\d+)(?: \([^)]*\))?, loss = (\S+)", line)
        if m:
            if not math.isfinite(_number(m.group(2))) and bad is None:
                bad = int(m.group(1))
            continue
        m = re.search(r"Test net output #\d+: (\S+) = (\S+)", line)
        if m and current is not None:
            value = _number(m.group(2))
            if not math.isfinite(value) and bad is None:
                bad = current
            if m.group(1) == output_name:
                losses[current] = value
    return losses, bad


def validation_losses(log_text, output_name="loss"):
    """iteration -> TEST value of ``output_name`` in a Caffe-format training log
    (:func:`parse_training_log`)."""
    return parse_training_log(log_text, output_name)[0]


def _number(text):
    try:
        return float(text)
    except ValueError:
        return float("nan")


def choose_snapshot(solver_path, log_path=None, rule="final"):
    """Path of the snapshot a run's analyses use; never one whose losses were not finite.

    ``rule="final"``: the snapshot after ``max_iter``.  ``rule="val_loss"``:
    among the snapshots on disk, the one whose iteration had the lowest
    validation loss in the training log (the paper's choice).  With a log, snapshots at or after
    the first iteration whose TRAIN or TEST loss was NaN or infinite are never chosen (and a
    non-finite validation loss is never the lowest).
    """
    solver = read_prototxt(solver_path, caffe_pb2.SolverParameter)
    final = snapshot_path(solver, solver.max_iter)
    if rule not in ("final", "val_loss"):
        raise InputError(f"unknown snapshot rule {rule!r} (final, val_loss)")
    text = None
    if log_path:
        try:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as err:
            raise InputError(f"{log_path}: cannot read the training log: {err.strerror}") from None
    elif rule == "val_loss":
        raise InputError("rule val_loss needs the training log (--log)")
    losses, bad = parse_training_log(text) if text is not None else ({}, None)
    if rule == "final":
        if not os.path.exists(final):
            raise InputError(f"{final}: the final snapshot is missing; has training finished?")
        if bad is not None and bad <= solver.max_iter:
            raise StepFailed(f"{log_path}: training diverged (a non-finite loss at iteration {bad}); the final "
                             "snapshot is not usable: train again with a smaller base_lr, or choose an earlier "
                             "snapshot by hand")
        return final
    candidates = [(loss, it) for it, loss in losses.items()
                  if math.isfinite(loss) and (bad is None or it < bad) and os.path.exists(snapshot_path(solver, it))]
    if not candidates:
        raise InputError(f"{log_path}: no finite validation loss at any iteration with a snapshot on disk"
                         + (f" before the divergence at iteration {bad}" if bad is not None else ""))
    return snapshot_path(solver, min(candidates)[1])


def snapshots_on_disk(solver):
    """iteration -> list of the snapshot files of a SolverParameter's ``snapshot_prefix`` on disk
    (:func:`deepyeast.engine.snapshots.snapshots_on_disk`)."""
    return snapshots.snapshots_on_disk(solver.snapshot_prefix)


def prune_snapshots(solver_path, keep):
    """Remove every snapshot of a run except those at the iterations in ``keep`` and the newest
    (the point ``-snapshot auto`` resumes from).  Returns ``(removed files, bytes freed)``.

    A DeepYeast snapshot is 84 MiB (the weights, as much again of momentum history, and the
    engine state); the paper's schedule writes 30 of them.  The snapshot rules only ever need the kept ones: the
    final snapshot is the newest, and every removed snapshot had a validation loss no lower
    than the chosen one's.
    """
    solver = read_prototxt(solver_path, caffe_pb2.SolverParameter)
    found = snapshots_on_disk(solver)
    keep = set(int(k) for k in keep) | ({max(found)} if found else set())
    removed, freed = [], 0
    for it, files in sorted(found.items()):
        if it in keep:
            continue
        # the .solverstate last: an interrupted prune never leaves a resume point without weights
        for f in sorted(files, key=lambda f: f.endswith(".solverstate")):
            freed += os.path.getsize(f)
            os.remove(f)
            removed.append(f)
    return removed, freed


def copy_chosen_snapshot(solver_path, out, rule="final", log_path=None, prune=False):
    """Copy the snapshot a run uses (:func:`choose_snapshot`) to ``out``, atomically; with ``prune``
    then remove every other snapshot except the newest (the resume point).

    Returns ``(chosen path, iteration kept, files removed, bytes freed)``.
    """
    import shutil

    chosen = choose_snapshot(solver_path, log_path, rule)
    with atomic_path(out) as tmp:
        shutil.copyfile(chosen, tmp)
    it = iteration_of(chosen, WEIGHTS_SUFFIX)
    removed, freed = prune_snapshots(solver_path, [it]) if prune else ([], 0)
    return chosen, it, removed, freed
