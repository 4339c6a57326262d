#!/usr/bin/env python3
"""Time the CellProfiler features, the random-forest baseline and the quality filter.

Generates a synthetic screen (deepyeast.data.make_synthetic, --size), then times:
feature extraction of its main set (in one process, and as chunk tasks on a Dask
LocalCluster of --jobs workers; CPU seconds per cell from the single-process
run), the random forest with the small grid, and the paper's quality filter.  Writes the "CellProfiler features
and random forests" section of bench/RESULTS.md and prints the extrapolation to
the demo (~9,000 cells: 8,000 main + 1,000 transfer).

    python bench/bench_rf.py --work /tmp/bench_rf [--size tiny --jobs 2] [--against REF]

``--against REF``: the feature extraction of git commit REF (its package exported with ``git archive``)
and of this tree, each in a fresh process on the same cells, one after the other, the CPU time per cell
of each and how many feature values differ between them.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._results import REPO, commit, export_ref, update_section  # noqa: E402
from deepyeast.data.lists import read_split_list  # noqa: E402
from deepyeast.analysis.cp_features import extract_features, feature_names, write_feature_csv  # noqa: E402


_TIME_FEATURES = """
import sys, time
import numpy as np
from deepyeast.analysis.cp_features import extract_features, feature_names
paths = open(sys.argv[1], encoding="utf-8").read().split()
feature_names()  # imports and warm-up outside the timing
cpu, wall = time.process_time(), time.perf_counter()
names, values, _ = extract_features(paths, root=sys.argv[2], scheduler="none", progress=False)
print(time.perf_counter() - wall, time.process_time() - cpu)
np.save(sys.argv[3], values)
"""


def time_features(tree, paths, root, work, tag):
    """Feature extraction of ``paths`` under ``root`` with the package of ``tree``, in a fresh process
    (--scheduler none): (wall s, CPU s, values float64 n x F)."""
    import numpy as np

    listing = os.path.join(work, f"paths_{tag}.txt")
    with open(listing, "w", encoding="utf-8") as f:
        f.write("\n".join(paths) + "\n")
    out = os.path.join(work, f"values_{tag}.npy")
    proc = subprocess.run([sys.executable, "-c", _TIME_FEATURES, listing, root, out], cwd=tree,
                          env=dict(os.environ, PYTHONPATH=tree), capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"feature extraction with {tree} failed:\n{proc.stderr[-2000:]}")
    wall, cpu = map(float, proc.stdout.split()[-2:])
    return wall, cpu, np.load(out)


def against_rows(ref, paths, root, work):
    """Table rows: this tree's and ``ref``'s feature extraction on the same cells, and how many values differ."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="bench-rf-ref-") as exports:
        tree, sha, date = export_ref(ref, exports, parts=("deepyeast",))
        ours = time_features(REPO, paths, root, work, "ours")
        theirs = time_features(tree, paths, root, work, "ref")
    n = len(paths)
    same = (ours[2] == theirs[2]) | (np.isnan(ours[2]) & np.isnan(theirs[2]))
    rows = [(f"features, {n} cells, 1 process, this tree ({commit()})", ours[0], 1000 * ours[1] / n),
            (f"features, {n} cells, 1 process, {sha[:7]} ({date})", theirs[0], 1000 * theirs[1] / n)]
    note = (f"Against {sha[:7]}: CPU per cell {theirs[1] / ours[1]:.2f}x of this tree's (above 1: this tree is "
            f"faster); values differing: {int((~same).sum())} of {same.size:,}.")
    return rows, note


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="scratch folder")
    ap.add_argument("--size", default="tiny", help="synthetic screen size (tiny ~600 cells, small ~2,900)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-write", action="store_true", help="print only, leave bench/RESULTS.md alone")
    ap.add_argument("--against", metavar="REF", help="also time git commit REF's feature extraction on the same "
                                                      "cells and count the values that differ")
    args = ap.parse_args(argv)
    from deepyeast.data.make_synthetic import make_screen

    screen = os.path.join(args.work, f"screen_{args.size}")
    if not os.path.exists(os.path.join(screen, "screen.json")):
        make_screen(screen, size=args.size, seed=0, progress=False)
    root = os.path.join(screen, "main")
    feature_names()  # imports and warm-up outside the timings
    rows, feats = [], {}
    split_paths = {s: [rel for rel, _ in read_split_list(os.path.join(root, f"HOwt_{s}.txt"))[0]]
                   for s in ("train", "val", "test")}
    all_paths = sum(split_paths.values(), [])
    n = len(all_paths)

    cpu0, t0 = time.process_time(), time.perf_counter()
    extract_features(all_paths, root=root, scheduler="none")
    cpu1, wall1 = time.process_time() - cpu0, time.perf_counter() - t0
    rows.append((f"features, {n} cells, 1 process (--scheduler none)", wall1, 1000 * cpu1 / n))
    t0 = time.perf_counter()
    for s, paths in split_paths.items():
        names, values, _ = extract_features(paths, root=root, scheduler="local", jobs=args.jobs)
        feats[s] = os.path.join(args.work, f"feats_{s}.csv")
        write_feature_csv(feats[s], paths, names, values)
    wall2 = time.perf_counter() - t0
    rows.append((f"features, {n} cells, LocalCluster of {args.jobs} workers (3 cluster starts)", wall2, None))
    ref_note = None
    if args.against:
        ref_rows, ref_note = against_rows(args.against, all_paths, root, args.work)
        rows += ref_rows

    from deepyeast.analysis.quality_filter import QualityInputs, run_quality_filter
    from deepyeast.analysis.random_forest import ForestFiles, run_baseline
    from deepyeast.utils.run_context import RunContext

    t0 = time.perf_counter()
    rf_val = os.path.join(args.work, "rf_val_predictions.csv")
    quiet = RunContext(scheduler="local", jobs=args.jobs, log=lambda *_: None)
    s = run_baseline(ForestFiles(feats["train"], feats["val"], feats["test"],
                                 [os.path.join(root, f"HOwt_{x}.txt") for x in ("train", "val", "test")],
                                 os.path.join(args.work, "rf_predictions.csv"), val_out=rf_val),
                     grid="small", context=quiet)
    rows.append((f"random forest, small grid, {s['n_train']} train cells, LocalCluster of {args.jobs} workers",
                 time.perf_counter() - t0, None))
    t0 = time.perf_counter()
    # the forest's validation table stands in for the network's too (this bench trains no network)
    q = run_quality_filter(QualityInputs(feats["val"], rf_val, rf_val, os.path.join(root, "noncells.txt"),
                                         feats["test"], {"random_forest": os.path.join(args.work, "rf_predictions.csv")}),
                           context=quiet)
    ts = q["training_set"]
    rows.append((f"quality filter, 10-fold CV, {ts['cells']} cells + {ts['noncells']} non-cells"
                 f"{' (not run: too few)' if 'not_run' in q else ''}, LocalCluster of {args.jobs} workers",
                 time.perf_counter() - t0, None))

    demo = 9000 * cpu1 / n / args.jobs
    load = os.getloadavg()[0]
    md = [f"Synthetic screen `{args.size}` ({n} main-set cells), {len(names)} features per cell.", "",
          "| step | wall s | CPU ms/cell |", "|---|---:|---:|"]
    md += [f"| {name} | {w:.1f} | {'' if c is None else f'{c:.1f}'} |" for name, w, c in rows]
    md += ["", f"Extrapolated feature extraction for the demo (~9,000 cells, {args.jobs} idle cores): "
           f"{demo:.0f} s.  Random forest test accuracy here: {s['test_accuracy']['value']:.3f} "
           f"({s['test_accuracy']['correct']}/{s['test_accuracy']['total']}).  Load average at the end: "
           f"{load:.1f} (wall times above that of an idle machine are inflated; CPU ms/cell is not)."]
    if ref_note:
        md += ["", ref_note]
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        update_section("CellProfiler features and random forests (bench/bench_rf.py)", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
