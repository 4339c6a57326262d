"""The paper's Results item by item, ours beside theirs: one report section in the paper's order.

Sets every figure and number of the paper's Results that the headline table does not hold beside
this run's: per-compartment recall and precision (Figure 2A, 2B) with the paper's counts and its
claims in words checked true or false, the top confusions, galleries of misclassified cells
(Figure 2C, Files S4/S5), the forest's kappa, chosen setting and features, the non-cell filter's
cross-validation and removals, the chosen snapshot, accuracy against cells per protein (Figure
S2), the wrong protein calls, proteins with two compartments (nucleus + cytoplasm as the paper's
metric, the other pairs apart) and the cells nearest chosen points of the t-SNE map (Figure 3C).
What is not given is named as not done.

Inputs
  --predictions CSV       the network's test predictions (RUN/cells_test.csv)
  --archive ROOT          the folder the predictions' crop paths are relative to (galleries)
  --rf-predictions CSV    the forest's predictions of the same cells (RUN/rf/cells_test.csv)
  --forest-summary JSON   the forest's grid summary (RUN/rf/rf_grid.json)
  --quality JSON          the non-cell filter's result.json (RUN/quality/result.json)
  --proteins CSV          the network's proteins table (RUN/proteins/proteins.csv); --rf-proteins the forest's
  --mixed CSV             the proteins with two compartments, checked (RUN/proteins/proteins_mixed.csv)
  --tsne CSV              the interpretation's t-SNE table (RUN/interpret/tsne.csv)
  --solver, --chosen      the run's solver.prototxt and chosen .caffemodel (the chosen snapshot's iteration)

Outputs (in --out DIR): fig2c_misclassified.png, files_s4_s5_all_pairs.png,
figS2_protein_accuracy_by_cells.png, fig3c_tsne_neighbours.png (and PDFs), paper_results.json,
result.json (last).

Example:
  python analysis/paper_results.py --predictions RUN/cells_test.csv --archive RUN/data/main \\
      --rf-predictions RUN/rf/cells_test.csv --forest-summary RUN/rf/rf_grid.json --quality RUN/quality/result.json \\
      --proteins RUN/proteins/proteins.csv --rf-proteins RUN/rf_proteins/proteins.csv \\
      --mixed RUN/proteins/proteins_mixed.csv --tsne RUN/interpret/tsne.csv \\
      --solver RUN/train/solver.prototxt --chosen RUN/train/chosen.caffemodel --out RUN/paper
"""

import dataclasses

from deepyeast import launcher
from deepyeast.analysis.paper_results import PaperInputs, run_paper_results


def options(p):
    f = launcher.existing_file
    p.add_argument("--predictions", required=True, metavar="CSV", type=f, help="network predictions table (test)")
    launcher.add(p, "archive", required=True, help="root the predictions' crop paths are relative to")
    p.add_argument("--rf-predictions", metavar="CSV", type=f, help="random-forest predictions of the same cells")
    p.add_argument("--forest-summary", metavar="JSON", type=f, help="the forest's rf_grid.json")
    p.add_argument("--quality", metavar="JSON", type=f, help="the non-cell filter's result.json")
    p.add_argument("--proteins", metavar="CSV", type=f, help="the network's proteins table")
    p.add_argument("--rf-proteins", metavar="CSV", type=f, help="the forest's proteins table")
    p.add_argument("--mixed", metavar="CSV", type=f, help="proteins_mixed.csv of the protein-level step")
    p.add_argument("--tsne", metavar="CSV", type=f, help="tsne.csv of the interpretation step")
    p.add_argument("--solver", metavar="PROTOTXT", type=f, help="the run's solver.prototxt")
    p.add_argument("--chosen", metavar="CAFFEMODEL", type=f, help="the snapshot the run chose")
    p.add_argument("--snapshot-rule", default=None, help="how it was chosen (final, val_loss), for the report")
    launcher.add(p, "out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--no-figures", action="store_true", help="tables and JSON only")


def run(args):
    inputs = PaperInputs(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PaperInputs)})
    r = run_paper_results(args.out, inputs, command=args.command, make_figures=not args.no_figures)
    holds = r["details"]["claims_holding"]
    print("; ".join(f"{k}: {v}" for k, v in holds.items()))
