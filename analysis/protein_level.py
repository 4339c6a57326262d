#!/usr/bin/env python3
"""Protein-level localisation from cell populations (Dirichlet posterior, MAP call).

For each protein, a Dirichlet with a uniform prior (concentration 1 per class) is updated
by its cells' predicted class probabilities as soft counts; the call is the posterior's
maximum a posteriori class.  Accuracy is reported over all proteins and over proteins
with at least --min-cells cells (paper: 10).

Inputs
  --predictions CSV   a predictions table (path,protein,split,label,pred,prob_0..; the
                      network's or the random forest's)
  --mixtures CSV      optional proteins table (e.g. the synthetic screen's proteins.csv):
                      column protein, one of mixture_classes|mixture|classes holding two
                      classes ("nucleus;cytoplasm" or "8;1"), optional split, label,
                      mixture_fraction|fraction.  Checks whether each mixed protein's two
                      true classes are its posterior's top two.

Outputs
  --out CSV                 protein,n_cells,label,pred,post_0..post_{K-1} (post = MAP proportions);
                            written last, so it marks a finished step
  <out stem>.json           protein_accuracy, protein_accuracy_min10 ({value,correct,total}),
                            mixtures (count or null), inputs, command
  <out stem>_mixtures.csv   with --mixtures: protein,n_cells,class_a,class_b,fraction,top1,top2,
                            post_top1,post_top2,top_two_match
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepyeast.constants import MIN_CELLS_PER_PROTEIN  # noqa: E402
from deepyeast.utils.io import InputError  # noqa: E402
from deepyeast.analysis.cell_metrics import command_line  # noqa: E402
from deepyeast.analysis.protein_level import run_protein_level  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, metavar="CSV", help="per-cell predictions table")
    parser.add_argument("--out", required=True, metavar="CSV", help="proteins table to write")
    parser.add_argument("--mixtures", metavar="CSV", help="proteins table naming mixed proteins (optional)")
    parser.add_argument("--split", default="auto",
                        help="split to use (default auto: the only split in the table, else 'test')")
    parser.add_argument("--min-cells", type=int, default=MIN_CELLS_PER_PROTEIN,
                        help="cells needed for the filtered accuracy (default %(default)s)")
    parser.add_argument("--summary", metavar="JSON", help="summary JSON (default: --out with .json)")
    parser.add_argument("--allow-mixed-labels", action="store_true",
                        help="a protein whose cells carry different labels takes the most common one "
                             "(default: error)")
    args = parser.parse_args(argv)
    try:
        s = run_protein_level(args.predictions, args.out, args.mixtures, split=args.split,
                              min_cells=args.min_cells, allow_mixed_labels=args.allow_mixed_labels,
                              summary_path=args.summary,
                              command=command_line(sys.argv if argv is None else [sys.argv[0]] + list(argv)))
    except InputError as err:
        parser.exit(2, f"error: {err}\n")
    a, b = s["protein_accuracy"], s["protein_accuracy_min10"]
    line = (f"proteins: accuracy {a['value']:.4f} ({a['correct']}/{a['total']}); with >= {s['min_cells']} cells: "
            + (f"{b['value']:.4f} ({b['correct']}/{b['total']})" if b["total"] else "no proteins"))
    if s["mixtures"]:
        m = s["mixtures"]
        line += f"; mixed proteins with both classes on top: {m['correct']}/{m['total']}"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
