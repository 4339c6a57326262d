#!/usr/bin/env python3
"""Time the transfer-learning and interpretation analyses at demo size on synthetic features.

Writes a feature dir with every DeepYeast blob (conv1..fc3, float32, flattened as
`deepyeast extract` writes them) for --train/--val/--test cells of the 4 transfer
classes (class signal planted in a few channels so curves are not flat), list files
and a CellProfiler-like CSV, then runs analysis/transfer.py's and
analysis/interpret.py's logic and prints the wall time of each; then times t-SNE with our
faster settings (the demo's) against scikit-learn's defaults (the paper's, --tsne paper) on the
same cells, and writes its section of bench/RESULTS.md.

    python bench/bench_transfer_interpret.py --work /tmp/bench_ti [--train 400 --val 200 --test 400]

Disk: about 4.4 MB per cell (conv1 and conv2 are 1 MiB each per cell).
"""

import argparse
import csv
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from deepyeast import constants  # noqa: E402
from deepyeast.analysis.features import GEOMETRY, NETWORK_BLOBS, read_label_lists  # noqa: E402
from deepyeast.analysis.interpret import InterpretInputs, run_interpretation  # noqa: E402
from deepyeast.analysis.transfer import TransferFeatures, run_transfer  # noqa: E402
from deepyeast.utils.run_context import RunContext  # noqa: E402


def make_screen(work, counts, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    k = constants.N_TRANSFER_CLASSES
    paths, labels = [], []
    os.makedirs(os.path.join(work, "archive", "plate01"), exist_ok=True)
    for split, n in counts.items():
        y = np.arange(n) % k
        p = [f"plate01/{split}{i}-1-1-1.png" for i in range(n)]
        with open(os.path.join(work, "archive", f"HOwt_transfer_{split}.txt"), "w") as f:
            f.writelines(f"{a} {b}\n" for a, b in zip(p, y))
        paths += p
        labels.append(y)
    y = np.concatenate(labels)
    n = len(y)
    for p in paths:
        img = np.zeros((64, 64, 3), np.uint8)
        img[..., :2] = rng.integers(0, 255, size=(64, 64, 2))
        Image.fromarray(img).save(os.path.join(work, "archive", p))
    feat = os.path.join(work, "features")
    os.makedirs(feat, exist_ok=True)
    with open(os.path.join(feat, "paths.txt"), "w") as f:
        f.write("\n".join(paths) + "\n")
    for blob in NETWORK_BLOBS:
        g = GEOMETRY[blob]
        out = np.lib.format.open_memmap(os.path.join(feat, f"{blob}.npy"), "w+", np.float32, (n, g.size))
        for i in range(0, n, 100):
            block = rng.random((min(100, n - i), g.channels, g.height * g.width), dtype=np.float32)
            block[np.arange(len(block)), y[i:i + 100], :] += 0.3  # channel k carries class k
            out[i:i + 100] = block.reshape(len(block), -1)
        out.flush()
        del out
    with open(os.path.join(work, "cp.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path"] + [f"f{i}" for i in range(435)])
        for p, label in zip(paths, y):
            v = rng.normal(size=435)
            v[label] += 1.0
            w.writerow([p] + [f"{x:.5g}" for x in v])
    return feat


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--jobs", type=int, default=-1)
    parser.add_argument("--reuse", action="store_true", help="reuse the features already in --work")
    args = parser.parse_args()
    t = time.perf_counter()
    if args.reuse and os.path.exists(os.path.join(args.work, "features", "fc3.npy")):
        feat = os.path.join(args.work, "features")
    else:
        feat = make_screen(args.work, {"train": args.train, "val": args.val, "test": args.test})
    print(flush=True, *[f"synthetic features: {time.perf_counter() - t:.1f} s"])
    labels = read_label_lists(os.path.join(args.work, "archive"), "HOwt_transfer", n_classes=4)
    cp = os.path.join(args.work, "cp.csv")
    t = time.perf_counter()
    run_transfer(TransferFeatures([feat], labels, cp_csv=cp), os.path.join(args.work, "transfer"),
                 context=RunContext(jobs=args.jobs))
    print(flush=True, *[f"transfer: {time.perf_counter() - t:.1f} s"])
    t_transfer = time.perf_counter() - t
    t = time.perf_counter()
    run_interpretation(InterpretInputs(feat, labels, constants.TRANSFER_CLASS_NAMES, cp_csv=cp,
                                       archive_root=os.path.join(args.work, "archive")),
                       os.path.join(args.work, "interpret"))
    t_interpret = time.perf_counter() - t
    print(flush=True, *[f"interpret: {t_interpret:.1f} s"])
    # t-SNE: our faster settings (the demo's) against scikit-learn's defaults (the paper's, --tsne paper),
    # on the same cells: fc1 (512 values) and conv4 pooled (256 values), as transfer and interpret embed them
    from deepyeast.analysis.features import blob_features
    from deepyeast.analysis.interpret.tsne import tsne_embedding
    n_tsne = min(1000, len(labels))
    rows = []
    for blob in ("fc1", "conv4"):
        x = blob_features(feat, blob, "pool")[:n_tsne]
        times = {}
        for mode in ("fast", "paper"):
            t = time.perf_counter()
            tsne_embedding(x, seed=0, mode=mode)
            times[mode] = time.perf_counter() - t
        rows.append(f"| {blob} ({x.shape[1]} values) | {n_tsne:,} | {times['fast']:.1f} s | {times['paper']:.1f} s | "
                    f"{times['paper'] / times['fast']:.1f}x |")
        print(flush=True, *[f"t-SNE {blob}: fast {times['fast']:.1f} s, paper {times['paper']:.1f} s"])
    from _results import update_section
    update_section("Transfer, interpretation and t-SNE settings (bench/bench_transfer_interpret.py)", "\n".join([
        f"`python bench/bench_transfer_interpret.py --work DIR --train {args.train} --val {args.val} --test "
        f"{args.test}` (synthetic features of every layer, a 435-column CellProfiler-like table).",
        "",
        f"Transfer (every layer + CellProfiler, Figures 4B/4C/S6): {t_transfer:.1f} s; interpretation (Figure 3): "
        f"{t_interpret:.1f} s.",
        "",
        "| t-SNE input | cells | fast (standardised, 50 PCs, 500 iterations) | paper (scikit-learn defaults) | "
        "paper / fast |",
        "|---|---|---|---|---|",
        *rows]))


if __name__ == "__main__":
    main()
