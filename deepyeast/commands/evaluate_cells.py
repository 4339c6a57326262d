"""Per-cell evaluation of a predictions table (paper Figure 2A, 2B, 2D).

Inputs
  --predictions CSV     the network's predictions table
                        (path,protein,split,label,pred,prob_0..prob_{K-1}; see deepyeast/analysis/prediction_table.py)
  --rf-predictions CSV  optional: the random forest's table for the same cells, plotted beside the network

Outputs (in --out DIR; result.json is written last and marks a finished step)
  cell_metrics.json         cell_accuracy {value,correct,total,lo,hi}, cell_kappa, rf_cell_accuracy,
                            rf_cell_kappa (with --rf-predictions), bootstrap settings, the command
  per_class.csv             classifier,class,class_name,n_cells,n_predicted,precision[,_lo,_hi],recall[,_lo,_hi]
  confusion_rates.csv       rows = true class, columns = predicted class, rows sum to 1 (Figure 2D)
  confusion_counts.csv      the same as cell counts (rf_confusion_*.csv for the forest)
  fig2a_recall.png/pdf      recall per class, network vs forest, medians dashed
  fig2b_precision.png/pdf   precision per class
  fig2d_confusion.png/pdf   confusion rates (fig2d_confusion_rf for the forest)
  result.json               the result manifest the report reads

Intervals: stratified bootstrap (each class's cell count kept in every resample),
percentiles 2.5 and 97.5 of --resamples resamples.

Example:
  python analysis/evaluate_cells.py --predictions RUN/cells_test.csv --rf-predictions RUN/rf/cells_test.csv \\
      --out RUN/cells
"""

from deepyeast import launcher
from deepyeast.analysis.evaluate_cells import DEFAULT_RESAMPLES, run_cell_evaluation


def options(p):
    p.add_argument("--predictions", required=True, metavar="CSV", type=launcher.existing_file,
                   help="network predictions table")
    p.add_argument("--rf-predictions", metavar="CSV", type=launcher.existing_file,
                   help="random-forest predictions table (optional)")
    launcher.add(p, "out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--split", default="auto",
                   help="split to evaluate (default auto: the only split in the table, else 'test')")
    launcher.add(p, "resamples", default=DEFAULT_RESAMPLES)
    launcher.add(p, "seed")
    p.add_argument("--no-figures", action="store_true", help="write tables and JSON only")
    p.add_argument("--allow-empty-classes", action="store_true",
                   help="accept a class without cells (tiny test sets); default: error")


def run(args):
    out = run_cell_evaluation(args.predictions, args.out, args.rf_predictions, split=args.split,
                              n_resamples=args.resamples, make_figures=not args.no_figures,
                              require_all_classes=not args.allow_empty_classes, context=args.context)
    acc, kappa = out["cell_accuracy"], out["cell_kappa"]["value"]
    kappa_text = "undefined" if kappa is None else f"{kappa:.4f}"
    line = f"network: accuracy {acc['value']:.4f} ({acc['correct']}/{acc['total']} cells), kappa {kappa_text}"
    if "rf_cell_accuracy" in out:
        rf = out["rf_cell_accuracy"]
        line += f"; random forest: accuracy {rf['value']:.4f} ({rf['correct']}/{rf['total']} cells)"
    print(line)


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
