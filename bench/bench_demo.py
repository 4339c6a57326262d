#!/usr/bin/env python3
"""`make demo` timed, stage by stage, after installation: issue 24's goal of at most 12 minutes.

    python bench/bench_demo.py [--against REF] [--workdir DIR] [--keep] [--no-write]

Runs ``make deps`` first and does not time it (the goal is the demo "after installation"; with
everything installed it is a no-op), then ``make demo DEMO_RUN=<a fresh folder>``: the whole demo
from an empty run folder (runs/demo, if there is one, is not touched), as a user runs it.  Each
stage is timed from make's ``==> [HH:MM:SS] stage`` lines as they arrive (a stage lasts until the
next one starts; the last until make exits), and the CPU time of make and every process it waited for
is read from the kernel (``getrusage(RUSAGE_CHILDREN)``), so "cores busy on average" says how much of
the machine the demo used.  The 1-minute load average is sampled every 10 s: above the demo's own
processes it means other work shared the machine and the times are pessimistic.

With ``--against REF`` the demo of git commit REF (its whole tree exported with ``git archive``,
run on this checkout's environment: ``VENV``, ``PIP_INSTALL=none``, ``SKIP_SYSTEM=1``; so REF must
have this tree's ``[project.scripts]``, checked first) runs right after, on the same machine, so
"no worse than before" is one run's comparison; the two runs' headline metrics are set side by side
(the demo is seeded, so the same code gives the same numbers).

Writes the "make demo, timed" section of bench/RESULTS.md (unless --no-write).  Each run takes
about as long as the demo (20-23 minutes on the 2-core AMD EPYC, 19 on the Intel Xeon, 2026-12-06); the run
folders are removed afterwards unless --keep.
"""

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _peak  # noqa: E402
from _results import commit, export_ref, update_section  # noqa: E402

GOAL_MINUTES = 12
"""Issue 24: `make demo` in at most 12 minutes after installation (set on the 2-core Intel Xeon with AMX)."""

STAGE = re.compile(r"^==> \[\d\d:\d\d:\d\d\] (.+?)\s*$")
"""A stage line of the pipeline (mk/pipeline.mk's ``step``): ``==> [HH:MM:SS] name``."""

METRICS = (("network, per cell", "cell_accuracy"), ("forest, per cell", "rf_cell_accuracy"),
           ("network, per protein", "protein_accuracy"), ("forest, per protein", "rf_protein_accuracy"))
"""The demo's headline figures (metrics.json keys) written beside its time."""


def stages(records, end, end_busy=None):
    """Stage durations from make's output.

    ``records``: ``(t, line, busy)`` in order: ``t`` the seconds (a monotonic clock) when the line
    arrived, ``busy`` the machine's busy CPU seconds then (:func:`busy_cpu_seconds`, or None);
    ``end`` / ``end_busy``: the same when make exited.  Each ``==> [HH:MM:SS] name`` line starts a
    stage that ends where the next one starts, the last one at the end.  Returns
    ``[(name, seconds, cores busy)]`` in the order run (a name run twice is listed twice; cores busy
    is the busy CPU time over the stage's wall time, None without ``busy``).  Time before the first
    stage (make checking its prerequisites) is not in any stage.
    """
    starts = [(t, busy, m.group(1)) for t, line, busy in records for m in [STAGE.match(line)] if m]
    out = []
    for i, (t, busy, name) in enumerate(starts):
        t_next, busy_next = (starts[i + 1][0], starts[i + 1][1]) if i + 1 < len(starts) else (end, end_busy)
        wall = max(0.0, t_next - t)
        cores = (busy_next - busy) / wall if busy is not None and busy_next is not None and wall > 0 else None
        out.append((name, wall, cores))
    return out


def busy_cpu_seconds():
    """CPU seconds this machine's cores have spent busy since boot, all processes (/proc/stat: user, nice,
    system, irq, softirq, steal); None where /proc/stat cannot be read."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields[i] for i in (0, 1, 2, 5, 6, 7) if i < len(fields))
    return busy / os.sysconf("SC_CLK_TCK")


def headline(metrics):
    """``{label: "0.750 (750/1000)"}`` for the :data:`METRICS` a run's metrics.json holds."""
    out = {}
    for label, key in METRICS:
        m = metrics.get(key)
        if isinstance(m, dict) and m.get("value") is not None:
            count = f" ({m['correct']}/{m['total']})" if "correct" in m and "total" in m else ""
            out[label] = f"{m['value']:.3f}{count}"
    return out


def reinstall(repo, venv):
    """Install the checkout ``repo`` into the environment ``venv`` again (editable, no dependencies: what
    ``make deps`` ends with, scripts/install_python_deps.sh with ``PIP_INSTALL=none``).  A reference tree's
    ``make deps`` points the environment's ``deepyeast`` at that tree (so that its demo runs its own code),
    and the tree is removed after the bench: without this the environment would import nothing."""
    subprocess.run(["sh", os.path.join(repo, "scripts", "install_python_deps.sh"), os.path.join(venv, "bin", "python")],
                   env=dict(os.environ, PIP_INSTALL="none"), check=True, stdout=subprocess.DEVNULL)


def training_gflop(run_dir):
    """GFLOP of the demo's training iterations: ``max_iter`` of RUN/train/solver.prototxt times one
    iteration of its net (:func:`_peak.net_arithmetic`); None when the run has no solver.  Validation
    passes are not counted."""
    from deepyeast.caffe import caffe_pb2
    from deepyeast.caffe.prototxt import read_prototxt

    path = os.path.join(run_dir, "train", "solver.prototxt")
    if not os.path.exists(path):
        return None
    solver = read_prototxt(path, caffe_pb2.SolverParameter)
    return int(solver.max_iter), _peak.net_arithmetic(solver.net, phase="TRAIN")[1] / 1e9


def run_demo(tree, run_dir, log_path, extra=()):
    """``make demo DEMO_RUN=run_dir`` in ``tree``: a dict of the wall and CPU seconds, the stages, the load
    averages (start, end, highest sampled) and the run's headline metrics.  Exits with make's output on failure."""
    env = dict(os.environ, DEEPYEAST_PROGRESS="off")
    env.pop("MAKEFLAGS", None)
    subprocess.run(["make", "--no-print-directory", "deps", *extra], cwd=tree, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    loads = [os.getloadavg()[0]]
    stop = threading.Event()

    def sample():
        while not stop.wait(10):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    records = []
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["make", "--no-print-directory", "demo", f"DEMO_RUN={run_dir}", *extra], cwd=tree,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            records.append((time.monotonic() - t0, line, busy_cpu_seconds() if STAGE.match(line) else None))
            log.write(line)
            if STAGE.match(line):
                print(line.rstrip(), flush=True)
        proc.wait()
    wall = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    stop.set()
    sampler.join()
    end_load = os.getloadavg()[0]
    if proc.returncode != 0:
        tail = "".join(rec[1] for rec in records[-40:])
        raise SystemExit(f"make demo in {tree} failed (exit {proc.returncode}); the end of {log_path}:\n{tail}")
    metrics_path = os.path.join(run_dir, "metrics.json")
    metrics = json.load(open(metrics_path)) if os.path.exists(metrics_path) else {}
    return dict(wall=wall, cpu=(cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
                stages=stages(records, wall, busy_cpu_seconds()), loads=(loads[0], end_load, max(loads + [end_load])),
                metrics=headline(metrics), training=training_gflop(run_dir))


def _minutes(seconds):
    s = int(round(seconds))
    return f"{s // 60} min {s % 60:02d} s"


def ceiling_line(run, limit):
    """The 12-minute goal against this CPU's ceiling: the run's training iterations at 100% of the
    measured bf16 limit (``limit``: (GFLOP/s, source)) plus its other stages as measured."""
    iterations, per_iteration = run["training"]
    least = iterations * per_iteration / limit[0]
    train = sum(s for n, s, _ in run["stages"] if n.startswith("training"))
    rest = run["wall"] - train
    goal = GOAL_MINUTES * 60
    where = _peak.reach(goal, least + rest, higher_is_better=False)
    return (f"This CPU's ceiling for the goal: {iterations:,} training iterations of {per_iteration:.1f} GFLOP at its "
            f"measured bf16 limit ({limit[0]:.0f} GFLOP/s, {limit[1]}) take at least {_minutes(least)} (the run's "
            f"training took {_minutes(train)}, {100 * least / train:.0f}% of it at that rate); with the other stages "
            f"as measured ({_minutes(rest)}) the demo is {where} this CPU's reach"
            + (f" (they would have to fall under {_minutes(max(goal - least, 0))})." if where == "beyond" else "."))


def demo_markdown(runs, cores, command, limit=None):
    """The section's text.  ``runs``: ``[(label, run_demo's dict)]``, this tree first."""
    labels = [label for label, _ in runs]
    names = []
    for _, r in runs:
        for name, _, _ in r["stages"]:
            if name not in names:
                names.append(name)
    lines = [f"`{command}`: `make demo` after `make deps` (installation, not timed), from an empty run folder; "
             "each stage from make's `==>` lines as they arrived; cores busy = the machine's busy CPU time "
             "(/proc/stat, all processes) over the stage's wall time.", "",
             "| stage | " + " | ".join(f"{label} s | cores busy" for label in labels) + " |",
             "|---|" + "---:|---:|" * len(labels)]
    for name in names:
        cells = []
        for _, r in runs:
            mine = [(s, c) for n, s, c in r["stages"] if n == name]
            secs = sum(s for s, _ in mine)
            busy = [c * s for s, c in mine if c is not None]
            cells.append(f"{secs:.0f}" if mine else "")
            cells.append(f"{sum(busy) / secs:.2f}" if mine and len(busy) == len(mine) and secs > 0 else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **whole demo (wall)** | " + " | ".join(f"**{r['wall']:.0f}** | {r['cpu'] / r['wall']:.2f}"
                                                      for _, r in runs) + " |")
    lines.append("| CPU s of make and the processes it waited for | "
                 + " | ".join(f"{r['cpu']:.0f} | " for _, r in runs) + " |")
    lines.append("")
    label, r = runs[0]
    met = "met" if r["wall"] <= GOAL_MINUTES * 60 else "NOT met"
    train = sum(s for n, s, _ in r["stages"] if n.startswith("training"))
    lines.append(f"{label}: the demo took {_minutes(r['wall'])} (goal <= {GOAL_MINUTES} min after installation, "
                 f"issue 24: {met}); training {_minutes(train)} of it ({100 * train / r['wall']:.0f}%); "
                 f"{r['cpu'] / r['wall']:.2f} of {cores} cores busy on average.")
    if limit and r.get("training"):
        lines.append(ceiling_line(r, limit))
    for other, o in runs[1:]:
        lines.append(f"Against {other}: its wall time over this tree's {o['wall'] / r['wall']:.2f} "
                     "(above 1: this tree is faster).")
    if any(x["metrics"] for _, x in runs):
        lines += ["", "| the demo's result | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for metric, _ in METRICS:
            lines.append(f"| {metric} | " + " | ".join(x["metrics"].get(metric, "") for _, x in runs) + " |")
    lines.append("")
    lines.append("1-minute load average at the start / end / highest sampled (every 10 s), "
                 f"{cores} cores: " + ", ".join(f"{lab} {a:.1f} / {b:.1f} / {c:.1f}" for lab, (a, b, c) in
                                                [(lab, x['loads']) for lab, x in runs])
                 + f" (the demo's own processes keep it near {cores}; more means other work shared the machine).")
    return "\n".join(lines) + "\n"


def console_scripts(tree):
    """The ``[project.scripts]`` table of ``tree``'s pyproject.toml (what the environment's launchers run)."""
    import tomllib
    with open(os.path.join(tree, "pyproject.toml"), "rb") as f:
        return tomllib.load(f).get("project", {}).get("scripts", {})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--against", metavar="REF", help="also time the demo of git commit REF, right after")
    p.add_argument("--workdir", default=tempfile.gettempdir(), help="where the run folders go (a fresh "
                   "bench-demo-* folder in it; default the system's temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the run folders")
    p.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = p.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-demo-", dir=args.workdir)
    failed = None
    command = "python bench/bench_demo.py" + (f" --against {args.against}" if args.against else "")
    keep = args.keep
    runs, started = [], False
    try:
        if args.against:  # checked before the hour of runs
            tree, sha, date = export_ref(args.against, work, parts=())
            short = sha[:7]
            if console_scripts(tree) != console_scripts(REPO):
                raise SystemExit(f"--against {args.against}: its commands ({console_scripts(tree)}) are not this "
                                 f"environment's ({console_scripts(REPO)}), whose launchers its make would run; "
                                 "compare with a commit that has this tree's [project.scripts]")
        started = True
        limit = _peak.measured_limit("bf16", threads=os.cpu_count())  # on the idle machine, before the demo
        print(f"bf16 limit on {os.cpu_count()} threads: {limit[0]:.0f} GFLOP/s ({limit[1]})", flush=True)
        runs = [(f"this tree ({commit()})", run_demo(REPO, os.path.join(work, "demo"), os.path.join(work, "demo.log")))]
        print(demo_markdown(runs, os.cpu_count(), command, limit), flush=True)  # in the log, whatever comes next
        if args.against:
            venv = os.path.join(REPO, ".venv")
            try:
                runs.append((f"{short} ({date})", run_demo(tree, os.path.join(tree, "runs", "demo"),
                                                           os.path.join(work, "ref.log"),
                                                           (f"VENV={venv}", "PIP_INSTALL=none", "SKIP_SYSTEM=1"))))
            except (SystemExit, subprocess.CalledProcessError) as e:  # this tree's figures stand without it
                print(e, file=sys.stderr)
                keep = True
                failed = f"The demo of {short} ({date}) did not finish here, so it is not compared: " \
                         f"{str(e).splitlines()[0]}"
            finally:
                reinstall(REPO, venv)
    except BaseException:
        keep = keep or started  # the logs of what failed (none before a run)
        raise
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"run folders and logs kept in {work}", file=sys.stderr)
    text = demo_markdown(runs, os.cpu_count(), command, limit) + (f"\n{failed}\n" if failed else "")
    print(text)
    if not args.no_write:
        update_section("make demo, timed (bench/bench_demo.py)", text)


if __name__ == "__main__":
    main()
