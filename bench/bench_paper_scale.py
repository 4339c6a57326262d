"""Every step of `make reproduce` at the synthetic `paper` size: wall time, peak memory, disk.

The synthetic screen (``--size``, default ``paper``: 65,000/12,500/12,500 + 4,000/2,000/4,000
crops) is laid out as the published archive (split lists at the top, images under ``main/``
and ``transfer/``) and run through the pipeline of ``make reproduce`` (the same make
variables: the paper's solver with ``--schedule`` replacing only its schedule, the snapshot of
lowest validation loss, our engine), one make target at a time, each step measured:

* wall seconds;
* peak RSS of the step's largest process (``wait4``'s ``ru_maxrss``, which covers every
  process of the step) and the peak of the sum over all of the step's processes (sampled
  from ``/proc`` every 0.5 s: parallel workers count together);
* the run folder's size after the step (``du``: what the step left on disk).

The forest runs the small grid (``GRID=small``; the paper grid is issue 15 item 2) and
training a short schedule.  ``--cache DIR`` reuses a screen (``DIR/screen``) and its
CellProfiler features (``DIR/cellprofiler/{train,val,test,transfer_*}.csv``, computed from that
screen), given to the pipeline as external tables (``CP_FEATURES``: the step then only takes the
listed cells' rows).  What the published archive lacks is supplied as a user would: the screen's
``main/noncells.txt`` as ``NONCELLS`` and ``main/mixed_proteins.csv`` as ``MIXED`` where it has them.

Then the flatness check: ``analysis/predict.py`` (streamed crops, streamed pooled features and
top activations) on ``--flat-cells`` cells (default 10,000 and 100,000: the main and transfer
crops of the screen, cycled no further than there are) with a small net of the DeepYeast input
shape (one convolution, pooling, one inner product; the per-cell data handling is the same as
DeepYeast's, the forward pass 200x cheaper), its peak RSS per cell count.

Writes the table to bench/RESULTS.md (section "Paper scale") unless ``--no-results``.

  python bench/bench_paper_scale.py --size small --work /tmp/ps     # a few minutes
  python bench/bench_paper_scale.py --cache CACHE --work WORK       # the paper size, about an hour
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _results import update_section  # noqa: E402

PY = os.path.join(REPO, ".venv", "bin", "python")
SPLITS = ("train", "val", "test")
SMALL_SCHEDULES = {
    "paper": "max_iter=40 stepsize=20 test_interval=20 test_iter=25 snapshot=20 display=10 average_loss=10",
    "demo": "max_iter=40 stepsize=20 test_interval=20 test_iter=30 snapshot=20 display=10 average_loss=10",
    "small": "max_iter=20 stepsize=10 test_interval=10 test_iter=4 snapshot=10 display=5 average_loss=5",
    "tiny": "max_iter=6 stepsize=3 test_interval=3 test_iter=1 snapshot=3 display=1 average_loss=1",
}
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- measuring one command
def _children_of():
    """pid -> parent pid of every process (from /proc)."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return parents


def _tree_rss(root):
    """Resident bytes summed over ``root`` and its descendants."""
    parents = _children_of()
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        for c, pp in parents.items():
            if pp == p and c not in tree:
                tree.add(c)
                frontier.append(c)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            pass
    return total


def measure(cmd, log, cwd=REPO, env=None):
    """Run ``cmd`` (list), output appended to ``log``: dict wall_s, peak_rss_mib (largest process),
    peak_sum_mib (sampled sum over the processes), rc."""
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = [0]
        done = threading.Event()

        def sample():
            while not done.wait(0.5):
                peak[0] = max(peak[0], _tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return dict(wall_s=time.time() - t0, peak_rss_mib=usage.ru_maxrss / 1024, peak_sum_mib=peak[0] / 2**20,
                rc=proc.returncode)


def du_bytes(path):
    """Bytes on disk under ``path`` (allocated blocks, each inode once)."""
    seen, total = set(), 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


# ---------------------------------------------------------------- the screen and the archive
def published_archive(screen, archive):
    """``archive``: a synthetic screen root holding exactly what the published archive holds (as
    tests/test_pipeline.py's ``published_shape_archive``): the eight list and class-table files at
    the top, the listed PNGs under main/ and transfer/, nothing else; hard-linked where the file
    system allows (else copied)."""
    if os.path.exists(os.path.join(archive, "HOwt_train.txt")):
        return archive
    tmp = archive + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for part, prefix in (("main", "HOwt_"), ("transfer", "HOwt_transfer_")):
        for name in ("doc",) + SPLITS:
            shutil.copy(os.path.join(screen, part, f"{prefix}{name}.txt"), os.path.join(tmp, f"{prefix}{name}.txt"))
        for s in SPLITS:
            with open(os.path.join(screen, part, f"{prefix}{s}.txt")) as f:
                for line in f:
                    if not line.strip():
                        continue
                    rel = line.split()[0]
                    src, dst = os.path.join(screen, part, rel), os.path.join(tmp, part, rel)
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    try:
                        os.link(src, dst)
                    except OSError:
                        shutil.copy(src, dst)
    os.replace(tmp, archive)
    return archive


def pipeline_steps(run, external_cp, noncells, mixed):
    """(label, make target) of `make reproduce` in order (mk/pipeline.mk)."""
    steps = [("archive copy + split check", f"{run}/data/screen.json"),
             ("LMDBs + training mean", f"{run}/lmdb/mean.binaryproto"),
             ("run configuration", f"{run}/train/solver.prototxt"),
             ("training (short schedule) + snapshot choice + pruning", f"{run}/train/chosen.caffemodel"),
             ("weights", f"{run}/train/final.caffemodel"),
             ("network predictions + features (test)", f"{run}/cells_test.csv")]
    if noncells:
        steps += [("network predictions (val, for the non-cell filter)", f"{run}/cells_val.csv")]
    steps += [(f"network features (transfer {s})", f"{run}/features/transfer_{s}/paths.txt") for s in SPLITS]
    what = "CellProfiler features, rows taken from CP_FEATURES" if external_cp else "CellProfiler features"
    steps += [(f"{what} ({s})", f"{run}/cellprofiler/{s}.csv") for s in SPLITS]
    steps += [(f"{what} (transfer {s})", f"{run}/cellprofiler/transfer_{s}.csv") for s in SPLITS]
    steps += [("random forest (small grid)", f"{run}/rf/cells_test.csv"),
              ("quality filter" if noncells else "quality filter (not run: no non-cell list)",
               f"{run}/quality/result.json"),
              ("per-cell evaluation", f"{run}/cells/result.json")]
    if mixed:
        steps += [("network predictions (proteins with two compartments)", f"{run}/mixed/cells.csv")]
    steps += [("protein-level calls (network)", f"{run}/proteins/result.json"),
              ("protein-level calls (forest)", f"{run}/rf_proteins/result.json"),
              ("transfer learning", f"{run}/transfer/result.json"),
              ("t-SNE and neurons", f"{run}/interpret/result.json"),
              ("report", f"{run}/report.html"),
              ("model bundle", f"{run}/model/bundle.json")]
    return steps


# ---------------------------------------------------------------- the flatness check
FLAT_NET = """name: "flat"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 64 dim: 64 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 16 kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 4 stride: 4 } }
layer { name: "fc1" type: "InnerProduct" bottom: "pool1" top: "fc1"
  inner_product_param { num_output: 12 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "prob" type: "Softmax" bottom: "fc1" top: "prob" }
"""


def flatness(screen, work, counts, log):
    """Peak RSS of analysis/predict.py on each count of cells (main, then transfer crops)."""
    import numpy as np

    from deepyeast.caffe.blobs import write_mean_binaryproto
    from deepyeast.engine import Net

    d = os.path.join(work, "flat")
    os.makedirs(d, exist_ok=True)
    model, weights, mean = (os.path.join(d, n) for n in ("flat.prototxt", "flat.caffemodel", "mean.binaryproto"))
    with open(model, "w") as f:
        f.write(FLAT_NET)
    Net(model, phase="TEST", seed=0).save_caffemodel(weights)
    write_mean_binaryproto(mean, np.full((2, 64, 64), 100, np.float32))
    # every crop of the screen: a list named HOwt_test.txt (12 classes) under a root linking both parts
    root = os.path.join(d, "root")
    os.makedirs(root, exist_ok=True)
    entries = []
    for part, lists in (("main", [f"HOwt_{s}.txt" for s in SPLITS]),
                        ("transfer", [f"HOwt_transfer_{s}.txt" for s in SPLITS])):
        link = os.path.join(root, part)
        if not os.path.islink(link):
            os.symlink(os.path.abspath(os.path.join(screen, part)), link)
        for name in lists:
            with open(os.path.join(screen, part, name)) as f:
                entries += [f"{part}/{line.strip()}" for line in f if line.strip()]
    rows = []
    for n in counts:
        n_used = min(n, len(entries))
        lst = os.path.join(root, f"flat{n_used}", "HOwt_test.txt")
        os.makedirs(os.path.dirname(lst), exist_ok=True)
        with open(lst, "w") as f:
            f.write("\n".join(entries[:n_used]) + "\n")
        out = os.path.join(d, f"out{n_used}")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        m = measure([PY, "analysis/predict.py", "--model", model, "--weights", weights, "--mean", mean,
                     "--archive", root, "--list", lst, "--out", os.path.join(out, "cells.csv"),
                     "--features-out", os.path.join(out, "features")], log)
        if m["rc"] != 0:
            raise SystemExit(f"flatness run on {n_used} cells failed (rc {m['rc']}); see {log}")
        m.update(cells=n_used, disk_mib=du_bytes(out) / 2**20)
        rows.append(m)
        shutil.rmtree(out, ignore_errors=True)
    return rows


def deepyeast_feature_bytes_per_cell():
    """Bytes per cell of DeepYeast's features, (pooled + top, full maps), from the net's geometry."""
    from deepyeast.analysis.features import network_blobs, network_geometry

    geometry = network_geometry()
    full = pooled = 0
    for b in network_blobs():
        g = geometry[b]
        full += g.channels * g.height * g.width * 4
        pooled += (2 * g.channels if g.height * g.width > 1 else g.channels) * 4
    return pooled, full


# ---------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="paper", choices=sorted(SMALL_SCHEDULES), help="synthetic screen size")
    ap.add_argument("--work", required=True, help="folder for the screen, the archive and the run (outside the repo)")
    ap.add_argument("--cache", help="folder with screen/ (a synthetic screen root of --size) and cellprofiler/")
    ap.add_argument("--schedule", help="training schedule overrides (default: short, per size)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--flat-cells", default="10000,100000", help="cell counts of the flatness check")
    ap.add_argument("--skip-pipeline", action="store_true", help="only the flatness check")
    ap.add_argument("--resume", action="store_true",
                    help="keep WORK/run from an earlier (interrupted) run: finished steps then show ~0 s")
    ap.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    args = ap.parse_args(argv)

    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    log = os.path.join(work, "bench_paper_scale.log")
    rows_path = os.path.join(work, "steps.jsonl")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    rows = []
    t_start = time.time()

    external_cp = os.path.join(os.path.abspath(args.cache), "cellprofiler") if args.cache else None
    if external_cp and not os.path.isdir(external_cp):
        external_cp = None
    if args.cache:
        screen = os.path.join(os.path.abspath(args.cache), "screen")
        with open(os.path.join(screen, "screen.json")) as f:
            size = json.load(f).get("size")
        if size != args.size:
            raise SystemExit(f"{screen}: a screen of size {size!r}, not {args.size!r}")
        rows.append(dict(step="synthetic screen", cached=True))
    else:
        screen = os.path.join(work, "screen")
        if not os.path.exists(os.path.join(screen, "screen.json")):
            m = measure([PY, "data_prep/make_synthetic.py", "--out", screen, "--size", args.size, "--seed", "0",
                         "--jobs", str(args.jobs)], log, env=env)
            if m["rc"] != 0:
                raise SystemExit(f"making the screen failed; see {log}")
            rows.append(dict(step="synthetic screen (not part of reproduce)", **m, disk_mib=du_bytes(screen) / 2**20))
    archive = published_archive(screen, os.path.join(work, "archive"))

    run = os.path.join(work, "run")
    if not args.resume and not args.skip_pipeline:
        shutil.rmtree(run, ignore_errors=True)  # every step measured from scratch
    schedule = args.schedule or SMALL_SCHEDULES[args.size]
    # what the published archive lacks, supplied as a user would: the screen's non-cell list and
    # mixed-protein table where it has them; CellProfiler features from the cache as external tables
    noncells = os.path.join(screen, "main", "noncells.txt")
    noncells = noncells if os.path.exists(noncells) else ""
    mixed = os.path.join(screen, "main", "mixed_proteins.csv")
    mixed = mixed if os.path.exists(mixed) else ""
    make_vars = [f"RUN={run}", "SCREEN=archive", f"ARCHIVE_SRC={archive}", "SOLVER=models/deepyeast/solver.prototxt",
                 "GPU=", "GRID=small", "SNAPSHOT_RULE=val_loss", f"SCHEDULE={schedule}", "ENGINE=ours",
                 f"JOBS={args.jobs}", f"NONCELLS={noncells}", f"MIXED={mixed}", f"CP_FEATURES={external_cp or ''}"]
    if not args.skip_pipeline:
        for label, target in pipeline_steps(run, external_cp, noncells, mixed):
            m = measure(["make", "--no-print-directory", target] + make_vars, log, env=env)
            if m["rc"] != 0:
                raise SystemExit(f"step {label!r} failed (rc {m['rc']}); see {log}")
            m.update(step=label, disk_mib=du_bytes(run) / 2**20)
            rows.append(m)
            with open(rows_path, "a") as f:
                f.write(json.dumps(m) + "\n")
            print(f"{label}: {m['wall_s']:.0f} s, peak {m['peak_rss_mib']:.0f} MiB (sum {m['peak_sum_mib']:.0f}), "
                  f"run folder {m['disk_mib']:.0f} MiB", flush=True)
    counts = [int(c) for c in args.flat_cells.split(",") if c]
    flat = flatness(screen, work, counts, log) if counts else []
    for m in flat:
        print(f"flatness: {m['cells']} cells, peak {m['peak_rss_mib']:.0f} MiB, {m['wall_s']:.0f} s", flush=True)

    with open(os.path.join(screen, "screen.json")) as f:
        info = json.load(f)
    n_main = sum(info["main"]["per_split"].values())
    n_transfer = sum(info["transfer"]["per_split"].values())
    pooled, full = deepyeast_feature_bytes_per_cell()
    lines = [f"`python bench/bench_paper_scale.py --size {args.size}{' --cache CACHE' if args.cache else ''} "
             f"--work WORK --jobs {args.jobs}`: the synthetic `{args.size}` screen ({n_main:,} main + "
             f"{n_transfer:,} transfer crops) as the published archive through the steps of `make reproduce` "
             f"(our engine; training schedule `{schedule}`; forest grid `small`), {time.time() - t_start:.0f} s in "
             + ("all; CellProfiler features taken from precomputed tables (`CP_FEATURES`, cached)" if external_cp
                else "all") + ("; non-cell list given (`NONCELLS`)" if noncells else "")
             + ("; mixed-protein table given (`MIXED`)" if mixed else "")
             + ".  Peak RSS: the step's largest process (wait4); sum: all its processes together, sampled every 0.5 s.  Disk: the run folder after the step.  Load average (1, 5, 15 min) at the end: "
             + ", ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores.", "",
             "| step | wall s | peak RSS MiB | sum MiB | run folder MiB |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("cached"):
            lines.append(f"| {r['step']} | cached | | | {r.get('disk_mib', 0):.0f} |" if "disk_mib" in r
                         else f"| {r['step']} | cached | | | |")
        else:
            lines.append(f"| {r['step']} | {r['wall_s']:.0f} | {r['peak_rss_mib']:.0f} | {r['peak_sum_mib']:.0f} | "
                         f"{r.get('disk_mib', 0):.0f} |")
    if flat:
        lines += ["", "Memory against the number of cells: `analysis/predict.py` (crops streamed to a temporary file, "
                  "pooled features and top activations written batch by batch) with a one-convolution net of the "
                  "DeepYeast input (2 x 64 x 64), on the first N crops of the screen:", "",
                  "| cells | wall s | peak RSS MiB | features + table MiB |", "|---:|---:|---:|---:|"]
        lines += [f"| {m['cells']:,} | {m['wall_s']:.0f} | {m['peak_rss_mib']:.0f} | {m['disk_mib']:.1f} |" for m in flat]
    lines += ["", f"DeepYeast features per cell (conv1 .. fc3, from the net's geometry): {pooled / 1024:.1f} KiB "
              f"pooled (the default) vs {full / 2**20:.2f} MiB as whole maps (`--features-reduce full`), plus "
              "`<blob>.top.npz` of a fixed size per blob (16 cells per channel)."]
    if not args.no_results:
        update_section(f"Paper scale, size {args.size} (bench/bench_paper_scale.py)", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
