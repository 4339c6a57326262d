#!/usr/bin/env python3
"""Compute CellProfiler-style features (~430 per cell) of the crops in a split list.

Writes a CSV ``path,<feature_1>,...`` with one row per cell, in list order (--out is that
table itself: the step's product is one table other steps read).  The cell mask comes from
the red marker channel; see deepyeast/analysis/cp_features.py for the feature families and
settings.

With --from TABLE the features are not computed but taken from an external per-cell table
(path,<feature>,... keyed by archive-relative crop path, e.g. Chong et al.'s CellProfiler
features mapped to the archive's crops): the rows of the listed cells are written to --out,
and a listed cell without a row is an error.

Example:
  python analysis/cp_features.py --archive ROOT --list HOwt_test.txt --out feats_test.csv
  python analysis/cp_features.py --from chong/test.csv --archive ROOT --list HOwt_test.txt --out feats_test.csv
"""

import os
import time

import numpy as np

from deepyeast import launcher
from deepyeast.utils.io import InputError


def options(p):
    launcher.add(p, "archive", required=True)
    p.add_argument("--list", required=True,
                   help="split list ('relpath label' per line); a bare name is looked up in --archive")
    launcher.add(p, "out", required=True, metavar="CSV", help="output CSV (written atomically)")
    launcher.add(p, "jobs")
    p.add_argument("--batch", type=int, default=64, help="crops measured together in one mosaic (default 64)")
    p.add_argument("--limit", type=int, default=None, help="only the first N cells of the list (for a quick look)")
    p.add_argument("--from", dest="from_table", metavar="TABLE", type=launcher.existing_file,
                   help="take the features from this external per-cell table instead of computing them")
    p.add_argument("--sample", type=int, default=None, metavar="N",
                   help="a seeded random sample of N cells of the list, kept in list order (all if N >= cells)")
    launcher.add(p, "seed", help="seed of --sample (default %(default)s)")


def run(args):
    from deepyeast.analysis.cp_features import extract_features, write_feature_csv
    from deepyeast.data.lists import class_names_for_list, read_split_list

    list_path = args.list if os.path.exists(args.list) else os.path.join(args.archive, args.list)
    entries, _ = read_split_list(list_path, class_names_for_list(list_path))
    paths = [rel for rel, _ in entries][: args.limit]
    if args.sample is not None and args.sample < len(paths):
        if args.sample < 1:
            raise InputError(f"--sample must be at least 1, got {args.sample}")
        keep = np.sort(np.random.default_rng(args.seed).choice(len(paths), args.sample, replace=False))
        paths = [paths[i] for i in keep]
    if args.from_table:
        from deepyeast.analysis.cp_features import import_feature_table

        names, n = import_feature_table(args.from_table, paths, args.out, list_path)
        print(f"cp_features: {n} cells x {len(names)} features of {args.from_table} -> {args.out}")
        return
    t0 = time.perf_counter()
    names, values, n_fallback = extract_features(paths, root=args.archive, n_jobs=args.jobs, batch=args.batch)
    write_feature_csv(args.out, paths, names, values)
    dt = time.perf_counter() - t0
    print(f"cp_features: {len(paths)} cells x {len(names)} features -> {args.out} in {dt:.1f} s "
          f"({1000 * dt / max(len(paths), 1):.1f} ms/cell, {args.jobs} jobs); "
          f"{n_fallback} crops without foreground used the central-disk mask")


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
