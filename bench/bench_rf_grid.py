#!/usr/bin/env python3
"""Time R randomForest forests at the paper's size and project the paper grid's wall time.

The paper's grid (deepyeast/analysis/random_forest.R RF_PAPER_GRID: ntree 50..1000 x 11 mtry x 5
nodesize) is 55 tasks, each one (mtry, nodesize) forest of 1,000 trees whose
prefixes give the smaller ntree (deepyeast/analysis/random_forest.py).  This script measures, on
the training cells' CellProfiler features (paper size: 65,000 cells x 430
features) and the validation and test cells:

1. per forest, in a fresh process each (so its peak memory is its own): the time
   to grow ``--ntree`` trees (R randomForest, one thread) at several mtry values
   (nodesize 1) and several nodesize values (one mtry), the time to score every
   prefix on the validation and test cells (predict.all, vote counts, tie rule),
   and the memory the forest adds to the loaded inputs; plus one forest of
   ``--ntree-long`` trees at the smallest mtry, which separates the time that does
   not grow with the trees and gives the memory per tree;
2. (with ``--grid-check``) a small grid through the real task path
   (``rforest.grid_search`` on a LocalCluster of ``--jobs`` workers) against the
   wall time the same model projects for it.

It then projects each of the 55 paper forests to 1,000 trees (time linear in the
number of trees, interpolated in mtry and in log nodesize between measured
points), and the grid's wall time on 1, 8 and 64 single-threaded workers (tasks
handed out in submission order as workers free up, as Dask does; the longest
forest bounds it from below).  CPU seconds are used for the projection (an idle
core's wall time); wall seconds are reported beside them because the machine may
be shared.  Writes the "Random-forest grid at paper size" section of
bench/RESULTS.md.

    python bench/bench_rf_grid.py --features DIR [--ntree 10] [--mtry 10 50 150 300] [--grid-check]

(about 15 minutes on an idle 2-core machine at paper size: ~600 CPU seconds of forests,
1 minute to read the CSVs, a few minutes for --grid-check)

DIR holds train.csv, val.csv, test.csv (analysis/cp_features.py output) and the
split lists HOwt_{train,val,test}.txt (``--lists DIR``, default DIR).
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from bench._results import update_section  # noqa: E402
from deepyeast.utils.memory import status_mib  # noqa: E402

SECTION = "Random-forest grid at paper size (bench/bench_rf_grid.py)"


# --------------------------------------------------------------------------- inputs

def load_inputs(features, lists, cache=None):
    """Imputed float64 matrices and labels of train/val/test (cached as .npz beside ``cache``)."""
    if cache and os.path.exists(cache):
        z = np.load(cache)
        return {k: z[k] for k in z.files}
    from deepyeast.analysis.random_forest import _labelled, labels_from_lists
    from deepyeast.analysis.rbridge import impute_features

    labels, _ = labels_from_lists([os.path.join(lists, f"HOwt_{s}.txt") for s in ("train", "val", "test")])
    out = {}
    for s in ("train", "val", "test"):
        _, _, x, y = _labelled(os.path.join(features, f"{s}.csv"), labels)
        out[f"x_{s}"], out[f"y_{s}"] = x, y
    out["x_train"], out["x_val"], out["x_test"], _ = impute_features(out["x_train"], out["x_val"], out["x_test"])
    if cache:
        tmp = cache + ".partial.npz"
        np.savez(tmp, **out)
        os.replace(tmp, cache)
    return out


# --------------------------------------------------------------------------- one forest, own process

def _status_mib(field):
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB, NaN where unreadable."""
    value = status_mib(field)
    return float("nan") if value is None else value


def one_forest(cache, mtry, nodesize, ntree, seed=1):
    """Grow and score one forest (the grid task's work); return timings and memory.

    Memory: ``base_mib`` is the process with its inputs loaded (numpy and R copies, as
    in a Dask worker); ``forest_peak_mib`` the peak while growing and scoring the forest
    (the peak-RSS counter is reset just before it, /proc/self/clear_refs).
    """
    from deepyeast.analysis import rbridge

    d = load_inputs(None, None, cache)
    rbridge.init_r()
    with rbridge.session() as ro:
        r = {k: (rbridge.r_matrix(v) if v.ndim == 2 else rbridge.r_ints(v)) for k, v in d.items()}
        ks = ro.IntVector(sorted({max(1, ntree // 2), ntree}))
        score = ro.r("function(model, x, ks, seed) { counts <- .prefix_counts(model, x, ks); "
                     "for (i in seq_along(ks)) rf_vote_class(matrix(counts[, , i], nrow(x)), seed); invisible(NULL) }")
        ro.r["gc"]()
        base = _status_mib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS counter (VmHWM)
        c0, w0 = time.process_time(), time.perf_counter()
        model = ro.r["rf_fit"](r["x_train"], r["y_train"],
                               ro.ListVector({"ntree": ntree, "mtry": mtry, "nodesize": nodesize, "seed": seed}))
        c1, w1 = time.process_time(), time.perf_counter()
        for part in ("val", "test"):
            score(model, r[f"x_{part}"], ks, seed)  # what rf_grid_point does after growing the forest
        c2, w2 = time.process_time(), time.perf_counter()
        n_nodes = float(np.mean(np.asarray(model.rx2("forest").rx2("ndbigtree"))))
    return {"mtry": mtry, "nodesize": nodesize, "ntree": ntree, "fit_cpu": c1 - c0, "fit_wall": w1 - w0,
            "score_cpu": c2 - c1, "score_wall": w2 - w1, "nodes_per_tree": n_nodes,
            "base_mib": base, "forest_peak_mib": _status_mib("VmHWM"),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure(cache, mtry, nodesize, ntree):
    """Run :func:`one_forest` in a fresh Python process (its own peak memory)."""
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", cache, str(mtry), str(nodesize),
                        str(ntree)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"forest mtry={mtry} nodesize={nodesize} ntree={ntree} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- model and projection

def _interp(x, xs, ys):
    """Piecewise-linear interpolation, linear extrapolation beyond the ends."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    if len(xs) == 1:
        return float(ys[0])
    i = int(np.clip(np.searchsorted(xs, x) - 1, 0, len(xs) - 2))
    return float(ys[i] + (ys[i + 1] - ys[i]) * (x - xs[i]) / (xs[i + 1] - xs[i]))


def fixed_seconds(short, long):
    """CPU seconds of a forest that do not grow with its trees (R's transpose and presort of
    the training matrix), from the same forest grown with T1 and T2 trees (at least 0)."""
    t1, t2 = short["ntree"], long["ntree"]
    return max(0.0, (t2 * short["fit_cpu"] - t1 * long["fit_cpu"]) / (t2 - t1))


def forest_seconds(rows, mtry, nodesize, ntree, fixed=0.0):
    """Projected CPU seconds of one grid task: grow ``ntree`` trees and score their prefixes.

    rows: measurements at one tree count T.  Growing: ``fixed`` (see :func:`fixed_seconds`)
    plus per-tree seconds interpolated in mtry (nodesize 1 rows), times the nodesize factor
    (rows at the reference mtry, interpolated in log nodesize).  Scoring (predict.all of
    every tree, then vote counts per prefix): per-tree seconds of the reference row.
    """
    def tree_part(r):
        return max(r["fit_cpu"] - fixed, 1e-9)

    by_m = sorted((r for r in rows if r["nodesize"] == 1), key=lambda r: r["mtry"])
    per_tree = _interp(mtry, [r["mtry"] for r in by_m], [tree_part(r) / r["ntree"] for r in by_m])
    by_n = sorted((r for r in rows if r["mtry"] == NODESIZE_MTRY), key=lambda r: r["nodesize"])
    ref = next(r for r in by_n if r["nodesize"] == 1)
    factor = _interp(math.log(nodesize), [math.log(r["nodesize"]) for r in by_n],
                     [tree_part(r) / tree_part(ref) for r in by_n])
    score_per_tree = ref["score_cpu"] / ref["ntree"]
    return fixed + ntree * (per_tree * max(factor, 0.05) + score_per_tree)


def makespan(durations, workers):
    """Wall time of tasks handed out in order to the first free of ``workers`` workers."""
    free = [0.0] * workers
    for d in durations:
        i = int(np.argmin(free))
        free[i] += d
    return max(free)


NODESIZE_MTRY = 50
"""mtry at which the nodesize factor is measured."""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", help="folder with train.csv, val.csv, test.csv (CellProfiler features)")
    ap.add_argument("--lists", default=None, help="folder with HOwt_{train,val,test}.txt (default --features)")
    ap.add_argument("--work", default=None, help="scratch folder for the .npz cache (default --features)")
    ap.add_argument("--ntree", type=int, default=10, help="trees per measured forest (default 10)")
    ap.add_argument("--ntree-long", type=int, default=100,
                    help="trees of one more forest at the smallest mtry: the time that does not grow with the trees, "
                         "and the memory per tree (default 100)")
    ap.add_argument("--mtry", type=int, nargs="+", default=[10, 50, 150, 300],
                    help="mtry values measured at nodesize 1 (default 10 50 150 300)")
    ap.add_argument("--nodesize", type=int, nargs="+", default=[1, 5, 50],
                    help=f"nodesize values measured at mtry {NODESIZE_MTRY} (default 1 5 50)")
    ap.add_argument("--grid-check", action="store_true",
                    help="also run a small grid through rforest.grid_search on a LocalCluster and compare")
    ap.add_argument("--jobs", type=int, default=2, help="LocalCluster workers of --grid-check (default 2)")
    ap.add_argument("--inputs-name", default="the synthetic `paper` screen",
                    help="what the features are of, for RESULTS.md (default: the synthetic `paper` screen)")
    ap.add_argument("--reuse", metavar="LOG",
                    help="take the measured forests from a previous run's printed output instead of measuring")
    ap.add_argument("--note", default="", help="a sentence added to the RESULTS.md section (e.g. where reused rows come from)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave bench/RESULTS.md alone")
    ap.add_argument("--one", nargs=4, metavar=("CACHE", "MTRY", "NODESIZE", "NTREE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        cache, m, n, t = args.one
        print(json.dumps(one_forest(cache, int(m), int(n), int(t))))
        return 0
    if not args.features:
        ap.error("--features is required")
    from deepyeast.analysis.random_forest import grid_pairs, resolve_grid

    work = args.work or args.features
    cache = os.path.join(work, "rf_bench_inputs.npz")
    t0 = time.perf_counter()
    d = load_inputs(args.features, args.lists or args.features, cache)
    n_tr, n_f = d["x_train"].shape
    print(f"inputs: {n_tr} train x {n_f} features, {len(d['y_val'])} val, {len(d['y_test'])} test "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    del d
    loads = [os.getloadavg()[0]]
    if args.reuse:
        with open(args.reuse, encoding="utf-8") as f:
            measured = [json.loads(line) for line in f if line.startswith('{"mtry"')]
        rows, long = measured[:-1], measured[-1]
        args.ntree = rows[0]["ntree"]
        args.mtry = sorted({r["mtry"] for r in rows if r["nodesize"] == 1})
        loads = [r["load"] for r in measured if "load" in r]
    else:
        rows = []
        points = [(m, 1) for m in args.mtry] + [(NODESIZE_MTRY, n) for n in args.nodesize if n != 1]
        if NODESIZE_MTRY not in args.mtry:
            points.append((NODESIZE_MTRY, 1))
        for m, n in points:
            rows.append(measure(cache, m, n, args.ntree))
            loads.append(os.getloadavg()[0])
            rows[-1]["load"] = loads[-1]
            print(json.dumps(rows[-1]), flush=True)
        long = measure(cache, min(args.mtry), 1, args.ntree_long)
        loads.append(os.getloadavg()[0])
        long["load"] = loads[-1]
        print(json.dumps(long), flush=True)
    single = next(r for r in rows if r["mtry"] == long["mtry"] and r["nodesize"] == 1)
    fixed = fixed_seconds(single, long)

    paper = resolve_grid("paper")
    ntree = max(paper["ntree"])
    pairs = grid_pairs(paper, n_f, seed=1)
    dur = [forest_seconds(rows, p["mtry"], p["nodesize"], ntree, fixed) for p in pairs]
    total = sum(dur)
    mem_per_tree = (long["forest_peak_mib"] - single["forest_peak_mib"]) / (long["ntree"] - single["ntree"])
    mem_1000 = single["forest_peak_mib"] + mem_per_tree * (ntree - args.ntree)

    check = None
    if args.grid_check:
        from deepyeast.analysis import random_forest as rforest
        from deepyeast.utils.run_context import RunContext

        d = load_inputs(None, None, cache)
        small = {"ntree": [max(1, args.ntree // 2), args.ntree], "mtry": [min(args.mtry), NODESIZE_MTRY],
                 "nodesize": [1]}
        kw = dict(grid=small, x_test=d["x_test"])
        c0, w0 = time.process_time(), time.perf_counter()
        a = rforest.grid_search(d["x_train"], d["y_train"], d["x_val"], d["y_val"], **kw, context=RunContext(seed=1))
        cpu_none, wall_none = time.process_time() - c0, time.perf_counter() - w0
        w0 = time.perf_counter()
        b = rforest.grid_search(d["x_train"], d["y_train"], d["x_val"], d["y_val"], **kw,
                                context=RunContext(seed=1, scheduler="local", jobs=args.jobs))
        wall_local = time.perf_counter() - w0
        same = a["table"] == b["table"] and bool((a["test_pred"] == b["test_pred"]).all())
        pr = [forest_seconds(rows, p["mtry"], p["nodesize"], args.ntree, fixed)
              for p in rforest.grid_pairs(small, n_f, 1)]
        check = (small, cpu_none, wall_none, sum(pr), wall_local, makespan(pr, args.jobs), same)
        loads.append(os.getloadavg()[0])

    md = [f"Inputs: CellProfiler features of {args.inputs_name}: {n_tr:,} training cells x {n_f} "
          f"features; validation {len(np.load(cache)['y_val']):,} and test {len(np.load(cache)['y_test']):,} cells "
          "scored at every prefix.  One forest per row, each in a fresh process, R randomForest on one thread.", "",
          "**Measured** (trees grown per forest as shown; the grid grows 1,000):", "",
          "| mtry | nodesize | trees | grow CPU s | grow wall s | CPU s per tree | score val+test CPU s | nodes per tree "
          "| peak memory MiB (inputs alone) |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows + [long]:
        md.append(f"| {r['mtry']} | {r['nodesize']} | {r['ntree']} | {r['fit_cpu']:.1f} | {r['fit_wall']:.1f} | "
                  f"{r['fit_cpu'] / r['ntree']:.2f} | {r['score_cpu']:.1f} | {r['nodes_per_tree']:,.0f} | "
                  f"{r['forest_peak_mib']:,.0f} ({r['base_mib']:,.0f}) |")
    lin = long["fit_cpu"] / single["fit_cpu"]
    md += ["", f"Growing {long['ntree']} instead of {single['ntree']} trees (mtry {single['mtry']}) took {lin:.2f}x the "
           f"CPU time: {fixed:.1f} s per forest do not grow with the trees (R's transpose and presort of the "
           f"training matrix), the rest is linear in trees.  Memory: the inputs take {single['base_mib'] / 1024:.1f} GiB "
           f"in a worker (numpy and R copies); growing and scoring the forest adds at most "
           f"{single['forest_peak_mib'] - single['base_mib']:,.0f} MiB at {single['ntree']} trees and "
           f"{long['forest_peak_mib'] - long['base_mib']:,.0f} MiB at {long['ntree']}: {mem_per_tree:.1f} MiB per "
           f"tree, because randomForest reserves (and R's .C copies) node arrays for 2 x {n_tr:,} nodes per tree "
           f"before growing it (nodesize <= 5; nodesize 10 reserves 6x, 50 46x less) -> about "
           f"{mem_1000 / 1024:.1f} GiB per worker for a 1,000-tree forest.",
           "", "**Projected** paper grid (55 forests of 1,000 trees, every ntree prefix scored; CPU seconds of an "
           "idle core, mtry interpolated linearly, nodesize in log scale; tasks handed out in grid order):", "",
           "| workers | grid wall time | note |", "|---:|---:|---|"]
    for w in (1, 8, 64):
        note = ""
        if w >= len(pairs):
            note = f"more workers than the {len(pairs)} forests: the longest forest ({max(dur) / 3600:.1f} h) bounds it"
        md.append(f"| {w} | {makespan(dur, w) / 3600:.1f} h | {note} |")
    md += ["", f"Total {total / 3600:.1f} CPU-hours; per forest {min(dur) / 60:.0f} min (mtry {pairs[int(np.argmin(dur))]['mtry']}, "
           f"nodesize {pairs[int(np.argmin(dur))]['nodesize']}) to {max(dur) / 60:.0f} min (mtry "
           f"{pairs[int(np.argmax(dur))]['mtry']}, nodesize {pairs[int(np.argmax(dur))]['nodesize']}).  Each worker needs "
           f"~{mem_1000 / 1024:.1f} GiB (start workers with `--memory-limit` above that)."]
    if check:
        small, cpu_none, wall_none, proj, wall_local, proj_local, same = check
        md += ["", f"Check through the real task path (rforest.grid_search), grid {small}: in one process "
               f"{cpu_none:.0f} CPU s ({wall_none:.0f} s wall) against {proj:.0f} CPU s projected from the rows "
               f"above; on a LocalCluster of {args.jobs} workers {wall_local:.0f} s wall (cluster start, the inputs "
               f"sent to each worker and converted to R once, both forests in parallel; {proj_local:.0f} s projected "
               f"on idle cores), with {'the same' if same else 'DIFFERENT'} table and test predictions."]
    if args.note:
        md += ["", args.note]
    load_text = (f"Load average during the measurements: {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} "
                 "cores" if loads else f"The {os.cpu_count()} cores are shared (load in the note above)")
    md += ["", f"{load_text}: wall times are inflated by other jobs; the projection uses CPU seconds, which are not, "
           "apart from cache and memory-bandwidth contention."]
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        update_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
