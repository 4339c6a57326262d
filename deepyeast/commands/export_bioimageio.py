"""Export a DeepYeast model bundle as a bioimage.io model package (ilastik, deepImageJ, QuPath, napari).

MODEL_DIR is a model bundle (written by analysis/make_bundle.py from a run, or by
analysis/convert_keras_weights.py).  The package (--out OUT.zip) holds rdf.yaml
(bioimage.io model format 0.5, validated with bioimageio.spec before the zip appears),
deepyeast.pt (TorchScript of the bundle's network with its mean-image subtraction and
input scaling inside, so the package's input is the raw crop: float32 0-255, axes batch,
channel (marker, protein), y, x of 64 x 64), test_input.npy / test_output.npy (the
output computed by DeepYeast's engine; the package must reproduce it to 1e-4), sample
tensors, cover.png and README.md.

--test-crops  uint8 N x 2 x 64 x 64 .npy of crops for the test tensors (default: the
              bundle's examples.npy, else freshly rendered synthetic cells, one per class)

Check the package (offline):  bioimageio test OUT.zip

Example:
  python analysis/export_bioimageio.py runs/demo/model --out runs/demo/deepyeast_bioimageio.zip
"""

from deepyeast import launcher


def options(p):
    p.add_argument("model_dir", metavar="MODEL_DIR", type=launcher.existing_dir, help="model bundle folder")
    p.add_argument("out_positional", nargs="?", metavar="OUT.zip", help="same as --out (older form)")
    launcher.add(p, "out", metavar="ZIP", help="bioimage.io package to write (.zip)")
    p.add_argument("--test-crops", metavar="NPY", type=launcher.existing_file,
                   help="uint8 N x 2 x 64 x 64 .npy for the test tensors")
    p.add_argument("--author", action="append", help="author name for rdf.yaml (repeatable)")


def run(args):
    import numpy as np

    from deepyeast.model.export_bioimageio import export_bioimageio
    from deepyeast.utils.io import InputError

    out_zip = args.out or args.out_positional
    if not out_zip:
        raise InputError("give the package to write (--out OUT.zip)")
    if not out_zip.endswith(".zip"):
        raise InputError(f"{out_zip}: the package name must end in .zip")
    crops = None
    if args.test_crops:
        try:
            crops = np.load(args.test_crops, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise InputError(f"{args.test_crops}: cannot read test crops ({err})") from None
        if crops.dtype != np.uint8 or crops.ndim != 4:
            raise InputError(f"{args.test_crops}: holds {crops.dtype} {crops.shape}; expected uint8 N x C x H x W")
    summary = export_bioimageio(args.model_dir, out_zip, test_input=crops, authors=args.author)
    print(f"wrote {summary['path']}: {summary['n_test']} test crops ({summary['test_source']}); TorchScript vs "
          f"DeepYeast engine max |diff| {summary['max_abs_diff_vs_engine']:.1e}")


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
