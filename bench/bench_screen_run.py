#!/usr/bin/env python3
"""A whole screen through classify_screen.py: speed, peak memory, disk, a LocalCluster, a resume.

A synthetic screen of --n micrographs: the saved fields of a tiny synthetic screen, each written
N/fields times turned by 0/90/180/270 degrees and flipped (distinct files, the generator's
cells). Measured, each in a fresh process (peak memory = /usr/bin/time's maximum resident set, which covers
the processes the command started and waited for: with a LocalCluster the largest of the client and its workers):

1. --scheduler none, the whole screen: micrographs/s, cells/s, peak memory, the work folder's
   largest size on disk (sampled) and the output's size;
2. --scheduler local --jobs 2 (a LocalCluster of 2 workers; peak memory of the largest process);
3. a run killed (SIGKILL) when about half of the chunks are written, then the same command:
   the second run's time against the uninterrupted run's (time saved), its reused_micrographs;
4. peak memory at --small micrographs against --n (memory flat in the number of micrographs).

Written to bench/RESULTS.md ("A whole screen").

With --speed, only the speed of the default scheduler (a LocalCluster) instead, written to "A whole
screen: speed and workers": --rounds rounds, each figure its best round, of

* bf16 with --jobs 1 and --jobs 2 (linear in the workers?), fp32 with --jobs 2;
* with --against REF, bf16 --jobs 2 of the tree of git commit REF (the baseline, same rounds);

each run's wall time, the chunks' phase (summary.json ``run.seconds``), cells per second, and where
the tasks' time went (``run.task_seconds``), against the goal of a million cells an hour (280/s);
and the ceiling of this CPU for that goal: the bf16 GEMM limit measured on 2 threads before the
rounds (bench/_peak.py) over the model's forward GFLOP per cell -- the cells/s of a network that did
nothing but its products at that rate, an upper bound for the whole screen in bf16.

  python bench/bench_screen_run.py --model runs/oodemo/model --n 240 --small 60
  python bench/bench_screen_run.py --model runs/demo/model --speed --n 1000 --against cb787e7
"""

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _peak  # noqa: E402
from _results import commit, export_ref, update_section  # noqa: E402
from deepyeast.analysis.screen_run import STEPS  # noqa: E402


def make_screen(folder, n, seed=11):
    """``folder/images.csv`` naming ``n`` distinct micrographs (8 orientations of the saved fields)."""
    import tifffile

    from deepyeast.data.make_synthetic import make_screen as generate

    generate(os.path.join(folder, "gen"), "tiny", seed=seed, jobs=1, save_fields=12, progress=False)
    src = os.path.join(folder, "gen", "main", "fields")
    with open(os.path.join(src, "images.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    fields = [tifffile.imread(os.path.join(src, r["image"])) for r in rows]
    lines = ["image,plate,protein"]
    for i in range(n):
        k, f = divmod(i, len(fields))
        image = np.rot90(fields[f], k=k % 4, axes=(1, 2))
        if (k // 4) % 2:
            image = image[:, :, ::-1]
        if k >= 8:  # beyond 8 orientations: shift the field so files stay distinct
            image = np.roll(image, 7 * (k // 8), axis=2)
        name = f"m{i:05d}.tif"
        tifffile.imwrite(os.path.join(folder, name), np.ascontiguousarray(image))
        lines.append(f"{name},{1 + i // 400},{i // 4:05d}000")
    with open(os.path.join(folder, "images.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return os.path.join(folder, "images.csv")


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


LOADS = []
"""(run, 1-minute load average at its start, at its end): the machine's other work, written beside the figures."""


def run(cmd, out, kill_at=None, name="", tree=REPO):
    """Run ``cmd`` under /usr/bin/time with the package of ``tree`` (default this checkout) on the path;
    returns (seconds, peak RSS MiB, largest work folder MiB, killed)."""
    load0 = os.getloadavg()[0]
    work = out + ".work"
    peak_disk = [0]
    stop = threading.Event()

    def watch():
        while not stop.wait(0.5):
            peak_disk[0] = max(peak_disk[0], du(work))

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    rss_file = out + ".rss"
    t0 = time.time()
    proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=tree, DEEPYEAST_PROGRESS="off"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    killed = False
    if kill_at is not None:
        while proc.poll() is None:
            done = len([n for n in os.listdir(work) if n.startswith("chunk-")]) if os.path.isdir(work) else 0
            if done >= kill_at:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.2)
    _, err = proc.communicate()
    seconds = time.time() - t0
    stop.set()
    t.join()
    LOADS.append((name, load0, os.getloadavg()[0]))
    if not killed and proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    try:
        rss = int(open(rss_file).read().split()[-1]) / 1024
    except (OSError, ValueError, IndexError):
        rss = float("nan")
    return seconds, rss, peak_disk[0] / 2**20, killed


GOAL_CELLS_PER_S = 280
"""Issue 24: a million cells an hour on one 2-core machine, micrograph to call."""


def speed(args, tmp, table, cmd):
    """The --speed part: rows of (label, wall s, chunks s or None, cells, task seconds or None), markdown."""
    settings = [("this tree", "bf16", 1), ("this tree", "bf16", 2), ("this tree", "fp32", 2)]
    limit = _peak.measured_limit("bf16", threads=2)
    per_cell = _peak.net_arithmetic(os.path.join(args.model, "deploy.prototxt"))[0] / 1e9
    print("bf16 limit on 2 threads", limit, "GFLOP per cell", per_cell, flush=True)
    ref = export_ref(args.against, os.path.join(tmp, "ref")) if args.against else None
    if ref:
        settings.append((f"{ref[1][:7]} ({ref[2]})", "bf16", 2))
    best = {}
    for r in range(args.rounds):
        order = settings if r % 2 == 0 else settings[::-1]  # every other round the other way round
        for key in order:
            tree, precision, jobs = key
            root = ref[0] if ref and tree != "this tree" else REPO
            out = os.path.join(tmp, f"speed-{precision}-{jobs}-{len(best)}-{r}")
            seconds, _, _, _ = run(cmd(table, out, "--scheduler", "local", "--jobs", str(jobs), "--precision",
                                       precision, script=os.path.join(root, "analysis", "classify_screen.py")),
                                   out, name=f"{precision} --jobs {jobs}" + ("" if root == REPO else " ref"),
                                   tree=root)
            s = json.load(open(os.path.join(out, "summary.json")))
            record = (seconds, s["run"].get("seconds"), s["n_cells"], s["run"].get("task_seconds"))
            print(key, record, flush=True)
            if key not in best or seconds < best[key][0]:
                best[key] = record
            shutil.rmtree(out)
    return settings, best, (limit, per_cell)


def ceiling_line(rate, limit, per_cell):
    """The goal against this CPU's ceiling in bf16: ``rate`` (cells/s end to end), ``limit``
    ((GFLOP/s, source) of bf16 on 2 threads), ``per_cell`` (forward GFLOP per cell)."""
    top = _peak.ceiling(limit[0], per_cell)
    where = _peak.reach(GOAL_CELLS_PER_S, top)
    return (f"This CPU's ceiling in bf16: {limit[0]:.0f} GFLOP/s measured on 2 threads ({limit[1]}) over "
            f"{per_cell:.3f} GFLOP per cell = {top:.0f} cells/s for the network alone, nothing else done: the goal "
            f"is {where} this CPU's reach in bf16; this tree reaches {100 * rate / top:.0f}% of that ceiling end to end.")


def speed_markdown(args, settings, best, ceiling=None):
    lines = [f"`python bench/bench_screen_run.py --model {args.model} --speed --n {args.n} --rounds {args.rounds}"
             + (f" --against {args.against}`" if args.against else "`")
             + f": the same synthetic screen ({args.n} micrographs of 256 x 256 px, chunks of {args.chunk}) through "
             "`classify_screen.py --scheduler local` (a Dask LocalCluster, the default; one torch thread per "
             "worker); each figure is its best round, the runs of a round in alternating order.",
             "",
             "| tree | precision | workers | wall s | cells/s (wall) | chunks' phase s | cells/s (chunks) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for key in settings:
        wall, chunks, n, _ = best[key]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {wall:.1f} | {n / wall:.0f} | "
                     + (f"{chunks:.1f} | {n / chunks:.0f} |" if chunks else "not recorded | |"))
    n = best[settings[0]][2]
    lines += ["", f"{n:,} cells. Where the tasks' time went (summary.json `run.task_seconds`, summed over the "
              "workers; ms per cell):", "",
              "| tree | precision | workers | " + " | ".join(k.replace("_", " ") for k in STEPS) + " |",
              "|---|---|---:|" + "---:|" * len(STEPS)]
    for key in settings:
        steps = best[key][3]
        if steps:
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | "
                         + " | ".join(f"{1000 * steps[k] / n:.2f}" for k in STEPS) + " |")
    one, two = best[settings[0]], best[settings[1]]
    lines += ["", f"Two workers against one (bf16, chunks' phase): {one[1] / two[1]:.2f}x "
              f"(wall {one[0] / two[0]:.2f}x); the network's time per cell in a task: "
              f"{1000 * one[3]['network'] / n:.2f} ms alone, {1000 * two[3]['network'] / n:.2f} ms with two "
              "workers busy (the machine's cores share caches and memory bandwidth)."]
    rate = n / two[1]
    lines.append(f"Goal (issue 24): >= {GOAL_CELLS_PER_S} cells/s micrograph to call on one 2-core machine: "
                 f"bf16 on 2 workers {rate:.0f} cells/s in the chunks' phase, {n / two[0]:.0f} end to end: "
                 + ("met." if n / two[0] >= GOAL_CELLS_PER_S else "NOT met."))
    if ceiling:
        lines.append(ceiling_line(n / two[0], *ceiling))
    if args.against:
        ref = best[settings[-1]]
        lines.append(f"Against {settings[-1][0]} (bf16, 2 workers): its wall time over this tree's "
                     f"{ref[0] / two[0]:.2f} (above 1: this tree is faster).")
    lines += ["", f"Commit {commit()}. Load average (1 minute) at the start / end of each run, 2 cores: "
              + ", ".join(f"{n_} {a:.1f} / {b:.1f}" for n_, a, b in LOADS)
              + " (a run's own processes count in it: about 1 with one worker, 2-3 with two; more means other "
              "work shared the machine)."]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--n", type=int, default=5000, help="micrographs of the screen")
    p.add_argument("--small", type=int, default=500, help="micrographs of the small screen (memory)")
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--speed", action="store_true", help="only the speed part (see the module doc)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of the speed part (default 2)")
    p.add_argument("--against", metavar="REF", help="with --speed: also time the tree of git commit REF")
    args = p.parse_args()
    script = os.path.join(REPO, "analysis", "classify_screen.py")
    with tempfile.TemporaryDirectory(prefix="bench-screen-") as tmp:
        table = make_screen(os.path.join(tmp, "screen"), args.n)
        small = os.path.join(tmp, "small.csv")
        with open(table) as f, open(small, "w") as g:
            g.write("".join(f.readlines()[:args.small + 1]))
        shutil.copy(small, os.path.join(tmp, "screen", "small.csv"))
        small = os.path.join(tmp, "screen", "small.csv")

        def cmd(images, out, *extra, script=script):
            return [sys.executable, script, "--model", os.path.abspath(args.model), "--images", images, "--out", out,
                    "--chunk", str(args.chunk), "--resamples", "100", *extra]

        if args.speed:
            text = speed_markdown(args, *speed(args, tmp, table, cmd))
            print(text)
            if not args.no_write:
                update_section("A whole screen: speed and workers", text)
            return

        res = {}
        out = os.path.join(tmp, "none")
        res["none"] = run(cmd(table, out, "--scheduler", "none"), out, name="none")
        s = json.load(open(os.path.join(out, "summary.json")))
        n_cells, out_mb = s["n_cells"], du(out) / 2**20
        print("none", res["none"], n_cells, flush=True)
        out = os.path.join(tmp, "local")
        res["local"] = run(cmd(table, out, "--scheduler", "local", "--jobs", "2"), out, name="local")
        print("local", res["local"], flush=True)
        out = os.path.join(tmp, "resume")
        n_chunks = -(-args.n // args.chunk)
        res["killed"] = run(cmd(table, out, "--scheduler", "none"), out, kill_at=n_chunks // 2, name="killed")
        res["resumed"] = run(cmd(table, out, "--scheduler", "none"), out, name="resumed")
        reused = json.load(open(os.path.join(out, "summary.json")))["reused_micrographs"]
        print("resume", res["killed"], res["resumed"], reused, flush=True)
        out = os.path.join(tmp, "small")
        res["small"] = run(cmd(small, out, "--scheduler", "none"), out, name="small")
        print("small", res["small"], flush=True)
    t, rss, disk, _ = res["none"]
    lines = [
        f"`python bench/bench_screen_run.py --model {args.model} --n {args.n} --small {args.small}` "
        f"(chunks of {args.chunk} micrographs, 256 x 256 px fields of the synthetic generator, {n_cells:,} cells; "
        "each run a fresh process, peak memory = /usr/bin/time's maximum resident set: the largest of the "
        "process and those it started and waited for, with a LocalCluster the client or a worker).",
        "",
        "| run | micrographs | wall s | micrographs/s | cells/s | peak memory MiB | work folder MiB (max) |",
        "|---|---|---|---|---|---|---|",
        f"| --scheduler none | {args.n} | {t:.0f} | {args.n / t:.2f} | {n_cells / t:.0f} | {rss:.0f} | {disk:.0f} |",
        f"| --scheduler local --jobs 2 (the largest process) | {args.n} | {res['local'][0]:.0f} | "
        f"{args.n / res['local'][0]:.2f} | {n_cells / res['local'][0]:.0f} | {res['local'][1]:.0f} | "
        f"{res['local'][2]:.0f} |",
        f"| killed at about half, then the same command | {args.n} | {res['killed'][0]:.0f} + "
        f"{res['resumed'][0]:.0f} | | | {res['resumed'][1]:.0f} | |",
        f"| --scheduler none, small screen | {args.small} | {res['small'][0]:.0f} | "
        f"{args.small / res['small'][0]:.2f} | | {res['small'][1]:.0f} | {res['small'][2]:.0f} |",
        "",
        f"The resumed run took over {reused} of {args.n} micrographs and took {res['resumed'][0]:.0f} s against "
        f"{t:.0f} s uninterrupted ({100 * (1 - res['resumed'][0] / t):.0f}% saved). Output folder "
        f"{out_mb:.0f} MiB. Peak memory {res['small'][1]:.0f} MiB at {args.small} micrographs, {rss:.0f} MiB at "
        f"{args.n}.",
        "",
        f"Commit {commit()}, model bundle `{args.model}`. Load average (1 minute) at the start / end of each run, "
        "2 cores: " + ", ".join(f"{n} {a:.1f} / {b:.1f}" for n, a, b in LOADS)
        + " (above about 2, other work shared the machine and the times are pessimistic; memory is not affected).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        update_section("A whole screen", text)


if __name__ == "__main__":
    main()
