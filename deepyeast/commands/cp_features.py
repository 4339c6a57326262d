"""Compute CellProfiler-style features (~430 per cell) of the crops in a split list.

Writes a CSV ``path,<feature_1>,...`` with one row per cell, in list order (--out is that
table itself: the step's product is one table other steps read).  The cell mask comes from
the red marker channel; see deepyeast/analysis/cp_features.py for the feature families and
settings.

Chunks of --batch cells are tasks on Dask (--scheduler local: a LocalCluster of
--jobs processes; tcp://HOST:PORT or $DASK_SCHEDULER: a running cluster, whose
workers receive the crops with their task and need not see the archive) or in
this process (--scheduler none); the file is identical whatever the scheduler.

With --from TABLE the features are not computed but taken from an external per-cell table
(path,<feature>,... keyed by archive-relative crop path, e.g. Chong et al.'s CellProfiler
features mapped to the archive's crops): the rows of the listed cells are written to --out,
and a listed cell without a row is an error.

Example:
  python analysis/cp_features.py --archive ROOT --list HOwt_test.txt --out feats_test.csv --jobs 2
  python analysis/cp_features.py --from chong/test.csv --archive ROOT --list HOwt_test.txt --out feats_test.csv
"""

import os
import time

from deepyeast import launcher


def options(p):
    launcher.add(p, "archive", required=True)
    p.add_argument("--list", required=True,
                   help="split list ('relpath label' per line); a bare name is looked up in --archive")
    launcher.add(p, "out", required=True, metavar="CSV", help="output CSV (written atomically)")
    launcher.add_cluster(p, "chunks of --batch cells")
    p.add_argument("--batch", type=int, default=64, help="crops measured together in one mosaic (default 64)")
    p.add_argument("--limit", type=int, default=None, help="only the first N cells of the list (for a quick look)")
    p.add_argument("--from", dest="from_table", metavar="TABLE", type=launcher.existing_file,
                   help="take the features from this external per-cell table instead of computing them")
    p.add_argument("--sample", type=int, default=None, metavar="N",
                   help="a seeded random sample of N cells of the list, kept in list order (all if N >= cells)")
    launcher.add(p, "seed", help="seed of --sample (default %(default)s)")


def run(args):
    from deepyeast.analysis.cp_features import extract_features_to_csv
    from deepyeast.data.lists import class_names_for_list, read_split_list, sample_rows

    scheduler = args.context.scheduler
    list_path = args.list if os.path.exists(args.list) else os.path.join(args.archive, args.list)
    entries, _ = read_split_list(list_path, class_names_for_list(list_path))
    paths = [rel for rel, _ in entries][: args.limit]
    paths = [paths[i] for i in sample_rows(len(paths), args.sample, args.seed)]
    if args.from_table:
        from deepyeast.analysis.cp_features import import_feature_table

        names, n = import_feature_table(args.from_table, paths, args.out, list_path)
        print(f"cp_features: {n} cells x {len(names)} features of {args.from_table} -> {args.out}")
        return
    t0 = time.perf_counter()
    _, n_features, n_fallback = extract_features_to_csv(args.out, paths, root=args.archive, scheduler=scheduler,
                                                        jobs=args.context.jobs, batch=args.batch)
    dt = time.perf_counter() - t0
    print(f"cp_features: {len(paths)} cells x {n_features} features -> {args.out} in {dt:.1f} s "
          f"({1000 * dt / max(len(paths), 1):.1f} ms/cell, scheduler {scheduler}); "
          f"{n_fallback} crops without foreground used the central-disk mask")


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
