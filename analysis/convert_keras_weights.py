#!/usr/bin/env python3
"""Convert the authors' Keras DeepYeast weights (legacy HDF5) into a Caffe model bundle.

  python analysis/convert_keras_weights.py H5 OUT_DIR

H5 is a legacy Keras HDF5 file of the DeepYeast network of github.com/tanelp/deepyeast
(a whole model as ModelCheckpoint writes it, or weights only), e.g. the released
deepyeast-weights-22-0.902.hdf5 that data_prep/fetch_weights.py downloads.  OUT_DIR
becomes a model bundle (deploy.prototxt, weights.caffemodel, mean.binaryproto,
classes.txt, readme.md, bundle.json; see deepyeast/model/bundle.py) whose deploy net
and preprocessing give the Keras model's probabilities: conv kernels transposed from
channels-last, fc1's rows permuted from Keras' H x W x C flatten order to Caffe's
C x H x W, BatchNorm epsilon kept (Caffe eps 1e-3), and the input x/127.5 - 1 as a
constant 127.5 mean with input scale 1/127.5.  OUT_DIR is replaced as a whole, only
once the new bundle has passed the same checks a reader makes.

Then:  python analysis/classify_screen.py --model OUT_DIR ...
       python analysis/export_bioimageio.py OUT_DIR deepyeast_keras.zip

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
    ap.add_argument("h5", help="legacy Keras HDF5 file of the DeepYeast model")
    ap.add_argument("out_dir", help="model bundle folder to write")
    args = ap.parse_args(argv)

    from deepyeast.model.keras import convert_keras_weights
    from deepyeast.model.bundle import read_bundle

    try:
        convert_keras_weights(args.h5, args.out_dir)
        bundle = read_bundle(args.out_dir)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    src = bundle.metadata["source"]
    note = "the authors' released file" if src["is_release_file"] else \
        f"NOT the released file (md5 {src['release_md5']})"
    print(f"wrote {args.out_dir}: {bundle.n_classes} classes, input {' x '.join(map(str, bundle.input_shape))}, "
          f"from {src['file']} (Keras {src['keras_version']}, {src['keras_layout']} layout; {note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
