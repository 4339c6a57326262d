#!/usr/bin/env python3
"""Compute CellProfiler-style features (~430 per cell) of the crops in a split list.

Writes a CSV ``path,<feature_1>,...`` with one row per cell, in list order.
The cell mask comes from the red marker channel; see deepyeast/cp_features.py
for the feature families and settings.

Chunks of --batch cells are tasks on Dask (--scheduler local: a LocalCluster of
--jobs processes; tcp://HOST:PORT or $DASK_SCHEDULER: a running cluster, whose
workers receive the crops with their task and need not see the archive) or in
this process (--scheduler none); the file is identical whatever the scheduler.

Example:
  python analysis/cp_features.py --archive ROOT --list HOwt_test.txt --out feats_test.csv --jobs 2
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from deepyeast.analysis.cluster import add_cluster_arguments, resolve_scheduler  # noqa: E402
from deepyeast.archive import class_names_for_list, read_split_list  # noqa: E402
from deepyeast.cp_features import extract_features_to_csv  # noqa: E402
from deepyeast.io_utils import InputError  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archive", required=True, help="archive root holding plateNN/*.png and the list files")
    ap.add_argument("--list", required=True,
                    help="split list ('relpath label' per line); a bare name is looked up in --archive")
    ap.add_argument("--out", required=True, help="output CSV (written atomically)")
    ap.add_argument("--batch", type=int, default=64, help="crops measured together in one mosaic (default 64)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N cells of the list (for a quick look)")
    ap.add_argument("--sample", type=int, default=None, metavar="N",
                    help="a seeded random sample of N cells of the list, kept in list order (all if N >= cells)")
    ap.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    add_cluster_arguments(ap, "chunks of cells")
    args = ap.parse_args(argv)
    list_path = args.list if os.path.exists(args.list) else os.path.join(args.archive, args.list)
    try:
        entries, _ = read_split_list(list_path, class_names_for_list(list_path))
        paths = [rel for rel, _ in entries][: args.limit]
        if args.sample is not None and args.sample < len(paths):
            if args.sample < 1:
                raise InputError(f"--sample must be at least 1, got {args.sample}")
            keep = np.sort(np.random.default_rng(args.seed).choice(len(paths), args.sample, replace=False))
            paths = [paths[i] for i in keep]
        t0 = time.perf_counter()
        scheduler = resolve_scheduler(args.scheduler)
        _, n_features, n_fallback = extract_features_to_csv(
            args.out, paths, root=args.archive, scheduler=scheduler, jobs=args.jobs, batch=args.batch,
            progress=sys.stderr.isatty(), log=lambda m: print(m, file=sys.stderr))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    print(f"cp_features: {len(paths)} cells x {n_features} features -> {args.out} in {dt:.1f} s "
          f"({1000 * dt / max(len(paths), 1):.1f} ms/cell, scheduler {scheduler}); "
          f"{n_fallback} crops without foreground used the central-disk mask")
    return 0


if __name__ == "__main__":
    sys.exit(main())
