#!/usr/bin/env python3
"""Write the self-contained HTML report and metrics.json of a run folder.

Reads from --run DIR (each path can be overridden by the option of the same name):
  cells/cell_metrics.json      REQUIRED (analysis/evaluate_cells.py --out DIR/cells), with the
                               per_class.csv, confusion_rates.csv and fig2*.png beside it
  proteins.json                analysis/protein_level.py --out DIR/proteins.csv
  proteins_mixtures.csv        (same, with --mixtures; an extra: its absence does not make the
                               report incomplete)
  rf_proteins.json             analysis/protein_level.py on the random forest's table
  quality/quality_filter.json  quality filter: cell_accuracy_filtered, rf_cell_accuracy_filtered
  transfer/transfer.json       analysis/transfer.py --out DIR/transfer
  interpret/interpret.json     analysis/interpret.py --out DIR/interpret
  commands.txt                 the exact commands of the run, one a line (an extra)
Every *.png in DIR/{cells,proteins,rf,quality,transfer,interpret,figures}/ and DIR/ is embedded,
every other *.json there tabulated.

A missing optional input is named in a banner at the top of the report and in
metrics.json ("complete": false, "missing": [...]).  A missing required input, or any
malformed input, is an error (exit status 2) and neither file is written.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepyeast.utils.io import InputError  # noqa: E402
from deepyeast.analysis.cell_metrics import command_line  # noqa: E402
from deepyeast.report.html import REPORT_INPUTS, build_report  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, metavar="DIR", help="run folder holding the step outputs")
    parser.add_argument("--out", required=True, metavar="HTML", help="report to write")
    parser.add_argument("--metrics", required=True, metavar="JSON", help="metrics.json to write")
    parser.add_argument("--title", default="DeepYeast replication report", help="page title")
    for key, (rel, kind, _producer) in REPORT_INPUTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", dest=f"in_{key}", metavar="PATH",
                            help=f"override DIR/{rel} ({kind})")
    args = parser.parse_args(argv)
    overrides = {key: getattr(args, f"in_{key}") for key in REPORT_INPUTS}
    try:
        m = build_report(args.run, args.out, args.metrics, overrides,
                         command=command_line(sys.argv if argv is None else [sys.argv[0]] + list(argv)),
                         title=args.title)
    except InputError as err:
        parser.exit(2, f"error: {err}\n")
    state = "complete" if m["complete"] else f"INCOMPLETE, missing: {', '.join(x['input'] for x in m['missing'])}"
    print(f"wrote {args.out} and {args.metrics} ({state}; {len(m['figures'])} figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
