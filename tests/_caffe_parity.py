"""Real-Caffe parity helpers shared by the parity tests and the Docker image's check (not a test module):
run a net through pycaffe in the Caffe root, compare blobs element-wise, fill a net with non-trivial weights."""

import json
import textwrap

import numpy as np
import torch

from deepyeast.caffe import root as caffe_root
from deepyeast.engine import Net  # noqa: F401 (the Docker check builds nets through this module)

PYCAFFE_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import caffe
    caffe.set_mode_cpu()
    cfg = json.load(open(sys.argv[1]))
    phase = caffe.TRAIN if cfg["phase"] == "TRAIN" else caffe.TEST
    net = caffe.Net(cfg["proto"], cfg["weights"], phase)
    inputs = dict(np.load(cfg["inputs"])) if cfg.get("inputs") else {}
    for k, v in inputs.items():
        net.blobs[k].reshape(*v.shape)
    if inputs:
        net.reshape()
    out = {}
    for it in range(cfg.get("forwards", 1)):
        for k, v in inputs.items():
            net.blobs[k].data[...] = v
        net.forward()
        for name, blob in net.blobs.items():
            if "_split_" not in name:
                out["fwd%d/%s" % (it, name)] = blob.data.copy()
    if cfg.get("backward"):
        net.backward()
        for k in inputs:
            out["inputdiff/%s" % k] = net.blobs[k].diff.copy()
    for lname, blobs in net.params.items():
        for i, b in enumerate(blobs):
            out["param/%s/%d" % (lname, i)] = b.data.copy()
            if cfg.get("backward"):
                out["diff/%s/%d" % (lname, i)] = b.diff.copy()
    np.savez(cfg["out"], **out)
""")


def run_caffe(tmp_path, proto, weights, phase, inputs=None, forwards=1, backward=False, cwd=None):
    """Run the pycaffe script; returns a dict of arrays (fwdK/blob, param/layer/i, diff/layer/i)."""
    script = tmp_path / "pycaffe_run.py"
    script.write_text(PYCAFFE_SCRIPT)
    cfg = {"proto": str(proto), "weights": str(weights), "phase": phase, "forwards": forwards,
           "backward": backward, "out": str(tmp_path / "caffe_out.npz")}
    if inputs:
        np.savez(tmp_path / "inputs.npz", **inputs)
        cfg["inputs"] = str(tmp_path / "inputs.npz")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    r = caffe_root.run_pycaffe(str(script), [str(tmp_path / "cfg.json")], cwd=str(cwd or tmp_path),
                               check=False, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:]
    return dict(np.load(tmp_path / "caffe_out.npz"))


FWD_RTOL = 1e-5
FWD_ATOL = 1e-5
"""Forward parity: ``|ours - caffe| <= FWD_RTOL |caffe| + FWD_ATOL max|caffe|`` for every element of
every blob (measured here: the largest absolute part needed is ~2e-6 of a blob's maximum)."""


def assert_blobs_match(ours, ref, names, prefix="fwd0/", prob_blobs=("prob",)):
    """Element-wise forward parity (:data:`FWD_RTOL`, :data:`FWD_ATOL`); probabilities relative only.
    The failure message lists, per failing blob, the worst element's values."""
    bad = {}
    for n in names:
        o = np.asarray(ours[n], dtype=np.float64)
        c = np.asarray(ref[prefix + n], dtype=np.float64)
        assert o.shape == c.shape, (n, o.shape, c.shape)
        atol = 0.0 if n in prob_blobs else FWD_ATOL * np.abs(c).max()
        excess = np.abs(o - c) - (FWD_RTOL * np.abs(c) + atol)
        if (excess > 0).any():
            i = np.unravel_index(int(np.argmax(excess)), c.shape)
            bad[n] = f"{int((excess > 0).sum())} elements; worst at {i}: ours {o[i]:.9g}, caffe {c[i]:.9g}"
    assert not bad, bad


def rel_max(ours, ref):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = np.abs(ref).max()
    return float(np.abs(ours - ref).max() / scale) if scale > 0 else float(np.abs(ours).max())


def randomize(net, seed):
    """Non-trivial weights: filler draws, random Scale/bias, BatchNorm sums with scale factor 2.5."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in net.layers:
            blobs = layer.blobs
            if layer.caffe_type == "BatchNorm":
                s = 2.5
                blobs[0].copy_(0.3 * torch.randn(blobs[0].shape, generator=g) * s)
                blobs[1].copy_((0.5 + torch.rand(blobs[1].shape, generator=g)) * s)
                blobs[2].fill_(s)
            elif layer.caffe_type == "Scale":
                blobs[0].copy_(1 + 0.2 * torch.randn(blobs[0].shape, generator=g))
                if len(blobs) > 1:
                    blobs[1].copy_(0.1 * torch.randn(blobs[1].shape, generator=g))
            else:
                for b in blobs[1:]:
                    b.copy_(0.05 * torch.randn(b.shape, generator=g))
