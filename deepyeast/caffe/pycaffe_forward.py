"""Forward cell crops through a net with real pycaffe (runs with the Caffe root's python3).

This file is a stand-alone script for Debian bullseye's Python 3.9 with
pycaffe and numpy 1.19: it imports nothing from the deepyeast package, and
everything is passed by files.  :mod:`deepyeast.analysis.predict` runs it through
:func:`deepyeast.caffe.root.run_pycaffe`; the tests use it too.

    python3 pycaffe_forward.py --model deploy.prototxt [--weights W.caffemodel]
        [--images X.npy] [--mean M.npy] [--out DIR] [--blobs prob,fc1,...]
        [--batch 100] [--dump-params P.npz] [--save-weights S.caffemodel]

--images   uint8 (or float32) N x C x H x W crops, channel order of the data
--mean     float32 C x H x W mean image subtracted from every crop (optional)
--scale    multiplies ``crop - mean`` (Caffe's transform_param.scale; default 1)
--out      DIR/<blob>.npy gets float32 N x D (blob flattened per cell), one per --blobs
--pool     blobs (of --blobs) written instead as DIR/<blob>.pool.npy, float32 N x 2C: each
           channel's spatial mean, then each channel's spatial max
--top      blobs whose per-channel top activations go to DIR/<blob>.top.npz (feature_stream.py
           beside this file: the cells and positions the activating-patch search needs)
--top-k    cells kept per channel (default 16)
--dump-params  npz with every parameter blob as "<layer>/<index>" (float32, Caffe shapes)
--save-weights write the loaded net with pycaffe's Net.save (a caffemodel written by real Caffe)
"""

import argparse
import os
import sys


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--weights")
    ap.add_argument("--images")
    ap.add_argument("--mean")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--out")
    ap.add_argument("--blobs", default="prob")
    ap.add_argument("--pool", default="")
    ap.add_argument("--top", default="")
    ap.add_argument("--top-k", type=int, default=16)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--dump-params")
    ap.add_argument("--save-weights")
    args = ap.parse_args(argv)

    os.environ.setdefault("GLOG_minloglevel", "2")
    import numpy as np
    import caffe

    caffe.set_mode_cpu()
    if args.weights:
        net = caffe.Net(args.model, args.weights, caffe.TEST)
    else:
        net = caffe.Net(args.model, caffe.TEST)
    input_name = net.inputs[0]

    if args.dump_params:
        arrays = {}
        for layer, blobs in net.params.items():
            for i, blob in enumerate(blobs):
                arrays[f"{layer}/{i}"] = np.array(blob.data, dtype=np.float32)
        np.savez(args.dump_params, **arrays)
    if args.save_weights:
        net.save(args.save_weights)

    if args.images:
        images = np.load(args.images, mmap_mode="r")
        mean = np.load(args.mean).astype(np.float32) if args.mean else None
        names = [b for b in args.blobs.split(",") if b]
        pooled = {b for b in args.pool.split(",") if b}
        missing = [b for b in names if b not in net.blobs]
        if missing:
            sys.exit(f"{args.model}: no blob named {', '.join(missing)} (blobs: {', '.join(net.blobs)})")
        n = images.shape[0]
        os.makedirs(args.out, exist_ok=True)
        # the sibling module (this script's folder is sys.path[0] in the root): files written
        # batch by batch, per-channel top activations
        from feature_stream import NpyWriter, TopActivations
        tops = {b: TopActivations(args.top_k) for b in args.top.split(",") if b}
        outputs = {}
        try:
            for start in range(0, n, args.batch):
                batch = np.asarray(images[start:start + args.batch], dtype=np.float32)
                if mean is not None:
                    batch = batch - mean
                if args.scale != 1.0:
                    batch = batch * np.float32(args.scale)
                net.blobs[input_name].reshape(*batch.shape)
                net.reshape()
                net.blobs[input_name].data[...] = batch
                net.forward()
                for b in names:
                    data = net.blobs[b].data
                    if b in tops:
                        tops[b].update(data)
                    if b in pooled:
                        maps = data.reshape(data.shape[0], data.shape[1], -1)
                        data = np.concatenate([maps.mean(axis=2), maps.max(axis=2)], axis=1)
                    data = data.reshape(batch.shape[0], -1)
                    if b not in outputs:
                        name = b + (".pool.npy" if b in pooled else ".npy")
                        outputs[b] = NpyWriter(os.path.join(args.out, name), n, data.shape[1])
                    outputs[b].write(data)
            for w in outputs.values():
                w.close()
        except BaseException:
            for w in outputs.values():
                w.abort()
            raise
        for b, top in tops.items():
            top.save(os.path.join(args.out, b + ".top.npz"))


if __name__ == "__main__":
    main()
