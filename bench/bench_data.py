#!/usr/bin/env python3
"""Time data preparation: synthetic screen generation and split list -> LMDB + mean.

Each stage runs in a child process so its peak memory (max RSS) is measured on
its own.  Sizes: --sizes small demo (default) shows how time and memory scale;
add `paper` (90,000 + 10,000 cells; several minutes) for the paper-size target
(generated and converted in <= 5 minutes).  Targets on 2 cores: generation
>= 500 cells/s, list -> LMDB >= 5,000 crops/s, memory flat in the number of cells.
Writes the "Data preparation" section of bench/RESULTS.md.

    python bench/bench_data.py --work /tmp/bench_data [--sizes small demo paper] [--workers 2]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CHILD = r"""
import json, resource, sys, time
stage, args = sys.argv[1], json.loads(sys.argv[2])
from deepyeast.data.make_synthetic import make_screen
from deepyeast.data.make_lmdb import build_lmdbs
from deepyeast.utils.run_context import RunContext
import cv2, lmdb, threading
peak_anon = [0.0]
def sample():  # peak anonymous memory (excludes LMDB/file pages mapped into the process)
    while True:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    peak_anon[0] = max(peak_anon[0], int(line.split()[1]) / 1024)
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
def cpu_now():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
cpu0 = cpu_now()
t0 = time.time()
if stage == "generate":
    s = make_screen(args["out"], args["size"], seed=0, jobs=args["workers"], progress=False)
    n = s["main"]["n_crops"] + s["transfer"]["n_crops"]
else:
    s = build_lmdbs(args["root"], args["out"], prefix=args["prefix"], context=RunContext(progress=False))
    n = s["n_records"]
dt = time.time() - t0
cpu = cpu_now() - cpu0
print(json.dumps({"n": n, "seconds": dt, "cpu_seconds": cpu, "peak_anon_mib": peak_anon[0], "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "children_max_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def run_stage(stage, args):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", _CHILD, stage, json.dumps(args)], cwd=repo, capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="scratch folder (emptied per size)")
    parser.add_argument("--sizes", nargs="+", default=["small", "demo"], choices=["tiny", "small", "demo", "paper"])
    parser.add_argument("--workers", type=int, default=2, help="generator processes (default: %(default)s)")
    parser.add_argument("--no-results", action="store_true", help="print only; do not update bench/RESULTS.md")
    args = parser.parse_args(argv)
    rows = []
    for size in args.sizes:
        work = os.path.join(args.work, size)
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        g = run_stage("generate", {"out": os.path.join(work, "screen"), "size": size, "workers": args.workers})
        m = run_stage("lmdb", {"root": os.path.join(work, "screen", "main"), "out": os.path.join(work, "lmdb"),
                               "prefix": "HOwt_"})
        t = run_stage("lmdb", {"root": os.path.join(work, "screen", "transfer"),
                               "out": os.path.join(work, "lmdb_transfer"), "prefix": "HOwt_transfer_"})
        row = dict(size=size, cells=g["n"], gen_s=g["seconds"], gen_rate=g["n"] / g["seconds"],
                   gen_cpu_rate=g["n"] / g["cpu_seconds"], lmdb_cpu_rate=(m["n"] + t["n"]) / (m["cpu_seconds"] + t["cpu_seconds"]),
                   gen_rss=max(g["max_rss_mib"], g["children_max_rss_mib"]), lmdb_n=m["n"] + t["n"],
                   lmdb_s=m["seconds"] + t["seconds"], lmdb_rate=(m["n"] + t["n"]) / (m["seconds"] + t["seconds"]),
                   lmdb_rss=max(m["max_rss_mib"], t["max_rss_mib"]),
                   lmdb_anon=max(m["peak_anon_mib"], t["peak_anon_mib"]), gen_anon=g["peak_anon_mib"])
        row["total_s"] = row["gen_s"] + row["lmdb_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"`python bench/bench_data.py --sizes {' '.join(args.sizes)} --workers {args.workers}`; "
        "targets: generation >= 500 cells/s, list -> LMDB >= 5,000 crops/s, paper size (100,000 crops incl. "
        "transfer) generated + converted <= 5 min, memory flat.",
        "",
        "| size | crops | generate (s) | cells/s | cells per CPU-second | gen. peak RSS of a worker (MiB) | gen. main process anon. "
        "(MiB) | list -> LMDB + mean (s) | crops/s | crops per CPU-second | LMDB step peak anon. memory (MiB) | LMDB step peak RSS incl. "
        "mapped DB pages (MiB) | total (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['size']} | {r['cells']:,} | {r['gen_s']:.1f} | {r['gen_rate']:.0f} | {r['gen_cpu_rate']:.0f} | {r['gen_rss']:.0f} | "
                     f"{r['gen_anon']:.0f} | {r['lmdb_s']:.1f} | {r['lmdb_rate']:.0f} | {r['lmdb_cpu_rate']:.0f} | "
                     f"{r['lmdb_anon']:.0f} | "
                     f"{r['lmdb_rss']:.0f} | {r['total_s']:.1f} |")
    load = os.getloadavg()[0]
    lines += ["", f"Load average at the end: {load:.1f}. Wall-clock rates depend on other jobs sharing the 2 cores; "
              "'per CPU-second' rates (crops / CPU time the step's processes used after their imports) do not: on an idle 2-core "
              "machine the wall-clock rate of the 2-process generator approaches twice its per-CPU-second rate, "
              "and the LMDB step (2 decoding threads) up to about that much more than its per-CPU-second rate."]
    if not args.no_results:
        from bench._results import update_section
        update_section("Data preparation", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
