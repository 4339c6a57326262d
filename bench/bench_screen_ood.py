#!/usr/bin/env python3
"""Out-of-distribution flags on wrongly set-up screens: the share of cells classify_screen flags.

A synthetic screen's saved fields (the generator of the training screens; --fields, or a tiny
screen generated here with --proteins saved proteins) are classified with --model as they are
(a matching screen) and after one set-up error each:

* swapped: marker and protein channels exchanged (a wrong --channels);
* bits: intensities divided by 16 (12-bit data declared as 16-bit: --bits 16 on a 12-bit camera);
* zoom2x: the centre half of the field enlarged 2x (another objective or binning);
* blur: Gaussian blur, sigma 3 px (out of focus).

Figures: cells found, cells flagged (share) and whether the report warns; written to
bench/RESULTS.md ("Out-of-distribution flags").

  python bench/bench_screen_ood.py --model runs/oodemo/model
"""

import argparse
import csv
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _results import update_section  # noqa: E402

VARIANTS = ("matching", "swapped", "bits", "zoom2x", "blur")


def variant(image, name):
    """uint8 2 x H x W field after the set-up error ``name``."""
    import cv2

    if name == "matching":
        return image
    if name == "swapped":
        return np.ascontiguousarray(image[::-1])
    if name == "bits":
        return (image // 16).astype(np.uint8)
    if name == "zoom2x":
        h, w = image.shape[1:]
        centre = image[:, h // 4:h // 4 + h // 2, w // 4:w // 4 + w // 2]
        return np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in centre])
    if name == "blur":
        return np.stack([cv2.GaussianBlur(c, (0, 0), 3) for c in image])
    raise ValueError(name)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--fields", help="folder with images.csv of saved fields (default: generate a tiny screen)")
    p.add_argument("--proteins", type=int, default=12, help="proteins whose fields are saved (generated screen)")
    p.add_argument("--model-label", help="how RESULTS.md names the bundle (default: the --model path), e.g. "
                                         "'runs/demo/model of make demo at COMMIT'")
    p.add_argument("--no-write", action="store_true", help="print, do not update bench/RESULTS.md")
    args = p.parse_args()
    import tifffile

    from deepyeast.analysis.classify_screen import ClassifySettings, classify_screen
    from deepyeast.utils.run_context import RunContext
    from deepyeast.model import read_bundle

    bundle = read_bundle(args.model)
    meta = bundle.metadata.get("ood")
    if not meta:
        sys.exit(f"{args.model}: the bundle has no out-of-distribution statistics "
                 "(make_bundle.py --ood-train/--ood-val)")
    with tempfile.TemporaryDirectory(prefix="bench-ood-") as tmp:
        fields = args.fields
        if fields is None:
            from deepyeast.data.make_synthetic import make_screen

            make_screen(os.path.join(tmp, "screen"), "tiny", seed=7, jobs=1, save_fields=args.proteins,
                        progress=False)
            fields = os.path.join(tmp, "screen", "main", "fields")
        with open(os.path.join(fields, "images.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        results = []
        for name in VARIANTS:
            d = os.path.join(tmp, name)
            os.makedirs(d)
            lines = ["image,plate,protein"]
            for i, r in enumerate(rows):
                image = tifffile.imread(os.path.join(fields, r["image"]))
                tifffile.imwrite(os.path.join(d, f"f{i:03d}.tif"), variant(image, name))
                lines.append(f"f{i:03d}.tif,{r['plate']},{r['protein']}")
            with open(os.path.join(d, "images.csv"), "w") as f:
                f.write("\n".join(lines) + "\n")
            t0 = time.time()
            s = classify_screen(args.model, os.path.join(d, "images.csv"), os.path.join(d, "out"),
                                ClassifySettings(n_resamples=50), RunContext(progress=False))
            ood = s["ood"]
            results.append((name, s["n_images"], s["n_cells"], ood["n_flagged"], ood["share"], bool(ood["warning"]),
                            time.time() - t0))
            print(json.dumps(results[-1]))
    rows_md = [f"| {n} | {m} | {c} | {f} | {100 * sh:.1f}% | {'yes' if w else 'no'} |"
               for n, m, c, f, sh, w, _ in results]
    label = args.model_label or args.model
    command = f"python bench/bench_screen_ood.py --model {args.model if args.model_label is None else 'BUNDLE'}"
    command += f" --proteins {args.proteins}" if args.fields is None else " --fields FIELDS"
    text = (f"`{command}` (BUNDLE: {label}): bundle `{bundle.name}` trained on "
            f"{bundle.metadata.get('training', {}).get('data', '?')}; ood_score: the larger of the fc1 Mahalanobis "
            f"distance over {meta['threshold']:.4g} and the input-statistics distance over "
            f"{meta['input_threshold']:.4g} (each the 99th percentile of {meta['validation_cells']} validation cells; "
            f"{100 * meta['training_flagged_share']:.1f}% of them flagged); temperature {meta['temperature']:.3g}, ECE "
            f"{meta['ece_before']:.3f} before, {meta['ece_after']:.3f} after (validation accuracy "
            f"{meta['validation_accuracy']:.3f}). "
            + ("Fields of a freshly generated tiny synthetic screen (seed 7), " if args.fields is None else
               "The fields of --fields, ")
            + f"each set-up error applied to every field; load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} cores at the end.\n\n"
            "| screen | micrographs | cells | flagged | share | report warns |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows_md) + "\n")
    print(text)
    if not args.no_write:
        update_section("Out-of-distribution flags on wrongly set-up screens", text)


if __name__ == "__main__":
    main()
