#!/usr/bin/env python3
"""Time the CellProfiler features, the random-forest baseline and the quality filter.

Generates a synthetic screen (deepyeast.data.make_synthetic, --size), then times:
feature extraction of its main set (in one process, and as chunk tasks on a Dask
LocalCluster of --jobs workers; CPU seconds per cell from the single-process
run), the random forest with the small grid, and the paper's quality filter.  Writes the "CellProfiler features
and random forests" section of bench/RESULTS.md and prints the extrapolation to
the demo (~9,000 cells: 8,000 main + 1,000 transfer).

    python bench/bench_rf.py --work /tmp/bench_rf [--size tiny --jobs 2]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._results import update_section  # noqa: E402
from deepyeast.data.lists import read_split_list  # noqa: E402
from deepyeast.analysis.cp_features import extract_features, feature_names, write_feature_csv  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="scratch folder")
    ap.add_argument("--size", default="tiny", help="synthetic screen size (tiny ~600 cells, small ~2,900)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-write", action="store_true", help="print only, leave bench/RESULTS.md alone")
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
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        update_section("CellProfiler features and random forests (bench/bench_rf.py)", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
