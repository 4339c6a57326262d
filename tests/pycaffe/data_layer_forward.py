"""Forward a net that reads an LMDB through Caffe's own Data layer (runs with the Caffe root's python3).

    python3 data_layer_forward.py NET.prototxt WEIGHTS.caffemodel BLOB N OUT.npy

Runs the net in TEST phase until N records have passed (the Data layer's batch size
must divide N) and saves float32 N x D of blob BLOB.  The Data layer's
transform_param (mean_file / mean_value, scale) is applied by Caffe's DataTransformer,
which is the point: it checks that a bundle's (crop - mean) * scale is Caffe's.
"""
import os
import sys


def main(model, weights, blob, n, out):
    os.environ.setdefault("GLOG_minloglevel", "2")
    import numpy as np
    import caffe

    caffe.set_mode_cpu()
    net = caffe.Net(model, weights, caffe.TEST)
    n = int(n)
    rows = []
    while sum(r.shape[0] for r in rows) < n:
        net.forward()
        data = np.array(net.blobs[blob].data, dtype=np.float32)
        rows.append(data.reshape(data.shape[0], -1))
    np.save(out, np.concatenate(rows)[:n])


if __name__ == "__main__":
    main(*sys.argv[1:])
