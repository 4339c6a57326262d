#!/usr/bin/env python3
"""Which scheduler `make demo` should use: each Dask step with --scheduler none and local.

Runs the demo's own step scripts on a synthetic screen (--size, default demo) twice each,
in one process (``--scheduler none``) and on a Dask LocalCluster of --jobs worker processes
(``--scheduler local``), and compares wall time, CPU time (this process's waited-for
children: the step and its Dask workers) and the outputs (byte-identical or not):

* CellProfiler features of the validation cells and of a seeded sample of --train-cells
  training cells (analysis/cp_features.py; the demo samples 6,000);
* the random forest, small grid (analysis/random_forest.py; 2 forests);
* the paper's non-cell filter (analysis/quality_filter.py; 10-fold CV over 5 mtry x 2
  samplings = 100 forests of 100 trees).  This bench trains no network: the forest's
  validation table stands in for the network's.

Writes the "Scheduler of make demo" section of bench/RESULTS.md (--no-write: print only).

    python bench/bench_scheduler.py --work /tmp/bench_sched [--size small --train-cells 1000 --jobs 2]
"""

import argparse
import filecmp
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._results import update_section  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(args):
    """Run one step script; returns (wall s, CPU s of it and its waited-for descendants)."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, DASK_SCHEDULER=""))
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:1])} failed:\n{proc.stderr[-3000:]}")
    return wall, cpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="scratch folder")
    ap.add_argument("--size", default="demo", help="synthetic screen size (default demo: 1,000 validation cells)")
    ap.add_argument("--train-cells", type=int, default=6000, help="training cells sampled for the features "
                                                                   "(default 6000, as the demo)")
    ap.add_argument("--jobs", type=int, default=2, help="LocalCluster workers (default 2)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave bench/RESULTS.md alone")
    args = ap.parse_args(argv)
    from deepyeast.data.make_synthetic import make_screen

    screen = os.path.join(args.work, f"screen_{args.size}")
    if not os.path.exists(os.path.join(screen, "screen.json")):
        make_screen(screen, size=args.size, seed=0, progress=False)
    root = os.path.join(screen, "main")
    lists = [os.path.join(root, f"HOwt_{s}.txt") for s in ("train", "val", "test")]
    load0 = os.getloadavg()[0]
    rows = []

    def compare(name, make_args, outputs):
        """make_args(tag, out_dir) -> script args; outputs: files under out_dir compared byte for byte."""
        res = {}
        for tag, sched in (("none", ["--scheduler", "none"]), ("local", ["--scheduler", "local", "--jobs",
                                                                          str(args.jobs)])):
            out = os.path.join(args.work, f"{name}_{tag}")
            os.makedirs(out, exist_ok=True)
            res[tag] = (*_run(make_args(out) + sched), out)
        same = all(filecmp.cmp(os.path.join(res["none"][2], f), os.path.join(res["local"][2], f), shallow=False)
                   for f in outputs)
        rows.append((name, res["none"][:2], res["local"][:2], same))
        return res["none"][2]

    feats = {}
    for split, extra in (("val", []), ("train", ["--sample", str(args.train_cells)])):
        n = args.train_cells if split == "train" else sum(1 for _ in open(lists[1]))
        d = compare(f"features_{split}", lambda out, split=split, extra=extra: [
            "analysis/cp_features.py", "--archive", root, "--list", os.path.join(root, f"HOwt_{split}.txt"),
            "--out", os.path.join(out, "f.csv"), "--seed", "0", *extra], ["f.csv"])
        feats[split] = os.path.join(d, "f.csv")
        rows[-1] = (f"CellProfiler features, {n:,} {split} cells", *rows[-1][1:])
    feats["test"] = feats["val"]  # the forest and the filter need a test table; its size matters little here
    rf = compare("forest", lambda out: [
        "analysis/random_forest.py", "--train", feats["train"], "--val", feats["val"], "--test", feats["test"],
        "--labels-from", *lists, "--grid", "small", "--seed", "0", "--out", os.path.join(out, "cells_test.csv"),
        "--val-out", os.path.join(out, "cells_val.csv")], ["cells_test.csv", "cells_val.csv"])
    rows[-1] = ("random forest, small grid (2 forests of 150 trees)", *rows[-1][1:])
    compare("quality", lambda out: [
        "analysis/quality_filter.py", "--noncells", os.path.join(root, "noncells.txt"), "--val", feats["val"],
        "--net-val", os.path.join(rf, "cells_val.csv"), "--rf-val", os.path.join(rf, "cells_val.csv"),
        "--test", feats["test"], "--out", out, "--seed", "0"], ["quality_filter.json", "cells.csv"])
    rows[-1] = ("non-cell filter, 10-fold CV (100 forests of 100 trees) + refit", *rows[-1][1:])

    load1 = os.getloadavg()[0]
    md = [f"Synthetic screen `{args.size}`; each step script run with `--scheduler none` (one process) and "
          f"`--scheduler local --jobs {args.jobs}` (a Dask LocalCluster started by the step). CPU: the step "
          "and its Dask workers.", "",
          "| step | none: wall s | none: CPU s | local: wall s | local: CPU s | outputs identical |",
          "|---|---:|---:|---:|---:|---|"]
    md += [f"| {name} | {n[0]:.1f} | {n[1]:.1f} | {loc[0]:.1f} | {loc[1]:.1f} | {'yes' if same else 'NO'} |"
           for name, n, loc, same in rows]
    md += ["", f"Load average {load0:.1f} at the start, {load1:.1f} at the end ({os.cpu_count()} cores): wall "
           "times above an idle machine's are inflated by other jobs.  `make demo` uses the scripts' default "
           "(`local`); `SCHEDULER=none` runs every step in one process."]
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        update_section("Scheduler of make demo (bench/bench_scheduler.py)", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
