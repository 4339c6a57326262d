#!/usr/bin/env python3
"""What a reproduction looks like: the spread of the demo's numbers over training seeds and forest seeds.

Another CPU type trains the network along other float roundings (oneDNN and ATen kernels, bf16 on AMX or
not), which is as good as another training seed; the forest's features are the same on every CPU
(``analysis/cp_features.py`` rounds them), so the forest changes only with its own seed.  This script runs
the pipeline of ``make demo`` (mk/pipeline.mk, with the demo's settings: bf16 training, recomputed
BatchNorm statistics, the small forest grid) on one synthetic screen (``--size``, screen seed 0), then

* trains the network with each of ``--train-seeds`` (the solver's ``random_seed``; ``--iters``
  iterations, the learning rate halved every third of them) and evaluates it per cell and per protein;
* grows the forest with each of ``--forest-seeds`` on the same features, per cell and per protein.

Writes the "Seed spread" section of bench/RESULTS.md (each run, then min, max, mean and standard
deviation).  The demo's own configuration (size demo, 450 iterations) takes ~13 minutes per training
seed on an idle 2-core CPU; ``--size demo --iters 450`` runs it.

``--reuse-run DIR`` saves one training and one forest: DIR is a finished ``make demo`` run (same size,
screen seed 0, iterations and BatchNorm batches; checked).  Its screen, LMDB, CellProfiler features and
forest become the base, its network counts as the training seed its solver names (``random_seed``,
1 in models/deepyeast/solver_cpu.prototxt) and its forest as forest seed ``SEED`` (0, the demo's).

    python bench/bench_seed_spread.py --work /tmp/spread [--size small --iters 150 --train-seeds 1 2 3]
    python bench/bench_seed_spread.py --work runs/spread --size demo --iters 450 --reuse-run runs/demo
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = ("data", "lmdb", "cellprofiler", "rf", "rf_proteins")
"""Folders of the base run every training seed reuses (copied with their times, so make keeps them)."""
DEMO_SEED = 0
"""The seed of every step of ``make demo`` (mk/pipeline.mk's SEED): the screen's and the forest's."""


def _make_cmd(run, args, *targets, schedule=""):
    # a screen already made is kept (-o) even when the generator's code changed since: one screen for every seed
    keep = ["-o", f"{run}/data/screen.json"] if os.path.exists(os.path.join(REPO, run, "data", "screen.json")) else []
    return ["make", "--no-print-directory", "-o", "deps", *keep, f"RUN={run}", "SCREEN=synthetic", f"SIZE={args.size}",
            f"SEED={DEMO_SEED}", "GRID=small", "PRECISION=bf16", f"BN_ITERS={args.bn_iters}",
            f"CP_TRAIN_CELLS={args.cp_train_cells}",
            f"SCHEDULE={schedule}",
            *targets]


def _make(run, args, *targets, schedule=""):
    t = time.time()
    subprocess.run(_make_cmd(run, args, *targets, schedule=schedule), cwd=REPO, check=True)
    return time.time() - t


def _metric(path, key):
    with open(path, encoding="utf-8") as f:
        return json.load(f)["metrics"][key]


def _forest(base, seed, out):
    """Grow the small-grid forest with ``seed`` on the base run's features; per-cell and per-protein counts."""
    from deepyeast.analysis.prediction_table import read_predictions
    from deepyeast.analysis.protein_level import protein_accuracy, protein_calls

    cp = os.path.join(base, "cellprofiler")
    lists = [os.path.join(base, "data", "main", f"HOwt_{s}.txt") for s in ("train", "val", "test")]
    os.makedirs(out, exist_ok=True)
    pred = os.path.join(out, "cells_test.csv")
    if not os.path.exists(pred):  # a finished forest (its table is written last) is read, not grown again
        subprocess.run([sys.executable, "analysis/random_forest.py", "--train", f"{cp}/train.csv", "--val", f"{cp}/val.csv",
                        "--test", f"{cp}/test.csv", "--labels-from", *lists, "--grid", "small", "--seed",
                        str(seed), "--jobs", "2", "--out", pred, "--summary", os.path.join(out, "rf_grid.json")],
                       cwd=REPO, check=True)
    t = read_predictions(pred, split="test", require_all_classes=False)
    cell = {"correct": int((t.pred == t.label).sum()), "total": t.n_cells}
    return cell, protein_accuracy(protein_calls(t))


def _solver_field(solver, field):
    """The integer ``field`` of a solver prototxt, read by the engine's solver reader (None when absent)."""
    from deepyeast.engine.solver import read_solver_param

    param = read_solver_param(solver)
    return int(getattr(param, field)) if param.HasField(field) else None


def _reused_run(run, args):
    """Check that ``run`` is a finished ``make demo`` run of these settings; its training seed.

    Returns the solver's ``random_seed``; SystemExit naming what differs otherwise."""
    need = [os.path.join(run, *p) for p in (("data", "screen.json"), ("train", "solver.prototxt"),
                                            ("cells", "result.json"), ("proteins", "result.json"),
                                            ("rf", "cells_test.csv"), ("rf_proteins", "result.json"))]
    absent = [p for p in need if not os.path.exists(p)]
    if absent:
        raise SystemExit(f"--reuse-run {run}: not a finished demo run ({absent[0]} is missing)")
    with open(need[0], encoding="utf-8") as f:
        screen = json.load(f)
    if (screen.get("size"), screen.get("seed")) != (args.size, DEMO_SEED):
        raise SystemExit(f"--reuse-run {run}: screen size {screen.get('size')} seed {screen.get('seed')}, "
                         f"not {args.size} seed {DEMO_SEED}")
    if _solver_field(need[1], "max_iter") != args.iters:
        raise SystemExit(f"--reuse-run {run}: trained {_solver_field(need[1], 'max_iter')} iterations, "
                         f"not --iters {args.iters}")
    with open(os.path.join(run, "commands.txt"), encoding="utf-8") as f:
        commands = f.read()
    if args.bn_iters and f"-iterations {args.bn_iters}" not in commands:
        raise SystemExit(f"--reuse-run {run}: its BatchNorm statistics were not recomputed over {args.bn_iters} "
                         "batches (--bn-iters)")
    sample = f"--sample {args.cp_train_cells}" if args.cp_train_cells else None
    if (sample and sample not in commands) or (not sample and "--sample" in commands):
        raise SystemExit(f"--reuse-run {run}: its CellProfiler features are not of "
                         f"{args.cp_train_cells or 'every'} training cells (--cp-train-cells)")
    return _solver_field(need[1], "random_seed")


def _run_commit(run):
    """"commit abc1234" of the checkout that made ``run`` (its metrics.json), or "commit unknown"."""
    try:
        with open(os.path.join(run, "metrics.json"), encoding="utf-8") as f:
            commit = json.load(f)["versions"]["git commit"]
    except (OSError, ValueError, KeyError, TypeError):
        return "commit unknown"
    return f"commit {commit[:7]}"


def _row(name, cell, prot):
    return f"| {name} | {cell['correct'] / cell['total']:.3f} ({cell['correct']}/{cell['total']}) | " \
           f"{prot['correct'] / prot['total']:.3f} ({prot['correct']}/{prot['total']}) |"


def _stats(values):
    v = np.asarray(values, float)
    return f"{v.min():.3f}–{v.max():.3f}, mean {v.mean():.3f}, sd {v.std(ddof=1) if v.size > 1 else 0:.3f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="a folder under the repository (the runs' RUN folders)")
    p.add_argument("--size", default="small")
    p.add_argument("--iters", type=int, default=150)
    p.add_argument("--bn-iters", type=int, default=30, help="batches for the BatchNorm statistics (the demo's 30)")
    p.add_argument("--cp-train-cells", type=int, default=6000,
                   help="training cells with CellProfiler features, the forest's (the demo's 6000; 0: all)")
    p.add_argument("--reuse-run", metavar="DIR", help="a finished make demo run of these settings: its screen, "
                                                      "features and forest are the base, its network one seed")
    p.add_argument("--train-seeds", type=int, nargs="*", default=[1, 2, 3])
    p.add_argument("--forest-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--forests-first", action="store_true", help="grow the forests before the trainings")
    args = p.parse_args()
    from bench._results import update_section

    work = os.path.relpath(os.path.abspath(args.work), REPO)
    base = os.path.join(work, "base")
    reused_seed = None
    if args.reuse_run:
        reuse = os.path.abspath(args.reuse_run)
        reused_seed = _reused_run(reuse, args)
        for d in SHARED:  # the demo run's screen, features and forest are the base
            if not os.path.exists(os.path.join(REPO, base, d)):
                shutil.copytree(os.path.join(reuse, d), os.path.join(REPO, base, d), copy_function=shutil.copy2)
        forest0 = os.path.join(REPO, work, f"forest_seed{DEMO_SEED}")
        if not os.path.exists(os.path.join(forest0, "cells_test.csv")):  # the demo's forest is forest seed 0
            os.makedirs(forest0, exist_ok=True)
            for f in ("rf_grid.json", "cells_test.csv"):  # the table last: it marks a finished forest
                shutil.copy2(os.path.join(reuse, "rf", f), os.path.join(forest0, f))
    # finished runs are read as they are (a later change of the generator's code would make make rebuild them)
    done = os.path.exists(os.path.join(REPO, base, "rf_proteins", "result.json"))
    t_base = None if done else _make(base, args, f"{base}/rf_proteins/result.json", f"{base}/lmdb/mean.binaryproto")
    step = max(1, args.iters // 3)
    net_rows, forest_rows, times = [], [], ({} if t_base is None else {"base": round(t_base)})
    procs = {}
    t0 = time.time()
    for s in args.train_seeds:  # the training seeds run side by side (--jobs 1 each)
        run = os.path.join(work, f"train_seed{s}") if s != reused_seed else os.path.abspath(args.reuse_run)
        if all(os.path.exists(os.path.join(REPO, run, r, "result.json")) for r in ("cells", "proteins")):
            procs[s] = (run, None, None)
            continue
        os.makedirs(os.path.join(REPO, run), exist_ok=True)
        for d in SHARED:
            if not os.path.exists(os.path.join(REPO, run, d)):
                shutil.copytree(os.path.join(REPO, base, d), os.path.join(REPO, run, d), copy_function=shutil.copy2)
        sched = f"random_seed={s} max_iter={args.iters} stepsize={step} test_interval={args.iters} snapshot={args.iters}"
        log = open(os.path.join(REPO, run, "spread.log"), "w")
        procs[s] = (run, subprocess.Popen(_make_cmd(run, args, f"{run}/cells/result.json",
                                                    f"{run}/proteins/result.json", schedule=sched) + ["JOBS=1"],
                                          cwd=REPO, stdout=log, stderr=subprocess.STDOUT), log)
    for s in args.forest_seeds if args.forests_first else ():
        _forest(os.path.join(REPO, base), s, os.path.join(REPO, work, f"forest_seed{s}"))
    for s, (run, proc, log) in procs.items():
        if proc is not None and proc.wait() != 0:
            raise SystemExit(f"training seed {s} failed: see {run}/spread.log")
        if log is not None:
            log.close()
        net_rows.append((s, _metric(os.path.join(REPO, run, "cells", "result.json"), "cell_accuracy"),
                         _metric(os.path.join(REPO, run, "proteins", "result.json"), "protein_accuracy")))
    if any(proc is not None for _, proc, _ in procs.values()):
        times["training seeds, side by side"] = round(time.time() - t0)
    for s in args.forest_seeds:
        cell, prot = _forest(os.path.join(REPO, base), s, os.path.join(REPO, work, f"forest_seed{s}"))
        forest_rows.append((s, cell, prot))
        print(_row(f"forest, seed {s}", cell, prot), flush=True)
    cp_cells = f"{args.cp_train_cells:,} random training cells" if args.cp_train_cells else "every training cell"
    reused = (f" Training seed {reused_seed} and forest seed {DEMO_SEED} are a `make demo` run's own network and "
              f"forest (`--reuse-run`, {_run_commit(args.reuse_run)}), whose screen and features the other seeds share."
              if args.reuse_run else "")
    lines = [f"The pipeline of `make demo` (bf16 training, BatchNorm statistics recomputed over {args.bn_iters} batches, "
             f"the small "
             f"forest grid, CellProfiler features of {cp_cells}) on the synthetic screen of size "
             f"`{args.size}` (screen seed 0), {args.iters} training iterations (the demo's 450; base_lr 0.01 halved every "
             f"{step}), once per training seed (the solver's `random_seed`; the data, the features and every other "
             f"step the same) and once per forest seed on the same features. `python bench/bench_seed_spread.py "
             f"--size {args.size} --iters {args.iters} --bn-iters {args.bn_iters} --cp-train-cells {args.cp_train_cells}"
             + (" --reuse-run RUN" if args.reuse_run else "") + "`; "
             + ("wall times: " + ", ".join(f"{k} {v:,} s" for k, v in times.items()) + "; " if times else "results read from the runs it made earlier; ")
             + f"load average {os.getloadavg()[0]:.0f} on the machine's cores at the end." + reused, "",
             "| run | per cell | per protein |", "|---|---|---|"]
    lines += [_row(f"network, training seed {s}", c, pr) for s, c, pr in net_rows]
    lines += [_row(f"forest, seed {s}", c, pr) for s, c, pr in forest_rows]
    if not net_rows or not forest_rows:
        print("\n".join(lines))
        return
    lines += ["", f"- network per cell: {_stats([c['value'] for _, c, _ in net_rows])}; per protein: "
                  f"{_stats([pr['value'] for _, _, pr in net_rows])}",
              f"- forest per cell: {_stats([c['correct'] / c['total'] for _, c, _ in forest_rows])}; per protein: "
              f"{_stats([pr['value'] for _, _, pr in forest_rows])}"]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        update_section("Seed spread", text)


if __name__ == "__main__":
    main()
