#!/usr/bin/env python3
"""Export a DeepYeast model bundle as a bioimage.io model package (ilastik, deepImageJ, QuPath, napari).

  python analysis/export_bioimageio.py MODEL_DIR OUT.zip [--test-crops CROPS.npy] [--author NAME ...]

MODEL_DIR is a model bundle (RUN/model from make demo / make reproduce, or the output of
analysis/convert_keras_weights.py).  OUT.zip holds rdf.yaml (bioimage.io model format 0.5,
validated with bioimageio.spec before the zip appears), deepyeast.pt (TorchScript of the
bundle's network with its mean-image subtraction and input scaling inside, so the
package's input is the raw crop: float32 0-255, axes batch, channel (marker, protein),
y, x of 64 x 64), test_input.npy / test_output.npy (the output computed by DeepYeast's
engine; the package must reproduce it to 1e-4), sample tensors, cover.png and README.md.

--test-crops  uint8 N x 2 x 64 x 64 .npy of crops for the test tensors (default: the
              bundle's examples.npy, else freshly rendered synthetic cells, one per class)

Check the package (offline):  bioimageio test OUT.zip

Exit codes: 0 done; 2 bad input (one line on stderr naming the file and field).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepyeast.io_utils import InputError  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", help="model bundle folder")
    ap.add_argument("out_zip", help="bioimage.io package to write (.zip)")
    ap.add_argument("--test-crops", help="uint8 N x 2 x 64 x 64 .npy for the test tensors")
    ap.add_argument("--author", action="append", help="author name for rdf.yaml (repeatable)")
    args = ap.parse_args(argv)
    if not args.out_zip.endswith(".zip"):
        ap.error("OUT.zip must end in .zip")

    import numpy as np

    from deepyeast.model.bioimageio import export_bioimageio

    try:
        crops = None
        if args.test_crops:
            try:
                crops = np.load(args.test_crops, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise InputError(f"{args.test_crops}: cannot read test crops ({err})") from None
            if crops.dtype != np.uint8 or crops.ndim != 4:
                raise InputError(f"{args.test_crops}: holds {crops.dtype} {crops.shape}; expected uint8 N x C x H x W")
        summary = export_bioimageio(args.model_dir, args.out_zip, test_input=crops, authors=args.author)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {summary['path']}: {summary['n_test']} test crops ({summary['test_source']}); TorchScript vs "
          f"DeepYeast engine max |diff| {summary['max_abs_diff_vs_engine']:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
