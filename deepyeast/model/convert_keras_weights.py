"""The authors' Keras DeepYeast (GitHub tanelp/deepyeast, release v0.1) as a Caffe model bundle.

The authors re-implemented DeepYeast in Keras 2 and released trained weights
(``deepyeast-weights-22-0.902.hdf5``, md5 ``c42d8788ba006f9c82725fffe3b096b6``:
a ``ModelCheckpoint`` of epoch 22 at 0.902 validation accuracy; 0.89 on the test
set by their README).  Their model is ours layer for layer -- 8 3x3 'same'
convolutions (64, 64, pool, 128, 128, pool, 256 x 4, pool), dense 512, 512, 12,
BatchNormalization after every convolution and the first two dense layers,
ReLU after each, dropout 0.5 after the first two dense layers -- with these
differences, each handled here:

* **Channels last.**  Input 64 x 64 x 2 (channel 0 = red marker, 1 = green
  protein, as read from the archive's RGB PNGs -- our order).  Convolution
  kernels are stored (kh, kw, in, out): Caffe wants (out, in, kh, kw).  The
  ``Flatten`` before ``ip1`` walks the 8 x 8 x 256 map in H, W, C order; Caffe's
  InnerProduct reads C, H, W, so ip1's 16384 input rows are permuted.
* **BatchNormalization** (gamma, beta, moving mean, moving variance; epsilon
  1e-3 by default, read from the file's model config when it has one) becomes
  Caffe's ``BatchNorm`` (mean, variance, factor 1; ``eps`` set per layer) plus
  ``Scale`` with bias (gamma, beta).  Same formula, (x - mean) / sqrt(var + eps).
* **Input scaling.**  Keras: ``x / 255 - 0.5`` then ``* 2``, i.e. x/127.5 - 1.
  In Caffe's terms: mean value 127.5 and ``scale`` 1/127.5, so the bundle has a
  constant 127.5 mean image and ``input_scale`` 1/127.5 (see
  :mod:`deepyeast.model.bundle`).
* **Theano kernels.**  A file written with the Theano backend stores
  convolution (flipped) kernels; they are flipped back (Keras 2 did the same
  when loading such a file on TensorFlow).

The released file is a whole model: the authors' training script saves it with
``ModelCheckpoint`` (``save_weights_only`` left False) and their BN-folding
example opens it with ``load_model``.  Both legacy Keras HDF5 layouts are read,
though: a whole model (``model.save`` /
``ModelCheckpoint``: root attributes ``model_config``, ``keras_version``,
``backend`` and a ``model_weights`` group) and weights only (``save_weights``:
``layer_names`` on the root).  Weights are found by layer name and by the role
in each ``weight_names`` entry (``kernel``, ``bias``, ``gamma``, ...; Keras 2
writes ``conv1_1/kernel:0``, Keras 3 ``conv1_1/kernel``), so a renamed
``_1``-suffixed weight still loads.  Only h5py reads the file: no Keras, and no
code or pickle in the file is ever run.
"""

import json
import os
import re
import tempfile
from collections import OrderedDict

import numpy as np

from deepyeast.caffe import caffe_pb2
from deepyeast.caffe.blobs import write_caffemodel
from deepyeast.caffe.prototxt import read_prototxt
from deepyeast.constants import CHANNELS, CLASS_NAMES, IMAGE_SIZE
from deepyeast.model.bundle import BundleInfo, write_bundle
from deepyeast.utils.io import InputError, file_digest

__all__ = ["KERAS_WEIGHTS_URL", "KERAS_WEIGHTS_MD5", "KERAS_WEIGHTS_FILE", "KERAS_LAYERS", "KerasWeights",
           "read_keras_h5", "keras_to_caffe_params", "convert_keras_weights", "keras_deploy_net"]

KERAS_WEIGHTS_FILE = "deepyeast-weights-22-0.902.hdf5"
KERAS_WEIGHTS_URL = f"https://github.com/tanelp/deepyeast/releases/download/v0.1/{KERAS_WEIGHTS_FILE}"
KERAS_WEIGHTS_MD5 = "c42d8788ba006f9c82725fffe3b096b6"
KERAS_INPUT_MEAN = 127.5
KERAS_INPUT_SCALE = 1.0 / 127.5

KERAS_LAYERS = (
    # Keras weight layer, Keras BatchNormalization after it (None: none), our Caffe layer
    ("conv1_1", "bn1_1", "conv1"),
    ("conv1_2", "bn1_2", "conv2"),
    ("conv2_1", "bn2_1", "conv3"),
    ("conv2_2", "bn2_2", "conv4"),
    ("conv3_1", "bn3_1", "conv5"),
    ("conv3_2", "bn3_2", "conv6"),
    ("conv3_3", "bn3_3", "conv7"),
    ("conv3_4", "bn3_4", "conv8"),
    ("ip1", "bn4", "fc1"),
    ("ip2", "bn5", "fc2"),
    ("ip3", None, "fc3"),
)
"""The authors' layer names (``deepyeast/models/deepyeast.py`` of tanelp/deepyeast) and ours."""

_CONV_OUT = {"conv1_1": 64, "conv1_2": 64, "conv2_1": 128, "conv2_2": 128,
             "conv3_1": 256, "conv3_2": 256, "conv3_3": 256, "conv3_4": 256}
_DENSE_OUT = {"ip1": 512, "ip2": 512, "ip3": len(CLASS_NAMES)}
_FLAT_HWC = (IMAGE_SIZE // 8, IMAGE_SIZE // 8, 256)  # the map Flatten sees: three 2x2 poolings, conv3_4's 256
KERAS_BN_EPSILON = 1e-3  # keras.layers.BatchNormalization's default, which the authors' model uses

_ROLE_ALIASES = {"kernel": "kernel", "w": "kernel", "bias": "bias", "b": "bias", "gamma": "gamma",
                 "beta": "beta", "moving_mean": "moving_mean", "running_mean": "moving_mean",
                 "moving_variance": "moving_variance", "running_variance": "moving_variance"}
_POSITIONAL_ROLES = {2: ("kernel", "bias"), 4: ("gamma", "beta", "moving_mean", "moving_variance")}

DEPLOY_TEMPLATE = "deploy.prototxt"
"""The model zoo's deploy net (:func:`deepyeast.caffe.zoo.zoo_file`), whose layers the Keras weights fill."""


class KerasWeights:
    """What a legacy Keras HDF5 file holds: per layer, its weights by role.

    Attributes: ``path``; ``layout`` ("model" or "weights"); ``keras_version``;
    ``backend``; ``layers`` (OrderedDict Keras layer name -> {role: float32
    array}); ``config`` (dict Keras layer name -> (class name, config dict), empty
    for a weights-only file).
    """

    def __init__(self, path, layout, keras_version, backend, layers, config):
        self.path = path
        self.layout = layout
        self.keras_version = keras_version
        self.backend = backend
        self.layers = layers
        self.config = config

    def epsilon(self, bn_name):
        """The epsilon of BatchNormalization layer ``bn_name`` (the model config's, else Keras' default)."""
        cfg = self.config.get(bn_name, (None, {}))[1]
        return float(cfg.get("epsilon", KERAS_BN_EPSILON))


def _text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.bytes_):
        return bytes(value).decode("utf-8")
    return str(value)


def _attr_list(group, name):
    """A list-of-strings attribute, joined from ``name0``, ``name1``, ... when Keras split a large one."""
    if name in group.attrs:
        raw = group.attrs[name]
        values = [] if np.asarray(raw).size == 0 else list(np.atleast_1d(raw))
    else:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values.extend(np.atleast_1d(group.attrs[f"{name}{i}"]))
            i += 1
        if i == 0:
            return None
    return [_text(v) for v in values]


def _role(weight_name, index, count, where):
    base = weight_name.rsplit("/", 1)[-1]
    base = re.sub(r":\d+$", "", base)
    key = base.lower()
    if key in _ROLE_ALIASES:
        return _ROLE_ALIASES[key]
    m = re.match(r"^.*_(w|b)$", key)  # Keras 1: conv1_1_W, conv1_1_b
    if m:
        return _ROLE_ALIASES[m.group(1)]
    if count in _POSITIONAL_ROLES:
        return _POSITIONAL_ROLES[count][index]
    raise InputError(f"{where}: cannot tell what weight {weight_name!r} is (kernel, bias, gamma, beta, "
                     "moving_mean, moving_variance)")


def _model_config(f, path):
    if "model_config" not in f.attrs:
        return {}
    try:
        cfg = json.loads(_text(f.attrs["model_config"]))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: attribute model_config is not valid JSON ({e.msg})") from None
    layers = (cfg.get("config") or {}).get("layers") or []
    out = {}
    for layer in layers:
        conf = layer.get("config") or {}
        name = conf.get("name") or layer.get("name")
        if name:
            out[name] = (layer.get("class_name", ""), conf)
    return out


def read_keras_h5(path):
    """Read the weights of a legacy Keras HDF5 file (whole model or weights only) into :class:`KerasWeights`."""
    import h5py

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{path}: not an HDF5 file ({e})") from None
    with f:
        if _attr_list(f, "layer_names") is not None:
            group, layout = f, "weights"
        elif "model_weights" in f and _attr_list(f["model_weights"], "layer_names") is not None:
            group, layout = f["model_weights"], "model"
        else:
            raise InputError(f"{path}: not a Keras HDF5 file (no 'layer_names' attribute on the root or on a "
                             "'model_weights' group)")
        keras_version = _text(group.attrs.get("keras_version", f.attrs.get("keras_version", "unknown")))
        backend = _text(group.attrs.get("backend", f.attrs.get("backend", "unknown")))
        layers = OrderedDict()
        for name in _attr_list(group, "layer_names"):
            if name not in group:
                raise InputError(f"{path}: layer_names lists {name!r} but the file has no group of that name")
            lg = group[name]
            weight_names = _attr_list(lg, "weight_names") or []
            roles = {}
            for i, wn in enumerate(weight_names):
                where = f"{path}: layer {name}"
                if wn not in lg:
                    raise InputError(f"{where}: weight {wn!r} is listed but missing")
                role = _role(wn, i, len(weight_names), where)
                if role in roles:
                    raise InputError(f"{where}: two weights have the role {role!r}")
                roles[role] = np.asarray(lg[wn][()], dtype=np.float32)
            if roles:
                layers[name] = roles
        config = _model_config(f, path)
    return KerasWeights(path, layout, keras_version, backend, layers, config)


def _check_config(kw):
    """Refuse a whole-model file whose config is not the authors' DeepYeast (one line naming the field)."""
    if not kw.config:
        return
    where = f"{kw.path}: model_config"
    for keras_name, bn_name, _ in KERAS_LAYERS:
        if keras_name not in kw.config:
            raise InputError(f"{where}: no layer named {keras_name!r}; this is not the DeepYeast model")
        cls, conf = kw.config[keras_name]
        act = conf.get("activation", "linear")
        if act not in ("linear", None):
            raise InputError(f"{where}: layer {keras_name} has activation {act!r}; DeepYeast's are linear "
                             "(ReLU follows BatchNormalization)")
        if keras_name in _CONV_OUT:
            checks = {"padding": "same", "data_format": "channels_last"}
            for key, want in checks.items():
                if key in conf and conf[key] != want:
                    raise InputError(f"{where}: layer {keras_name} has {key} {conf[key]!r}, expected {want!r}")
            for key in ("strides", "dilation_rate"):
                if key in conf and list(conf[key]) != [1, 1]:
                    raise InputError(f"{where}: layer {keras_name} has {key} {conf[key]}, expected [1, 1]")
            if "kernel_size" in conf and list(conf["kernel_size"]) != [3, 3]:
                raise InputError(f"{where}: layer {keras_name} has kernel_size {conf['kernel_size']}, expected [3, 3]")
        if bn_name is not None:
            if bn_name not in kw.config:
                raise InputError(f"{where}: no layer named {bn_name!r}; this is not the DeepYeast model")
            bconf = kw.config[bn_name][1]
            axis = bconf.get("axis", -1)
            axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
            if axis not in (-1, 3 if keras_name in _CONV_OUT else 1):
                raise InputError(f"{where}: layer {bn_name} normalises axis {axis}; expected the channel axis (-1)")
    flat = kw.config.get("flatten", (None, {}))[1]
    if flat.get("data_format", "channels_last") != "channels_last":
        raise InputError(f"{where}: layer flatten has data_format {flat['data_format']!r}, expected channels_last")


def _need(kw, name, role, shape):
    layer = kw.layers.get(name)
    if layer is None:
        raise InputError(f"{kw.path}: no weights for layer {name!r} (layers with weights: "
                         f"{', '.join(kw.layers) or 'none'}); this is not the DeepYeast model")
    if role not in layer:
        raise InputError(f"{kw.path}: layer {name} has no {role} (has {', '.join(layer)})")
    arr = layer[role]
    if tuple(arr.shape) != tuple(shape):
        raise InputError(f"{kw.path}: layer {name} {role} has shape {tuple(arr.shape)}, DeepYeast needs "
                         f"{tuple(shape)}")
    return arr


def keras_to_caffe_params(kw):
    """Caffe parameter blobs (OrderedDict layer name -> list of float32 arrays) from :class:`KerasWeights`.

    Layer names and blob shapes are those of ``models/deepyeast/deploy.prototxt``.
    """
    _check_config(kw)
    expected = {name for name, _, _ in KERAS_LAYERS} | {bn for _, bn, _ in KERAS_LAYERS if bn}
    extra = [name for name in kw.layers if name not in expected]
    if extra:
        raise InputError(f"{kw.path}: layer(s) {', '.join(extra)} have weights but DeepYeast has no such layer")
    flip = kw.backend.lower() == "theano"
    params = OrderedDict()
    in_ch = len(CHANNELS)
    for keras_name, bn_name, ours in KERAS_LAYERS:
        if keras_name in _CONV_OUT:
            out_ch = _CONV_OUT[keras_name]
            kernel = _need(kw, keras_name, "kernel", (3, 3, in_ch, out_ch))
            if flip:
                kernel = kernel[::-1, ::-1]
            weight = kernel.transpose(3, 2, 0, 1)
            in_ch = out_ch
        else:
            out_n = _DENSE_OUT[keras_name]
            if keras_name == "ip1":
                h, w, c = _FLAT_HWC
                kernel = _need(kw, keras_name, "kernel", (h * w * c, out_n))
                # Keras row index h*W*C + w*C + c; Caffe column index c*H*W + h*W + w
                weight = kernel.reshape(h, w, c, out_n).transpose(3, 2, 0, 1).reshape(out_n, c * h * w)
            else:
                kernel = _need(kw, keras_name, "kernel", (512, out_n))
                weight = kernel.T
        out_n = weight.shape[0]
        bias = (_need(kw, keras_name, "bias", (out_n,)) if "bias" in kw.layers.get(keras_name, {})
                else np.zeros(out_n, np.float32))
        params[ours] = [np.ascontiguousarray(weight, np.float32), np.ascontiguousarray(bias, np.float32)]
        if bn_name is None:
            continue
        bn = kw.layers.get(bn_name, {})
        mean = _need(kw, bn_name, "moving_mean", (out_n,))
        var = _need(kw, bn_name, "moving_variance", (out_n,))
        if np.any(var < 0):
            raise InputError(f"{kw.path}: layer {bn_name} has a negative moving_variance")
        gamma = _need(kw, bn_name, "gamma", (out_n,)) if "gamma" in bn else np.ones(out_n, np.float32)
        beta = _need(kw, bn_name, "beta", (out_n,)) if "beta" in bn else np.zeros(out_n, np.float32)
        params[f"{ours}_bn"] = [mean.copy(), var.copy(), np.ones(1, np.float32)]
        params[f"{ours}_scale"] = [gamma.copy(), beta.copy()]
    for arrays in params.values():
        for a in arrays:
            if not np.all(np.isfinite(a)):
                raise InputError(f"{kw.path}: weights hold NaN or infinite values")
    return params


def keras_deploy_net(kw, template=None):
    """Our deploy net with each BatchNorm's ``eps`` set to its Keras layer's epsilon (a NetParameter).

    ``template``: the deploy prototxt to fill (default: the model zoo's, :data:`DEPLOY_TEMPLATE`)."""
    if template is None:
        from deepyeast.caffe.zoo import zoo_file

        template = zoo_file(DEPLOY_TEMPLATE)
    net = read_prototxt(template, caffe_pb2.NetParameter)
    net.name = "DeepYeast (Keras weights of tanelp/deepyeast)"
    bn_of = {f"{ours}_bn": bn for _, bn, ours in KERAS_LAYERS if bn}
    seen = set()
    for layer in net.layer:
        if layer.type == "BatchNorm":
            if layer.name not in bn_of:
                raise InputError(f"{template}: BatchNorm layer {layer.name!r} has no Keras counterpart")
            layer.batch_norm_param.eps = kw.epsilon(bn_of[layer.name])
            seen.add(layer.name)
    missing = set(bn_of) - seen
    if missing:
        raise InputError(f"{template}: no BatchNorm layer(s) {', '.join(sorted(missing))}")
    return net


_DEPLOY_HEADER = """\
# DeepYeast deploy net carrying the authors' Keras weights (github.com/tanelp/deepyeast, release v0.1),
# converted by analysis/convert_keras_weights.py.  The layers are models/deepyeast/deploy.prototxt's;
# only each BatchNorm's eps differs (Keras' epsilon, 1e-3, instead of Caffe's default 1e-5).
# Input blob "data": (crop - 127.5) / 127.5 -- mean.binaryproto is a constant 127.5 and the
# bundle's input scale 1/127.5 (Caffe: transform_param { mean_value: 127.5 mean_value: 127.5
# scale: 0.00784313725 }); channel 0 = red marker, 1 = green protein.  Output blob "prob".
"""


def convert_keras_weights(h5_path, out_dir, published_md5=KERAS_WEIGHTS_MD5, url=KERAS_WEIGHTS_URL):
    """Convert a legacy Keras DeepYeast HDF5 file into a model bundle at ``out_dir``; returns ``out_dir``.

    The readme carries the authors' reported metrics only when the file's md5
    is the released file's (``published_md5``); any other file is described as
    what it is, with its own md5 and no metrics.
    """
    from google.protobuf import text_format

    h5_path = os.fspath(h5_path)
    kw = read_keras_h5(h5_path)
    params = keras_to_caffe_params(kw)
    net = keras_deploy_net(kw)
    md5 = file_digest(h5_path, "md5")
    released = md5 == published_md5
    source = {"file": os.path.basename(h5_path), "md5": md5, "keras_layout": kw.layout,
              "keras_version": kw.keras_version, "keras_backend": kw.backend,
              "release_url": url, "release_md5": published_md5, "is_release_file": released,
              "converted_by": "analysis/convert_keras_weights.py"}
    eps = sorted({kw.epsilon(bn) for _, bn, _ in KERAS_LAYERS if bn})
    if released:
        description = (
            "The DeepYeast network trained by the paper's authors with their Keras re-implementation "
            "(Parnamaa & Parts, G3 2017; github.com/tanelp/deepyeast, release v0.1), converted to Caffe files. "
            "The converted deploy net reproduces the Keras model's probabilities (channels-last kernels "
            "transposed, the flatten order of fc1 permuted, BatchNorm epsilon kept).")
        metrics = {"train_accuracy (authors)": 0.96, "val_accuracy (authors, checkpoint)": 0.902,
                   "test_accuracy (authors)": 0.89}
        training = {"data": "the published DeepYeast archive: 65,000 training / 12,500 validation cells, "
                            "12 compartments (test: 12,500 cells)",
                    "framework": "Keras 2 (>= 2.0.8)",
                    "optimizer": "Adam (Keras defaults), categorical cross-entropy, batch 64 (the "
                                 "repository's example training scripts)",
                    "schedule": "up to 300 epochs; learning rate x0.1 when validation accuracy stalls "
                                "5 epochs (min 1e-5); the checkpoint with the best validation accuracy",
                    "checkpoint": "epoch 22, validation accuracy 0.902",
                    "preprocessing": "x / 127.5 - 1 per pixel",
                    "augmentation": "not stated (the repository has example scripts with and without "
                                    "shifts of up to 10 pixels and horizontal flips)"}
    else:
        description = (
            f"Weights converted from the Keras HDF5 file {os.path.basename(h5_path)} (md5 {md5}), which is NOT "
            f"the authors' released file (md5 {published_md5}); nothing is known here about how it was trained.")
        metrics, training = {}, {"keras_file": os.path.basename(h5_path)}
    with tempfile.TemporaryDirectory(prefix="deepyeast-keras-convert-") as work:  # scratch; the bundle copies it
        deploy = os.path.join(work, "deploy.prototxt")
        with open(deploy, "w", encoding="utf-8") as fh:
            fh.write(_DEPLOY_HEADER + text_format.MessageToString(net))
        weights = os.path.join(work, "weights.caffemodel")
        write_caffemodel(weights, params, net_name=net.name,
                         layer_types={name: ("BatchNorm" if name.endswith("_bn") else "Scale"
                                             if name.endswith("_scale") else "InnerProduct"
                                             if name.startswith("fc") else "Convolution")
                                      for name in params})
        mean = np.full((len(CHANNELS), IMAGE_SIZE, IMAGE_SIZE), KERAS_INPUT_MEAN, np.float32)
        info = BundleInfo(name="DeepYeast (Keras weights, tanelp/deepyeast)", input_scale=KERAS_INPUT_SCALE,
                          description=description,
                          mean_note=("a constant 127.5; with the input scale 1/127.5 this is the Keras model's "
                                     "x / 127.5 - 1"),
                          metrics=metrics, training=dict(training, batchnorm_eps=eps[0] if len(eps) == 1 else eps),
                          source=source, license="MIT (tanelp/deepyeast)",
                          authors=("Tanel Parnamaa", "Leopold Parts") if released else ())
        write_bundle(out_dir, deploy, weights, mean, CLASS_NAMES, info)
    return out_dir
