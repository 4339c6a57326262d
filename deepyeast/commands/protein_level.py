"""Protein-level localisation from cell populations (Dirichlet posterior, MAP call).

For each protein, a Dirichlet with a uniform prior (concentration 1 per class) is updated
by its cells' predicted class probabilities as soft counts; the call is the posterior's
maximum a posteriori class.  Accuracy is reported over all proteins and over proteins
with at least --min-cells cells (paper: 10).

Inputs
  --predictions CSV   a predictions table (path,protein,split,label,pred,prob_0..; the
                      network's or the random forest's: say which with --classifier)
  --mixed TABLE       optional table of proteins localised to two compartments, kept out of
                      train/val/test as in the paper (protein,compartment_a,compartment_b;
                      names or indices; the synthetic screen writes main/mixed_proteins.csv),
  --mixed-predictions CSV   with the predictions of their cells (analysis/predict.py --mixed):
                      is each protein's posterior top two its two compartments, else are both
                      within its top three?

Outputs (in --out DIR)
  proteins.csv              protein,n_cells,label,pred,post_0..post_{K-1} (post = MAP proportions)
  proteins.json             protein_accuracy, protein_accuracy_min10 ({value,correct,total}),
                            mixed ({top_two, top_three_rest, top_three} counts or null), inputs
  proteins_mixed.csv        with --mixed: protein,n_cells,class_a,class_b,fraction,top1,top2,top3,
                            post_top1,post_top2,post_top3,top_two,top_three
  result.json               the result manifest the report reads (written last)

Example:
  python analysis/protein_level.py --predictions RUN/cells_test.csv --out RUN/proteins
"""

import os

from deepyeast import launcher
from deepyeast.analysis.protein_level import CLASSIFIERS, run_protein_level
from deepyeast.constants import MIN_CELLS_PER_PROTEIN


def options(p):
    p.add_argument("--predictions", required=True, metavar="CSV", type=launcher.existing_file,
                   help="per-cell predictions table")
    launcher.add(p, "out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--classifier", choices=sorted(CLASSIFIERS), default="network",
                   help="whose predictions these are: names the metrics (rf_ for the forest) (default %(default)s)")
    p.add_argument("--mixed", metavar="TABLE", type=launcher.existing_file,
                   help="proteins with two compartments: protein,compartment_a,compartment_b (optional)")
    p.add_argument("--mixed-predictions", metavar="CSV", type=launcher.existing_file,
                   help="predictions table of the --mixed proteins' cells")
    p.add_argument("--split", default="auto",
                   help="split to use (default auto: the only split in the table, else 'test')")
    p.add_argument("--min-cells", type=int, default=MIN_CELLS_PER_PROTEIN,
                   help="cells needed for the filtered accuracy (default %(default)s)")
    p.add_argument("--allow-mixed-labels", action="store_true",
                   help="a protein whose cells carry different labels takes the most common one (default: error)")


def run(args):
    mixed = (args.mixed, args.mixed_predictions) if args.mixed or args.mixed_predictions else None
    s = run_protein_level(args.predictions, os.path.join(args.out, "proteins.csv"), mixed, split=args.split,
                          min_cells=args.min_cells, allow_mixed_labels=args.allow_mixed_labels,
                          classifier=args.classifier, context=args.context)
    a, b = s["protein_accuracy"], s["protein_accuracy_min10"]
    line = (f"proteins: accuracy {a['value']:.4f} ({a['correct']}/{a['total']} proteins); with >= {s['min_cells']} "
            "cells: " + (f"{b['value']:.4f} ({b['correct']}/{b['total']})" if b["total"] else "no proteins"))
    if s["mixed"]:
        t2, t3 = s["mixed"]["top_two"], s["mixed"]["top_three_rest"]
        line += (f"; proteins with two compartments: both the top two {t2['correct']}/{t2['total']}, "
                 f"the others within the top three {t3['correct']}/{t3['total']}")
    print(line)


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
