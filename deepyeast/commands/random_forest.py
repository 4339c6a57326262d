"""Random-forest baseline on CellProfiler features (R randomForest through rpy2).

Chooses ntree/mtry/nodesize on the validation cells, then writes the test cells'
predictions table ``path,protein,split,label,pred,prob_0,...`` from the chosen
forest (``pred``: randomForest's class, ties broken at random as its predict()
does, seeded).  Labels come from the split lists (``relpath label``).  Missing
feature values are replaced by the training medians.

Each (mtry, nodesize) pair is one task: a forest grown to the largest ntree with
R randomForest inside a worker, every ntree prefix scored on the validation cells.
Tasks run on Dask (--scheduler local: a LocalCluster of --jobs processes;
tcp://HOST:PORT or $DASK_SCHEDULER: a running cluster) or in this process
(--scheduler none).  The features reach each worker once.  With the same --seed
the chosen grid point and every output are identical whatever the scheduler.

Grids: ``small`` (demo: ntree 50,150 x mtry 20,50 x nodesize 1) or ``paper``
(ntree 50..1000 x mtry 10..300 x nodesize 1..50: 55 forests of 1,000 trees; see
bench/RESULTS.md for the time at the paper's size).

--out is the predictions table itself (the forest's product is one table other steps read);
result.json beside it describes the forest and its features for the report.

Example:
  python analysis/random_forest.py --train feats_train.csv --val feats_val.csv --test feats_test.csv \\
      --labels-from ROOT/HOwt_train.txt ROOT/HOwt_val.txt ROOT/HOwt_test.txt --grid small \\
      --out rf_predictions.csv --val-out rf_val_predictions.csv --summary rf_grid.json --scheduler local --jobs 2
"""

from deepyeast import launcher


def options(p):
    p.add_argument("--train", required=True, type=launcher.existing_file, help="features CSV of the training cells")
    p.add_argument("--val", required=True, type=launcher.existing_file,
                   help="features CSV of the validation cells (chooses the grid point)")
    p.add_argument("--test", required=True, type=launcher.existing_file,
                   help="features CSV of the test cells (predicted)")
    p.add_argument("--labels-from", nargs="+", required=True, metavar="LIST", type=launcher.existing_file,
                   help="split list files giving each cell's label (e.g. HOwt_train.txt HOwt_val.txt HOwt_test.txt)")
    p.add_argument("--grid", default="small", choices=["small", "paper"], help="parameter grid (default small)")
    launcher.add(p, "out", required=True, metavar="CSV", help="predictions table CSV for the test cells")
    p.add_argument("--val-out", default=None, metavar="CSV",
                   help="predictions table CSV of the validation cells from the chosen forest (for the quality filter)")
    p.add_argument("--summary", default=None, metavar="JSON",
                   help="JSON with every grid point's validation accuracy and the choice")
    p.add_argument("--split-name", default="test", help="value of the 'split' column (default test)")
    launcher.add_cluster(p, "forests (one task per (mtry, nodesize) pair)")
    launcher.add(p, "seed", help="random seed; the i-th (mtry, nodesize) forest uses seed+i (default %(default)s)")


def run(args):
    import os

    from deepyeast.analysis.cp_features import describe_feature_csv
    from deepyeast.analysis.random_forest import ForestFiles, run_baseline, write_forest_result
    from deepyeast.utils.manifest import clear_result

    out_dir = os.path.dirname(os.path.abspath(args.out))
    features = describe_feature_csv(args.train)  # before any output is written: a failure here leaves none
    clear_result(out_dir)
    files = ForestFiles(args.train, args.val, args.test, args.labels_from, args.out, val_out=args.val_out,
                        summary=args.summary)
    s = run_baseline(files, grid=args.grid, split_name=args.split_name, context=args.context)
    write_forest_result(out_dir, s, features, command=args.command)
    a = s["test_accuracy"]
    print(f"random forest: test accuracy {a['value']:.4f} ({a['correct']}/{a['total']} cells) -> {args.out}")


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
