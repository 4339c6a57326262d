"""Write the self-contained HTML report and metrics.json of a run folder.

Every analysis of the run leaves a result manifest (``<folder>/result.json``: its metrics,
figures with captions, short tables, what it could not do); the report finds them all under
--run and shows one section per result, after the headline numbers beside the paper's.
Other PNGs in the run folder and its figures/ are shown too; commands.txt (the pipeline's log
of the commands it ran) is listed under Reproducibility.

A missing paper result (cells, quality, proteins, rf_proteins, transfer, interpret) is named
in a banner and in metrics.json ("complete": false, "missing": [...]).  A missing cells
result, or any malformed manifest, is an error (exit status 2) and nothing is written.

Outputs (in --out DIR, default the run folder)
  report.html     the report, figures embedded (open it in a browser)
  metrics.json    every number of every result (see deepyeast/report/metrics_json.py)

Example:
  python analysis/make_report.py --run runs/demo
"""

import os

from deepyeast import launcher

REPORT_FILE = "report.html"
METRICS_FILE = "metrics.json"


def options(p):
    p.add_argument("--run", required=True, metavar="DIR", help="run folder holding the step outputs")
    launcher.add(p, "out", metavar="DIR", help="folder for report.html and metrics.json (default: --run)")
    p.add_argument("--title", default="DeepYeast replication report", help="page title")


def run(args):
    from deepyeast.report.make_report import build_report

    out = args.out or args.run
    html_path, metrics_path = os.path.join(out, REPORT_FILE), os.path.join(out, METRICS_FILE)
    m = build_report(args.run, html_path, metrics_path, command=args.command, title=args.title)
    state = "complete" if m["complete"] else f"INCOMPLETE, missing: {', '.join(x['input'] for x in m['missing'])}"
    print(f"wrote {html_path} and {metrics_path} ({state}; {len(m['figures'])} figures)")


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
