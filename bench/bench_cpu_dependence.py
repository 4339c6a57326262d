#!/usr/bin/env python3
"""Which numbers depend on the CPU: the same computation under this CPU's kernels and under another's.

A reproduction on another CPU type runs other SIMD kernels: numpy dispatches its loops at run time
(AVX512 / AVX2 / ...), OpenBLAS picks a kernel per CPU, PyTorch's ATen and oneDNN pick theirs (and
bf16 arithmetic on AMX, on AVX512-BF16 or emulated).  This script runs each step twice on the same
inputs in fresh processes: once as this machine runs it, once restricted to the kernels of a CPU
without AVX512 (``NPY_DISABLE_CPU_FEATURES``, ``OPENBLAS_CORETYPE=Haswell``, ``ATEN_CPU_CAPABILITY=avx2``,
``ONEDNN_MAX_CPU_ISA=AVX2``: what a 2-core AMD EPYC of the Zen 2/3 generations runs), and counts what
differs:

* the CellProfiler-style features (the forest's and the non-cell filter's input) as computed
  (``repr`` floats) and as written by ``analysis/cp_features.py`` (rounded, :data:`FEATURE_BITS`);
* the network's class probabilities and calls, fp32 and bf16, from a model bundle.

Writes the "CPU dependence" section of bench/RESULTS.md.

    python bench/bench_cpu_dependence.py --archive RUN/data/main --list RUN/data/main/HOwt_test.txt \\
        --bundle RUN/model --cells 400
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

AVX512 = ("AVX512F AVX512CD AVX512VL AVX512BW AVX512DQ AVX512VNNI AVX512IFMA AVX512VBMI AVX512VBMI2 AVX512BITALG "
          "AVX512VPOPCNTDQ AVX512FP16 AVX512BF16 AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR X86_V4")
OTHER_CPU = {"NPY_DISABLE_CPU_FEATURES": AVX512, "OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2",
             "ONEDNN_MAX_CPU_ISA": "AVX2"}
"""The environment that restricts every library to the kernels of an AVX2 CPU without AVX512 or AMX."""


def _paths(list_file, n):
    with open(list_file, encoding="utf-8") as f:
        return [ln.split()[0] for ln in f if ln.strip()][:n]


def worker(args):
    """Compute in this process and save to --save (npz): features (raw and as written) or probabilities."""
    from deepyeast.data.crop_png import read_crop

    paths = _paths(args.list, args.cells)
    if args.worker == "features":
        from deepyeast.analysis.cp_features import DEFAULT_BATCH, cell_mask, measure_crops, round_features
        from deepyeast.constants import MARKER_CHANNEL
        raw = []
        for i in range(0, len(paths), DEFAULT_BATCH):  # the chunks of analysis/cp_features.py, before rounding
            crops = np.stack([read_crop(os.path.join(args.archive, p)) for p in paths[i:i + DEFAULT_BATCH]])
            masks = np.stack([cell_mask(c[MARKER_CHANNEL])[0] for c in crops])
            raw.append(measure_crops(crops, masks)[1])
        raw = np.concatenate(raw)
        np.savez(args.save, raw=raw, written=round_features(raw))
    else:
        from deepyeast.model import read_bundle
        crops = np.stack([read_crop(os.path.join(args.archive, p)) for p in paths])
        probs = read_bundle(args.bundle).predictor(precision=args.worker)(crops)
        np.savez(args.save, probs=np.asarray(probs, np.float64))


def _run(kind, env_extra, args, out):
    env = dict(os.environ, OMP_NUM_THREADS="1", **env_extra)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--save", out, "--archive", args.archive,
           "--list", args.list, "--cells", str(args.cells)] + (["--bundle", args.bundle] if args.bundle else [])
    t = time.time()
    subprocess.run(cmd, env=env, check=True)
    return np.load(out), time.time() - t


def _diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(a - b) / np.maximum(np.abs(a), np.abs(b))
    return {"values": int(a.size), "differ": int((~same).sum()), "rows_differ": int((~same).reshape(len(a), -1)
                                                                                     .any(1).sum()),
            "max_rel": float(np.nanmax(np.where(same, 0, rel))) if a.size else 0.0}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archive", required=True)
    p.add_argument("--list", required=True)
    p.add_argument("--bundle")
    p.add_argument("--cells", type=int, default=400)
    p.add_argument("--worker", choices=["features", "fp32", "bf16"])
    p.add_argument("--save")
    p.add_argument("--screen-size", help="also make the synthetic screen of this size under both and compare")
    p.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md as it is")
    args = p.parse_args()
    if args.worker:
        return worker(args)
    from bench._results import update_section
    from deepyeast.analysis.cp_features import FEATURE_BITS

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        a, ta = _run("features", {}, args, os.path.join(tmp, "fa.npz"))
        b, tb = _run("features", OTHER_CPU, args, os.path.join(tmp, "fb.npz"))
        out["features"] = {"raw": _diff(a["raw"], b["raw"]), "written": _diff(a["written"], b["written"]),
                           "seconds": [round(ta, 1), round(tb, 1)], "cells": int(len(a["raw"]))}
        if args.bundle:
            for prec in ("fp32", "bf16"):
                a, _ = _run(prec, {}, args, os.path.join(tmp, f"{prec}a.npz"))
                b, _ = _run(prec, OTHER_CPU, args, os.path.join(tmp, f"{prec}b.npz"))
                out[prec] = {"max_abs_prob": float(np.abs(a["probs"] - b["probs"]).max()),
                             "calls_changed": int((a["probs"].argmax(1) != b["probs"].argmax(1)).sum()),
                             "cells": int(len(a["probs"]))}
            a, _ = _run("fp32", {}, args, os.path.join(tmp, "x32.npz"))
            b, _ = _run("bf16", {}, args, os.path.join(tmp, "x16.npz"))
            out["fp32_vs_bf16_here"] = {"max_abs_prob": float(np.abs(a["probs"] - b["probs"]).max()),
                                        "calls_changed": int((a["probs"].argmax(1) != b["probs"].argmax(1)).sum())}
        if args.screen_size:  # the synthetic screen: every file, byte for byte
            files = {}
            for name, extra in (("here", {}), ("other", OTHER_CPU)):
                folder = os.path.join(tmp, f"screen_{name}")
                subprocess.run([sys.executable, "data_prep/make_synthetic.py", "--out", folder, "--size",
                                args.screen_size, "--seed", "0"], env=dict(os.environ, **extra), check=True,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                files[name] = {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
                               for d, _, fs in os.walk(folder) for f in fs}
            out["screen"] = {"files": len(files["here"]),
                             "differ": sum(files["other"].get(k) != v for k, v in files["here"].items())
                             + len(set(files["other"]) - set(files["here"]))}
    print(json.dumps(out, indent=1))
    f = out["features"]
    lines = [
        f"Each step twice on the same {f['cells']} crops in fresh processes: with this CPU's kernels, and restricted "
        "to an AVX2 CPU's (`" + " ".join(f"{k}=..." for k in OTHER_CPU) + "`; numpy, OpenBLAS, ATen and oneDNN "
        "then run the kernels a CPU without AVX512/AMX runs). `python bench/bench_cpu_dependence.py`.",
        "",
        "| computation | values | differ | rows (cells) that differ | largest relative difference |",
        "|---|---|---|---|---|",
        f"| CellProfiler-style features as computed (float64) | {f['raw']['values']:,} | {f['raw']['differ']:,} | "
        f"{f['raw']['rows_differ']:,} | {f['raw']['max_rel']:.2g} |",
        f"| the same as written (rounded to {FEATURE_BITS} significant bits) | {f['written']['values']:,} | "
        f"{f['written']['differ']:,} | {f['written']['rows_differ']:,} | {f['written']['max_rel']:.2g} |",
    ]
    for prec in ("fp32", "bf16"):
        if prec in out:
            r = out[prec]
            lines.append(f"| network probabilities, {prec} | {r['cells'] * 12:,} | largest difference "
                         f"{r['max_abs_prob']:.2g} | calls changed: {r['calls_changed']} of {r['cells']} | |")
    if "fp32_vs_bf16_here" in out:
        r = out["fp32_vs_bf16_here"]
        lines.append(f"| network, fp32 against bf16 on this CPU | | largest difference {r['max_abs_prob']:.2g} | "
                     f"calls changed: {r['calls_changed']} | |")
    if "screen" in out:
        lines.append(f"| the synthetic screen (size {args.screen_size}, seed 0), every file | {out['screen']['files']} "
                     f"files | {out['screen']['differ']} | | |")
    if not args.no_write:
        update_section("CPU dependence", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
