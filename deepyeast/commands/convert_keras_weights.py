"""Convert the authors' Keras DeepYeast weights (legacy HDF5) into a Caffe model bundle.

H5 is a legacy Keras HDF5 file of the DeepYeast network of github.com/tanelp/deepyeast
(a whole model as ModelCheckpoint writes it, or weights only), e.g. the released
deepyeast-weights-22-0.902.hdf5 that data_prep/fetch_weights.py downloads.  --out DIR
becomes a model bundle (deploy.prototxt, weights.caffemodel, mean.binaryproto,
classes.txt, readme.md, bundle.json; see deepyeast/model/bundle.py) whose deploy net
and preprocessing give the Keras model's probabilities: conv kernels transposed from
channels-last, fc1's rows permuted from Keras' H x W x C flatten order to Caffe's
C x H x W, BatchNorm epsilon kept (Caffe eps 1e-3), and the input x/127.5 - 1 as a
constant 127.5 mean with input scale 1/127.5.  The folder is replaced as a whole, only
once the new bundle has passed the same checks a reader makes.

Example:
  python analysis/convert_keras_weights.py data/keras/deepyeast-weights-22-0.902.hdf5 --out models/keras
  python analysis/export_bioimageio.py models/keras --out deepyeast_keras.zip
"""

from deepyeast import launcher


def options(p):
    p.add_argument("h5", type=launcher.existing_file, help="legacy Keras HDF5 file of the DeepYeast model")
    launcher.add_output_folder(p, "model bundle folder to write (replaced atomically)")


def run(args):
    from deepyeast.model.bundle import read_bundle
    from deepyeast.model.convert_keras_weights import convert_keras_weights

    out = launcher.output_folder(args)
    convert_keras_weights(args.h5, out)
    bundle = read_bundle(out)
    src = bundle.metadata["source"]
    note = "the authors' released file" if src["is_release_file"] else \
        f"NOT the released file (md5 {src['release_md5']})"
    print(f"wrote {out}: {bundle.n_classes} classes, input {' x '.join(map(str, bundle.input_shape))}, "
          f"from {src['file']} (Keras {src['keras_version']}, {src['keras_layout']} layout; {note})")


if __name__ == "__main__":
    launcher.main(__doc__, options, run)
