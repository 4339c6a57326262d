#!/usr/bin/env python3
"""A new screen classified from raw micrographs: time per micrograph, fp32 against bf16, calls changed.

Renders a synthetic screen of another seed than the model's training screen (so every protein is
new to the model), keeps the fields of its first N proteins per set (main set only is used), and
with the labels withheld:

1. finds and crops the cells (`deepyeast.data.segment_cells.iter_screen_cells`), timed;
2. runs the bundle's network on every crop in fp32 (the baseline: Caffe's arithmetic) and in
   bf16 autocast, timed, and counts the cell calls and the protein calls (Dirichlet, as
   `classify_screen.py`) that differ;
3. scores both against the generator's labels, per cell and per protein;
4. runs `classify_screen.py` itself once (fp32) for the end-to-end time, tables and report included.

Writes the "Classifying a new screen" section of bench/RESULTS.md.

    python bench/bench_classify.py --model runs/demo/model --work /tmp/bench_classify [--proteins 60] [--seed 1]
"""

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepyeast.analysis.protein_level import dirichlet_map  # noqa: E402
from deepyeast.data.segment_cells import iter_screen_cells  # noqa: E402
from deepyeast.data.make_synthetic import make_screen  # noqa: E402
from deepyeast.model import read_bundle  # noqa: E402


def _timed(fn, *args, **kw):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model bundle folder (e.g. runs/demo/model)")
    p.add_argument("--work", required=True, help="scratch folder (replaced)")
    p.add_argument("--size", default="small", help="synthetic screen size (default %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="screen seed; not the model's (default %(default)s)")
    p.add_argument("--proteins", type=int, default=60,
                   help="proteins whose fields are classified (default %(default)s)")
    p.add_argument("--no-write", action="store_true", help="print, do not update bench/RESULTS.md")
    args = p.parse_args(argv)

    if os.path.exists(args.work):
        shutil.rmtree(args.work)
    os.makedirs(args.work)
    screen = os.path.join(args.work, "screen")
    # first: its worker pool forks, safe only before this process runs threads (OpenCV, scipy, torch)
    make_screen(screen, args.size, seed=args.seed, jobs=2, save_fields=args.proteins, progress=False)
    bundle = read_bundle(args.model)
    fields = os.path.join(screen, "main", "fields")
    with open(os.path.join(fields, "images.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    table = os.path.join(fields, "screen.csv")
    with open(table, "w") as f:  # labels withheld
        f.write("image,plate,protein\n" + "".join(f"{r['image']},{r['plate']},{r['protein']}\n" for r in rows))
    truth = {f"plate{int(r['plate']):02d}/{r['protein']}": int(r["label"]) for r in rows}

    def collect():
        keys, crops = [], []
        for rec, _m, _c, cr in iter_screen_cells(table, class_names=bundle.classes, require=("protein",),
                                                 progress=False):
            keys += [f"plate{rec['plate']:02d}/{rec['protein']}"] * len(cr)
            crops.append(cr)
        return np.asarray(keys, object), np.concatenate(crops)

    (keys, crops), seg_wall, seg_cpu = _timed(collect)
    res = {}
    for precision in ("fp32", "bf16"):
        predictor = bundle.predictor(precision=precision)
        predictor(crops[:10])  # warm up
        probs, wall, cpu = _timed(predictor, crops)
        ids, _, _, theta = dirichlet_map(probs, keys)
        res[precision] = dict(probs=probs, wall=wall, cpu=cpu, cell_pred=probs.argmax(1), prot_pred=theta.argmax(1),
                              ids=ids)
    labels = np.array([truth[k] for k in keys])
    prot_labels = np.array([truth[k] for k in res["fp32"]["ids"]])
    changed_cells = int(np.sum(res["fp32"]["cell_pred"] != res["bf16"]["cell_pred"]))
    changed_prots = int(np.sum(res["fp32"]["prot_pred"] != res["bf16"]["prot_pred"]))
    max_diff = float(np.abs(res["fp32"]["probs"] - res["bf16"]["probs"]).max())

    out = os.path.join(args.work, "classified")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "analysis/classify_screen.py", "--model", args.model, "--images", table, "--out",
                    out], check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   stdout=subprocess.DEVNULL)
    e2e = time.perf_counter() - t0

    n_img, n_cells, n_prot = len(rows), len(crops), len(truth)
    lines = [f"Model `{args.model}` ({bundle.metadata.get('training', {}).get('data', 'training data not stated')}); "
             f"a synthetic screen of seed {args.seed} (`{args.size}`), the fields of its first {args.proteins} main "
             f"proteins: {n_img} micrographs, {n_cells} cells found, {n_prot} proteins, labels withheld. "
             f"`python bench/bench_classify.py --model {args.model} --work DIR --size {args.size} "
             f"--proteins {args.proteins} --seed {args.seed}`.", "",
             "| step | wall s | CPU s | per micrograph, wall ms | per cell, wall ms | cells right | proteins right |",
             "|---|---|---|---|---|---|---|",
             f"| segmentation + crops | {seg_wall:.1f} | {seg_cpu:.1f} | {1000 * seg_wall / n_img:.0f} | "
             f"{1000 * seg_wall / n_cells:.1f} | | |"]
    for precision in ("fp32", "bf16"):
        r = res[precision]
        lines.append(f"| network, {precision}{' (baseline)' if precision == 'fp32' else ''} | {r['wall']:.1f} | "
                     f"{r['cpu']:.1f} | {1000 * r['wall'] / n_img:.0f} | {1000 * r['wall'] / n_cells:.1f} | "
                     f"{int(np.sum(r['cell_pred'] == labels))}/{n_cells} | "
                     f"{int(np.sum(r['prot_pred'] == prot_labels))}/{n_prot} |")
    lines.append(f"| classify_screen.py end to end (fp32, tables and report) | {e2e:.1f} | | "
                 f"{1000 * e2e / n_img:.0f} | {1000 * e2e / n_cells:.1f} | | |")
    lines += ["", f"bf16 against fp32: {changed_cells} of {n_cells} cell calls and {changed_prots} of {n_prot} "
              f"protein calls differ; largest probability difference {max_diff:.3g}. Network speed-up of bf16: "
              f"{res['fp32']['wall'] / res['bf16']['wall']:.2f}x (wall).",
              f"Load average at the end: {os.getloadavg()[0]:.1f} (wall-clock timings share the machine with "
              "other jobs)."]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _results import update_section
        update_section("Classifying a new screen (bench/bench_classify.py)", text)


if __name__ == "__main__":
    main()
